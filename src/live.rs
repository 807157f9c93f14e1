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
    /// `state.json` as the reconciler last wrote it (read once at start):
    /// `/status`, the metrics and the fleet report it from here, never
    /// from the file.
    pub state: Arc<State>,
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
    pub status_cache: Mutex<StatusCache>,
}

impl App {
    pub fn live(&self) -> std::sync::MutexGuard<'_, Live> {
        // A poisoned lock only means a panic elsewhere; the data is plain.
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The state's part of `/status`, built again only when the reconciler
/// wrote a new state: a prober polling `/status` must not cost a
/// serialisation of fifty rejections each time.
#[derive(Debug, Default)]
pub struct StatusCache {
    key: Option<Arc<State>>,
    value: Arc<serde_json::Value>,
}

impl StatusCache {
    /// `current`, `rejected` and `history` of `state`, as JSON.
    pub fn view(&mut self, state: Arc<State>) -> Arc<serde_json::Value> {
        if self.key.as_ref().is_some_and(|k| Arc::ptr_eq(k, &state)) {
            return self.value.clone();
        }
        let value = Arc::new(json!({
            "current": state.current,
            "rejected": state.rejected.values().collect::<Vec<_>>(),
            "history": state.history,
        }));
        *self = StatusCache {
            key: Some(state),
            value: value.clone(),
        };
        value
    }
}

impl App {
    /// The state's part of `/status`.
    pub fn state_view(&self) -> Arc<serde_json::Value> {
        let state = self.live().state.clone();
        self.status_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .view(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Rejection;

    #[test]
    fn the_status_view_follows_every_new_state() {
        let mut cache = StatusCache::default();
        let mut state = State::default();
        let empty = cache.view(Arc::new(state.clone()));
        assert_eq!(empty["rejected"], json!([]));
        for n in 0..3 {
            state.reject(Rejection::new(
                &format!("{n:040}"),
                "invalid",
                "1 error(s)".into(),
            ));
            let shared = Arc::new(state.clone());
            let shown = cache.view(shared.clone());
            assert_eq!(shown["rejected"].as_array().unwrap().len() as u64, n + 1);
            // The same state again is the same answer, not a new one.
            assert!(Arc::ptr_eq(&shown, &cache.view(shared)));
        }
    }
}
