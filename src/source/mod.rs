//! The source stage: a Git remote → `Commit` → `Tree`.
//! `resolve` is one remote ref listing (no pack), `fetch` a shallow fetch of
//! one commit into a bounded bare cache, `read_tree` reads objects, never a
//! checkout. All calls block (libgit2): run them in `spawn_blocking`.
//! Invariant: no message carries a credential (URLs go through `redact_url`).

mod ancestry;
mod cache;
mod fetch;
mod git_protocol;
mod known_hosts;
mod read;
mod remote;
mod sizes;
mod tls;
mod url;

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use git2::Oid;

use crate::tree::Tree;
use remote::Session;

pub use read::{EachFile, MAX_COMMIT_BYTES, MAX_COMMIT_FILES};
pub use tls::defer_ca_bundle;
pub use url::redact_url;

/// Where the config comes from and how to authenticate. Secrets are read from
/// their files on every use, so rotated tokens are picked up.
#[derive(Clone)]
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

impl SourceConfig {
    /// `repo` at its HEAD with the command line's defaults: depth 1, no
    /// credentials, the default known_hosts, 10 s to connect, 120 s per
    /// transfer.
    pub fn new(repo: impl Into<String>) -> SourceConfig {
        SourceConfig {
            repo: repo.into(),
            git_ref: None,
            depth: 1,
            username: None,
            password_file: None,
            ssh_key_file: None,
            ssh_known_hosts_file: None,
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(120),
        }
    }
}

/// By hand, because `repo` may carry credentials and configs get logged.
impl std::fmt::Debug for SourceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SourceConfig")
            .field("repo", &redact_url(&self.repo))
            .field("git_ref", &self.git_ref)
            .field("depth", &self.depth)
            .field("username", &self.username)
            .field("password_file", &self.password_file)
            .field("ssh_key_file", &self.ssh_key_file)
            .field("ssh_known_hosts_file", &self.ssh_known_hosts_file)
            .field("connect_timeout", &self.connect_timeout)
            .field("timeout", &self.timeout)
            .finish()
    }
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
        crate::sha::short(&self.sha)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(
        "--repo {path}: no such file or directory (a local path; a remote needs its scheme: https://, ssh://, git@host:path)"
    )]
    NoSuchPath { path: String },
    #[error("cannot reach {url}: {message}")]
    Connect { url: String, message: String },
    #[error("authentication to {url} failed: {message}")]
    Auth { url: String, message: String },
    #[error(
        "the TLS certificate of {url} is not trusted ({message}); a private CA is trusted through SSL_CERT_FILE or SSL_CERT_DIR"
    )]
    UntrustedCertificate { url: String, message: String },
    #[error(
        "SSH host {host} (of {url}) is not in {known_hosts}; refusing to connect. \
         Check its key out of band, then add it (e.g. `ssh-keyscan` output) to that file"
    )]
    UnknownHostKey {
        url: String,
        host: String,
        known_hosts: PathBuf,
    },
    #[error(
        "SSH host key of {host} (of {url}) does not match {known_hosts}: it offered {offered}, \
         the file has {known}; refusing to connect (a changed server key, or someone in between)"
    )]
    HostKeyMismatch {
        url: String,
        host: String,
        known_hosts: PathBuf,
        offered: String,
        known: String,
    },
    #[error("ref {git_ref:?} not found on {url}; {available}")]
    RefNotFound {
        url: String,
        git_ref: String,
        /// A few refs the remote does have, so a typo is easy to spot.
        available: String,
    },
    #[error("commit {sha} not found on {url}: {searched}")]
    ShaNotFound {
        url: String,
        sha: String,
        /// The refs looked at, and how deep.
        searched: String,
    },
    #[error("{url} timed out after {after:?}")]
    Timeout { url: String, after: Duration },
    #[error("fetching {git_ref} ({sha}) from {url} failed: {message}")]
    Fetch {
        url: String,
        git_ref: String,
        sha: String,
        message: String,
    },
    #[error("path {subpath:?} not found in commit {sha}{}", suggest_paths(.config_roots))]
    MissingPath {
        sha: String,
        subpath: String,
        /// Folders of the commit that have `apps/`: what --path may have meant.
        config_roots: Vec<String>,
    },
    #[error("path {subpath:?} in commit {sha} is not a directory")]
    NotADirectory { sha: String, subpath: String },
    #[error("commit {sha} has an entry with an unusable name: {path:?}")]
    BadPath { sha: String, path: String },
    #[error("commit {sha} is too large: {message}")]
    TooLarge { sha: String, message: String },
    #[error("commit {sha} is not in the git cache; fetch it first")]
    NotFetched { sha: String },
    #[error("reading commit {sha}: {message}")]
    Read { sha: String, message: String },
    #[error("cannot read secret file {path}: {source}")]
    Secret { path: PathBuf, source: io::Error },
    #[error("git cache {path}: {message}")]
    Cache { path: PathBuf, message: String },
    #[error("git cache {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// The folder a local `--repo` names (a plain path or `file://`), `None`
/// for a remote.
pub fn local_path(repo: &str) -> Option<PathBuf> {
    if url::transport(repo) != url::Transport::Local {
        return None;
    }
    let path = repo.strip_prefix("file://").unwrap_or(repo);
    Some(PathBuf::from(path))
}

/// For a local `--repo` that is a working tree: the files under `subpath`
/// that differ from its HEAD (modified, staged or new), which a sync does
/// not see since it reads commits. Empty for a remote, a bare repository or
/// one that cannot be read.
pub fn uncommitted(repo: &str, subpath: Option<&str>) -> Vec<String> {
    let Some(path) = local_path(repo) else {
        return Vec::new();
    };
    let Ok(repo) = git2::Repository::open(path) else {
        return Vec::new();
    };
    if repo.is_bare() {
        return Vec::new();
    }
    let mut options = git2::StatusOptions::new();
    options
        .include_untracked(true)
        .recurse_untracked_dirs(true)
        .include_ignored(false);
    if let Some(sub) = subpath.filter(|p| !p.is_empty()) {
        options.pathspec(sub);
    }
    let Ok(statuses) = repo.statuses(Some(&mut options)) else {
        return Vec::new();
    };
    statuses
        .iter()
        .filter(|e| !e.status().is_ignored())
        .filter_map(|e| e.path().ok().map(str::to_string))
        .collect()
}

fn suggest_paths(roots: &[String]) -> String {
    const SHOWN: usize = 5;
    match roots {
        [] => String::new(),
        _ => format!(
            "; these folders have apps/: {}",
            roots
                .iter()
                .take(SHOWN)
                .map(|r| format!("--path {r}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// A remote plus its local bare cache (`<root>/cache`).
pub struct Source {
    pub config: SourceConfig,
    pub cache_dir: PathBuf,
    /// What the last `read_tree` found in its folders (`read::Folders`).
    folders: std::sync::Mutex<read::Folders>,
}

impl Source {
    pub fn new(config: SourceConfig, cache_dir: PathBuf) -> Source {
        Source {
            config,
            cache_dir,
            folders: Default::default(),
        }
    }

    /// Drops what `read_tree` kept of the folders it read (an idle sidecar
    /// holds no file contents).
    pub fn forget_folders(&self) {
        *self.folders.lock().unwrap_or_else(|p| p.into_inner()) = Default::default();
    }

    /// The commit the ref points at now: one remote ref listing, no pack.
    /// A full sha is returned as is, without asking the remote.
    pub fn resolve(&self) -> Result<Commit, SourceError> {
        let git_ref = self.config.git_ref.as_deref().unwrap_or("HEAD");
        if is_full_sha(git_ref) {
            return Ok(Commit {
                sha: git_ref.to_ascii_lowercase(),
                git_ref: git_ref.to_string(),
            });
        }
        let session = Session::start(&self.config)?;
        let heads = session.list()?;
        match find_ref(&heads, git_ref) {
            Some(oid) => Ok(Commit {
                sha: oid.to_string(),
                git_ref: git_ref.to_string(),
            }),
            None => Err(SourceError::RefNotFound {
                url: session.shown_url.clone(),
                git_ref: git_ref.to_string(),
                available: describe_refs(&heads),
            }),
        }
    }

    /// The commit the ref points at now, made present in the cache: one
    /// conversation, whose ref advertisement says what the tip is; a pack
    /// is asked for on the same connection only when the tip is not in the
    /// cache yet, so a no-change poll costs the advertisement alone. A tip
    /// the shallow fetch by its ref does not bring is left to `fetch` (its
    /// other ways). A full sha is returned as is, as `resolve` does; a
    /// local repository is listed, then fetched by `fetch`.
    pub fn fetch_tip(&self) -> Result<Commit, SourceError> {
        let git_ref = self.config.git_ref.as_deref().unwrap_or("HEAD");
        if is_full_sha(git_ref) || local_path(&self.config.repo).is_some() {
            return self.resolve();
        }
        let repo = cache::open(&self.cache_dir)?;
        let session = Session::start(&self.config)?;
        session.run(|| fetch::fetch_tip(&repo, &session, &self.config, git_ref))
    }

    /// Makes the commit present in the cache (shallow fetch); no-op if it
    /// is. Works on servers that refuse wants by id (`fetch`).
    pub fn fetch(&self, commit: &Commit) -> Result<(), SourceError> {
        let repo = cache::open(&self.cache_dir)?;
        let oid = Oid::from_str(&commit.sha).map_err(|_| SourceError::Fetch {
            url: redact_url(&self.config.repo),
            git_ref: commit.git_ref.clone(),
            sha: commit.sha.clone(),
            message: "not a commit id".to_string(),
        })?;
        if has_commit(&repo, oid) {
            return Ok(());
        }
        let session = Session::start(&self.config)?;
        let fetcher = fetch::Fetcher {
            repo: &repo,
            session: &session,
            config: &self.config,
            commit,
            oid,
        };
        session.run(|| fetcher.run())
    }

    /// The files under `subpath` (the config root) of the fetched commit.
    /// What the validation cache knows of a blob (`cached`) decides how it
    /// is read: size checked first, read without the check, or left unread.
    pub fn read_tree(
        &self,
        commit: &Commit,
        subpath: Option<&str>,
        max_file_size: u64,
        cached: &dyn Fn(Oid) -> crate::tree::Cached,
    ) -> Result<Tree, SourceError> {
        self.read_tree_feeding(commit, subpath, max_file_size, cached, None)
    }

    /// `read_tree`, handing each file read whole from Git to `each` (path,
    /// blob id, bytes) as soon as it is read, from the reading threads.
    pub fn read_tree_feeding(
        &self,
        commit: &Commit,
        subpath: Option<&str>,
        max_file_size: u64,
        cached: &dyn Fn(Oid) -> crate::tree::Cached,
        each: Option<EachFile<'_>>,
    ) -> Result<Tree, SourceError> {
        let repo = cache::open_existing(&self.cache_dir).map_err(|_| SourceError::NotFetched {
            sha: commit.sha.clone(),
        })?;
        let mut folders = self.folders.lock().unwrap_or_else(|p| p.into_inner());
        read::read_tree(
            &repo,
            &commit.sha,
            subpath,
            max_file_size,
            cached,
            &mut folders,
            each,
        )
    }

    /// The folders of the fetched commit that have `apps/`: `--path`
    /// values that hold a config (empty when the cache cannot be read).
    pub fn config_roots(&self, commit: &Commit) -> Vec<String> {
        let Ok(repo) = cache::open_existing(&self.cache_dir) else {
            return Vec::new();
        };
        let dirs = read::dirs(&repo, &commit.sha, read::CONFIG_ROOT_DEPTH);
        crate::bundle::config_roots(dirs.iter().map(String::as_str))
    }
}

impl Source {
    /// The signatures that vouch for a fetched commit: its own, then that of
    /// the annotated tag it was fetched by (when `--ref` names one). Empty
    /// when nothing is signed.
    pub fn signatures(&self, commit: &Commit) -> Result<Vec<crate::trust::Signed>, SourceError> {
        let read_error = |e: git2::Error| SourceError::Read {
            sha: commit.sha.clone(),
            message: e.message().to_string(),
        };
        let repo = cache::open_existing(&self.cache_dir).map_err(|_| SourceError::NotFetched {
            sha: commit.sha.clone(),
        })?;
        let oid = Oid::from_str(&commit.sha).map_err(read_error)?;
        let mut signed = Vec::new();
        match repo.extract_signature(&oid, None) {
            Ok((signature, data)) => signed.push(crate::trust::Signed {
                what: "commit".into(),
                signature: signature.to_vec(),
                data: data.to_vec(),
            }),
            Err(e) if e.code() == git2::ErrorCode::NotFound => {}
            Err(e) => return Err(read_error(e)),
        }
        // The fetch stores the ref it fetched by: an annotated tag there
        // that names this commit vouches for it too.
        let tag = repo
            .find_reference(cache::FETCHED_REF)
            .ok()
            .and_then(|r| r.target())
            .and_then(|t| repo.find_tag(t).ok())
            .filter(|t| t.target_id() == oid);
        if let Some(tag) = tag {
            let db = repo.odb().map_err(read_error)?;
            let raw = db.read(tag.id()).map_err(read_error)?;
            if let Some((signature, data)) = crate::trust::split_tag_signature(raw.data()) {
                signed.push(crate::trust::Signed {
                    what: format!("tag {}", tag.name().unwrap_or("?")),
                    signature,
                    data,
                });
            }
        }
        Ok(signed)
    }
}

fn is_full_sha(s: &str) -> bool {
    crate::sha::Sha::is_full(s)
}

fn has_commit(repo: &git2::Repository, oid: Oid) -> bool {
    repo.find_commit(oid).is_ok()
}

/// The object a ref name points at, resolved the way `git fetch` does: the
/// exact name, then `refs/`, tags, branches, remote branches. An annotated
/// tag is peeled to its commit (the `^{}` entry of the listing).
fn find_ref(heads: &[(String, Oid)], wanted: &str) -> Option<Oid> {
    find_ref_named(heads, wanted).map(|(_, oid)| oid)
}

/// `find_ref` with the full name the ref resolved to.
fn find_ref_named(heads: &[(String, Oid)], wanted: &str) -> Option<(String, Oid)> {
    let candidates: Vec<String> = if wanted == "HEAD" || wanted.starts_with("refs/") {
        vec![wanted.to_string()]
    } else {
        vec![
            wanted.to_string(),
            format!("refs/{wanted}"),
            format!("refs/tags/{wanted}"),
            format!("refs/heads/{wanted}"),
            format!("refs/remotes/{wanted}"),
            format!("refs/remotes/{wanted}/HEAD"),
        ]
    };
    let lookup = |name: &str| heads.iter().find(|(n, _)| n == name).map(|(_, oid)| *oid);
    candidates.into_iter().find_map(|name| {
        let oid = lookup(&format!("{name}^{{}}")).or_else(|| lookup(&name))?;
        Some((name, oid))
    })
}

/// "it has branches: main, dev; tags: v1" (a few of each), for `RefNotFound`.
fn describe_refs(heads: &[(String, Oid)]) -> String {
    match name_refs(heads) {
        Some(names) => format!("it has {names} (a sha must be the full 40 characters)"),
        None => "the remote has no branches or tags".to_string(),
    }
}

/// "branches: main, dev; tags: v1" (a few of each); `None` without any.
fn name_refs(heads: &[(String, Oid)]) -> Option<String> {
    const SHOWN: usize = 8;
    let short = |prefix: &str| -> Vec<&str> {
        heads
            .iter()
            .filter_map(|(n, _)| n.strip_prefix(prefix))
            .filter(|n| !n.ends_with("^{}"))
            .collect()
    };
    let list = |names: Vec<&str>| {
        let more = names.len().saturating_sub(SHOWN);
        let mut text = names.into_iter().take(SHOWN).collect::<Vec<_>>().join(", ");
        if more > 0 {
            text.push_str(&format!(" and {more} more"));
        }
        text
    };
    let (branches, tags) = (short("refs/heads/"), short("refs/tags/"));
    if branches.is_empty() && tags.is_empty() {
        return None;
    }
    let mut parts = Vec::new();
    if !branches.is_empty() {
        parts.push(format!("branches: {}", list(branches)));
    }
    if !tags.is_empty() {
        parts.push(format!("tags: {}", list(tags)));
    }
    Some(parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oid(n: u8) -> Oid {
        Oid::from_bytes(&[n; 20]).unwrap()
    }

    fn heads() -> Vec<(String, Oid)> {
        vec![
            ("HEAD".into(), oid(1)),
            ("refs/heads/main".into(), oid(1)),
            ("refs/heads/dev".into(), oid(2)),
            ("refs/tags/v1".into(), oid(3)),
            ("refs/tags/v2".into(), oid(4)),
            ("refs/tags/v2^{}".into(), oid(5)),
        ]
    }

    #[test]
    fn find_ref_resolves_branches_tags_and_full_names() {
        let heads = heads();
        assert_eq!(find_ref(&heads, "HEAD"), Some(oid(1)));
        assert_eq!(find_ref(&heads, "dev"), Some(oid(2)));
        assert_eq!(find_ref(&heads, "refs/heads/dev"), Some(oid(2)));
        assert_eq!(find_ref(&heads, "v1"), Some(oid(3)));
        // Annotated tags are peeled to the commit.
        assert_eq!(find_ref(&heads, "v2"), Some(oid(5)));
        assert_eq!(find_ref(&heads, "refs/tags/v2"), Some(oid(5)));
        assert_eq!(find_ref(&heads, "nope"), None);
    }

    #[test]
    fn describe_refs_names_what_exists() {
        let text = describe_refs(&heads());
        assert!(text.contains("branches: main, dev"), "{text}");
        assert!(text.contains("tags: v1, v2"), "{text}");
        assert!(!text.contains("^{}"), "{text}");
    }

    #[test]
    fn config_debug_never_shows_url_credentials() {
        let config = SourceConfig::new("https://deploy:hunter2@git.example.com/cfg.git");
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("deploy:***@git.example.com"), "{shown}");
    }

    #[test]
    fn full_shas_are_recognised() {
        assert!(is_full_sha(&"a".repeat(40)));
        assert!(!is_full_sha("abc123"));
        assert!(!is_full_sha(&"g".repeat(40)));
    }
}
