//! The source stage: a Git remote → `Commit` → `Tree`.
//! `resolve` is one remote ref listing (no pack), `fetch` a shallow fetch of
//! one commit into a bounded bare cache, `read_tree` reads objects, never a
//! checkout. All calls block (libgit2): run them in `spawn_blocking`.
//! Invariant: no message carries a credential (URLs go through `redact_url`).

mod ancestry;
mod cache;
mod known_hosts;
mod read;
mod remote;
mod url;

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use git2::{AutotagOption, FetchOptions, Oid};

use crate::tree::Tree;
use remote::Session;

pub use read::{MAX_COMMIT_BYTES, MAX_COMMIT_FILES};
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
    #[error("{url} timed out after {after:?}")]
    Timeout { url: String, after: Duration },
    #[error("fetching {git_ref} ({sha}) from {url} failed: {message}")]
    Fetch {
        url: String,
        git_ref: String,
        sha: String,
        message: String,
    },
    #[error("path {subpath:?} not found in commit {sha}")]
    MissingPath { sha: String, subpath: String },
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

    /// Makes the commit present in the cache (shallow fetch); no-op if it is.
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
        let fetch_error = |message: String| SourceError::Fetch {
            url: session.shown_url.clone(),
            git_ref: commit.git_ref.clone(),
            sha: commit.sha.clone(),
            message,
        };
        // By the ref's name when it has one (every server serves that); by
        // id when the user named a sha, or when the ref moved since resolve.
        let mut refspecs = Vec::new();
        if !is_full_sha(&commit.git_ref) {
            refspecs.push(format!("+{}:{}", commit.git_ref, cache::FETCHED_REF));
        }
        refspecs.push(format!("+{}:{}", commit.sha, cache::FETCHED_REF));
        let depth = i32::try_from(self.config.depth.max(1)).unwrap_or(i32::MAX);
        session.run(|| {
            let mut last_error = None;
            for refspec in &refspecs {
                let mut remote = repo
                    .remote_anonymous(&self.config.repo)
                    .map_err(|e| session.classify(&e, fetch_error))?;
                let mut options = FetchOptions::new();
                options
                    .remote_callbacks(session.callbacks())
                    .proxy_options(remote::proxy())
                    .download_tags(AutotagOption::None)
                    .update_fetchhead(false);
                // The local transport copies objects without a pack
                // protocol and refuses shallow requests.
                if !session.is_local() {
                    options.depth(depth);
                }
                match remote.fetch(&[refspec.as_str()], Some(&mut options), None) {
                    Ok(()) if has_commit(&repo, oid) => return Ok(()),
                    Ok(()) => {}
                    Err(err) => {
                        let err = session.classify(&err, fetch_error);
                        if !matches!(err, SourceError::Fetch { .. }) {
                            return Err(err);
                        }
                        last_error = Some(err);
                    }
                }
            }
            Err(last_error.unwrap_or_else(|| {
                fetch_error(format!(
                    "the remote did not send {}; the ref may have moved since it was resolved",
                    commit.short()
                ))
            }))
        })
    }

    /// The files under `subpath` (the config root) of the fetched commit.
    /// Blobs `known` to the caller (analysed before) are read without a
    /// size check first; their size is checked once read.
    pub fn read_tree(
        &self,
        commit: &Commit,
        subpath: Option<&str>,
        max_file_size: u64,
        known: &dyn Fn(Oid) -> bool,
    ) -> Result<Tree, SourceError> {
        let repo = cache::open_existing(&self.cache_dir).map_err(|_| SourceError::NotFetched {
            sha: commit.sha.clone(),
        })?;
        read::read_tree(&repo, &commit.sha, subpath, max_file_size, known)
    }
}

fn is_full_sha(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn has_commit(repo: &git2::Repository, oid: Oid) -> bool {
    repo.find_commit(oid).is_ok()
}

/// The object a ref name points at, resolved the way `git fetch` does: the
/// exact name, then `refs/`, tags, branches, remote branches. An annotated
/// tag is peeled to its commit (the `^{}` entry of the listing).
fn find_ref(heads: &[(String, Oid)], wanted: &str) -> Option<Oid> {
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
    candidates
        .iter()
        .find_map(|name| lookup(&format!("{name}^{{}}")).or_else(|| lookup(name)))
}

/// "branches: main, dev; tags: v1" (a few of each), for `RefNotFound`.
fn describe_refs(heads: &[(String, Oid)]) -> String {
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
        return "the remote has no branches or tags".to_string();
    }
    let mut parts = Vec::new();
    if !branches.is_empty() {
        parts.push(format!("branches: {}", list(branches)));
    }
    if !tags.is_empty() {
        parts.push(format!("tags: {}", list(tags)));
    }
    format!(
        "it has {} (a sha must be the full 40 characters)",
        parts.join("; ")
    )
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
