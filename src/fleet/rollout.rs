//! Staged rollout: canary replicas (`--canary`) take a new commit first;
//! the others apply it only once every live canary has run it, verified
//! and with its checks green, for `--canary-hold`. One record per ref in
//! Redis says where the rollout stands (`canary`, `holding`, `released`,
//! `failed`); only the Lua scripts below change it, so two replicas never
//! both decide. Releasing writes the fleet's verified key (the commit
//! non-canaries and newcomers start from) and publishes a release notice.
//!
//! Invariants: a non-canary that has seen live canaries applies only a
//! released commit, and keeps doing so while Redis is away (the last gate
//! read stays, in memory and in `<root>/rollout.json` for a restart); the
//! sidecar loop never waits on Redis: it reads the gate
//! from memory, and this module's task keeps it fresh. With no live canary
//! (and no rollout paused by a vanished one) the fleet works as without
//! this feature.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio::time::{Instant, sleep, timeout};
use tracing::{debug, info, warn};

use super::{FleetConfig, REDIS_TIMEOUT, Verified, short};
use crate::live::App;
use crate::sha::printable;
use crate::source::Commit;
use crate::trigger::Trigger;
use crate::trigger::schedule::backoff;

/// A canary that has not reported for this long is not live: the hold
/// goes on with the others, or pauses when none is left. Above a turn's
/// longest (`CHECK_TIMEOUT` plus a Redis call), with room for a slow tick.
pub const CANARY_TTL: Duration = Duration::from_secs(10);
/// How long an unfinished rollout whose canaries all vanished keeps the
/// others waiting. A canary back within it resumes the rollout (its hold
/// starts over); after it, the fleet proceeds as with no canary.
pub const ORPHAN_GRACE: Duration = Duration::from_secs(600);
/// Bound on one `--canary-check` request or gateway health check.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a canary reports; non-canaries read the record every
/// `HEARTBEAT`, and at once on a release notice.
const CANARY_TICK: Duration = Duration::from_secs(1);
/// A non-canary that saw live canaries waits this long without seeing any
/// before it proceeds without them: a restarted canary, or a Redis
/// restarted empty, must not look like a fleet without canaries.
pub const UNGATE_AFTER: Duration = Duration::from_secs(60);
const MAX_RECONNECT: Duration = Duration::from_secs(15);

/// `--canary`, `--canary-hold`, `--canary-check`.
#[derive(Debug, Clone, Default)]
pub struct RolloutConfig {
    pub canary: bool,
    pub hold: Duration,
    /// URLs a canary requests during the hold; each must answer 2xx.
    pub checks: Vec<String>,
    /// The gateway's health check URL, when there is a gateway.
    pub health: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Canaries are applying the commit.
    Canary,
    /// Every live canary runs it; the hold is counting down.
    Holding,
    Released,
    Failed,
}

impl Phase {
    pub const ALL: [Phase; 4] = [
        Phase::Canary,
        Phase::Holding,
        Phase::Released,
        Phase::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Canary => "canary",
            Phase::Holding => "holding",
            Phase::Released => "released",
            Phase::Failed => "failed",
        }
    }

    pub fn in_progress(self) -> bool {
        matches!(self, Phase::Canary | Phase::Holding)
    }
}

/// What a canary last reported, inside the record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanaryEntry {
    pub replica: String,
    pub sha: String,
    /// Redis time (ms) of the report.
    #[serde(deserialize_with = "ms")]
    pub at: u64,
}

/// The rollout of one ref, under `Keys::rollout`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub commit: String,
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub phase: Phase,
    /// Redis time (ms) the phase began.
    #[serde(deserialize_with = "ms")]
    pub since: u64,
    #[serde(deserialize_with = "ms")]
    pub hold_ms: u64,
    /// Redis time (ms) a canary last reported on it.
    #[serde(deserialize_with = "ms")]
    pub seen: u64,
    /// Live canaries by process id (Lua's empty table may come as `[]`).
    #[serde(default, deserialize_with = "entries")]
    pub canaries: BTreeMap<String, CanaryEntry>,
    /// Why it failed.
    #[serde(default)]
    pub reason: Option<String>,
    /// The canary that failed it.
    #[serde(default)]
    pub by: Option<String>,
}

impl Record {
    /// Milliseconds left in the hold at Redis time `now`.
    pub fn hold_left(&self, now: u64) -> Option<u64> {
        (self.phase == Phase::Holding).then(|| (self.since + self.hold_ms).saturating_sub(now))
    }

    /// The canaries' replica ids, sorted.
    pub fn canary_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .canaries
            .values()
            .map(|c| printable(&c.replica))
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// One line for a person.
    pub fn describe(&self, now: u64) -> String {
        let mut line = format!(
            "rollout of {} ({}): {}",
            printable(short(&self.commit)),
            printable(&self.git_ref),
            self.phase.as_str()
        );
        if let Some(left) = self.hold_left(now) {
            line.push_str(&format!(", {}s left of the hold", left.div_ceil(1000)));
        }
        if self.phase == Phase::Failed {
            line.push_str(&format!(
                " on {}: {}",
                printable(self.by.as_deref().unwrap_or("a canary")),
                printable(self.reason.as_deref().unwrap_or("no reason given"))
            ));
        }
        let names = self.canary_names();
        if !names.is_empty() {
            line.push_str(&format!("; canaries: {}", names.join(", ")));
        }
        line
    }
}

/// cjson writes every number as a float: take whole ones.
fn ms<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = f64::deserialize(d)?;
    if v.is_finite() && v >= 0.0 {
        Ok(v as u64)
    } else {
        Err(serde::de::Error::custom("not a time"))
    }
}

fn entries<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, CanaryEntry>, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Array(a) if a.is_empty() => Ok(BTreeMap::new()),
        v => serde_json::from_value(v).map_err(serde::de::Error::custom),
    }
}

/// What one read of Redis says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    pub record: Option<Record>,
    pub live_canaries: usize,
    /// Redis time, ms.
    pub now: u64,
    /// The fleet's released (verified) commit, when it is of our ref.
    pub released: Option<Commit>,
}

/// What the loop decides from: the last view read, kept while Redis is away.
#[derive(Debug, Clone, Default)]
pub struct Gate {
    /// A view was read at least once.
    pub known: bool,
    /// Only released commits may be applied here (for a non-canary).
    pub gated: bool,
    pub released: Option<Commit>,
    /// A commit whose rollout failed: nobody applies it.
    pub failed: Option<String>,
    pub view: View,
}

impl Gate {
    pub fn from_view(view: View) -> Gate {
        let paused = view.record.as_ref().is_some_and(|r| {
            r.phase.in_progress()
                && view.now.saturating_sub(r.seen) < ORPHAN_GRACE.as_millis() as u64
        });
        Gate {
            known: true,
            gated: view.live_canaries > 0 || paused,
            released: view.released.clone(),
            failed: view
                .record
                .as_ref()
                .filter(|r| r.phase == Phase::Failed)
                .map(|r| r.commit.clone()),
            view,
        }
    }

    /// What moves the loop: a change of these is worth a sync. The
    /// released commit only matters while gated (without canaries every
    /// replica verifying a commit rewrites it: no news).
    fn signature(&self) -> (bool, Option<String>, Option<String>) {
        (
            self.gated,
            self.released
                .as_ref()
                .filter(|_| self.gated)
                .map(|c| c.sha.clone()),
            self.failed.clone(),
        )
    }
}

/// Which commit the loop should sync, given the ref's tip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The tip, as without a rollout.
    Tip,
    /// The fleet's released commit (checked against the ref first).
    Released(Commit),
    /// Nothing newer: stay on what runs here.
    Stay,
}

pub fn target(gate: &Gate, canary: bool, tip: &Commit) -> Target {
    let fallback = || match &gate.released {
        Some(r) if r.sha != tip.sha => Target::Released(r.clone()),
        _ => Target::Stay,
    };
    if gate.failed.as_deref() == Some(tip.sha.as_str()) {
        return fallback();
    }
    if canary || !gate.gated {
        return Target::Tip;
    }
    match &gate.released {
        Some(r) if r.sha == tip.sha => Target::Tip,
        Some(r) => Target::Released(r.clone()),
        None => Target::Stay,
    }
}

/// Shared between the loop, the subscriber and the rollout task.
pub struct Rollout {
    pub config: RolloutConfig,
    gate: Mutex<Gate>,
    /// A release notice arrived, or the loop failed a commit: look now.
    poke: Notify,
    /// A commit this canary failed, until the record says so.
    failing: Mutex<Option<(Commit, String)>>,
}

impl Rollout {
    pub fn new(config: RolloutConfig) -> Rollout {
        Rollout {
            config,
            gate: Mutex::new(Gate::default()),
            poke: Notify::new(),
            failing: Mutex::new(None),
        }
    }

    pub fn canary(&self) -> bool {
        self.config.canary
    }

    pub fn gate(&self) -> Gate {
        self.gate.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_gate(&self, gate: Gate) {
        *self.gate.lock().unwrap_or_else(|p| p.into_inner()) = gate;
    }

    /// A release notice: re-read the record now.
    pub fn poke(&self) {
        self.poke.notify_one();
    }

    /// After a sync: a canary that refused a commit, or failed to verify
    /// it, fails its rollout fleet-wide.
    /// This canary refused `commit` (invalid, untrusted, rejected before)
    /// or could not make its gateway load it (rolled back): the fleet
    /// will not apply it. Nothing for a replica that is no canary.
    pub fn refused(&self, commit: Commit, reason: String) {
        if !self.config.canary {
            return;
        }
        self.fail(commit, reason);
    }

    fn fail(&self, commit: Commit, reason: String) {
        let mut gate = self.gate();
        if gate.released.as_ref().is_some_and(|r| r.sha == commit.sha) {
            // A released commit is not taken back by one canary.
            return;
        }
        if gate.failed.as_deref() != Some(commit.sha.as_str()) {
            warn!(sha = %commit.short(), "the canary failed this commit; the fleet will not apply it: {reason}");
        }
        gate.failed = Some(commit.sha.clone());
        self.set_gate(gate);
        *self.failing.lock().unwrap_or_else(|p| p.into_inner()) = Some((commit, reason));
        self.poke.notify_one();
    }
}

/// What this replica may sync instead of `tip`, as the gate says now.
impl Rollout {
    pub fn target(&self, tip: &Commit) -> Target {
        target(&self.gate(), self.canary(), tip)
    }
}

/// A canary reports what it runs (and whether its checks pass); the
/// rollout of that commit starts, holds, releases or fails. Returns what
/// `WATCH_SCRIPT` does.
///
/// KEYS: record, canaries (zset instance → Redis ms), verified, channel.
/// ARGV: instance, replica, ref, sha ('' when nothing verified), ok
/// ('1'/'0'), reason, hold ms, canary TTL ms.
const TICK_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local ttl = tonumber(ARGV[8])
redis.call('ZADD', KEYS[2], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - ttl)
redis.call('PEXPIRE', KEYS[2], ttl)
local live = redis.call('ZRANGE', KEYS[2], 0, -1)
local raw = redis.call('GET', KEYS[1])
local verified = redis.call('GET', KEYS[3])
local function answer()
  return {raw or '', #live, now, verified or ''}
end
local sha = ARGV[4]
if sha == '' then return answer() end
local released = nil
if verified then
  local ok, v = pcall(cjson.decode, verified)
  if ok and type(v) == 'table' and v['ref'] == ARGV[3] then released = v['sha'] end
end
local rec = nil
if raw then
  local ok, r = pcall(cjson.decode, raw)
  if ok and type(r) == 'table' then rec = r end
end
if not rec or rec['commit'] ~= sha then
  if sha == released then return answer() end
  if rec and (rec['phase'] == 'canary' or rec['phase'] == 'holding') and type(rec['canaries']) == 'table' then
    for _, inst in ipairs(live) do
      local e = rec['canaries'][inst]
      if inst ~= ARGV[1] and type(e) == 'table' and e['sha'] == rec['commit'] then
        return answer()
      end
    end
  end
  rec = {commit = sha, ref = ARGV[3], phase = 'canary', since = now,
         hold_ms = tonumber(ARGV[7]), seen = now, canaries = {}}
end
if rec['phase'] ~= 'canary' and rec['phase'] ~= 'holding' then return answer() end
if type(rec['canaries']) ~= 'table' then rec['canaries'] = {} end
if ARGV[5] ~= '1' then
  rec['phase'] = 'failed'
  rec['since'] = now
  rec['reason'] = ARGV[6]
  rec['by'] = ARGV[2]
else
  if now - rec['seen'] > ttl then
    rec['phase'] = 'canary'
    rec['since'] = now
  end
  rec['seen'] = now
  rec['canaries'][ARGV[1]] = {replica = ARGV[2], sha = sha, at = now}
  local alive = {}
  for _, inst in ipairs(live) do alive[inst] = true end
  for inst, _ in pairs(rec['canaries']) do
    if not alive[inst] then rec['canaries'][inst] = nil end
  end
  local all = true
  for _, inst in ipairs(live) do
    local e = rec['canaries'][inst]
    if type(e) ~= 'table' or e['sha'] ~= rec['commit'] then all = false end
  end
  if not all then
    if rec['phase'] == 'holding' then
      rec['phase'] = 'canary'
      rec['since'] = now
    end
  elseif rec['phase'] == 'canary' then
    rec['phase'] = 'holding'
    rec['since'] = now
  elseif now - rec['since'] >= rec['hold_ms'] then
    rec['phase'] = 'released'
    rec['since'] = now
    verified = cjson.encode({sha = rec['commit'], ref = rec['ref'], replica = ARGV[2],
                             at = math.floor(now / 1000)})
    redis.call('SET', KEYS[3], verified)
    redis.call('PUBLISH', KEYS[4], cjson.encode({ref = rec['ref'], sha = rec['commit'],
      replica = ARGV[2], instance = ARGV[1], release = true}))
  end
end
raw = cjson.encode(rec)
redis.call('SET', KEYS[1], raw)
return answer()";

/// A canary failed a commit outside the hold (refused it, or it did not
/// verify): its rollout is failed, unless that commit was released or
/// another commit's rollout is under way.
///
/// KEYS: record, canaries, verified. ARGV: sha, ref, reason, replica, hold ms.
const FAIL_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local raw = redis.call('GET', KEYS[1])
local rec = nil
if raw then
  local ok, r = pcall(cjson.decode, raw)
  if ok and type(r) == 'table' then rec = r end
end
if rec and rec['commit'] == ARGV[1] then
  if rec['phase'] == 'failed' or rec['phase'] == 'released' then return 0 end
elseif rec and (rec['phase'] == 'canary' or rec['phase'] == 'holding') then
  return 0
else
  rec = {commit = ARGV[1], ref = ARGV[2], hold_ms = tonumber(ARGV[5]), canaries = {}}
end
rec['phase'] = 'failed'
rec['since'] = now
rec['seen'] = now
rec['reason'] = ARGV[3]
rec['by'] = ARGV[4]
redis.call('SET', KEYS[1], cjson.encode(rec))
return 1";

/// Everyone: the record, the live canaries, Redis time, the verified key.
/// KEYS: record, canaries, verified. ARGV: canary TTL ms.
const WATCH_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local live = redis.call('ZCOUNT', KEYS[2], now - tonumber(ARGV[1]), '+inf')
return {redis.call('GET', KEYS[1]) or '', live, now, redis.call('GET', KEYS[3]) or ''}";

/// Reads the answer of the scripts above.
pub fn parse_view(answer: (String, i64, i64, String), git_ref: &str) -> View {
    let (record, live, now, verified) = answer;
    let record = (!record.is_empty())
        .then(|| serde_json::from_str::<Record>(&record))
        .and_then(|r| {
            r.map_err(|e| warn!("the rollout record is not one ({e}); ignoring it"))
                .ok()
        });
    let released = serde_json::from_str::<Verified>(&verified)
        .ok()
        .filter(|v| v.git_ref == git_ref)
        .and_then(|v| {
            crate::sha::Sha::parse(&v.sha).map(|sha| Commit {
                sha: sha.into_string(),
                git_ref: v.git_ref,
            })
        });
    View {
        record,
        live_canaries: live.max(0) as usize,
        now: now.max(0) as u64,
        released,
    }
}

/// `<root>/rollout.json`: a non-canary's last gate, so that one restarting
/// while Redis is away still waits for the canaries it last saw.
const SAVED: &str = "rollout.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Saved {
    gated: bool,
    /// The released commit's sha, of our ref.
    released: Option<String>,
}

impl Saved {
    fn of(gate: &Gate) -> Saved {
        Saved {
            gated: gate.gated,
            released: gate.released.as_ref().map(|c| c.sha.clone()),
        }
    }

    /// Written whole (temp file, rename); a failure only costs the memory
    /// of the gate across a restart without Redis.
    fn save(&self, root: &std::path::Path) -> std::io::Result<()> {
        std::fs::create_dir_all(root)?;
        let tmp = root.join("rollout.tmp");
        std::fs::write(&tmp, serde_json::to_vec(self).unwrap_or_default())?;
        std::fs::rename(&tmp, root.join(SAVED))
    }

    fn load(root: &std::path::Path) -> Option<Saved> {
        serde_json::from_slice(&std::fs::read(root.join(SAVED)).ok()?).ok()
    }

    /// The gate it stood for; its released sha is checked like Redis's.
    fn gate(self, git_ref: &str) -> Gate {
        Gate {
            gated: self.gated,
            released: self
                .released
                .as_deref()
                .and_then(crate::sha::Sha::parse)
                .map(|sha| Commit {
                    sha: sha.into_string(),
                    git_ref: git_ref.to_string(),
                }),
            ..Gate::default()
        }
    }
}

/// One read at start, bounded, so the first sync already knows whether
/// canaries hold the fleet back. Redis trouble leaves the gate open (as a
/// lone replica) until the task reads it.
pub async fn load(config: &FleetConfig, rollout: &Rollout, git_ref: &str, root: &std::path::Path) {
    let read = async {
        let mut con = config.connect().await.ok()?;
        watch(config, git_ref).query_async(&mut con).await.ok()
    };
    if let Ok(Some(answer)) = timeout(REDIS_TIMEOUT * 2, read).await {
        let gate = Gate::from_view(parse_view(answer, git_ref));
        if gate.gated && !rollout.canary() {
            info!("canaries are live: this replica applies only the commits they release");
        }
        rollout.set_gate(gate);
        return;
    }
    if rollout.canary() {
        return;
    }
    let root = root.to_path_buf();
    let saved = tokio::task::spawn_blocking(move || Saved::load(&root))
        .await
        .ok()
        .flatten();
    if let Some(saved) = saved.filter(|s| s.gated) {
        warn!(
            released = %saved.released.as_deref().map_or("none", short),
            "Redis is unreachable and canaries were live when we last saw it: applying only the commit they released last"
        );
        rollout.set_gate(saved.gate(git_ref));
    }
}

fn watch(config: &FleetConfig, git_ref: &str) -> redis::Cmd {
    let keys = config.keys();
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(WATCH_SCRIPT)
        .arg(3)
        .arg(keys.rollout(git_ref))
        .arg(keys.canaries(git_ref))
        .arg(keys.verified())
        .arg(CANARY_TTL.as_millis() as u64);
    cmd
}

/// The task: canaries report and check every `CANARY_TICK`; others read
/// every heartbeat or when poked. Redis errors keep the last gate.
pub async fn run(config: FleetConfig, app: Arc<App>, rollout: Arc<Rollout>, git_ref: String) {
    let http = reqwest::Client::builder()
        .timeout(CHECK_TIMEOUT)
        .build()
        .unwrap_or_default();
    let mut con: Option<redis::aio::MultiplexedConnection> = None;
    let mut failures: u32 = 0;
    let mut next_connect = Instant::now();
    let mut last = rollout.gate();
    let mut seen_failed = last.failed.clone();
    let mut canaries_seen = last.gated.then(Instant::now);
    let tick = if rollout.canary() {
        CANARY_TICK
    } else {
        super::HEARTBEAT
    };
    loop {
        tokio::select! {
            _ = sleep(tick) => {}
            _ = rollout.poke.notified() => {}
        }
        if con.is_none() {
            if Instant::now() < next_connect {
                continue;
            }
            match config.connect().await {
                Ok(c) => con = Some(c),
                Err(e) => {
                    failures += 1;
                    next_connect = Instant::now() + backoff(failures, MAX_RECONNECT);
                    debug!("rollout: {e}");
                    continue;
                }
            }
        }
        let Some(c) = con.as_mut() else { continue };
        let answer = if rollout.canary() {
            canary_turn(&config, &app, &rollout, &http, &git_ref, &last, c).await
        } else {
            timeout(
                REDIS_TIMEOUT,
                watch(&config, &git_ref).query_async::<(String, i64, i64, String)>(c),
            )
            .await
            .map_err(|_| None)
            .and_then(|r| r.map_err(Some))
        };
        let view = match answer {
            Ok(answer) => parse_view(answer, &git_ref),
            Err(e) => {
                if let Some(e) = e {
                    debug!("rollout: {}", config.command_failed("rollout", &e));
                }
                con = None;
                failures += 1;
                next_connect = Instant::now() + backoff(failures, MAX_RECONNECT);
                continue;
            }
        };
        failures = 0;
        let mut gate = Gate::from_view(view);
        if gate.gated {
            canaries_seen = Some(Instant::now());
        } else if canaries_seen.is_some_and(|t| t.elapsed() < UNGATE_AFTER) {
            gate.gated = true;
        }
        // Our own failure stands until the record shows it.
        if let Some((commit, _)) = &*rollout.failing.lock().unwrap_or_else(|p| p.into_inner())
            && gate.failed.is_none()
            && gate.released.as_ref().is_none_or(|r| r.sha != commit.sha)
        {
            gate.failed = Some(commit.sha.clone());
        }
        observe(&app, &rollout, &last, &gate, &mut seen_failed);
        // The gate first, then the sync it calls for: that sync must read
        // the new gate.
        rollout.set_gate(gate.clone());
        if gate.signature() != last.signature() {
            app.triggers.fire(Trigger::Fleet);
        }
        let saved = Saved::of(&gate);
        if !rollout.canary() && saved != Saved::of(&last) {
            let root = app.root.clone();
            let written = tokio::task::spawn_blocking(move || saved.save(&root)).await;
            if let Ok(Err(e)) = written {
                warn!("cannot keep the rollout gate in {SAVED}: {e}");
            }
        }
        last = gate;
    }
}

/// A canary's turn: run the checks when it holds the rollout's commit,
/// report, and fail the commit the loop refused, if any.
async fn canary_turn(
    config: &FleetConfig,
    app: &App,
    rollout: &Rollout,
    http: &reqwest::Client,
    git_ref: &str,
    last: &Gate,
    con: &mut redis::aio::MultiplexedConnection,
) -> Result<(String, i64, i64, String), Option<redis::RedisError>> {
    let keys = config.keys();
    let failing = rollout
        .failing
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    if let Some((commit, reason)) = failing {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(FAIL_SCRIPT)
            .arg(3)
            .arg(keys.rollout(&commit.git_ref))
            .arg(keys.canaries(&commit.git_ref))
            .arg(keys.verified())
            .arg(&commit.sha)
            .arg(&commit.git_ref)
            .arg(&reason)
            .arg(&app.replica_id)
            .arg(rollout.config.hold.as_millis() as u64);
        let done = timeout(REDIS_TIMEOUT, cmd.query_async::<i64>(con))
            .await
            .map_err(|_| None)?
            .map_err(Some)?;
        if done == 1 {
            app.metrics.rollout_failures.inc();
        }
        *rollout.failing.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
    let sha = verified_sha(app).await;
    let on_rollout = sha.as_deref().is_some_and(|s| {
        last.view
            .record
            .as_ref()
            .is_none_or(|r| r.commit != s || r.phase.in_progress())
            && last.released.as_ref().is_none_or(|r| r.sha != s)
            && last.failed.as_deref() != Some(s)
    });
    let verdict = if on_rollout {
        check(http, &rollout.config).await
    } else {
        Ok(())
    };
    let (ok, reason) = match &verdict {
        Ok(()) => ("1", String::new()),
        Err(reason) => ("0", reason.clone()),
    };
    if let (Err(reason), Some(s)) = (&verdict, &sha) {
        warn!(sha = %short(s), "canary check failed; failing the rollout: {reason}");
    }
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(TICK_SCRIPT)
        .arg(4)
        .arg(keys.rollout(git_ref))
        .arg(keys.canaries(git_ref))
        .arg(keys.verified())
        .arg(keys.commits())
        .arg(&app.instance)
        .arg(&app.replica_id)
        .arg(git_ref)
        .arg(sha.as_deref().unwrap_or(""))
        .arg(ok)
        .arg(&reason)
        .arg(rollout.config.hold.as_millis() as u64)
        .arg(CANARY_TTL.as_millis() as u64);
    let answer = timeout(REDIS_TIMEOUT, cmd.query_async(con))
        .await
        .map_err(|_| None)?
        .map_err(Some)?;
    if verdict.is_err()
        && let Some(s) = sha
    {
        app.metrics.rollout_failures.inc();
        let mut gate = rollout.gate();
        gate.failed = Some(s);
        rollout.set_gate(gate);
    }
    Ok(answer)
}

/// The commit this replica runs, verified (or written, without a gateway).
/// Read from the live state the loop keeps, not from `state.json`.
async fn verified_sha(app: &App) -> Option<String> {
    let state = app.live().state.clone();
    let current = state.current.as_ref()?;
    (current.verified_at.is_some() || !app.has_gateway).then(|| current.sha.clone())
}

/// The gateway's health check and each `--canary-check`: 2xx in time.
async fn check(http: &reqwest::Client, config: &RolloutConfig) -> Result<(), String> {
    // At once, so a turn lasts at most one CHECK_TIMEOUT however many
    // checks there are, well inside CANARY_TTL.
    let checks = config
        .health
        .iter()
        .map(|u| ("the gateway's health check", u))
        .chain(config.checks.iter().map(|u| ("canary check", u)))
        .map(|(what, url)| async move {
            let shown = crate::source::redact_url(url);
            match http.get(url).send().await {
                Ok(r) if r.status().is_success() => Ok(()),
                Ok(r) => Err(format!("{what} {shown} answered {}", r.status())),
                Err(e) if e.is_timeout() => Err(format!(
                    "{what} {shown}: no answer within {CHECK_TIMEOUT:?}"
                )),
                Err(_) => Err(format!("{what} {shown}: no answer")),
            }
        });
    futures_util::future::join_all(checks)
        .await
        .into_iter()
        .collect()
}

/// Logs, metrics and `/status` for a new view.
fn observe(
    app: &App,
    rollout: &Rollout,
    last: &Gate,
    gate: &Gate,
    seen_failed: &mut Option<String>,
) {
    let record = gate.view.record.as_ref();
    for phase in Phase::ALL {
        let on = record.is_some_and(|r| r.phase == phase);
        app.metrics
            .rollout_phase
            .get_or_create(&crate::metrics::PhaseLabel {
                phase: phase.as_str().to_string(),
            })
            .set(i64::from(on));
    }
    if let Some(r) = record
        && last
            .view
            .record
            .as_ref()
            .is_none_or(|l| (&l.commit, l.phase) != (&r.commit, r.phase))
    {
        info!("{}", r.describe(gate.view.now));
    }
    if gate.failed.is_some() && gate.failed != *seen_failed {
        if !rollout.canary() {
            app.metrics.rollout_failures.inc();
        }
        *seen_failed = gate.failed.clone();
    }
    if !rollout.canary() && (!last.known || gate.gated != last.gated) {
        if gate.gated {
            info!("canaries are live: this replica applies only the commits they release");
        } else {
            info!("no live canary: new commits are applied as they come (no staged rollout)");
        }
    }
    app.live().rollout = Some(serde_json::json!({
        "canary": rollout.canary(),
        "gated": gate.gated,
        "live_canaries": gate.view.live_canaries,
        "released": gate.released.as_ref().map(|c| &c.sha),
        "record": record,
        "hold_left_ms": record.and_then(|r| r.hold_left(gate.view.now)),
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: &str = "1111111111111111111111111111111111111111";
    const X: &str = "2222222222222222222222222222222222222222";

    fn commit(sha: &str) -> Commit {
        Commit {
            sha: sha.into(),
            git_ref: "main".into(),
        }
    }

    fn record(phase: Phase, seen: u64) -> Record {
        Record {
            commit: X.into(),
            git_ref: "main".into(),
            phase,
            since: 1000,
            hold_ms: 3000,
            seen,
            canaries: BTreeMap::new(),
            reason: None,
            by: None,
        }
    }

    fn gate(live: usize, record: Option<Record>, now: u64) -> Gate {
        Gate::from_view(View {
            record,
            live_canaries: live,
            now,
            released: Some(commit(W)),
        })
    }

    #[test]
    fn without_a_live_canary_everyone_takes_the_tip() {
        let g = gate(0, None, 5000);
        assert_eq!(target(&g, false, &commit(X)), Target::Tip);
        assert_eq!(target(&Gate::default(), false, &commit(X)), Target::Tip);
    }

    #[test]
    fn with_live_canaries_the_others_stay_on_the_released_commit() {
        let g = gate(1, Some(record(Phase::Holding, 4000)), 5000);
        assert_eq!(target(&g, false, &commit(X)), Target::Released(commit(W)));
        assert_eq!(target(&g, true, &commit(X)), Target::Tip);
        assert_eq!(target(&g, false, &commit(W)), Target::Tip);
        let mut unreleased = g.clone();
        unreleased.released = None;
        assert_eq!(target(&unreleased, false, &commit(X)), Target::Stay);
    }

    #[test]
    fn a_failed_commit_sends_everyone_back_to_the_released_one() {
        let g = gate(1, Some(record(Phase::Failed, 4000)), 5000);
        assert_eq!(g.failed.as_deref(), Some(X));
        assert_eq!(target(&g, true, &commit(X)), Target::Released(commit(W)));
        let alone = gate(0, Some(record(Phase::Failed, 4000)), 5000);
        assert_eq!(
            target(&alone, false, &commit(X)),
            Target::Released(commit(W))
        );
    }

    #[test]
    fn a_rollout_whose_canaries_vanished_pauses_the_fleet_for_a_while() {
        let seen = 4000;
        let paused = gate(0, Some(record(Phase::Holding, seen)), seen + 1000);
        assert!(paused.gated);
        let later = seen + ORPHAN_GRACE.as_millis() as u64 + 1;
        assert!(!gate(0, Some(record(Phase::Holding, seen)), later).gated);
        assert!(!gate(0, Some(record(Phase::Released, seen)), seen).gated);
    }

    #[test]
    fn the_gate_kept_on_disk_comes_back_gated_on_the_released_commit() {
        let root = tempfile::tempdir().unwrap();
        let held = gate(1, Some(record(Phase::Holding, 4000)), 5000);
        Saved::of(&held).save(root.path()).unwrap();
        let back = Saved::load(root.path()).unwrap().gate("main");
        assert!(back.gated);
        assert_eq!(
            target(&back, false, &commit(X)),
            Target::Released(commit(W))
        );
        std::fs::write(
            root.path().join(SAVED),
            br#"{"gated":true,"released":"not a sha"}"#,
        )
        .unwrap();
        let forged = Saved::load(root.path()).unwrap().gate("main");
        assert_eq!(target(&forged, false, &commit(X)), Target::Stay);
    }

    #[test]
    fn records_read_as_lua_writes_them() {
        let raw = r#"{"commit":"2222222222222222222222222222222222222222","ref":"main","phase":"holding","since":1.764e+12,"hold_ms":3000,"seen":1764000000500,"canaries":[]}"#;
        let view = parse_view((raw.into(), 1, 1_764_000_001_000, String::new()), "main");
        let r = view.record.unwrap();
        assert_eq!(r.since, 1_764_000_000_000);
        assert_eq!(r.hold_left(1_764_000_001_000), Some(2000));
        assert!(r.canaries.is_empty());
        assert_eq!(
            r.describe(1_764_000_001_000),
            "rollout of 222222222222 (main): holding, 2s left of the hold"
        );
    }
}
