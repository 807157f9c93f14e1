//! The source stage: a Git remote → `Commit` → `Tree`.
//! (Contract fixed; implementation owned by the Git work.)

use std::path::PathBuf;
use std::time::Duration;

use crate::tree::Tree;

/// Where the config comes from and how to authenticate. Secrets are read from
/// their files on every use, so rotated tokens are picked up.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// `https://`, `http://`, `ssh://`, `git@host:path`, `git://`, `file://` or a path.
    pub repo: String,
    /// Branch, tag or full commit sha; `None` is the remote's HEAD.
    pub git_ref: Option<String>,
    pub depth: u32,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    pub ssh_key_file: Option<PathBuf>,
    /// `None`: `~/.ssh/known_hosts`. Verification is never skipped.
    pub ssh_known_hosts_file: Option<PathBuf>,
    pub connect_timeout: Duration,
    pub timeout: Duration,
}

/// One commit of the remote, as resolved from a ref.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// Full hex sha.
    pub sha: String,
    /// The ref it was resolved from, as the user named it (or `HEAD`).
    pub git_ref: String,
}

impl Commit {
    pub fn short(&self) -> &str {
        &self.sha[..self.sha.len().min(12)]
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("{0}")]
    Todo(String),
}

/// A remote plus its local bare cache (`<root>/cache`).
pub struct Source {
    pub config: SourceConfig,
    pub cache_dir: PathBuf,
}

impl Source {
    pub fn new(config: SourceConfig, cache_dir: PathBuf) -> Source {
        Source { config, cache_dir }
    }

    /// The commit the ref points at now: one remote ref listing, no pack.
    pub fn resolve(&self) -> Result<Commit, SourceError> {
        unimplemented!("source stage")
    }

    /// Makes the commit present in the cache (shallow fetch); no-op if it is.
    pub fn fetch(&self, commit: &Commit) -> Result<(), SourceError> {
        let _ = commit;
        unimplemented!("source stage")
    }

    /// The files under `subpath` (the config root) of the fetched commit.
    pub fn read_tree(
        &self,
        commit: &Commit,
        subpath: Option<&str>,
        max_file_size: u64,
    ) -> Result<Tree, SourceError> {
        let _ = (commit, subpath, max_file_size);
        unimplemented!("source stage")
    }
}
