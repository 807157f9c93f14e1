//! The fleet: replicas of one cluster meeting in the Redis their gateways
//! already share. `agent` is the sidecar's side (notices, status heartbeat,
//! poll lease), `command` the `fleet status` / `fleet wait` readers; this
//! module holds what both agree on: key names, the JSON kept under them and
//! what "converged" means.
//!
//! Invariant: Redis is a hint and a report, never a dependency. Every call
//! is bounded by `REDIS_TIMEOUT`, none runs on the sync path, and a Redis
//! that is down leaves every replica polling Git on its own.
//!
//! Replica ids are names for people and may repeat (the default is the
//! hostname: cloned VMs, host-network pods, one host running three
//! sidecars). Whatever tells processes apart (whose notice, who holds the
//! lease, whose status) uses the per-process `instance` id instead.

pub mod agent;
pub mod command;
pub mod rollout;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::flags::FleetArgs;
use crate::live::Attempt;
use crate::sha::{Sha, printable};
use crate::source::{Commit, redact_url};
use crate::state::State;

pub use agent::FleetHandle;

/// How often a replica rewrites its status and renews its lease.
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// A replica silent for three heartbeats is gone from `fleet status`, and
/// its lease passes to another.
pub const STATUS_TTL: Duration = Duration::from_secs(6);
pub const LEASE_TTL: Duration = Duration::from_secs(6);

/// Bound on connecting and on one command. Redis sits next to the
/// gateways; a slower answer means it is down, and polling covers for it.
pub const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("{0}")]
    Usage(String),
    #[error("cannot reach Redis at {url}: {message}")]
    Unreachable { url: String, message: String },
    #[error("Redis at {url}: {action} failed: {message}")]
    Command {
        url: String,
        action: &'static str,
        message: String,
    },
}

/// Where the fleet meets. The URL may hold a password: `Debug` and every
/// message show it redacted.
#[derive(Clone)]
pub struct FleetConfig {
    url: String,
    pub cluster: String,
}

impl std::fmt::Debug for FleetConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetConfig")
            .field("url", &self.shown_url())
            .field("cluster", &self.cluster)
            .finish()
    }
}

impl FleetConfig {
    /// `None` without `--redis`: a replica on its own.
    pub fn from_args(args: &FleetArgs) -> Result<Option<FleetConfig>, FleetError> {
        let Some(url) = args.redis.as_deref().filter(|u| !u.trim().is_empty()) else {
            return Ok(None);
        };
        FleetConfig::new(url, &args.cluster).map(Some)
    }

    pub fn new(url: &str, cluster: &str) -> Result<FleetConfig, FleetError> {
        // The name goes into key names and a SCAN pattern: no glob or
        // separator characters.
        let valid = !cluster.is_empty()
            && cluster
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid {
            return Err(FleetError::Usage(format!(
                "--cluster {cluster:?}: use letters, digits, '-', '_' or '.'"
            )));
        }
        let config = FleetConfig {
            url: url.to_string(),
            cluster: cluster.to_string(),
        };
        config.client()?;
        Ok(config)
    }

    pub fn keys(&self) -> Keys {
        Keys {
            cluster: self.cluster.clone(),
        }
    }

    pub fn shown_url(&self) -> String {
        redact_url(&self.url)
    }

    fn client(&self) -> Result<redis::Client, FleetError> {
        redis::Client::open(self.url.as_str()).map_err(|e| {
            FleetError::Usage(format!(
                "--redis {}: {}",
                self.shown_url(),
                self.scrub(&e.to_string())
            ))
        })
    }

    /// A multiplexed connection whose every command times out quickly.
    pub async fn connect(&self) -> Result<redis::aio::MultiplexedConnection, FleetError> {
        let client = self.client()?;
        let options = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT));
        let connecting = client.get_multiplexed_async_connection_with_config(&options);
        match tokio::time::timeout(REDIS_TIMEOUT * 2, connecting).await {
            Ok(Ok(con)) => Ok(con),
            Ok(Err(e)) => Err(self.unreachable(&e.to_string())),
            Err(_) => Err(self.unreachable(&format!("no answer within {REDIS_TIMEOUT:?}"))),
        }
    }

    /// A dedicated connection for SUBSCRIBE.
    async fn pubsub(&self) -> Result<redis::aio::PubSub, FleetError> {
        let client = self.client()?;
        match tokio::time::timeout(REDIS_TIMEOUT, client.get_async_pubsub()).await {
            Ok(Ok(p)) => Ok(p),
            Ok(Err(e)) => Err(self.unreachable(&e.to_string())),
            Err(_) => Err(self.unreachable(&format!("no answer within {REDIS_TIMEOUT:?}"))),
        }
    }

    fn unreachable(&self, message: &str) -> FleetError {
        FleetError::Unreachable {
            url: self.shown_url(),
            message: self.scrub(message),
        }
    }

    fn command_failed(&self, action: &'static str, e: &redis::RedisError) -> FleetError {
        FleetError::Command {
            url: self.shown_url(),
            action,
            message: self.scrub(&e.to_string()),
        }
    }

    /// Driver messages do not quote the URL today; this keeps the password
    /// out of logs should one ever echo it.
    fn scrub(&self, message: &str) -> String {
        let password = url::Url::parse(&self.url)
            .ok()
            .and_then(|u| u.password().map(str::to_string))
            .filter(|p| !p.is_empty());
        let message = message.replace(&self.url, &self.shown_url());
        match password {
            Some(p) => message.replace(&p, "***"),
            None => message,
        }
    }
}

/// The names under `tyk-gitops:<cluster>:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    cluster: String,
}

impl Keys {
    fn key(&self, rest: &str) -> String {
        format!("tyk-gitops:{}:{rest}", self.cluster)
    }
    /// The channel on which `Notice`s travel.
    pub fn commits(&self) -> String {
        self.key("commits")
    }
    /// One sidecar's `ReplicaStatus`, with a TTL: per process, so two
    /// sidecars sharing a replica id are both listed.
    pub fn replica(&self, id: &str, instance: &str) -> String {
        self.key(&format!("replica:{id}:{instance}"))
    }
    pub fn replica_pattern(&self) -> String {
        self.key("replica:*")
    }
    /// The channel on which a replica says its status changed after a
    /// sync (the payload is its status key): `fleet wait` looks again at
    /// once instead of at its next poll.
    pub fn status_changes(&self) -> String {
        self.key("status-changes")
    }
    /// The last commit a replica verified: the one newcomers start on.
    pub fn verified(&self) -> String {
        self.key("verified")
    }
    /// The tip of `git_ref` as a replica last listed it (`Tip`), with a
    /// TTL of a few poll periods: while it lives, followers need not poll.
    pub fn tip(&self, git_ref: &str) -> String {
        self.key(&format!("tip:{git_ref}"))
    }
    /// The poll lease: `<replica id>/<instance>` of its holder, with a TTL.
    pub fn leader(&self) -> String {
        self.key("leader")
    }
    /// The live processes using one replica id: a sorted set of instances
    /// by last heartbeat (Redis time, ms), so a clash shows.
    pub fn instances(&self, id: &str) -> String {
        self.key(&format!("instances:{id}"))
    }
    /// The staged rollout of one ref (`rollout::Record`).
    pub fn rollout(&self, git_ref: &str) -> String {
        self.key(&format!("rollout:{git_ref}"))
    }
    pub fn rollout_pattern(&self) -> String {
        self.key("rollout:*")
    }
    /// The live canaries of one ref: a sorted set of instances by last
    /// report (Redis time, ms). Per ref, like the record: a canary of
    /// another ref does not hold ours back.
    pub fn canaries(&self, git_ref: &str) -> String {
        self.key(&format!("canaries:{git_ref}"))
    }
}

/// "A replica learnt of this commit": published on `Keys::commits`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub sha: String,
    /// Who sent it, for people.
    #[serde(default)]
    pub replica: String,
    /// The sending process, so a sidecar ignores its own notices and only
    /// those (empty from versions before it: then `replica` decides).
    #[serde(default)]
    pub instance: String,
    /// Sent by a canary's rollout script: the commit is released, every
    /// replica may apply it (each re-reads the record; this only wakes them).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub release: bool,
}

/// A new process's id: random, so sidecars sharing a replica id differ.
pub fn new_instance_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// The lease holder's value in Redis.
pub fn lease_holder(replica: &str, instance: &str) -> String {
    format!("{replica}/{instance}")
}

/// The replica id in a lease holder's value (older versions wrote the id
/// alone).
pub fn lease_replica(holder: &str) -> &str {
    holder
        .rsplit_once('/')
        .map_or(holder, |(replica, _)| replica)
}

/// The value of `Keys::verified`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verified {
    pub sha: String,
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub replica: String,
    pub at: u64,
}

/// The value of `Keys::tip`: what a replica's listing of the ref found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tip {
    pub sha: String,
    pub replica: String,
    pub at: u64,
}

/// One replica's report, kept under `Keys::replica` while it lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaStatus {
    pub replica: String,
    /// The process: two sidecars may share a replica id.
    #[serde(default)]
    pub instance: String,
    /// The commit in `current`, if any.
    pub sha: Option<String>,
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
    /// The gateway was seen running exactly `sha`; a replica without a
    /// gateway (`--reload none`) counts as verified once `sha` is written.
    pub verified: bool,
    pub apis: usize,
    pub policies: usize,
    /// The last attempt's error, when it failed or was rejected.
    pub error: Option<String>,
    /// Seconds since the Unix epoch.
    pub updated_at: u64,
    /// Commits this replica refused (invalid, or failed to verify).
    #[serde(default)]
    pub rejected: Vec<String>,
    /// Holds the poll lease.
    #[serde(default)]
    pub leader: bool,
    /// Takes new commits first (`--canary`).
    #[serde(default)]
    pub canary: bool,
}

impl ReplicaStatus {
    /// What `state.json` and the loop's last attempt say.
    pub fn new(
        replica: &str,
        instance: &str,
        state: &State,
        last: Option<&Attempt>,
        has_gateway: bool,
        leader: bool,
        now: u64,
    ) -> ReplicaStatus {
        let current = state.current.as_ref();
        let mut rejected: Vec<(u64, String)> = state
            .rejected
            .values()
            .map(|r| (r.at, r.sha.clone()))
            .collect();
        rejected.sort();
        ReplicaStatus {
            replica: replica.to_string(),
            instance: instance.to_string(),
            sha: current.map(|c| c.sha.clone()),
            git_ref: current.map(|c| c.git_ref.clone()),
            verified: current.is_some_and(|c| c.verified_at.is_some() || !has_gateway),
            apis: current.map_or(0, |c| c.apis),
            policies: current.map_or(0, |c| c.policies),
            error: last
                .filter(|a| matches!(a.result, "failed" | "rejected"))
                .and_then(|a| a.error.clone()),
            updated_at: now,
            rejected: rejected.into_iter().rev().map(|(_, sha)| sha).collect(),
            leader,
            canary: false,
        }
    }

    fn is_on(&self, sha: &str) -> bool {
        self.sha.as_deref().is_some_and(|s| same_sha(s, sha))
    }

    /// One line for a person: who, on what, and what went wrong.
    pub fn describe(&self) -> String {
        let mut line = format!(
            "{}: on {}{}",
            printable(&self.replica),
            self.sha.as_deref().map_or("nothing yet", short),
            if self.sha.is_none() {
                ""
            } else if self.verified {
                " (verified)"
            } else {
                " (not verified)"
            }
        );
        if self.canary {
            line.push_str(" [canary]");
        }
        if let Some(e) = &self.error {
            line.push_str(&format!("; last error: {}", printable(e)));
        }
        line
    }
}

/// Replica ids that more than one live sidecar uses, sorted.
pub fn duplicate_ids(replicas: &[ReplicaStatus]) -> Vec<&str> {
    let mut ids: Vec<&str> = replicas.iter().map(|r| r.replica.as_str()).collect();
    ids.sort_unstable();
    let mut dups: Vec<&str> = ids
        .windows(2)
        .filter(|w| w[0] == w[1])
        .map(|w| w[0])
        .collect();
    dups.dedup();
    dups
}

/// A sha given by a person may be abbreviated (at least 7 digits).
pub fn same_sha(full: &str, given: &str) -> bool {
    let given = given.trim().to_ascii_lowercase();
    given.len() >= 7 && full.to_ascii_lowercase().starts_with(&given)
}

pub use crate::sha::short;

/// The sha every live replica has verified, if they agree (and there is one).
pub fn converged(replicas: &[ReplicaStatus]) -> Option<&str> {
    let first = replicas.first()?.sha.as_deref()?;
    replicas
        .iter()
        .all(|r| r.verified && r.sha.as_deref() == Some(first))
        .then_some(first)
}

/// Where `fleet wait --sha` stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Every live replica (at least the minimum) verified the commit.
    Done,
    /// A replica refused the commit: waiting longer will not help.
    Rejected(ReplicaStatus),
    /// Still waiting: the replicas not there yet, and how many are live.
    Waiting {
        laggards: Vec<ReplicaStatus>,
        live: usize,
    },
}

pub fn progress(replicas: &[ReplicaStatus], sha: &str, min_replicas: usize) -> Progress {
    if let Some(r) = replicas
        .iter()
        .find(|r| r.rejected.iter().any(|x| same_sha(x, sha)))
    {
        return Progress::Rejected(r.clone());
    }
    let laggards: Vec<ReplicaStatus> = replicas
        .iter()
        .filter(|r| !(r.is_on(sha) && r.verified))
        .cloned()
        .collect();
    if laggards.is_empty() && replicas.len() >= min_replicas.max(1) {
        Progress::Done
    } else {
        Progress::Waiting {
            laggards,
            live: replicas.len(),
        }
    }
}

/// The commit a replica joining the fleet would like to start on: the
/// fleet's verified sha when it was verified for our ref. Only a hint:
/// the reconciler takes it only when it is the ref's tip or an ancestor
/// of it (`Reconciler::vouch`), since anyone who can write to Redis can
/// write this key. Any Redis trouble, or a value that is not a commit id,
/// means `None` (the normal resolve), never a failed start.
pub async fn joining_commit(config: &FleetConfig, git_ref: &str) -> Option<Commit> {
    let fetched = async {
        let mut con = config.connect().await?;
        redis::cmd("GET")
            .arg(config.keys().verified())
            .query_async::<Option<String>>(&mut con)
            .await
            .map_err(|e| config.command_failed("GET verified", &e))
    };
    let raw = match fetched.await {
        Ok(Some(raw)) => raw,
        Ok(None) => return None,
        Err(e) => {
            warn!("{e}; resolving the ref instead of starting on the fleet's commit");
            return None;
        }
    };
    match serde_json::from_str::<Verified>(&raw) {
        Ok(v) if v.git_ref == git_ref => match Sha::parse(&v.sha) {
            Some(sha) => {
                info!(sha = %sha.short(), by = %printable(&v.replica), "the fleet verified a commit; checking it is on our ref");
                Some(Commit {
                    sha: sha.into_string(),
                    git_ref: v.git_ref,
                })
            }
            None => {
                warn!(
                    value = %printable(&v.sha),
                    "{}: not a commit id; resolving the ref instead",
                    config.keys().verified()
                );
                None
            }
        },
        Ok(v) => {
            info!(fleet_ref = %printable(&v.git_ref), "the fleet's verified commit is of another ref; resolving ours");
            None
        }
        Err(e) => {
            warn!(
                "{}: not a verified commit ({e}); ignoring it",
                config.keys().verified()
            );
            None
        }
    }
}

/// An entry under `replica:*` that is not counted as a replica, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ignored {
    /// The key, control characters removed.
    pub key: String,
    pub reason: String,
}

/// What `fleet status` and `fleet wait` read: the replicas they trust, and
/// the entries they do not.
#[derive(Debug, Default)]
pub struct Statuses {
    pub replicas: Vec<ReplicaStatus>,
    pub ignored: Vec<Ignored>,
}

/// Why an entry is not trusted as a replica's status, if it is not.
/// Replicas write their status under their own id and instance with a TTL of
/// `STATUS_TTL`, with commit ids only; an entry that does not look
/// like that was not written by a replica (or was tampered with), and
/// counting it would let it hold up or falsely complete `fleet wait`.
pub fn distrust(key: &str, own_key: &str, status: &ReplicaStatus, ttl_ms: i64) -> Option<String> {
    if key != own_key {
        return Some(format!(
            "names replica {:?} (process {:?}), not the one in its key",
            printable(&status.replica),
            printable(&status.instance)
        ));
    }
    if status
        .sha
        .as_deref()
        .is_some_and(|s| Sha::parse(s).is_none())
    {
        return Some("its sha is not a commit id".into());
    }
    if status.rejected.iter().any(|s| Sha::parse(s).is_none()) {
        return Some("a rejected sha is not a commit id".into());
    }
    // -1: no expiry. A replica's status always has one, and at most
    // STATUS_TTL (a second of slack for the clock of the PTTL call).
    let max = STATUS_TTL.as_millis() as i64 + 1000;
    if ttl_ms < 0 {
        return Some("it never expires; a replica's status always does".into());
    }
    if ttl_ms > max {
        return Some(format!(
            "it expires in {} s; a replica's status expires within {} s",
            ttl_ms / 1000,
            STATUS_TTL.as_secs()
        ));
    }
    None
}

/// Every live replica's status, sorted by id, and the entries not trusted
/// as one (see `distrust`), with the reason.
pub async fn read_statuses(
    config: &FleetConfig,
    con: &mut redis::aio::MultiplexedConnection,
) -> Result<Statuses, FleetError> {
    let pattern = config.keys().replica_pattern();
    let mut keys: Vec<String> = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(500)
            .query_async(con)
            .await
            .map_err(|e| config.command_failed("SCAN", &e))?;
        keys.extend(batch);
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    keys.sort();
    keys.dedup();
    let mut out = Statuses::default();
    if keys.is_empty() {
        return Ok(out);
    }
    let values: Vec<Option<String>> = redis::cmd("MGET")
        .arg(&keys)
        .query_async(con)
        .await
        .map_err(|e| config.command_failed("MGET", &e))?;
    let mut ttls = redis::pipe();
    for key in &keys {
        ttls.cmd("PTTL").arg(key);
    }
    let ttls: Vec<i64> = ttls
        .query_async(con)
        .await
        .map_err(|e| config.command_failed("PTTL", &e))?;
    // A key may expire between SCAN and MGET: `None` is a replica gone.
    for ((key, value), ttl) in keys.iter().zip(values).zip(ttls) {
        let Some(value) = value else { continue };
        let reason = match serde_json::from_str::<ReplicaStatus>(&value) {
            Ok(s) => match distrust(
                key,
                &config.keys().replica(&s.replica, &s.instance),
                &s,
                ttl,
            ) {
                None => {
                    out.replicas.push(s);
                    continue;
                }
                Some(reason) => reason,
            },
            Err(e) => format!("not a replica status ({e})"),
        };
        let key = printable(key);
        warn!("{key}: {reason}; not counted");
        out.ignored.push(Ignored { key, reason });
    }
    out.replicas
        .sort_by(|a, b| (&a.replica, &a.instance).cmp(&(&b.replica, &b.instance)));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Applied, Rejection};

    fn status(id: &str, sha: Option<&str>, verified: bool) -> ReplicaStatus {
        ReplicaStatus {
            replica: id.into(),
            instance: format!("{id}-1"),
            sha: sha.map(str::to_string),
            git_ref: Some("main".into()),
            verified,
            apis: 1,
            policies: 1,
            error: None,
            updated_at: 1,
            rejected: vec![],
            leader: false,
            canary: false,
        }
    }

    fn applied(git_ref: &str, verified_at: Option<u64>) -> Applied {
        Applied {
            sha: A.into(),
            git_ref: git_ref.into(),
            revision: "r".into(),
            applied_at: 1,
            verified_at,
            apis: 3,
            policies: 2,
            shape: String::new(),
        }
    }

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn key_names_live_under_the_cluster() {
        let keys = FleetConfig::new("redis://127.0.0.1:6379", "prod-eu.1")
            .unwrap()
            .keys();
        assert_eq!(keys.commits(), "tyk-gitops:prod-eu.1:commits");
        assert_eq!(
            keys.replica("gw-0", "7f"),
            "tyk-gitops:prod-eu.1:replica:gw-0:7f"
        );
        assert_eq!(
            keys.instances("gw-0"),
            "tyk-gitops:prod-eu.1:instances:gw-0"
        );
        assert_eq!(keys.replica_pattern(), "tyk-gitops:prod-eu.1:replica:*");
        assert_eq!(keys.verified(), "tyk-gitops:prod-eu.1:verified");
        assert_eq!(keys.leader(), "tyk-gitops:prod-eu.1:leader");
        assert_eq!(keys.rollout("main"), "tyk-gitops:prod-eu.1:rollout:main");
        assert_eq!(keys.canaries("main"), "tyk-gitops:prod-eu.1:canaries:main");
    }

    #[test]
    fn cluster_names_with_glob_or_separator_characters_are_refused() {
        for bad in ["", "a*", "a:b", "a b", "[x]"] {
            assert!(FleetConfig::new("redis://h", bad).is_err(), "{bad:?}");
        }
        assert!(FleetConfig::new("not a url", "ok").is_err());
    }

    #[test]
    fn the_redis_password_never_shows() {
        let c = FleetConfig::new("redis://:hunter2@10.0.0.1:6379/0", "default").unwrap();
        assert_eq!(c.shown_url(), "redis://:***@10.0.0.1:6379/0");
        assert!(!format!("{c:?}").contains("hunter2"));
        let e = c.unreachable("auth failed for hunter2 at redis://:hunter2@10.0.0.1:6379/0");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let args = FleetArgs {
            redis: Some("redis://u:hunter2@h".into()),
            cluster: "c".into(),
        };
        assert!(!format!("{args:?}").contains("hunter2"));
    }

    #[test]
    fn status_json_has_the_documented_fields() {
        let mut state = State {
            current: Some(applied("main", Some(2))),
            ..State::default()
        };
        for (at, sha) in [(5, B), (9, "cccccccccccccccccccccccccccccccccccccccc")] {
            state.reject(Rejection {
                sha: sha.into(),
                at,
                reason: "invalid".into(),
                message: "1 error(s)".into(),
                findings: vec![],
                shape: String::new(),
            });
        }
        let last = Attempt {
            at: 9,
            trigger: "poll",
            result: "rejected",
            sha: None,
            error: Some("commit ccc is invalid".into()),
            duration_ms: 1,
        };
        let s = ReplicaStatus::new("gw-0", "7f", &state, Some(&last), true, true, 42);
        let json: serde_json::Value = serde_json::to_value(&s).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "replica": "gw-0", "instance": "7f", "sha": A, "ref": "main", "verified": true,
                "apis": 3, "policies": 2, "error": "commit ccc is invalid",
                "updated_at": 42,
                "rejected": ["cccccccccccccccccccccccccccccccccccccccc", B],
                "leader": true, "canary": false,
            })
        );
        let back: ReplicaStatus = serde_json::from_value(json).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn without_a_gateway_a_written_commit_counts_as_verified() {
        let mut state = State::default();
        assert!(!ReplicaStatus::new("r", "i", &state, None, false, false, 0).verified);
        state.current = Some(applied("HEAD", None));
        assert!(ReplicaStatus::new("r", "i", &state, None, false, false, 0).verified);
        assert!(!ReplicaStatus::new("r", "i", &state, None, true, false, 0).verified);
    }

    #[test]
    fn converged_needs_one_verified_sha_everywhere() {
        assert_eq!(converged(&[]), None);
        let both = [status("a", Some(A), true), status("b", Some(A), true)];
        assert_eq!(converged(&both), Some(A));
        let split = [status("a", Some(A), true), status("b", Some(B), true)];
        assert_eq!(converged(&split), None);
        let unverified = [status("a", Some(A), true), status("b", Some(A), false)];
        assert_eq!(converged(&unverified), None);
        assert_eq!(converged(&[status("a", None, false)]), None);
    }

    #[test]
    fn wait_names_laggards_and_stops_at_a_rejection() {
        let mut behind = status("gw-1", Some(A), true);
        behind.error = Some("cannot reach the gateway".into());
        let replicas = [status("gw-0", Some(B), true), behind.clone()];
        match progress(&replicas, &B[..7], 1) {
            Progress::Waiting { laggards, live } => {
                assert_eq!(live, 2);
                assert_eq!(laggards, vec![behind.clone()]);
                assert_eq!(
                    laggards[0].describe(),
                    "gw-1: on aaaaaaaaaaaa (verified); last error: cannot reach the gateway"
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(progress(&replicas[..1], B, 1), Progress::Done);
        assert!(matches!(
            progress(&replicas[..1], B, 2),
            Progress::Waiting { live: 1, .. }
        ));
        assert!(matches!(progress(&[], B, 0), Progress::Waiting { .. }));
        let mut refusing = status("gw-2", Some(A), true);
        refusing.rejected = vec![B.into()];
        assert_eq!(
            progress(&[replicas[0].clone(), refusing.clone()], B, 1),
            Progress::Rejected(refusing)
        );
        assert_eq!(
            status("gw-3", None, false).describe(),
            "gw-3: on nothing yet"
        );
    }

    #[test]
    fn a_replica_id_used_by_two_sidecars_is_a_duplicate() {
        let mut twin = status("gw-1", Some(A), true);
        twin.instance = "gw-1-2".into();
        let replicas = [
            status("gw-0", Some(A), true),
            status("gw-1", Some(A), true),
            twin,
            status("gw-2", Some(A), true),
        ];
        assert_eq!(duplicate_ids(&replicas), ["gw-1"]);
        assert!(duplicate_ids(&replicas[..2]).is_empty());
        // Both are counted: convergence needs each of them.
        let mut behind = replicas.clone();
        behind[2].sha = Some(B.into());
        assert_eq!(converged(&behind), None);
    }

    #[test]
    fn lease_holders_name_replica_and_process() {
        assert_eq!(lease_holder("gw-0", "7f"), "gw-0/7f");
        assert_eq!(lease_replica("gw-0/7f"), "gw-0");
        assert_eq!(lease_replica("a/b/7f"), "a/b");
        assert_eq!(lease_replica("gw-0"), "gw-0");
        assert_ne!(new_instance_id(), new_instance_id());
    }

    #[test]
    fn abbreviated_shas_match_from_seven_digits() {
        assert!(same_sha(A, "AAAAAAA"));
        assert!(!same_sha(A, "aaaaaa"));
        assert!(!same_sha(A, B));
    }
}
