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
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{error, info, warn};

use crate::config::RunConfig;
use crate::fleet::FleetHandle;
use crate::fleet::rollout::{Rollout, Target};
use crate::live::{App, Attempt, Live};
use crate::metrics::Metrics;
use crate::reconcile::{Outcome, Reconciler, SyncError, Vouched};
use crate::source::Commit;
use crate::state::now;
use crate::trigger::schedule::Pacer;
use crate::trigger::{Trigger, Triggers};

/// Least time between two remote ref listings made for outside triggers
/// (webhooks, fleet notices): anyone who can reach the webhook with a
/// replayed signed push, or publish on the fleet's channel, could
/// otherwise make one listing per message. Triggers arriving meanwhile
/// coalesce into one sync.
pub const MIN_TRIGGERED_INTERVAL: Duration = Duration::from_secs(1);

/// How long a running sync may go on after a shutdown signal.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(8);

/// Runs the loop and the server until `shutdown` completes.
pub async fn run(
    config: RunConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (triggers, rx) = Triggers::channel();
    let mut fleet = config
        .sync
        .fleet
        .clone()
        .map(|f| FleetHandle::new(f, config.rollout.clone()));
    let app = Arc::new(app(&config, triggers.clone(), fleet.as_ref()));

    let (stop_tx, stop) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let server = tokio::spawn(crate::server::serve(
        listener,
        app.clone(),
        wait_stopped(stop.clone()),
    ));
    spawn_sighup(triggers);
    let reconciler = Reconciler::new(config.sync.clone()).publishing_first_without_gateway();
    // What an init container or an earlier process left, until our first
    // pass: /status and the fleet report it meanwhile.
    app.live().state = reconciler.state();
    // A replica joining a fleet starts on the commit the fleet verified
    // (released, with canaries), not on a HEAD it may have rejected; later
    // syncs resolve the ref. A canary starts on the tip: taking new
    // commits first is its job.
    let mut joining = None;
    if let Some(f) = fleet.as_mut() {
        let git_ref = config.sync.source.git_ref.as_deref().unwrap_or("HEAD");
        // Before the tasks start: the rollout task begins from this gate.
        f.load_rollout(git_ref, &config.sync.root).await;
        f.start(app.clone(), config.schedule.nominal());
        if !f.rollout().canary() {
            joining = crate::fleet::joining_commit(f.config(), git_ref).await;
        }
    }
    let has_gateway = config.sync.gateway.is_some();
    let mut turns = Turns {
        reconciler,
        app,
        fleet,
        has_gateway,
        pacer: Pacer::new(
            config.schedule.clone(),
            config.verify_period,
            config.max_backoff,
            has_gateway,
        ),
        told_verified: None,
        last_listing: None,
        stop,
    };
    turns.run(rx, joining).await;
    info!("stopped taking triggers");
    if let Some(f) = turns.fleet {
        f.close().await;
    }
    let _ = server.await;
    Ok(())
}

/// What the server, the webhook and the fleet share with the loop.
fn app(config: &RunConfig, triggers: Triggers, fleet: Option<&FleetHandle>) -> App {
    let sync = &config.sync;
    let git_ref = sync.source.git_ref.as_deref();
    // A sync running longer than every bound it has added up is stuck.
    let stuck_after = sync.source.timeout * 2
        + sync.source.connect_timeout
        + sync
            .gateway
            .as_ref()
            .map(|g| g.wait + g.verify_timeout * 3)
            .unwrap_or_default()
        + Duration::from_secs(60);
    App {
        metrics: Metrics::new(),
        live: Mutex::new(Live::default()),
        root: sync.root.clone(),
        replica_id: config.replica_id.clone(),
        instance: crate::fleet::new_instance_id(),
        repo: crate::source::redact_url(&sync.source.repo),
        git_ref: sync.source.git_ref.clone(),
        path: sync.path.clone(),
        triggers,
        stuck_after,
        has_gateway: sync.gateway.is_some(),
        webhook: config.webhook_secret_file.clone().map(|file| {
            let mut webhook = crate::trigger::webhook::Webhook::new(file, git_ref);
            webhook.on_push = fleet.map(|f| f.on_push(git_ref));
            webhook
        }),
        status_cache: Mutex::default(),
    }
}

/// The loop: one turn per trigger, one sync at a time.
struct Turns {
    reconciler: Reconciler,
    app: Arc<App>,
    fleet: Option<FleetHandle>,
    has_gateway: bool,
    pacer: Pacer,
    /// The last commit this replica told the fleet it verified.
    told_verified: Option<String>,
    /// When the last sync that lists the remote started.
    last_listing: Option<Instant>,
    stop: watch::Receiver<bool>,
}

impl Turns {
    /// Takes triggers until the stop signal; `joining` is the commit the
    /// fleet verified, for the first turn.
    async fn run(
        &mut self,
        mut rx: tokio::sync::mpsc::Receiver<Trigger>,
        mut joining: Option<Commit>,
    ) {
        let mut pending = Some(Trigger::Start);
        loop {
            let trigger = match pending.take() {
                Some(t) => t,
                None => tokio::select! {
                    _ = self.stop.changed() => return,
                    Some(t) = rx.recv() => t,
                    t = self.pacer.due() => t,
                },
            };
            if self.stopped() {
                return;
            }
            if trigger == Trigger::Poll && self.fleet.as_ref().is_some_and(FleetHandle::defer_poll)
            {
                self.pacer.skip_poll();
                continue;
            }
            if !self.paced(&trigger).await {
                return;
            }
            let Some(result) = self.turn(&trigger, joining.take()).await else {
                return;
            };
            self.tell_fleet(&result);
            let failures = record(&self.app, &trigger, &result.result, result.took)
                .then(|| self.app.live().consecutive_failures);
            if let Some(delay) = self.pacer.done(&trigger, failures) {
                info!(retry_in = ?delay, "will retry");
            }
            if self.stopped() {
                return;
            }
        }
    }

    fn stopped(&self) -> bool {
        *self.stop.borrow()
    }

    /// Spaces syncs for outside triggers `MIN_TRIGGERED_INTERVAL` apart;
    /// `false` when the stop signal came meanwhile.
    async fn paced(&mut self, trigger: &Trigger) -> bool {
        if matches!(trigger, Trigger::Webhook | Trigger::Fleet)
            && let Some(last) = self.last_listing
        {
            let due = last + MIN_TRIGGERED_INTERVAL;
            tokio::select! {
                _ = self.stop.changed() => return false,
                _ = tokio::time::sleep_until(due) => {}
            }
        }
        if *trigger != Trigger::Drift {
            self.last_listing = Some(Instant::now());
        }
        true
    }

    /// One sync (or drift check); `None` when it was abandoned at shutdown.
    async fn turn(&mut self, trigger: &Trigger, hint: Option<Commit>) -> Option<Turn> {
        self.app.live().busy_since = Some(std::time::Instant::now());
        let started = Instant::now();
        let work = step(
            &self.reconciler,
            &self.app,
            trigger,
            hint,
            self.fleet.as_ref(),
        );
        tokio::pin!(work);
        let result = tokio::select! {
            r = &mut work => r,
            _ = self.stop.changed() => {
                info!("shutting down; letting the running sync finish");
                match tokio::time::timeout(SHUTDOWN_GRACE, &mut work).await {
                    Ok(r) => r,
                    Err(_) => {
                        warn!("sync abandoned at shutdown; current is unchanged or whole");
                        return None;
                    }
                }
            }
        };
        self.app.live().state = self.reconciler.state();
        Some(Turn {
            result,
            took: started.elapsed(),
        })
    }

    /// What the fleet learns of a turn: an applied commit, or one this
    /// replica verified without applying it.
    fn tell_fleet(&mut self, turn: &Turn) {
        let Some(f) = &self.fleet else {
            return;
        };
        // The commit's own fault (not Git's or the gateway's availability).
        if let Err(e) = &turn.result
            && let Some(sha) = e.sha()
        {
            let commit = Commit {
                sha: sha.to_string(),
                git_ref: self.app.git_ref.clone().unwrap_or_else(|| "HEAD".into()),
            };
            f.rollout().refused(commit, e.to_string());
        }
        if let Ok(Step::Synced(outcome)) = &turn.result {
            let commit = outcome.commit();
            let verified = match outcome {
                Outcome::Applied { verified, .. } | Outcome::Unchanged { verified, .. } => {
                    *verified || !self.has_gateway
                }
                Outcome::Repaired { .. } => true,
            };
            // A revision the init container wrote is verified by the
            // sidecar's first pass (unchanged or repaired, not applied):
            // the fleet must learn it too, or newcomers cannot join at it.
            let news = self.told_verified.as_deref() != Some(commit.sha.as_str());
            if matches!(outcome, Outcome::Applied { .. }) {
                f.notify_applied(commit, verified);
            } else if verified && news {
                f.notify_verified(commit);
            }
            if verified {
                self.told_verified = Some(commit.sha.clone());
            }
        }
        f.report();
    }
}

/// A turn's result and how long it took.
struct Turn {
    result: Result<Step, SyncError>,
    took: Duration,
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
        None => {
            let tip = reconciler.resolve().await?;
            if let Some(f) = fleet {
                f.listed(&tip);
            }
            tip
        }
    };
    let commit = match fleet {
        Some(f) => {
            f.announce(&commit);
            match choose(f.rollout(), reconciler, commit).await? {
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

/// The commit a turn syncs under a staged rollout: the tip, the released
/// commit (when it is on our ref), or what runs here (`None` when nothing
/// does yet: wait for a release).
async fn choose(
    rollout: &Rollout,
    reconciler: &Reconciler,
    tip: Commit,
) -> Result<Option<Commit>, SyncError> {
    match rollout.target(&tip) {
        Target::Tip => return Ok(Some(tip)),
        Target::Released(released) => match reconciler.vouch(released).await? {
            Vouched::Hint(commit) => {
                if commit.sha != tip.sha {
                    info!(tip = %tip.short(), released = %commit.short(), "the canaries have not released the tip: staying on the released commit");
                }
                return Ok(Some(commit));
            }
            Vouched::Refused { hint, .. } => warn!(
                sha = %hint.short(),
                "the fleet's released commit is not on our ref; staying where we are"
            ),
        },
        Target::Stay => {}
    }
    let state = reconciler.state();
    Ok(state.current.as_ref().and_then(|c| {
        (c.git_ref == tip.git_ref).then(|| Commit {
            sha: c.sha.clone(),
            git_ref: c.git_ref.clone(),
        })
    }))
}

/// Updates metrics and status; returns whether the failure is worth a
/// retry with backoff (Git or gateway unavailable) rather than a wait for
/// the next poll.
fn record(app: &App, trigger: &Trigger, result: &Result<Step, SyncError>, took: Duration) -> bool {
    let m = &app.metrics;
    let (label, sha, error, transient) = match result {
        Ok(Step::Drift(false)) => {
            // Nothing to record, but the check is over: `/status` must not
            // say "syncing" until the next sync.
            let mut live = app.live();
            live.consecutive_failures = 0;
            live.busy_since = None;
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
            match e {
                SyncError::Source(_) => m.git_failures.inc(),
                SyncError::Gateway(_) | SyncError::Config(_) => m.reload_failures.inc(),
                SyncError::VerifyFailed { .. } => m.rollbacks.inc(),
                _ => 0,
            };
            let label = e.label();
            if label == "rejected" {
                warn!("{e}");
            } else {
                error!("{e}");
            }
            let sha = e.sha().map(str::to_string);
            (label, sha, Some(e.to_string()), e.is_transient())
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
        let state = app.live().state.clone();
        if let Some(current) = &state.current {
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
