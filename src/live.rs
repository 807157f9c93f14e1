//! What the sidecar knows of itself while it runs: the last attempt, readiness,
//! the fleet's view of this process. The loop (`daemon`) writes it after each
//! sync; the HTTP side (`server`, the webhook) and the fleet agent read it.
//! It sits below all of them, so none of them reaches up into the loop.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::json;

use crate::metrics::Metrics;
use crate::state::State;
use crate::trigger::Triggers;

/// The last sync attempt, for `/status`.
#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    pub at: u64,
    pub trigger: &'static str,
    /// `applied`, `noop`, `repaired`, `held` (waiting for the canaries'
    /// first release), `rejected` or `failed`.
    pub result: &'static str,
    pub sha: Option<String>,
    pub error: Option<String>,
    pub duration_ms: u64,
}

/// What the loop shares with the HTTP server.
#[derive(Debug, Default)]
pub struct Live {
    /// Set while a sync runs; `/healthz` fails when it runs far too long.
    pub busy_since: Option<std::time::Instant>,
    pub last_attempt: Option<Attempt>,
    /// A revision was applied (and verified, with a gateway) by this process.
    pub ready: bool,
    /// The commit in `current` as of the last successful sync.
    pub current_sha: Option<String>,
    pub consecutive_failures: u32,
    /// Other live sidecars of the fleet using our replica id (0: unique).
    pub replica_id_clash: u32,
    /// Times the fleet notice listener died and was restarted; shown by
    /// `/healthz`.
    pub fleet_listener_restarts: u32,
    /// The staged rollout as this replica last read it (`fleet::rollout`).
    pub rollout: Option<serde_json::Value>,
}

pub struct App {
    pub metrics: Metrics,
    pub live: Mutex<Live>,
    pub root: PathBuf,
    pub replica_id: String,
    /// This process, in the fleet: replica ids may repeat, this may not.
    pub instance: String,
    /// The repo URL with credentials redacted.
    pub repo: String,
    pub git_ref: Option<String>,
    pub path: Option<String>,
    pub triggers: Triggers,
    /// A sync running longer than this means the loop is stuck.
    pub stuck_after: Duration,
    /// Without a gateway, an applied revision is ready (nothing to verify).
    pub has_gateway: bool,
    /// `POST /webhook`, when a secret is configured.
    pub webhook: Option<crate::trigger::webhook::Webhook>,
    /// What `/status` last read of `state.json`.
    pub status_cache: Arc<Mutex<StatusCache>>,
}

impl App {
    pub fn live(&self) -> std::sync::MutexGuard<'_, Live> {
        // A poisoned lock only means a panic elsewhere; the data is plain.
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The state's part of `/status`, re-read only when `state.json` changed
/// (by its modification time and length): a prober polling `/status`
/// must not cost a parse of the file each time.
#[derive(Debug, Default)]
pub struct StatusCache {
    key: Option<(std::time::SystemTime, u64)>,
    value: Arc<serde_json::Value>,
}

pub fn cached_state(
    root: &std::path::Path,
    cache: &std::sync::Mutex<StatusCache>,
) -> Option<Arc<serde_json::Value>> {
    let key = std::fs::metadata(root.join("state.json"))
        .ok()
        .and_then(|m| Some((m.modified().ok()?, m.len())));
    let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
    if key.is_some() && cache.key == key {
        return Some(cache.value.clone());
    }
    let state = State::load(root).ok().map(|(s, _)| s).unwrap_or_default();
    let value = Arc::new(json!({
        "current": state.current,
        "rejected": state.rejected.values().collect::<Vec<_>>(),
        "history": state.history,
    }));
    *cache = StatusCache {
        key,
        value: value.clone(),
    };
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Rejection;

    #[test]
    fn the_status_cache_follows_every_state_write() {
        let root = tempfile::tempdir().unwrap();
        let cache = std::sync::Mutex::new(StatusCache::default());
        let empty = cached_state(root.path(), &cache).unwrap();
        assert_eq!(empty["rejected"], json!([]));
        let mut state = State::default();
        for n in 0..3 {
            state.reject(Rejection {
                sha: format!("{n:040}"),
                at: n,
                reason: "invalid".into(),
                message: "1 error(s)".into(),
                findings: vec![],
                shape: String::new(),
            });
            state.save(root.path()).unwrap();
            let shown = cached_state(root.path(), &cache).unwrap();
            assert_eq!(shown["rejected"].as_array().unwrap().len() as u64, n + 1);
        }
    }
}
