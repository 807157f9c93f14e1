//! `<root>/state.json`: what was applied and verified, the recent history,
//! and the commits refused (so a rejected sha is not retried until a new
//! commit arrives). Written atomically: temp file, fsync, rename.
//!
//! The `current` symlink, not this file, is the truth for what the gateway
//! reads; a lost or corrupt state only costs one extra sync.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

const FILE: &str = "state.json";
/// Not `.json`: nothing should ever mistake a half-written state for one.
const TMP: &str = ".state.tmp";
const HISTORY_LEN: usize = 20;
const REJECTED_LEN: usize = 20;
/// Findings kept per rejected commit.
pub const MAX_KEPT_FINDINGS: usize = 50;

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

/// The revision in `current` and what we know of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub sha: String,
    pub git_ref: String,
    /// Directory name under `revisions/`.
    pub revision: String,
    /// Seconds since the Unix epoch.
    pub applied_at: u64,
    /// When the gateway last reported exactly this revision's ids; `None`
    /// when no gateway was asked (init container) or it has not yet.
    pub verified_at: Option<u64>,
    pub apis: usize,
    pub policies: usize,
    /// What shaped the revision besides the commit (`--path`,
    /// `--gateway-root`): the same commit under other flags is another
    /// revision.
    #[serde(default)]
    pub shape: String,
}

/// Why a commit is not applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rejection {
    pub sha: String,
    pub at: u64,
    /// `invalid` (validation findings), `untrusted-signature`, `empty` (it would leave the gateway
    /// without APIs) or `verify-failed` (the gateway did not load what the
    /// commit holds; rolled back).
    pub reason: String,
    pub message: String,
    /// The validation findings, as `tyk-gitops validate --format json`
    /// prints them, kept for `/status` and for a rerun of `sync`.
    #[serde(default)]
    pub findings: Vec<serde_json::Value>,
    /// For `empty` rejections (`empty-config-root`, `no-apis`): the flags
    /// that shaped the refused bundle (`--path` ...). The same commit under
    /// another `--path` is another bundle, so the rejection does not hold
    /// for it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub shape: String,
}

impl Rejection {
    /// `reason` of a commit refused only because it would leave the
    /// gateway without APIs; `--allow-empty` lifts it.
    pub const EMPTY: &str = "empty";

    /// A rejection of `sha` now, without findings (add them with
    /// `findings`) and holding whatever the flags (`shape`).
    pub fn new(sha: &str, reason: &str, message: String) -> Rejection {
        Rejection {
            sha: sha.to_string(),
            at: now(),
            reason: reason.to_string(),
            message,
            findings: Vec::new(),
            shape: String::new(),
        }
    }

    pub fn with_findings(mut self, findings: Vec<serde_json::Value>) -> Rejection {
        self.findings = findings;
        self
    }

    /// Whether this rejection still refuses the commit for a sync shaped by
    /// `shape` and allowing empty bundles or not.
    pub fn holds(&self, shape: &str, allow_empty: bool) -> bool {
        self.reason != Rejection::EMPTY || (!allow_empty && self.shape == shape)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub sha: String,
    pub revision: String,
    pub at: u64,
    pub result: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub current: Option<Applied>,
    #[serde(default)]
    pub history: Vec<HistoryEntry>,
    #[serde(default)]
    pub rejected: BTreeMap<String, Rejection>,
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl State {
    /// Loads the state, or an empty one when the file is missing. A corrupt
    /// file is reported to the caller's log and treated as empty: the
    /// `current` link still says what is served.
    pub fn load(root: &Path) -> Result<(State, Option<String>), StateError> {
        let path = root.join(FILE);
        match fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(state) => Ok((state, None)),
                Err(e) => Ok((
                    State::default(),
                    Some(format!(
                        "{} is corrupt ({e}); starting afresh",
                        path.display()
                    )),
                )),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok((State::default(), None)),
            Err(source) => Err(StateError::Io {
                action: "read",
                path,
                source,
            }),
        }
    }

    pub fn save(&self, root: &Path) -> Result<(), StateError> {
        let tmp = root.join(TMP);
        let path = root.join(FILE);
        let io = |action, path: &Path| {
            let path = path.to_path_buf();
            move |source| StateError::Io {
                action,
                path,
                source,
            }
        };
        // Serialising plain data to a Vec cannot fail.
        let bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        let mut f = File::create(&tmp).map_err(io("create", &tmp))?;
        f.write_all(&bytes).map_err(io("write", &tmp))?;
        f.sync_all().map_err(io("sync", &tmp))?;
        // Crash-test hook (feature `failpoints`, nothing otherwise).
        #[cfg(feature = "failpoints")]
        fail::fail_point!("state-before-rename");
        fs::rename(&tmp, &path).map_err(io("rename", &tmp))?;
        File::open(root)
            .and_then(|d| d.sync_all())
            .map_err(io("sync", root))
    }

    /// A new revision is in `current` (published, not yet verified). Saved
    /// by the caller right after the rename that published it: a crash in
    /// between leaves `current` ahead of the state, which the next pass
    /// reads as "not applied here" and redoes.
    pub fn published(&mut self, applied: Applied) {
        self.record(&applied.sha, &applied.revision, "published");
        self.current = Some(applied);
    }

    /// The gateway reported exactly `current`. `history` names the result
    /// in the history (`verified`, `repaired`), or nothing for a
    /// confirmation of what was verified before.
    pub fn verified(&mut self, history: Option<&str>) {
        let Some(applied) = self.current.as_mut() else {
            return;
        };
        applied.verified_at = Some(now());
        if let Some(result) = history {
            let (sha, revision) = (applied.sha.clone(), applied.revision.clone());
            self.record(&sha, &revision, result);
        }
    }

    /// `current` points at `previous` again (a rollback); its verification
    /// stands until the reload says otherwise (`unverified`).
    pub fn rolled_back(&mut self, previous: Applied) {
        self.current = Some(previous);
    }

    /// The gateway did not confirm `current` (a rollback that did not
    /// verify either): the next pass checks it again.
    pub fn unverified(&mut self) {
        if let Some(applied) = self.current.as_mut() {
            applied.verified_at = None;
        }
    }

    pub fn record(&mut self, sha: &str, revision: &str, result: &str) {
        self.history.insert(
            0,
            HistoryEntry {
                sha: sha.to_string(),
                revision: revision.to_string(),
                at: now(),
                result: result.to_string(),
            },
        );
        self.history.truncate(HISTORY_LEN);
    }

    /// Records a refused commit, keeping its first `MAX_KEPT_FINDINGS`
    /// findings (the message gives the full count): a commit of thousands
    /// of bad files would otherwise make `state.json`, and every `/status`
    /// answer, megabytes.
    pub fn reject(&mut self, mut rejection: Rejection) {
        if rejection.findings.len() > MAX_KEPT_FINDINGS {
            let total = rejection.findings.len();
            rejection.findings.truncate(MAX_KEPT_FINDINGS);
            rejection.message = format!(
                "{}; the first {MAX_KEPT_FINDINGS} of {total} findings are kept (run `tyk-gitops validate` for all)",
                rejection.message
            );
        }
        self.record(&rejection.sha, "", &rejection.reason);
        self.rejected.insert(rejection.sha.clone(), rejection);
        while self.rejected.len() > REJECTED_LEN {
            let oldest = self
                .rejected
                .values()
                .min_by_key(|r| r.at)
                .map(|r| r.sha.clone());
            match oldest {
                Some(sha) => self.rejected.remove(&sha),
                None => break,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_then_load_round_trips_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = State::default();
        state.record("abc", "abc", "applied");
        state.save(dir.path()).unwrap();
        let (loaded, warning) = State::load(dir.path()).unwrap();
        assert_eq!(loaded, state);
        assert!(warning.is_none());
        assert!(!dir.path().join(TMP).exists());
    }

    #[test]
    fn corrupt_state_is_reported_and_treated_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE), "{not json").unwrap();
        let (loaded, warning) = State::load(dir.path()).unwrap();
        assert_eq!(loaded, State::default());
        assert!(warning.unwrap().contains("corrupt"));
    }

    #[test]
    fn rejected_list_stays_bounded() {
        let mut state = State::default();
        for i in 0..(REJECTED_LEN + 5) {
            state.reject(Rejection {
                sha: format!("{i:040}"),
                at: i as u64,
                reason: "invalid".into(),
                message: String::new(),
                findings: vec![],
                shape: String::new(),
            });
        }
        assert_eq!(state.rejected.len(), REJECTED_LEN);
        assert!(!state.rejected.contains_key(&format!("{:040}", 0)));
        assert_eq!(state.history.len(), HISTORY_LEN);
    }
}
