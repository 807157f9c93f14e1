//! The analysis cache on disk (`<root>/analysis-cache`), so that a one-shot
//! `sync` (an init container, a CronJob) re-analyses only the files a commit
//! changed, as `run` does in memory.
//!
//! Entries are keyed by blob id and role, so the file can only ever say what
//! the analysis of those exact bytes was; its tag names the build's version,
//! analysis format and schemas, and anything else (another build, a torn or
//! edited file) is ignored: the cost of a bad cache is one full analysis,
//! never a wrong verdict from another build's rules.

use foldhash::{HashMap, HashMapExt};
use std::fs;
use std::io::{self, Read};
use std::path::Path;
use std::sync::Arc;

use git2::Oid;
use serde::{Deserialize, Serialize};

use super::analyse::{Analysis, Role};
use super::report::{Finding, Severity};
use super::{Cache, rules, schema};

/// Bump whenever an analysis of the same bytes could come out differently.
const FORMAT: u32 = 3;

/// The file under the root; not `.json`, like every name tyk-gitops writes
/// outside a revision's content.
pub const FILE: &str = "analysis-cache";
const TMP: &str = "analysis-cache.tmp";

/// New analyses that make a saved cache worth writing again: a new process
/// re-analyses fewer files than this (a few milliseconds) instead.
const SAVE_AFTER: usize = 64;

/// Past this size the file is not ours to trust (a config repo of 100,000
/// files stays far below it).
const MAX_BYTES: u64 = 512 * 1024 * 1024;

fn tag() -> String {
    format!(
        "tyk-gitops {} analysis {FORMAT} schemas {}",
        env!("CARGO_PKG_VERSION"),
        schema::fingerprint()
    )
}

#[derive(Serialize)]
struct Out<'a> {
    tag: String,
    entries: Vec<EntryOut<'a>>,
}

#[derive(Serialize)]
struct EntryOut<'a> {
    blob: String,
    role: Role,
    analysis: &'a Analysis,
}

#[derive(Deserialize)]
struct In {
    tag: String,
    entries: Vec<EntryIn>,
}

#[derive(Deserialize)]
struct EntryIn {
    blob: String,
    role: Role,
    analysis: Analysis,
}

impl Cache {
    /// The cache saved under `root`, or an empty one when there is none or
    /// it does not belong to this build (logged at debug level: a miss is
    /// only slower).
    pub fn load(root: &Path) -> Cache {
        let path = root.join(FILE);
        match read(&path) {
            Ok(Some(cache)) => cache,
            Ok(None) => Cache::default(),
            Err(reason) => {
                tracing::debug!(path = %path.display(), %reason, "analysis cache not used");
                Cache::default()
            }
        }
    }

    /// A copy to save when the cache changed since it was loaded or last
    /// handed out (cheap: the analyses are shared), so saving can run
    /// beside the rest of a sync. Once a file exists, only every
    /// `SAVE_AFTER` new analyses: writing 10,000 analyses costs far more
    /// than the next process analysing again the few files changed since
    /// (entries are keyed by content, so an older file is never wrong, only
    /// less complete).
    pub fn changes(&mut self) -> Option<Cache> {
        if !self.dirty || (self.on_disk && self.unsaved < SAVE_AFTER) {
            return None;
        }
        self.dirty = false;
        self.unsaved = 0;
        self.on_disk = true;
        Some(Cache {
            entries: self.entries.clone(),
            ..Cache::default()
        })
    }

    /// Writes the cache under `root`: a temporary file renamed over the old
    /// one, so a reader sees one whole file or the previous one.
    pub fn save(&self, root: &Path) -> io::Result<()> {
        let out = Out {
            tag: tag(),
            entries: self
                .entries
                .iter()
                .map(|((blob, role), analysis)| EntryOut {
                    blob: crate::tree::hex_id(blob),
                    role: *role,
                    analysis,
                })
                .collect(),
        };
        let bytes = serde_json::to_vec(&out).map_err(io::Error::other)?;
        let tmp = root.join(TMP);
        fs::write(&tmp, bytes)?;
        fs::rename(&tmp, root.join(FILE))
    }
}

fn read(path: &Path) -> Result<Option<Cache>, String> {
    let file = match fs::File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err.to_string()),
    };
    let mut bytes = Vec::new();
    // Parsing from a slice is several times faster than from a reader.
    file.take(MAX_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_BYTES {
        return Err("too large".into());
    }
    let stored: In = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    if stored.tag != tag() {
        return Err(format!("written by another build ({})", stored.tag));
    }
    let mut entries = HashMap::with_capacity(stored.entries.len());
    for entry in stored.entries {
        let blob = Oid::from_str(&entry.blob).map_err(|e| e.message().to_string())?;
        if blob.is_zero() {
            return Err("an entry without a blob id".into());
        }
        entries.insert(
            (crate::tree::key(blob), entry.role),
            Arc::new(entry.analysis),
        );
    }
    Ok(Some(Cache {
        entries,
        on_disk: true,
        ..Cache::default()
    }))
}

/// `Analysis::findings` on disk: the rule id as a string (mapped back to the
/// build's own ids, an unknown one failing the load) and the severity,
/// which the report format leaves out.
pub mod findings {
    use super::*;
    use serde::{Deserializer, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Stored {
        rule: String,
        error: bool,
        line: u32,
        column: u32,
        pointer: Option<String>,
        message: String,
        hint: Option<String>,
    }

    pub fn serialize<S: Serializer>(findings: &[Finding], s: S) -> Result<S::Ok, S::Error> {
        let stored: Vec<Stored> = findings
            .iter()
            .map(|f| Stored {
                rule: f.rule.to_string(),
                error: f.severity == Severity::Error,
                line: f.line,
                column: f.column,
                pointer: f.pointer.clone(),
                message: f.message.clone(),
                hint: f.hint.clone(),
            })
            .collect();
        stored.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Finding>, D::Error> {
        let stored = Vec::<Stored>::deserialize(d)?;
        stored
            .into_iter()
            .map(|f| {
                let rule = rules::ALL
                    .iter()
                    .map(|(id, _)| *id)
                    .find(|id| *id == f.rule)
                    .ok_or_else(|| serde::de::Error::custom(format!("unknown rule {}", f.rule)))?;
                Ok(Finding {
                    rule,
                    severity: if f.error {
                        Severity::Error
                    } else {
                        Severity::Warning
                    },
                    file: String::new(),
                    line: f.line,
                    column: f.column,
                    pointer: f.pointer,
                    message: f.message,
                    hint: f.hint,
                })
            })
            .collect()
    }
}
