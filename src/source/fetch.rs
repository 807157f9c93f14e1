//! How one commit gets into the shallow cache on any Git server. Stock
//! servers (`git daemon`, `git http-backend`, most self-hosted forges) do
//! not let a client ask for an object by id (`uploadpack.allowAnySHA1InWant`
//! and `allowReachableSHA1InWant` are off by default): only advertised refs
//! can be wanted. So a commit is asked for, in order of cost:
//! 1. by the ref the user named (the usual case: the sha is its tip);
//! 2. by any branch or tag whose tip it is (a pinned tip sha);
//! 3. by id, which servers with those settings allow;
//! 4. by deepening the branches and tags step by step, up to
//!    `MAX_SEARCH_DEPTH` commits behind each tip (a rollback, or a replica
//!    joining at the fleet's sha after the branch moved on).
//!
//! The cache stays shallow: only as much history as the search needed.

use git2::{AutotagOption, FetchOptions, Oid, Repository};

use super::cache::FETCHED_REF;
use super::remote::{self, Session};
use super::{
    Commit, SourceConfig, SourceError, find_ref, find_ref_named, has_commit, is_full_sha, name_refs,
};

/// The first deepening step; each next one is `SEARCH_FACTOR` times deeper.
const SEARCH_FIRST_DEPTH: i32 = 4;
const SEARCH_FACTOR: i32 = 4;
/// How far behind a branch or tag tip a pinned sha is looked for. Five
/// steps (4, 16, 64, 256, 1,024 commits) per ref at most; a ref whose whole
/// history has arrived is not deepened further.
pub const MAX_SEARCH_DEPTH: i32 = 1024;

/// `Source::fetch_tip` inside `Session::run`: connects once, resolves
/// `git_ref` in the advertisement as `resolve` does, and downloads the tip
/// on that connection when the cache lacks it. A download that fails for a
/// reason other than the connection is only logged: `Source::fetch` then
/// finds the commit its other ways.
pub fn fetch_tip(
    repo: &Repository,
    session: &Session<'_>,
    config: &SourceConfig,
    git_ref: &str,
) -> Result<Commit, SourceError> {
    let mut remote = repo
        .remote_anonymous(&config.repo)
        .map_err(|e| session.connect_error(&e))?;
    let mut connection = remote
        .connect_auth(
            git2::Direction::Fetch,
            Some(session.callbacks()),
            Some(remote::proxy()),
        )
        .map_err(|e| session.connect_error(&e))?;
    let heads: Vec<(String, Oid)> = connection
        .list()
        .map_err(|e| session.connect_error(&e))?
        .iter()
        .map(|head| (head.name().to_string(), head.oid()))
        .collect();
    let Some((name, oid)) = find_ref_named(&heads, git_ref) else {
        return Err(SourceError::RefNotFound {
            url: session.shown_url.clone(),
            git_ref: git_ref.to_string(),
            available: super::describe_refs(&heads),
        });
    };
    let commit = Commit {
        sha: oid.to_string(),
        git_ref: git_ref.to_string(),
    };
    if has_commit(repo, oid) {
        return Ok(commit);
    }
    // The ref keeps the advertised object: an annotated tag stays a tag,
    // for its signature.
    let advertised = heads
        .iter()
        .find(|(n, _)| *n == name)
        .map_or(oid, |(_, object)| *object);
    let mut options = FetchOptions::new();
    options
        .remote_callbacks(session.callbacks())
        .proxy_options(remote::proxy())
        .download_tags(AutotagOption::None)
        .update_fetchhead(false)
        .depth(i32::try_from(config.depth.max(1)).unwrap_or(i32::MAX));
    let refspec = format!("+{name}:{FETCHED_REF}");
    let downloaded = connection
        .remote()
        .download(&[refspec.as_str()], Some(&mut options));
    drop(connection);
    match downloaded {
        Ok(()) if has_commit(repo, oid) => {
            repo.reference(FETCHED_REF, advertised, true, "fetched")
                .map_err(|e| SourceError::Fetch {
                    url: session.shown_url.clone(),
                    git_ref: git_ref.to_string(),
                    sha: commit.sha.clone(),
                    message: e.message().to_string(),
                })?;
        }
        Ok(()) => tracing::debug!("the tip's download did not bring it"),
        Err(e) => match session.classify(&e, |message| SourceError::Fetch {
            url: session.shown_url.clone(),
            git_ref: git_ref.to_string(),
            sha: commit.sha.clone(),
            message,
        }) {
            SourceError::Fetch { message, .. } => {
                tracing::debug!(%message, "the tip's download failed; fetching it the other ways");
            }
            other => return Err(other),
        },
    }
    Ok(commit)
}

/// One fetch conversation: the cache, the session's callbacks and limits.
pub struct Fetcher<'a> {
    pub repo: &'a Repository,
    pub session: &'a Session<'a>,
    pub config: &'a SourceConfig,
    pub commit: &'a Commit,
    pub oid: Oid,
}

impl Fetcher<'_> {
    /// Runs inside `Session::run` (the session's socket timeouts).
    pub fn run(&self) -> Result<(), SourceError> {
        let depth = i32::try_from(self.config.depth.max(1)).unwrap_or(i32::MAX);
        let mut last_error = None;
        if !is_full_sha(&self.commit.git_ref) {
            match self.fetch_into_cache(&self.commit.git_ref, depth) {
                Ok(()) if self.found() => return Ok(()),
                Ok(()) => {}
                Err(err) => last_error = Some(self.only_fetch_errors(err)?),
            }
        }
        if let Some(err) = self.session.expired() {
            return Err(err);
        }
        let heads = self.session.list_now()?;
        // A tip: one shallow fetch by that ref's name.
        for name in tips_at(&heads, self.oid) {
            match self.fetch_into_cache(&name, depth) {
                Ok(()) if self.found() => return self.pin(),
                Ok(()) => {}
                Err(err) => last_error = Some(self.only_fetch_errors(err)?),
            }
        }
        // By id: servers that allow it answer at once; the others refuse
        // before any pack is sent. A server that allows it but lacks the
        // object breaks off the conversation ("not our ref"), which libgit2
        // reports like a network error; the listing just succeeded, so it
        // is not one: search on (a server really gone fails the search).
        match self.fetch_into_cache(&self.commit.sha, depth) {
            Ok(()) if self.found() => return Ok(()),
            Ok(()) => {}
            Err(err @ (SourceError::Fetch { .. } | SourceError::Connect { .. })) => {
                tracing::debug!("by id: {err}; searching the branches and tags");
            }
            Err(other) => return Err(other),
        }
        let candidates = search_order(&heads, &self.commit.git_ref);
        for (name, tip) in &candidates {
            match self.deepen(name, *tip) {
                Ok(true) => return self.pin(),
                Ok(false) => {}
                Err(err) => last_error = Some(self.only_fetch_errors(err)?),
            }
        }
        let searched = match name_refs(&heads) {
            None => "the remote has no branches or tags".to_string(),
            Some(names) => format!(
                "no branch or tag points at it, and it is not among the last \
                 {MAX_SEARCH_DEPTH} commits of {names}"
            ),
        };
        let searched = match last_error {
            Some(err) => format!("{searched} (a fetch failed on the way: {err})"),
            None => searched,
        };
        Err(SourceError::ShaNotFound {
            url: self.session.shown_url.clone(),
            sha: self.commit.sha.clone(),
            searched,
        })
    }

    /// Deepens `name` step by step until the commit arrives (`true`), the
    /// ref's whole history is here, or the bound is reached (`false`).
    fn deepen(&self, name: &str, tip: Oid) -> Result<bool, SourceError> {
        let mut depth = SEARCH_FIRST_DEPTH;
        loop {
            tracing::debug!(git_ref = name, depth, "deepening to find the pinned commit");
            self.fetch_into_cache(name, depth)?;
            if self.found() {
                return Ok(true);
            }
            // The local transport sends whole histories at once.
            if self.session.is_local()
                || depth >= MAX_SEARCH_DEPTH
                || history_complete(self.repo, tip, depth)
            {
                return Ok(false);
            }
            depth = (depth * SEARCH_FACTOR).min(MAX_SEARCH_DEPTH);
        }
    }

    /// One fetch of `src` (a ref name or an object id) into `FETCHED_REF`.
    fn fetch_into_cache(&self, src: &str, depth: i32) -> Result<(), SourceError> {
        // `--timeout` bounds the whole fetch, search included.
        if let Some(err) = self.session.expired() {
            return Err(err);
        }
        let fetch_error = |message: String| self.fetch_error(message);
        let mut remote = self
            .repo
            .remote_anonymous(&self.config.repo)
            .map_err(|e| self.session.classify(&e, fetch_error))?;
        let mut options = FetchOptions::new();
        options
            .remote_callbacks(self.session.callbacks())
            .proxy_options(remote::proxy())
            .download_tags(AutotagOption::None)
            .update_fetchhead(false);
        // The local transport copies objects without a pack protocol and
        // refuses shallow requests.
        if !self.session.is_local() {
            options.depth(depth);
        }
        let refspec = format!("+{src}:{FETCHED_REF}");
        remote
            .fetch(&[refspec.as_str()], Some(&mut options), None)
            .map_err(|e| self.session.classify(&e, fetch_error))
    }

    fn found(&self) -> bool {
        has_commit(self.repo, self.oid)
    }

    /// Points the cache's one ref at the commit itself rather than at the
    /// tip it was found under.
    fn pin(&self) -> Result<(), SourceError> {
        self.repo
            .reference(FETCHED_REF, self.oid, true, "pinned commit")
            .map(|_| ())
            .map_err(|e| self.fetch_error(e.message().to_string()))
    }

    /// A fetch error lets the next way be tried; a connection, auth,
    /// host-key or timeout error ends the fetch.
    fn only_fetch_errors(&self, err: SourceError) -> Result<SourceError, SourceError> {
        match err {
            SourceError::Fetch { .. } => Ok(err),
            other => Err(other),
        }
    }

    fn fetch_error(&self, message: String) -> SourceError {
        SourceError::Fetch {
            url: self.session.shown_url.clone(),
            git_ref: self.commit.git_ref.clone(),
            sha: self.commit.sha.clone(),
            message,
        }
    }
}

/// The refs whose tip (peeled, for annotated tags) is `oid`, by the name
/// to fetch them by.
fn tips_at(heads: &[(String, Oid)], oid: Oid) -> Vec<String> {
    let mut names: Vec<String> = heads
        .iter()
        .filter(|(_, id)| *id == oid)
        .map(|(name, _)| name.trim_end_matches("^{}").to_string())
        .collect();
    names.dedup();
    names
}

/// Where an older commit is looked for: the ref the user named, the
/// remote's HEAD, then every branch and tag; each distinct tip once (refs
/// at one tip share their history).
fn search_order(heads: &[(String, Oid)], git_ref: &str) -> Vec<(String, Oid)> {
    let mut out: Vec<(String, Oid)> = Vec::new();
    let mut push = |name: &str, tip: Oid| {
        if !out.iter().any(|(_, t)| *t == tip) {
            out.push((name.to_string(), tip));
        }
    };
    let named = (!is_full_sha(git_ref))
        .then(|| find_ref(heads, git_ref))
        .flatten();
    if let Some(tip) = named {
        push(git_ref, tip);
    }
    if let Some(tip) = find_ref(heads, "HEAD") {
        push("HEAD", tip);
    }
    for prefix in ["refs/heads/", "refs/tags/"] {
        for (name, _) in heads.iter().filter(|(n, _)| n.starts_with(prefix)) {
            let name = name.trim_end_matches("^{}");
            if let Some(tip) = find_ref(heads, name) {
                push(name, tip);
            }
        }
    }
    out
}

/// Whether all of `tip`'s history is in the cache: a fetch `depth` deep
/// brought fewer commits than that, so there are no more.
fn history_complete(repo: &Repository, tip: Oid, depth: i32) -> bool {
    let Ok(mut walk) = repo.revwalk() else {
        return false;
    };
    if walk.push(tip).is_err() {
        return false;
    }
    let wanted = usize::try_from(depth).unwrap_or(usize::MAX);
    walk.take(wanted).count() < wanted
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
            ("refs/heads/copy".into(), oid(2)),
            ("refs/tags/v1".into(), oid(3)),
            ("refs/tags/v2".into(), oid(4)),
            ("refs/tags/v2^{}".into(), oid(5)),
            ("refs/pull/1/head".into(), oid(6)),
        ]
    }

    #[test]
    fn a_tip_is_fetched_by_every_ref_at_it_annotated_tags_peeled() {
        assert_eq!(
            tips_at(&heads(), oid(2)),
            ["refs/heads/dev", "refs/heads/copy"]
        );
        assert_eq!(tips_at(&heads(), oid(5)), ["refs/tags/v2"]);
        assert!(tips_at(&heads(), oid(9)).is_empty());
    }

    #[test]
    fn the_search_starts_at_the_named_ref_and_visits_each_tip_once() {
        let order: Vec<(String, Oid)> = search_order(&heads(), "dev");
        assert_eq!(
            order,
            vec![
                ("dev".to_string(), oid(2)),
                ("HEAD".to_string(), oid(1)),
                ("refs/tags/v1".to_string(), oid(3)),
                ("refs/tags/v2".to_string(), oid(5)),
            ]
        );
        let by_sha = search_order(&heads(), &"a".repeat(40));
        assert_eq!(by_sha[0], ("HEAD".to_string(), oid(1)));
        assert_eq!(by_sha.len(), 4);
    }
}
