//! The Redis side of `run`: two tasks owning their connections. The
//! subscriber turns other replicas' notices into sync triggers; the agent
//! publishes what this replica applied, writes its status every heartbeat
//! (and after each sync) with a TTL, takes or renews the poll lease, and
//! notices other live sidecars using its replica id.
//!
//! Invariant: the loop never waits on Redis. It talks to the agent through
//! a bounded channel with `try_send` and reads leadership from an atomic;
//! Redis down means "not leading, not reachable", so the loop polls as a
//! lone replica would, while both tasks reconnect with backoff.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior, interval, sleep, timeout};
use tracing::{debug, info, warn};

use super::rollout::{Rollout, RolloutConfig};
use super::{
    FleetConfig, FleetError, HEARTBEAT, LEASE_TTL, Notice, REDIS_TIMEOUT, ReplicaStatus,
    STATUS_TTL, Tip, Verified, lease_holder,
};
use crate::live::App;
use crate::sha::{Sha, printable};
use crate::source::Commit;
use crate::state::now;
use crate::trigger::Trigger;
use crate::trigger::schedule::backoff;

/// Followers poll Git once every this many periods when no fresh tip is
/// in Redis (a safety net should the leader not say what it lists).
pub const FOLLOWER_POLL_EVERY: u32 = 10;
/// A tip written to Redis stands for this many of its writer's poll
/// periods: a leader that stopped listing leaves followers polling again
/// after them.
const TIP_PERIODS: u32 = 3;
/// Cap of the reconnect backoff.
const MAX_RECONNECT: Duration = Duration::from_secs(15);
/// How often the subscriber checks its connection is alive: a silent
/// channel and a dead peer look alike otherwise.
const SUBSCRIBER_PING: Duration = Duration::from_secs(5);
/// Checks a clash must outlast before it is reported: a dead process's
/// entry is gone after `STATUS_TTL` (three heartbeats), plus one for slack.
const CLASH_CHECKS: u32 = (STATUS_TTL.as_secs() / HEARTBEAT.as_secs()) as u32 + 1;
/// Notices heard recently; applying one of these is not news to the fleet.
const HEARD_LEN: usize = 16;

/// Acquire the lease when free, renew it when ours; one round trip, and no
/// window where two replicas both think they lead. A lease is free too
/// when it has no expiry (replicas always set one: someone else wrote it)
/// or its holder (`<replica>/<instance>`) has no live status under
/// `KEYS[2]<replica>:<instance>` (an older version's bare id counts as
/// gone): either would otherwise make every replica a follower for good.
const LEASE_SCRIPT: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
local alive = false
if holder then
  local replica, instance = string.match(holder, '^(.*)/([^/]*)$')
  if replica then
    alive = redis.call('EXISTS', KEYS[2] .. replica .. ':' .. instance) == 1
  end
end
if not alive or redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0";
/// Records this process as live under its replica id and forgets the ones
/// silent for a TTL; answers how many live processes use the id. Redis's
/// own clock, so the hosts' clocks need not agree.
const INSTANCES_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return redis.call('ZCARD', KEYS[1])";
/// Let go of the lease at shutdown, only if still ours.
const RELEASE_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0";

enum Request {
    /// This replica applied a commit (verified, or with no gateway to ask).
    Applied {
        commit: Commit,
        verified: bool,
    },
    /// This replica verified a commit it already had (no notice: nothing
    /// new for the others to fetch).
    Verified(Commit),
    /// A commit learnt of before applying it (a webhook push).
    Announce(Commit),
    /// The ref's tip, as this replica just listed it.
    Listed(Commit),
    /// The loop's status changed; write it now rather than at the next beat.
    Report,
    Close,
}

/// What the loop holds: cheap, non-blocking calls into the fleet tasks.
pub struct FleetHandle {
    config: FleetConfig,
    /// The staged rollout's gate, shared with its task.
    rollout: Arc<Rollout>,
    tx: mpsc::Sender<Request>,
    shared: Arc<Shared>,
    /// Until `start`: the agent's end of `tx`.
    unstarted: Option<mpsc::Receiver<Request>>,
    tasks: Vec<JoinHandle<()>>,
}

/// Between the loop, the agent and the subscriber.
struct Shared {
    /// This replica holds the poll lease.
    leader: AtomicBool,
    /// The agent's last Redis call succeeded.
    reachable: AtomicBool,
    /// Scheduled polls skipped since the last one made, as a follower.
    deferred: AtomicU32,
    /// Shas other replicas announced lately, newest first.
    heard: Mutex<VecDeque<String>>,
    /// The sha in `current`, so a notice for it triggers nothing.
    current: Mutex<Option<String>>,
    /// A follower found the fleet's tip in Redis at its last heartbeat: a
    /// replica lists the ref every period and says what it found, so this
    /// one need not list it too.
    tip_fresh: AtomicBool,
    /// The last tip that made this follower sync (once per sha).
    tip_followed: Mutex<Option<String>>,
}

impl Shared {
    fn heard(&self) -> std::sync::MutexGuard<'_, VecDeque<String>> {
        // A poisoned lock only means a panic elsewhere; the data is plain.
        self.heard.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn current(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn was_heard(&self, sha: &str) -> bool {
        self.heard().iter().any(|s| s == sha)
    }
}

impl FleetHandle {
    /// A handle whose tasks are not running yet: the webhook's hook is
    /// made (`on_push`) before the `App` it is part of exists.
    pub fn new(config: FleetConfig, rollout: RolloutConfig) -> FleetHandle {
        let shared = Arc::new(Shared {
            leader: AtomicBool::new(false),
            reachable: AtomicBool::new(false),
            deferred: AtomicU32::new(0),
            heard: Mutex::new(VecDeque::new()),
            current: Mutex::new(None),
            tip_fresh: AtomicBool::new(false),
            tip_followed: Mutex::new(None),
        });
        let (tx, rx) = mpsc::channel(16);
        FleetHandle {
            config,
            rollout: Arc::new(Rollout::new(rollout)),
            tx,
            shared,
            unstarted: Some(rx),
            tasks: Vec::new(),
        }
    }

    /// Starts the agent and the subscriber; returns at once (they connect
    /// in the background). `poll_every`: this replica's poll period, which
    /// bounds how long the tip it writes stands for a fresh listing. A
    /// second call does nothing.
    pub fn start(&mut self, app: Arc<App>, poll_every: Duration) {
        let Some(rx) = self.unstarted.take() else {
            return;
        };
        let config = self.config.clone();
        let git_ref = our_ref(&app);
        let watcher = tokio::spawn(super::rollout::run(
            config.clone(),
            app.clone(),
            self.rollout.clone(),
            git_ref.clone(),
        ));
        let subscriber = {
            let (config, app, shared) = (config.clone(), app.clone(), self.shared.clone());
            let rollout = self.rollout.clone();
            let restarted_app = app.clone();
            tokio::spawn(supervise(
                move || {
                    subscribe(
                        config.clone(),
                        app.clone(),
                        shared.clone(),
                        rollout.clone(),
                        git_ref.clone(),
                    )
                },
                move |restarts| {
                    let app = &restarted_app;
                    app.metrics.fleet_listener_restarts.inc();
                    app.live().fleet_listener_restarts = restarts;
                    // Notices may have been lost while it was down.
                    app.triggers.fire(Trigger::Fleet);
                },
            ))
        };
        let agent = Agent {
            config,
            rollout: self.rollout.clone(),
            app,
            shared: self.shared.clone(),
            con: None,
            failures: 0,
            next_connect: Instant::now(),
            clash_checks: 0,
            tip_ttl: (poll_every * TIP_PERIODS).max(LEASE_TTL * 2),
            announced: None,
        };
        self.tasks = vec![tokio::spawn(agent.run(rx)), subscriber, watcher];
    }

    /// The webhook's hook: an authenticated push to our ref is announced
    /// to the fleet at once, so every replica syncs in parallel with us.
    /// The pushed sha is only passed on as a hint (receivers resolve the
    /// ref themselves), and named by our ref, which the webhook matched.
    pub fn on_push(&self, git_ref: Option<&str>) -> crate::trigger::webhook::OnPush {
        let tx = self.tx.clone();
        let git_ref = git_ref.unwrap_or("HEAD").to_string();
        Arc::new(move |event: &crate::trigger::webhook::WebhookEvent| {
            let Some(sha) = event.sha.as_deref().and_then(Sha::parse) else {
                return;
            };
            let commit = Commit {
                sha: sha.into_string(),
                git_ref: git_ref.clone(),
            };
            if tx.try_send(Request::Announce(commit)).is_err() {
                debug!("fleet agent busy; push not announced (polling covers it)");
            }
        })
    }

    pub fn config(&self) -> &FleetConfig {
        &self.config
    }

    /// The staged rollout: which commits this replica may apply.
    pub fn rollout(&self) -> &Rollout {
        &self.rollout
    }

    /// Reads the rollout once, bounded, before the first sync (with Redis
    /// away: the gate last kept under `root`).
    pub async fn load_rollout(&self, git_ref: &str, root: &std::path::Path) {
        super::rollout::load(&self.config, &self.rollout, git_ref, root).await;
    }

    /// After an `Applied` outcome: tell the fleet (unless it told us), and
    /// make the commit the one newcomers start on when it is verified.
    pub fn notify_applied(&self, commit: &Commit, verified: bool) {
        *self.shared.current() = Some(commit.sha.clone());
        self.send(Request::Applied {
            commit: commit.clone(),
            verified,
        });
    }

    /// The gateway was found running, or was repaired to run, the commit
    /// already in `current` (the init container's revision, verified by the
    /// sidecar's first pass): newcomers may start on it. No notice is sent.
    pub fn notify_verified(&self, commit: &Commit) {
        *self.shared.current() = Some(commit.sha.clone());
        self.send(Request::Verified(commit.clone()));
    }

    /// This replica resolved its ref to `commit`: when that is news (not
    /// what it runs), tell the others now rather than after the apply, so
    /// every replica fetches and validates in parallel. Each still resolves
    /// and validates for itself.
    pub fn announce(&self, commit: &Commit) {
        if self.shared.current().as_deref() == Some(commit.sha.as_str()) {
            return;
        }
        self.send(Request::Announce(commit.clone()));
    }

    /// This replica listed its ref and found `commit` at its tip: the
    /// followers learn from Redis that the ref was listed, and need not
    /// list it themselves.
    pub fn listed(&self, commit: &Commit) {
        self.send(Request::Listed(commit.clone()));
    }

    /// The loop's status changed (a sync ended).
    pub fn report(&self) {
        self.send(Request::Report);
    }

    /// Whether this scheduled poll is left to the lease holder. A
    /// follower does not poll while the fleet's tip in Redis is fresh (a
    /// replica listed the ref within a few periods; a tip other than ours
    /// makes the agent trigger a sync); without one (an older leader, or
    /// one that cannot list) it polls every `FOLLOWER_POLL_EVERY` periods.
    /// With Redis unreachable nobody is known to lead, so every replica
    /// polls.
    pub fn defer_poll(&self) -> bool {
        let follower = self.shared.reachable.load(Ordering::Relaxed)
            && !self.shared.leader.load(Ordering::Relaxed);
        if !follower {
            self.shared.deferred.store(0, Ordering::Relaxed);
            return false;
        }
        if self.shared.tip_fresh.load(Ordering::Relaxed) {
            return true;
        }
        let skipped = self.shared.deferred.fetch_add(1, Ordering::Relaxed) + 1;
        if skipped >= FOLLOWER_POLL_EVERY {
            self.shared.deferred.store(0, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// At shutdown: drop our status and lease so the fleet does not wait
    /// on a replica that is gone; bounded, then the tasks are stopped.
    pub async fn close(mut self) {
        let mut tasks = std::mem::take(&mut self.tasks).into_iter();
        let (Some(agent), Some(subscriber), Some(watcher)) =
            (tasks.next(), tasks.next(), tasks.next())
        else {
            return;
        };
        subscriber.abort();
        watcher.abort();
        if self.tx.send(Request::Close).await.is_ok() {
            let _ = timeout(REDIS_TIMEOUT, agent).await;
        }
    }

    fn send(&self, request: Request) {
        // Full means the agent is behind on a slow Redis: a dropped report
        // is repaired by the next heartbeat, a dropped notice by polling.
        if self.tx.try_send(request).is_err() {
            debug!("fleet agent busy; request dropped");
        }
    }
}

struct Agent {
    config: FleetConfig,
    /// Who writes the fleet's verified commit: not a canary (its rollout
    /// releases it), nor a replica the canaries gate (what it verifies was
    /// released already; a late one rewriting it would release an older
    /// commit again).
    rollout: Arc<Rollout>,
    app: Arc<App>,
    shared: Arc<Shared>,
    con: Option<redis::aio::MultiplexedConnection>,
    /// Consecutive failures, for the reconnect backoff.
    failures: u32,
    next_connect: Instant,
    /// Consecutive checks that saw another process under our replica id.
    clash_checks: u32,
    /// How long a tip we write stands (a few of our poll periods).
    tip_ttl: Duration,
    /// What the last status change we announced said of the fields `fleet
    /// wait` decides on: a sync that changed none of them (a drift check
    /// that found nothing) is not announced.
    announced: Option<Decisive>,
}

/// A status's sha, verified, error and rejected commits.
type Decisive = (Option<String>, bool, Option<String>, Vec<String>);

impl Agent {
    async fn run(mut self, mut rx: mpsc::Receiver<Request>) {
        let mut beat = interval(HEARTBEAT);
        beat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = beat.tick() => {
                    self.check_id().await;
                    // Status first: a lease whose holder has no status is
                    // free to take (LEASE_SCRIPT).
                    self.write_status(false).await;
                    self.lease().await;
                    self.follow_tip().await;
                }
                request = rx.recv() => match request {
                    Some(Request::Applied { commit, verified }) => {
                        self.publish(&commit).await;
                        if verified && self.writes_verified() {
                            self.set_verified(&commit).await;
                        }
                        self.write_status(true).await;
                    }
                    Some(Request::Verified(commit)) => {
                        if self.writes_verified() {
                            self.set_verified(&commit).await;
                        }
                        self.write_status(true).await;
                    }
                    Some(Request::Announce(commit)) => self.publish(&commit).await,
                    Some(Request::Listed(commit)) => self.set_tip(&commit).await,
                    Some(Request::Report) => self.write_status(true).await,
                    Some(Request::Close) | None => {
                        self.leave().await;
                        return;
                    }
                },
            }
        }
    }

    fn writes_verified(&self) -> bool {
        !self.rollout.canary() && !self.rollout.gate().gated
    }

    /// Tells the others, unless they told us: an echo would cost every
    /// replica a sync per replica.
    async fn publish(&mut self, commit: &Commit) {
        if self.shared.was_heard(&commit.sha) {
            return;
        }
        let notice = Notice {
            git_ref: commit.git_ref.clone(),
            sha: commit.sha.clone(),
            replica: self.app.replica_id.clone(),
            instance: self.app.instance.clone(),
            release: false,
        };
        let Ok(payload) = serde_json::to_string(&notice) else {
            return;
        };
        let channel = self.config.keys().commits();
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(channel).arg(payload);
        if let Some(receivers) = self.query::<i64>("PUBLISH", &cmd).await {
            // Remember it so the echo of a later notice is not re-sent.
            remember(&self.shared, &commit.sha);
            info!(sha = %commit.short(), receivers, "told the fleet");
        }
    }

    /// Says what our listing of the ref found, for `tip_ttl`.
    async fn set_tip(&mut self, commit: &Commit) {
        let value = Tip {
            sha: commit.sha.clone(),
            replica: self.app.replica_id.clone(),
            at: now(),
        };
        let Ok(value) = serde_json::to_string(&value) else {
            return;
        };
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.config.keys().tip(&commit.git_ref))
            .arg(value)
            .arg("PX")
            .arg(self.tip_ttl.as_millis() as u64);
        self.query::<()>("SET tip", &cmd).await;
    }

    /// As a follower: reads the fleet's tip; one other than what this
    /// replica runs (and not followed before) triggers a sync, as a notice
    /// would: this is what catches a notice lost on the way.
    async fn follow_tip(&mut self) {
        let follower = self.shared.reachable.load(Ordering::Relaxed)
            && !self.shared.leader.load(Ordering::Relaxed);
        if !follower {
            self.shared.tip_fresh.store(false, Ordering::Relaxed);
            return;
        }
        let mut cmd = redis::cmd("GET");
        cmd.arg(self.config.keys().tip(&our_ref(&self.app)));
        let tip = self
            .query::<Option<String>>("GET tip", &cmd)
            .await
            .flatten()
            .and_then(|v| serde_json::from_str::<Tip>(&v).ok())
            // Anyone who can write to Redis can write this: only a commit
            // id is taken, and only as a reason to look at the ref.
            .and_then(|t| Sha::parse(&t.sha));
        self.shared
            .tip_fresh
            .store(tip.is_some(), Ordering::Relaxed);
        let Some(sha) = tip.map(Sha::into_string) else {
            return;
        };
        // What this replica runs, or what a notice told it of (that notice
        // made its sync, or it published it itself): nothing to catch up.
        // Without this, the heartbeat that reads a tip between a notice and
        // the end of its sync queued a second sync, and the next notice
        // waited for MIN_TRIGGERED_INTERVAL behind it.
        if self.shared.current().as_deref() == Some(sha.as_str()) || self.shared.was_heard(&sha) {
            return;
        }
        let mut followed = self
            .shared
            .tip_followed
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if followed.as_deref() != Some(sha.as_str()) {
            info!(sha = %crate::sha::short(&sha), "the fleet's tip is a commit this replica does not run; syncing");
            *followed = Some(sha);
            self.app.triggers.fire(Trigger::Fleet);
        }
    }

    async fn set_verified(&mut self, commit: &Commit) {
        let value = Verified {
            sha: commit.sha.clone(),
            git_ref: commit.git_ref.clone(),
            replica: self.app.replica_id.clone(),
            at: now(),
        };
        let Ok(value) = serde_json::to_string(&value) else {
            return;
        };
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.config.keys().verified()).arg(value);
        self.query::<()>("SET verified", &cmd).await;
    }

    fn holder(&self) -> String {
        lease_holder(&self.app.replica_id, &self.app.instance)
    }

    async fn lease(&mut self) {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(LEASE_SCRIPT)
            .arg(2)
            .arg(self.config.keys().leader())
            .arg(self.config.keys().replica_pattern().trim_end_matches('*'))
            .arg(self.holder())
            .arg(LEASE_TTL.as_millis() as u64);
        let held = self.query::<i64>("lease", &cmd).await == Some(1);
        let was = self.shared.leader.swap(held, Ordering::Relaxed);
        if held != was {
            info!(
                leader = held,
                "{}",
                if held {
                    "took the poll lease: polling Git every period"
                } else {
                    "another replica polls Git; polling rarely"
                }
            );
        }
        self.app.metrics.fleet_leader.set(i64::from(held));
    }

    /// Whether other live sidecars use our replica id. It breaks nothing
    /// (processes are told apart by instance) but misleads people reading
    /// `fleet status`, so it is reported: log, `/status`, a metric.
    async fn check_id(&mut self) {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(INSTANCES_SCRIPT)
            .arg(1)
            .arg(self.config.keys().instances(&self.app.replica_id))
            .arg(&self.app.instance)
            .arg(STATUS_TTL.as_millis() as u64);
        let Some(live) = self.query::<u32>("instances", &cmd).await else {
            return;
        };
        // A process that died without leaving (SIGKILL, then a restart
        // under the same hostname) stays listed for up to `STATUS_TTL`:
        // only a clash seen for longer than that is one.
        let seen = live.saturating_sub(1);
        self.clash_checks = if seen > 0 { self.clash_checks + 1 } else { 0 };
        let confirmed = self.clash_checks > CLASH_CHECKS;
        let others = if confirmed { seen } else { 0 };
        let before = std::mem::replace(&mut self.app.live().replica_id_clash, others);
        self.app
            .metrics
            .fleet_replica_id_clash
            .set(i64::from(others));
        // Once per newcomer, not every heartbeat.
        if others > before {
            warn!(
                replica = %self.app.replica_id,
                others,
                "{others} other live sidecar(s) of cluster {} use replica id {:?}; \
                 give each its own --replica-id (TYK_GITOPS_REPLICA_ID). Notices, the \
                 poll lease and fleet status still tell them apart",
                self.config.cluster,
                self.app.replica_id
            );
        } else if others == 0 && before > 0 {
            info!(replica = %self.app.replica_id, "replica id no longer shared");
        }
    }

    /// `announce`: written after a sync (not a heartbeat): when it changed
    /// what `fleet wait` decides on, say so on `status_changes`.
    async fn write_status(&mut self, announce: bool) {
        let state = self.app.live().state.clone();
        let last = self.app.live().last_attempt.clone();
        let mut status = ReplicaStatus::new(
            &self.app.replica_id,
            &self.app.instance,
            &state,
            last.as_ref(),
            self.app.has_gateway,
            self.shared.leader.load(Ordering::Relaxed),
            now(),
        );
        status.canary = self.rollout.canary();
        *self.shared.current() = status.sha.clone();
        let Ok(value) = serde_json::to_string(&status) else {
            return;
        };
        let mut cmd = redis::cmd("SET");
        cmd.arg(
            self.config
                .keys()
                .replica(&self.app.replica_id, &self.app.instance),
        )
        .arg(value)
        .arg("PX")
        .arg(STATUS_TTL.as_millis() as u64);
        let written = self.query::<()>("SET status", &cmd).await.is_some();
        let decisive = (status.sha, status.verified, status.error, status.rejected);
        if written && announce && self.announced.as_ref() != Some(&decisive) {
            let mut cmd = redis::cmd("PUBLISH");
            cmd.arg(self.config.keys().status_changes()).arg(
                self.config
                    .keys()
                    .replica(&self.app.replica_id, &self.app.instance),
            );
            if self
                .query::<i64>("PUBLISH status change", &cmd)
                .await
                .is_some()
            {
                self.announced = Some(decisive);
            }
        }
    }

    async fn leave(&mut self) {
        let mut del = redis::cmd("DEL");
        del.arg(
            self.config
                .keys()
                .replica(&self.app.replica_id, &self.app.instance),
        );
        self.query::<i64>("DEL status", &del).await;
        let mut zrem = redis::cmd("ZREM");
        zrem.arg(self.config.keys().instances(&self.app.replica_id))
            .arg(&self.app.instance);
        self.query::<i64>("ZREM instance", &zrem).await;
        if self.rollout.canary() {
            // Gone now, not a canary TTL from now: the hold goes on with
            // the others, or pauses.
            let mut zrem = redis::cmd("ZREM");
            zrem.arg(self.config.keys().canaries(&our_ref(&self.app)))
                .arg(&self.app.instance);
            self.query::<i64>("ZREM canary", &zrem).await;
        }
        if self.shared.leader.load(Ordering::Relaxed) {
            let mut release = redis::cmd("EVAL");
            release
                .arg(RELEASE_SCRIPT)
                .arg(1)
                .arg(self.config.keys().leader())
                .arg(self.holder());
            self.query::<i64>("release lease", &release).await;
        }
    }

    /// One command on the shared connection, connecting first if needed.
    /// `None` on any failure, which is logged, counted, and drops the
    /// connection so the next call reconnects (after the backoff).
    async fn query<T: redis::FromRedisValue>(
        &mut self,
        action: &'static str,
        cmd: &redis::Cmd,
    ) -> Option<T> {
        if self.con.is_none() {
            if Instant::now() < self.next_connect {
                return None;
            }
            match self.config.connect().await {
                Ok(con) => {
                    if self.failures > 0 {
                        info!(redis = %self.config.shown_url(), "Redis is back");
                    }
                    self.con = Some(con);
                }
                Err(e) => {
                    self.failed(e);
                    return None;
                }
            }
        }
        let con = self.con.as_mut()?;
        match timeout(REDIS_TIMEOUT, cmd.query_async::<T>(con)).await {
            Ok(Ok(value)) => {
                self.failures = 0;
                self.shared.reachable.store(true, Ordering::Relaxed);
                Some(value)
            }
            Ok(Err(e)) => {
                let e = self.config.command_failed(action, &e);
                self.failed(e);
                None
            }
            Err(_) => {
                let e = self
                    .config
                    .unreachable(&format!("{action}: no answer within {REDIS_TIMEOUT:?}"));
                self.failed(e);
                None
            }
        }
    }

    fn failed(&mut self, error: FleetError) {
        self.con = None;
        self.failures += 1;
        self.shared.reachable.store(false, Ordering::Relaxed);
        self.shared.leader.store(false, Ordering::Relaxed);
        self.app.metrics.fleet_leader.set(0);
        self.app.metrics.redis_errors.inc();
        let wait = backoff(self.failures, MAX_RECONNECT);
        self.next_connect = Instant::now() + wait;
        // The first failure is news; the retries after it are noise.
        if self.failures == 1 {
            warn!("{error}; polling Git on our own until it is back");
        } else {
            debug!(retry_in = ?wait, "{error}");
        }
    }
}

/// Our ref as the source names it in `Commit::git_ref`.
fn our_ref(app: &App) -> String {
    app.git_ref.clone().unwrap_or_else(|| "HEAD".to_string())
}

fn remember(shared: &Shared, sha: &str) {
    let mut heard = shared.heard();
    if !heard.iter().any(|s| s == sha) {
        heard.push_front(sha.to_string());
        heard.truncate(HEARD_LEN);
    }
}

/// Pause before a listener that ended is started again, so a task that
/// fails at once does not spin.
const RESTART_DELAY: Duration = Duration::from_secs(1);

/// Runs the task `start` makes for ever: when it ends (a panic, or a
/// return it should never make) it is logged, `restarted` is told how many
/// times that happened so far (metrics, `/healthz`), and it is started
/// again. A listener that died silently would leave the replica deaf to
/// the fleet while every probe said it was fine.
async fn supervise<F, Fut>(start: F, restarted: impl Fn(u32))
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let mut restarts: u32 = 0;
    loop {
        match tokio::spawn(start()).await {
            Err(e) if e.is_panic() => warn!("the fleet notice listener panicked; restarting it"),
            Err(_) => return, // cancelled: the runtime is shutting down
            Ok(()) => warn!("the fleet notice listener ended; restarting it"),
        }
        restarts = restarts.saturating_add(1);
        restarted(restarts);
        sleep(RESTART_DELAY).await;
    }
}

/// Listens on the cluster's channel for ever, reconnecting with backoff.
/// After a lost connection it triggers one sync: notices sent meanwhile
/// were lost with it.
async fn subscribe(
    config: FleetConfig,
    app: Arc<App>,
    shared: Arc<Shared>,
    rollout: Arc<Rollout>,
    git_ref: String,
) {
    let channel = config.keys().commits();
    let mut failures: u32 = 0;
    let mut lost = false;
    loop {
        let subscribed = async {
            let mut pubsub = config.pubsub().await?;
            match timeout(REDIS_TIMEOUT, pubsub.subscribe(&channel)).await {
                Ok(Ok(())) => Ok(pubsub),
                Ok(Err(e)) => Err(config.command_failed("SUBSCRIBE", &e)),
                Err(_) => Err(config.unreachable("SUBSCRIBE: no answer")),
            }
        };
        let pubsub = match subscribed.await {
            Ok(p) => p,
            Err(e) => {
                failures += 1;
                app.metrics.redis_errors.inc();
                if failures == 1 {
                    warn!("fleet notices unavailable: {e}");
                }
                sleep(backoff(failures, MAX_RECONNECT)).await;
                continue;
            }
        };
        if lost || failures > 0 {
            info!("listening for fleet notices again; syncing in case one was missed");
            app.triggers.fire(Trigger::Fleet);
        }
        failures = 0;
        let (mut sink, mut stream) = pubsub.split();
        loop {
            tokio::select! {
                message = stream.next() => match message {
                    Some(m) => on_notice(&app, &shared, &rollout, &git_ref, m.get_payload_bytes()),
                    None => break,
                },
                _ = sleep(SUBSCRIBER_PING) => {
                    // In subscribed mode PING answers an array, not PONG: any
                    // reply proves the connection alive.
                    if !matches!(timeout(REDIS_TIMEOUT, sink.ping::<redis::Value>()).await, Ok(Ok(_))) {
                        break;
                    }
                }
            }
        }
        lost = true;
        failures += 1;
        app.metrics.redis_errors.inc();
        warn!("lost the fleet channel; polling Git on our own until it is back");
        sleep(backoff(failures, MAX_RECONNECT)).await;
    }
}

/// Our own notice, by process: another sidecar with our replica id is
/// another replica. Senders from before instance ids are judged by id.
fn is_own(app: &App, notice: &Notice) -> bool {
    if notice.instance.is_empty() {
        notice.replica == app.replica_id
    } else {
        notice.instance == app.instance
    }
}

fn on_notice(app: &App, shared: &Shared, rollout: &Rollout, git_ref: &str, payload: &[u8]) {
    let notice: Notice = match serde_json::from_slice(payload) {
        Ok(n) => n,
        Err(e) => {
            debug!("ignoring a message that is not a notice: {e}");
            return;
        }
    };
    if is_own(app, &notice) || notice.git_ref != git_ref {
        return;
    }
    // Anyone who can publish on the channel can send anything: only a
    // commit id is a notice.
    let Some(sha) = Sha::parse(&notice.sha) else {
        app.metrics.fleet_refused.inc();
        debug!(value = %printable(&notice.sha), "ignoring a notice whose sha is not a commit id");
        return;
    };
    app.metrics.fleet_notices.inc();
    if notice.release {
        // The rollout task re-reads the record and fires the sync; the
        // notice itself is not trusted to say what was released.
        info!(sha = %sha.short(), by = %printable(&notice.replica), "the canaries released a commit");
        rollout.poke();
        return;
    }
    // Coalesced by sha: a notice heard lately already made its sync.
    if shared.was_heard(sha.as_str()) {
        return;
    }
    remember(shared, sha.as_str());
    if shared.current().as_deref() == Some(sha.as_str()) {
        return;
    }
    info!(sha = %sha.short(), from = %printable(&notice.replica), "fleet notice: syncing");
    // A hint: the sync resolves the ref itself, so a stale or forged
    // notice can only cost one ref listing.
    app.triggers.fire(Trigger::Fleet);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[tokio::test(start_paused = true)]
    async fn a_listener_that_panics_is_started_again_and_counted() {
        let started = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(AtomicU32::new(0));
        let supervisor = {
            let (started, seen) = (started.clone(), seen.clone());
            tokio::spawn(supervise(
                move || {
                    let n = started.fetch_add(1, Ordering::SeqCst);
                    async move {
                        if n < 2 {
                            panic!("listener {n} dies");
                        }
                        std::future::pending::<()>().await;
                    }
                },
                move |restarts| seen.store(restarts, Ordering::SeqCst),
            ))
        };
        for _ in 0..50 {
            if started.load(Ordering::SeqCst) == 3 {
                break;
            }
            sleep(RESTART_DELAY).await;
        }
        assert_eq!(started.load(Ordering::SeqCst), 3);
        assert_eq!(seen.load(Ordering::SeqCst), 2);
        assert!(
            !supervisor.is_finished(),
            "the third listener keeps running"
        );
        supervisor.abort();
    }
}
