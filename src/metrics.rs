//! Prometheus metrics of the sidecar (`GET /metrics`). The format is
//! negotiated as the Prometheus Go client does: OpenMetrics when the
//! scraper's `Accept` asks for it, the Prometheus text format 0.0.4
//! otherwise. Labels never carry secrets: the only free-form label values
//! are a commit sha and the ref name.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

/// `{phase}` of `rollout_phase`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabel {
    pub phase: String,
}

/// `{sha, ref}`: a list of pairs, because `ref` is a Rust keyword.
type RevisionLabel = Vec<(&'static str, String)>;

pub struct Metrics {
    registry: Registry,
    pub syncs: Family<ResultLabel, Counter>,
    pub sync_duration: Histogram,
    pub last_success: Gauge<f64, AtomicU64>,
    pub revision: Family<RevisionLabel, Gauge>,
    pub apis: Gauge,
    pub policies: Gauge,
    pub rollbacks: Counter,
    pub reload_failures: Counter,
    pub drift: Counter,
    pub git_failures: Counter,
    pub redis_errors: Counter,
    pub fleet_notices: Counter,
    pub fleet_leader: Gauge,
    pub fleet_replica_id_clash: Gauge,
    /// Values read from Redis and not trusted: a notice or verified key
    /// whose sha is not a commit id, or not on our ref.
    pub fleet_refused: Counter,
    /// The notice listener ended unexpectedly and was started again.
    pub fleet_listener_restarts: Counter,
    /// 1 for the phase of our ref's staged rollout, 0 for the others.
    pub rollout_phase: Family<PhaseLabel, Gauge>,
    /// Rollouts seen failing (a canary refused a commit or its checks failed).
    pub rollout_failures: Counter,
    pub webhook_requests: Family<ResultLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut metrics = Metrics {
            registry: Registry::with_prefix("tyk_gitops"),
            syncs: Family::<ResultLabel, Counter>::default(),
            sync_duration: Histogram::new([0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]),
            last_success: Gauge::<f64, AtomicU64>::default(),
            revision: Family::<RevisionLabel, Gauge>::default(),
            apis: Gauge::default(),
            policies: Gauge::default(),
            rollbacks: Counter::default(),
            reload_failures: Counter::default(),
            drift: Counter::default(),
            git_failures: Counter::default(),
            webhook_requests: Family::<ResultLabel, Counter>::default(),
            redis_errors: Counter::default(),
            fleet_notices: Counter::default(),
            fleet_leader: Gauge::default(),
            fleet_replica_id_clash: Gauge::default(),
            fleet_refused: Counter::default(),
            fleet_listener_restarts: Counter::default(),
            rollout_phase: Family::<PhaseLabel, Gauge>::default(),
            rollout_failures: Counter::default(),
        };
        metrics.register_syncs();
        metrics.register_fleet();
        metrics
    }

    /// What each sync did, and what is live.
    fn register_syncs(&mut self) {
        let r = &mut self.registry;
        r.register(
            "syncs",
            "Syncs by result: applied, noop, rejected, failed",
            self.syncs.clone(),
        );
        r.register(
            "sync_duration_seconds",
            "Duration of a sync, from trigger to result",
            self.sync_duration.clone(),
        );
        r.register(
            "last_success_timestamp_seconds",
            "Unix time of the last sync that ended applied or unchanged",
            self.last_success.clone(),
        );
        r.register(
            "revision_info",
            "The commit in current (value 1)",
            self.revision.clone(),
        );
        r.register(
            "apis",
            "API definitions in the current revision",
            self.apis.clone(),
        );
        r.register(
            "policies",
            "Policies in the current revision",
            self.policies.clone(),
        );
        r.register(
            "rollbacks",
            "Rollbacks after a verify mismatch",
            self.rollbacks.clone(),
        );
        r.register(
            "reload_failures",
            "Reloads that failed or could not be sent",
            self.reload_failures.clone(),
        );
        r.register(
            "drift",
            "Times the gateway ran something else than current and was reloaded",
            self.drift.clone(),
        );
        r.register(
            "git_failures",
            "Syncs that failed to reach or read the Git remote",
            self.git_failures.clone(),
        );
    }

    /// The fleet, the rollout and the webhook.
    fn register_fleet(&mut self) {
        let r = &mut self.registry;
        r.register("webhook_requests", "Webhook requests by result: accepted, ignored, ping, unauthorized, too_large, invalid, unavailable", self.webhook_requests.clone());
        r.register(
            "redis_errors",
            "Failed Redis calls and lost connections (the fleet falls back to polling)",
            self.redis_errors.clone(),
        );
        r.register(
            "fleet_notices",
            "Commits announced by other replicas over Redis",
            self.fleet_notices.clone(),
        );
        r.register(
            "fleet_leader",
            "1 while this replica holds the poll lease",
            self.fleet_leader.clone(),
        );
        r.register(
            "fleet_replica_id_clash",
            "Other live sidecars of the fleet using this replica's --replica-id (0 when unique)",
            self.fleet_replica_id_clash.clone(),
        );
        r.register(
            "fleet_refused",
            "Shas from Redis refused: not a commit id, or not the ref's tip or an ancestor of it",
            self.fleet_refused.clone(),
        );
        r.register(
            "fleet_listener_restarts",
            "Times the fleet notice listener ended unexpectedly and was restarted",
            self.fleet_listener_restarts.clone(),
        );
        r.register("rollout_phase", "Phase of the ref's staged rollout (1 for the current one): canary, holding, released, failed", self.rollout_phase.clone());
        r.register("rollout_failures", "Staged rollouts seen failing: a canary refused the commit, failed to verify it or failed a check", self.rollout_failures.clone());
    }

    pub fn count_sync(&self, result: &str) {
        self.syncs
            .get_or_create(&ResultLabel {
                result: result.to_string(),
            })
            .inc();
    }

    pub fn count_webhook(&self, result: &str) {
        self.webhook_requests
            .get_or_create(&ResultLabel {
                result: result.to_string(),
            })
            .inc();
    }

    /// Points `revision_info` at one commit only.
    pub fn set_revision(&self, sha: &str, git_ref: &str, apis: usize, policies: usize) {
        self.revision.clear();
        self.revision
            .get_or_create(&vec![
                ("sha", sha.to_string()),
                ("ref", git_ref.to_string()),
            ])
            .set(1);
        self.apis.set(apis as i64);
        self.policies.set(policies as i64);
    }

    /// The exposition in `format`.
    pub fn encode(&self, format: Format) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = match format {
            Format::OpenMetrics(_) => {
                prometheus_client::encoding::text::encode(&mut out, &self.registry)
            }
            Format::Text => {
                prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
            }
        };
        out
    }
}

/// An exposition format a scraper can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4: what every scraper reads, and
    /// `promtool check metrics` checks.
    Text,
    /// OpenMetrics 1.0.0, labelled with the version the scraper asked for
    /// (`1.0.0` or `0.0.1`; the text is the same).
    OpenMetrics(&'static str),
}

impl Format {
    pub fn content_type(self) -> String {
        match self {
            Format::Text => prometheus_client::encoding::prometheus_text::CONTENT_TYPE.to_string(),
            Format::OpenMetrics(version) => {
                format!("application/openmetrics-text; version={version}; charset=utf-8")
            }
        }
    }
}

/// The format for an `Accept` header, as the Go client's
/// `expfmt.NegotiateIncludingOpenMetrics`: media ranges in order of
/// preference (`q`), the first we speak wins: `text/plain` of version
/// 0.0.4 or none, `application/openmetrics-text` of version 1.0.0, 0.0.1 or
/// none (which the Go client labels 0.0.1). Anything else (`*/*`,
/// protobuf, no header) gets the text format.
pub fn negotiate(accept: Option<&str>) -> Format {
    let mut ranges: Vec<(f32, usize, &str, Option<&str>)> = Vec::new();
    for (index, range) in accept.unwrap_or("").split(',').enumerate() {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("");
        let (mut q, mut version) = (1.0_f32, None);
        for param in parts {
            match param.split_once('=').map(|(k, v)| (k.trim(), v.trim())) {
                Some(("q", v)) => q = v.parse().unwrap_or(0.0),
                Some(("version", v)) => version = Some(v.trim_matches('"')),
                _ => {}
            }
        }
        // q=0 means "not acceptable".
        if q > 0.0 && !media.is_empty() {
            ranges.push((q, index, media, version));
        }
    }
    // Stable: equal preferences keep the scraper's order.
    ranges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, _, media, version) in ranges {
        if media.eq_ignore_ascii_case("text/plain") && matches!(version, None | Some("0.0.4")) {
            return Format::Text;
        }
        if media.eq_ignore_ascii_case("application/openmetrics-text") {
            match version {
                Some("1.0.0") => return Format::OpenMetrics("1.0.0"),
                None | Some("0.0.1") => return Format::OpenMetrics("0.0.1"),
                Some(_) => {}
            }
        }
    }
    Format::Text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_names_the_documented_metrics() {
        let m = Metrics::new();
        m.count_sync("applied");
        m.set_revision("abc123", "main", 3, 2);
        let text = m.encode(Format::OpenMetrics("1.0.0"));
        for name in [
            "tyk_gitops_syncs_total{result=\"applied\"} 1",
            "tyk_gitops_sync_duration_seconds_bucket",
            "tyk_gitops_last_success_timestamp_seconds",
            "tyk_gitops_revision_info{sha=\"abc123\",ref=\"main\"} 1",
            "tyk_gitops_apis 3",
            "tyk_gitops_policies 2",
            "tyk_gitops_rollbacks_total 0",
            "tyk_gitops_reload_failures_total 0",
            "tyk_gitops_drift_total 0",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
    }

    #[test]
    fn text_format_has_help_and_type_for_counters_named_with_total() {
        let m = Metrics::new();
        m.count_sync("applied");
        let text = m.encode(Format::Text);
        assert!(
            text.contains("# HELP tyk_gitops_syncs_total Syncs by result"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE tyk_gitops_syncs_total counter\n"),
            "{text}"
        );
        assert!(text.contains("tyk_gitops_syncs_total{result=\"applied\"} 1\n"));
        assert!(!text.contains("# EOF"), "{text}");
    }

    #[test]
    fn negotiation_follows_the_go_client() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        let cases = [
            (None, Format::Text),
            (Some(""), Format::Text),
            (Some("*/*"), Format::Text),
            (Some("text/plain"), Format::Text),
            (Some("text/plain; version=0.0.4"), Format::Text),
            (Some(prometheus), Format::OpenMetrics("1.0.0")),
            (
                Some("application/openmetrics-text"),
                Format::OpenMetrics("0.0.1"),
            ),
            (
                Some("application/openmetrics-text; version=0.0.1"),
                Format::OpenMetrics("0.0.1"),
            ),
            // An unknown version is skipped, as the Go client does.
            (
                Some("application/openmetrics-text; version=2.0.0"),
                Format::Text,
            ),
            // Preference by q, not by position.
            (
                Some("text/plain;q=0.5, application/openmetrics-text;version=1.0.0;q=0.9"),
                Format::OpenMetrics("1.0.0"),
            ),
            (
                Some("application/openmetrics-text;q=0.2, text/plain;version=0.0.4"),
                Format::Text,
            ),
            (Some("application/openmetrics-text;q=0"), Format::Text),
            (
                Some(
                    "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited",
                ),
                Format::Text,
            ),
        ];
        for (accept, expected) in cases {
            assert_eq!(negotiate(accept), expected, "{accept:?}");
        }
    }
}
