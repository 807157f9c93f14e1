//! Whether a commit someone else suggested (the fleet's verified sha, read
//! from Redis) is on our ref: its tip, or an ancestor within the last
//! `depth` commits. Only the ref is fetched, by name, as every server
//! serves it: the suggested commit is never asked for by id, so a sha
//! reachable only from an unmerged pull-request ref is never fetched, and
//! a server that refuses ids (stock settings) changes nothing.

use git2::{AutotagOption, FetchOptions, Oid};

use super::remote::{self, Session};
use super::{Commit, Source, SourceError, cache, redact_url};

impl Source {
    /// True when `candidate` is `tip` or one of its last `depth` ancestors
    /// (first parents or not). Fetches `tip`'s ref to that depth first
    /// (the cache may hold it shallower).
    pub fn descends_from(
        &self,
        tip: &Commit,
        candidate: &str,
        depth: u32,
    ) -> Result<bool, SourceError> {
        let (Ok(tip_oid), Ok(candidate_oid)) = (Oid::from_str(&tip.sha), Oid::from_str(candidate))
        else {
            return Ok(false);
        };
        if tip_oid == candidate_oid {
            return Ok(true);
        }
        let repo = cache::open(&self.cache_dir)?;
        let session = Session::start(&self.config)?;
        let refspec = format!("+{}:{}", tip.git_ref, cache::FETCHED_REF);
        session.run(|| {
            let fetch_error = |message: String| SourceError::Fetch {
                url: redact_url(&self.config.repo),
                git_ref: tip.git_ref.clone(),
                sha: tip.sha.clone(),
                message,
            };
            let mut remote = repo
                .remote_anonymous(&self.config.repo)
                .map_err(|e| session.classify(&e, fetch_error))?;
            let mut options = FetchOptions::new();
            options
                .remote_callbacks(session.callbacks())
                .proxy_options(remote::proxy())
                .download_tags(AutotagOption::None)
                .update_fetchhead(false);
            if !session.is_local() {
                options.depth(i32::try_from(depth.max(1)).unwrap_or(i32::MAX));
            }
            remote
                .fetch(&[refspec.as_str()], Some(&mut options), None)
                .map_err(|e| session.classify(&e, fetch_error))
        })?;
        // A candidate the fetch did not bring is not within reach of the
        // tip; libgit2 reports that as an error, which means "no" here.
        Ok(repo
            .graph_descendant_of(tip_oid, candidate_oid)
            .unwrap_or(false))
    }
}
