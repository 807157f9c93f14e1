//! `tyk-gitops run`: the sidecar loop. Syncs at start, then on its schedule,
//! `SIGHUP` and the other triggers; retries failures with capped exponential
//! backoff; checks for drift every `--verify-period`; serves health,
//! readiness, metrics and status.
//!
//! Invariants: one sync at a time (this loop is the only caller of the
//! reconciler); triggers arriving meanwhile coalesce into one follow-up; on
//! shutdown a running sync gets a short grace period and is otherwise
//! abandoned, which leaves `current` on one whole revision.

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::config::SyncConfig;
use crate::fleet::FleetHandle;
use crate::live::{App, Attempt, Live};
use crate::metrics::Metrics;
use crate::reconcile::{Outcome, Reconciler, SyncError, Vouched};
use crate::source::Commit;
use crate::state::now;
use crate::trigger::schedule::{Pacer, Schedule};
use crate::trigger::{Trigger, Triggers};

/// Least time between two remote ref listings made for outside triggers
/// (webhooks, fleet notices): anyone who can reach the webhook with a
/// replayed signed push, or publish on the fleet's channel, could
/// otherwise make one listing per message. Triggers arriving meanwhile
/// coalesce into one sync.
pub const MIN_TRIGGERED_INTERVAL: Duration = Duration::from_secs(1);

/// How long a running sync may go on after a shutdown signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(8);

#[derive(Debug, Clone)]
pub struct RunConfig {
    pub sync: SyncConfig,
    pub schedule: Schedule,
    /// How often to compare what the gateway runs against `current`.
    pub verify_period: Duration,
    /// Cap of the retry backoff after Git or gateway failures.
    pub max_backoff: Duration,
    pub replica_id: String,
    /// `--redis`: share commits, status and the poll lease with the fleet.
    pub fleet: Option<crate::fleet::FleetConfig>,
    /// `--canary` and its hold and checks (with `fleet` only).
    pub rollout: crate::fleet::rollout::RolloutConfig,
    /// `--webhook-secret-file`; without it `POST /webhook` answers 404.
    pub webhook_secret_file: Option<PathBuf>,
}

/// Runs the loop and the server until `shutdown` completes.
pub async fn run(
    config: RunConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (triggers, mut rx) = Triggers::channel();
    let sync_cfg = &config.sync;
    let stuck_after = sync_cfg.source.timeout * 2
        + sync_cfg.source.connect_timeout
        + sync_cfg
            .gateway
            .as_ref()
            .map(|g| g.wait + g.verify_timeout * 3)
            .unwrap_or_default()
        + Duration::from_secs(60);
    let mut fleet = config
        .fleet
        .clone()
        .map(|f| FleetHandle::new(f, config.rollout.clone()));
    let app = Arc::new(App {
        metrics: Metrics::new(),
        live: Mutex::new(Live::default()),
        root: sync_cfg.root.clone(),
        replica_id: config.replica_id.clone(),
        instance: crate::fleet::new_instance_id(),
        repo: crate::source::redact_url(&sync_cfg.source.repo),
        git_ref: sync_cfg.source.git_ref.clone(),
        path: sync_cfg.path.clone(),
        triggers: triggers.clone(),
        stuck_after,
        has_gateway: sync_cfg.gateway.is_some(),
        webhook: config.webhook_secret_file.clone().map(|file| {
            let mut webhook =
                crate::trigger::webhook::Webhook::new(file, sync_cfg.source.git_ref.as_deref());
            webhook.on_push = fleet
                .as_ref()
                .map(|f| f.on_push(sync_cfg.source.git_ref.as_deref()));
            webhook
        }),
        status_cache: Arc::default(),
    });

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let server = tokio::spawn(crate::server::serve(
        listener,
        app.clone(),
        wait_stopped(stop_rx.clone()),
    ));
    spawn_sighup(triggers.clone());
    // A replica joining a fleet starts on the commit the fleet verified,
    // not on a HEAD it may have rejected; later syncs resolve the ref.
    // A canary starts on the tip: taking new commits first is its job.
    let mut pinned = None;
    if let Some(f) = fleet.as_mut() {
        let git_ref = sync_cfg.source.git_ref.as_deref().unwrap_or("HEAD");
        // Before the tasks start: the rollout task begins from this gate.
        f.load_rollout(git_ref, &sync_cfg.root).await;
        f.start(app.clone());
        if !f.rollout().canary() {
            pinned = crate::fleet::joining_commit(f.config(), git_ref).await;
        }
    }

    let has_gateway = config.sync.gateway.is_some();
    let reconciler = Reconciler::new(config.sync.clone()).publishing_first_without_gateway();
    let mut stop = stop_rx.clone();
    let mut pending = Some(Trigger::Start);
    // The last commit this replica told the fleet it verified.
    let mut told_verified: Option<String> = None;
    // When the last sync that lists the remote started.
    let mut last_listing: Option<Instant> = None;
    let mut pacer = Pacer::new(
        config.schedule.clone(),
        config.verify_period,
        config.max_backoff,
        has_gateway,
    );

    loop {
        let trigger = match pending.take() {
            Some(t) => t,
            None => tokio::select! {
                _ = stop.changed() => break,
                Some(t) = rx.recv() => t,
                t = pacer.due() => t,
            },
        };
        if *stop.borrow() {
            break;
        }
        if trigger == Trigger::Poll && fleet.as_ref().is_some_and(FleetHandle::defer_poll) {
            pacer.skip_poll();
            continue;
        }
        if matches!(trigger, Trigger::Webhook | Trigger::Fleet)
            && let Some(last) = last_listing
        {
            let due = last + MIN_TRIGGERED_INTERVAL;
            tokio::select! {
                _ = stop.changed() => break,
                _ = tokio::time::sleep_until(due) => {}
            }
        }
        if trigger != Trigger::Drift {
            last_listing = Some(Instant::now());
        }
        app.live().busy_since = Some(std::time::Instant::now());
        let started = Instant::now();
        let work = step(&reconciler, &app, &trigger, pinned.take(), fleet.as_ref());
        tokio::pin!(work);
        let result = tokio::select! {
            r = &mut work => r,
            _ = stop.changed() => {
                info!("shutting down; letting the running sync finish");
                match tokio::time::timeout(SHUTDOWN_GRACE, &mut work).await {
                    Ok(r) => r,
                    Err(_) => {
                        warn!("sync abandoned at shutdown; current is unchanged or whole");
                        break;
                    }
                }
            }
        };
        let elapsed = started.elapsed();
        let failed_transiently = record(&app, &trigger, &result, elapsed);
        if let Some(f) = &fleet {
            if let Err(e) = &result {
                f.rollout()
                    .after_sync(e, app.git_ref.as_deref().unwrap_or("HEAD"));
            }
            if let Ok(Step::Synced(outcome)) = &result {
                let commit = outcome.commit();
                let verified = match outcome {
                    Outcome::Applied { verified, .. } | Outcome::Unchanged { verified, .. } => {
                        *verified || !has_gateway
                    }
                    Outcome::Repaired { .. } => true,
                };
                // A revision the init container wrote is verified by the
                // sidecar's first pass (unchanged or repaired, not applied):
                // the fleet must learn it too, or newcomers cannot join at it.
                let news = told_verified.as_deref() != Some(commit.sha.as_str());
                if matches!(outcome, Outcome::Applied { .. }) {
                    f.notify_applied(commit, verified);
                } else if verified && news {
                    f.notify_verified(commit);
                }
                if verified {
                    told_verified = Some(commit.sha.clone());
                }
            }
            f.report();
        }
        let failures = failed_transiently.then(|| app.live().consecutive_failures);
        if let Some(delay) = pacer.done(&trigger, failures) {
            info!(retry_in = ?delay, "will retry");
        }
        if *stop.borrow() {
            break;
        }
    }
    info!("stopped taking triggers");
    if let Some(f) = fleet {
        f.close().await;
    }
    let _ = server.await;
    Ok(())
}

async fn wait_stopped(mut stop: watch::Receiver<bool>) {
    while !*stop.borrow() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// The outcome of one turn of the loop.
enum Step {
    Synced(Outcome),
    Drift(bool),
    /// Canaries are live and nothing was released yet: nothing to apply.
    Held,
}

async fn step(
    reconciler: &Reconciler,
    app: &App,
    trigger: &Trigger,
    hint: Option<Commit>,
    fleet: Option<&FleetHandle>,
) -> Result<Step, SyncError> {
    if *trigger == Trigger::Drift {
        return reconciler.check_drift().await.map(Step::Drift);
    }
    let commit = match hint {
        Some(hint) => {
            let vouched = reconciler.vouch(hint).await?;
            if matches!(vouched, Vouched::Refused { .. }) {
                app.metrics.fleet_refused.inc();
            }
            vouched.into_commit()
        }
        None => reconciler.resolve().await?,
    };
    let commit = match fleet {
        Some(f) => {
            f.announce(&commit);
            let root = &reconciler.config().root;
            match crate::fleet::rollout::choose(f.rollout(), reconciler, root, commit).await? {
                Some(commit) => commit,
                None => return Ok(Step::Held),
            }
        }
        None => commit,
    };
    let commit = Some(commit);
    match trigger {
        // Routine triggers need not look at the gateway when nothing
        // changed: the drift check does, every --verify-period.
        Trigger::Poll | Trigger::Webhook | Trigger::Fleet => {
            reconciler.poll(commit).await.map(Step::Synced)
        }
        _ => reconciler.sync(commit).await.map(Step::Synced),
    }
}

/// Updates metrics and status; returns whether the failure is worth a
/// retry with backoff (Git or gateway unavailable) rather than a wait for
/// the next poll.
fn record(app: &App, trigger: &Trigger, result: &Result<Step, SyncError>, took: Duration) -> bool {
    let m = &app.metrics;
    let (label, sha, error, transient) = match result {
        Ok(Step::Drift(false)) => {
            app.live().consecutive_failures = 0;
            return false;
        }
        Ok(Step::Drift(true)) => {
            m.drift.inc();
            ("repaired", None, None, false)
        }
        Ok(Step::Held) => {
            info!("waiting for the canaries to release a first commit");
            ("held", None, None, false)
        }
        Ok(Step::Synced(outcome)) => {
            let sha = Some(outcome.commit().sha.clone());
            match outcome {
                Outcome::Applied { .. } => ("applied", sha, None, false),
                Outcome::Unchanged { .. } => ("noop", sha, None, false),
                Outcome::Repaired { .. } => {
                    m.drift.inc();
                    ("repaired", sha, None, false)
                }
            }
        }
        Err(e) => {
            let transient = match e {
                SyncError::Source(_) => {
                    m.git_failures.inc();
                    true
                }
                SyncError::Gateway(_) | SyncError::Config(_) => {
                    m.reload_failures.inc();
                    true
                }
                SyncError::VerifyFailed { .. } => {
                    m.rollbacks.inc();
                    false
                }
                SyncError::Apply(_) | SyncError::State(_) | SyncError::Internal(_) => true,
                SyncError::Invalid { .. }
                | SyncError::Untrusted { .. }
                | SyncError::Rejected { .. } => false,
            };
            let label = match e {
                SyncError::Invalid { .. }
                | SyncError::Untrusted { .. }
                | SyncError::Rejected { .. } => "rejected",
                _ => "failed",
            };
            let sha = match e {
                SyncError::Invalid { commit, .. }
                | SyncError::Untrusted { commit, .. }
                | SyncError::VerifyFailed { commit, .. } => Some(commit.sha.clone()),
                SyncError::Rejected { rejection } => Some(rejection.sha.clone()),
                _ => None,
            };
            if label == "rejected" {
                warn!("{e}");
            } else {
                error!("{e}");
            }
            (label, sha, Some(e.to_string()), transient)
        }
    };
    m.count_sync(match label {
        "repaired" => "applied",
        "held" => "noop",
        _ => label,
    });
    m.sync_duration.observe(took.as_secs_f64());
    if matches!(label, "applied" | "noop" | "repaired") {
        m.last_success.set(now() as f64);
        if let Ok((state, _)) = crate::state::State::load(&app.root)
            && let Some(current) = &state.current
        {
            m.set_revision(
                &current.sha,
                &current.git_ref,
                current.apis,
                current.policies,
            );
        }
    }
    let mut live = app.live();
    live.busy_since = None;
    if label == "failed" {
        live.consecutive_failures += 1;
    } else {
        live.consecutive_failures = 0;
    }
    if let Ok(Step::Synced(outcome)) = result {
        live.current_sha = Some(outcome.commit().sha.clone());
        let verified = match outcome {
            Outcome::Applied { verified, .. } | Outcome::Unchanged { verified, .. } => *verified,
            Outcome::Repaired { .. } => true,
        };
        // Without a gateway there is nothing to verify: applied is ready.
        live.ready |= verified || !app.has_gateway;
    }
    live.last_attempt = Some(Attempt {
        at: now(),
        trigger: trigger.as_str(),
        result: label,
        sha,
        error,
        duration_ms: took.as_millis() as u64,
    });
    transient
}

fn spawn_sighup(triggers: Triggers) {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::hangup()) {
        Ok(mut hup) => {
            tokio::spawn(async move {
                while hup.recv().await.is_some() {
                    info!("SIGHUP: sync now");
                    triggers.fire(Trigger::Signal);
                }
            });
        }
        Err(e) => warn!("cannot listen for SIGHUP: {e}"),
    }
}
