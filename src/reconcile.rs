//! The reconciler: the only place that sequences the stages, decides what
//! is a no-op, what is rolled back and what is recorded.
//!
//! source → validate → apply → reload → verify → record. Invariants: a
//! commit with findings changes nothing on disk under `current` and sends no
//! reload; a commit is "applied" only once the gateway reports exactly its
//! ids, lists its changed definitions as committed and routes their listen
//! paths (the routing probe, `--probe`); the same commit on a healthy
//! gateway costs one ref listing and one look at the gateway. Blocking work (libgit2, file I/O, validation) runs in
//! `spawn_blocking`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{Instrument, debug, info, info_span, warn};

use crate::apply::{ApplyError, Early, Inventory, Manifest, Revisions};
use crate::config::{ConfigError, SyncConfig};
use crate::exit::Exit;
use crate::gateway::{
    DEFAULT_HEALTH_PATH, Expected, ExpectedApi, Gateway, GatewayClient, GatewayError, Loaded,
    ProbeMode,
};
use crate::source::{Commit, EachFile, Source, SourceError};
use crate::state::{Applied, Rejection, State, StateError, now};
use crate::tree::{BlobReader, Cached};
use crate::validate::{self, Report, empty};

/// Added to `--timeout` for the wall-clock bound of a Git operation, so
/// libgit2's own timeout (with its more precise message) fires first when
/// it can.
const GIT_GRACE: Duration = Duration::from_secs(1);

/// Bound on one request to the gateway's control API.
const GATEWAY_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// How far back from the ref's tip a commit suggested by the fleet may be.
/// The fleet's verified commit lags the tip by the commits pushed since it
/// was verified (usually none or one; a few when HEAD was rejected).
pub const HINT_DEPTH: u32 = 50;

/// What `Reconciler::vouch` made of a suggested commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Vouched {
    /// The hint is on the ref: start on it.
    Hint(Commit),
    /// The hint is not the tip nor within `HINT_DEPTH` of its ancestors:
    /// start on the tip.
    Refused { tip: Commit, hint: Commit },
}

impl Vouched {
    /// The commit to start on. A refused hint means someone wrote a commit
    /// into Redis that our ref does not lead to: said loudly, then ignored.
    pub fn into_commit(self) -> Commit {
        match self {
            Vouched::Hint(commit) => commit,
            Vouched::Refused { tip, hint } => {
                warn!(
                    sha = %hint.short(),
                    git_ref = %hint.git_ref,
                    "the fleet's verified commit is neither the tip of the ref nor an ancestor of it; not starting on it (resolving the ref instead)"
                );
                tip
            }
        }
    }
}

/// How a sync ended when nothing went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A new revision is in `current`; `verified` when a gateway confirmed it.
    Applied {
        commit: Commit,
        revision: String,
        verified: bool,
        apis: usize,
        policies: usize,
    },
    /// The commit was already in `current` (and the gateway runs it).
    Unchanged { commit: Commit, verified: bool },
    /// The commit was in `current` but the gateway ran something else
    /// (drift); it was reloaded and now runs the commit.
    Repaired { commit: Commit },
}

impl Outcome {
    pub fn commit(&self) -> &Commit {
        match self {
            Outcome::Applied { commit, .. }
            | Outcome::Unchanged { commit, .. }
            | Outcome::Repaired { commit } => commit,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("commit {} is invalid: {} error(s), {} warning(s); nothing was changed", .commit.short(), .report.errors.len(), .report.warnings.len())]
    Invalid { commit: Commit, report: Report },
    #[error("commit {} is not trusted (untrusted-signature): {reason}; nothing was changed", .commit.short())]
    Untrusted { commit: Commit, reason: String },
    #[error("commit {} was rejected before ({}): {}; push a fix, or use --force to try it again", crate::sha::short(&.rejection.sha), .rejection.reason, .rejection.message)]
    Rejected { rejection: Box<Rejection> },
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    Gateway(#[from] GatewayError),
    #[error("commit {} did not load as committed ({error}); {}", .commit.short(), match .rolled_back_to { Some(r) => format!("rolled back to revision {r}"), None => "no earlier revision to roll back to".to_string() })]
    VerifyFailed {
        commit: Commit,
        error: Box<GatewayError>,
        rolled_back_to: Option<String>,
    },
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl SyncError {
    /// Whether a retry with backoff may help (Git, the gateway or the disk
    /// were unavailable), rather than waiting for another commit.
    pub fn is_transient(&self) -> bool {
        !matches!(
            self,
            SyncError::Invalid { .. }
                | SyncError::Untrusted { .. }
                | SyncError::Rejected { .. }
                | SyncError::VerifyFailed { .. }
        )
    }

    /// How the attempt is counted and shown: `rejected` when the commit is
    /// at fault (it will not be applied), `failed` otherwise.
    pub fn label(&self) -> &'static str {
        match self {
            SyncError::Invalid { .. }
            | SyncError::Untrusted { .. }
            | SyncError::Rejected { .. } => "rejected",
            _ => "failed",
        }
    }

    /// The commit the error is about, when it is about one.
    pub fn sha(&self) -> Option<&str> {
        match self {
            SyncError::Invalid { commit, .. }
            | SyncError::Untrusted { commit, .. }
            | SyncError::VerifyFailed { commit, .. } => Some(&commit.sha),
            SyncError::Rejected { rejection } => Some(&rejection.sha),
            _ => None,
        }
    }

    /// How `sync` ends on this error.
    pub fn exit(&self) -> Exit {
        match self {
            SyncError::Invalid { .. }
            | SyncError::Untrusted { .. }
            | SyncError::Rejected { .. } => Exit::Refused,
            SyncError::Source(_) => Exit::Remote,
            SyncError::Gateway(_) | SyncError::VerifyFailed { .. } => Exit::Gateway,
            // A secret file that cannot be read is a local setup problem.
            SyncError::Config(_) => Exit::Usage,
            SyncError::Apply(_) | SyncError::State(_) | SyncError::Internal(_) => Exit::Local,
        }
    }
}

/// Runs syncs for one root. Hold one per root: it is not meant to be shared
/// by two processes (the sidecar loop serialises its own syncs).
pub struct Reconciler {
    config: SyncConfig,
    source: Arc<Source>,
    cache: Arc<Mutex<validate::Cache>>,
    /// `--force` holds until one pass succeeds: a sidecar started with it
    /// must not rewrite and reload on every poll.
    force: AtomicBool,
    /// The sidecar publishes a first revision before any gateway answers:
    /// a gateway that waits for `current` to exist (the shared-volume
    /// example) or starts without it would otherwise wait for each other.
    first_without_gateway: bool,
    /// Held by the Git operation running (or lingering past its time
    /// limit): see `git`.
    git_lock: Arc<tokio::sync::Mutex<()>>,
    /// `state.json` as last written by a pass (or read at the first
    /// `state()`): what the sidecar shows and reports without reading the
    /// file back.
    saved: Mutex<Option<Arc<State>>>,
    /// Built by the first pass that talks to the gateway and kept: each
    /// new one parsed the CA bundle again, on the runtime, every sync.
    gateway_client: Mutex<Option<GatewayClient>>,
    /// What the next write recycles, read ahead while Git fetches (see
    /// `prepare`); locked while it is read and while a revision is written,
    /// so a write waits for it.
    prepared: Arc<Mutex<Option<Inventory>>>,
    /// Whether the next pass reads ahead: its first, and each after one
    /// that may have written a revision.
    prepare_due: Arc<AtomicBool>,
    /// The read-ahead under way, and whether it is making a spare: see
    /// `settle`.
    preparing: Mutex<Option<tokio::task::JoinHandle<()>>>,
    linking: Arc<AtomicBool>,
    /// When the last pass that read a commit ended, or the process
    /// started (see `pass`); `None` once the sidecar went idle since.
    last_built: Mutex<Option<Instant>>,
}

/// How long an idle sidecar keeps the compiled schemas (~0.5 MiB).
const SCHEMAS_IDLE: Duration = Duration::from_secs(5);

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, SyncError> {
    // The sync's span (its short sha) follows the work onto the pool.
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(f))
        .await
        .map_err(|e| SyncError::Internal(format!("blocking task failed: {e}")))
}

impl Reconciler {
    pub fn new(config: SyncConfig) -> Reconciler {
        let source = Source::new(config.source.clone(), config.root.join("cache"));
        Reconciler {
            force: AtomicBool::new(config.force),
            config,
            source: Arc::new(source),
            cache: Arc::new(Mutex::new(validate::Cache::default())),
            first_without_gateway: false,
            git_lock: Arc::new(tokio::sync::Mutex::new(())),
            saved: Mutex::new(None),
            gateway_client: Mutex::new(None),
            last_built: Mutex::new(Some(Instant::now())),
            prepared: Arc::new(Mutex::new(None)),
            prepare_due: Arc::new(AtomicBool::new(true)),
            preparing: Mutex::new(None),
            linking: Arc::new(AtomicBool::new(false)),
        }
    }

    /// For `run`: when `current` does not exist yet, the first valid commit
    /// is written and published without waiting for the gateway, which is
    /// then waited for, reloaded and verified (or, when it does not answer
    /// in `--gateway-wait`, on the retries). There is nothing to protect
    /// before the first revision.
    pub fn publishing_first_without_gateway(mut self) -> Reconciler {
        self.first_without_gateway = true;
        self
    }

    pub fn config(&self) -> &SyncConfig {
        &self.config
    }

    /// The state as the last pass wrote it; read from `state.json` the
    /// first time (what an init container or an earlier process left).
    pub fn state(&self) -> Arc<State> {
        let mut saved = self.saved.lock().unwrap_or_else(|p| p.into_inner());
        saved
            .get_or_insert_with(|| {
                Arc::new(
                    State::load(&self.config.root)
                        .map(|(state, _)| state)
                        .unwrap_or_default(),
                )
            })
            .clone()
    }

    /// Writes `state.json` (atomically, see `State::save`) and keeps the
    /// copy `state()` hands out.
    fn save(&self, state: &State) -> Result<(), StateError> {
        state.save(&self.config.root)?;
        *self.saved.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(state.clone()));
        Ok(())
    }

    /// One pass: the commit the ref points at now (or `pinned`, a sha the
    /// fleet already verified) goes live if it is valid and loads. When it
    /// is already current, the gateway is asked whether it still runs it.
    pub async fn sync(&self, pinned: Option<Commit>) -> Result<Outcome, SyncError> {
        self.pass(pinned, true).await
    }

    /// A sidecar poll: as `sync`, but a commit that is already current and
    /// was verified is not looked up on the gateway again (the drift check
    /// does that every `--verify-period`), so a no-change poll costs one
    /// remote ref listing and nothing else.
    pub async fn poll(&self, pinned: Option<Commit>) -> Result<Outcome, SyncError> {
        self.pass(pinned, false).await
    }

    /// The commit to start on when the fleet suggests `hint` (its verified
    /// sha, read from Redis): the hint when it is our ref's tip or one of
    /// its last `HINT_DEPTH` ancestors, else the tip, as without Redis.
    /// Anyone who can write to Redis can write the hint, so it is never
    /// fetched by id and never blocks a start: any doubt means the tip.
    pub async fn vouch(&self, hint: Commit) -> Result<Vouched, SyncError> {
        let tip = self.resolve().await?;
        if tip.sha == hint.sha {
            return Ok(Vouched::Hint(tip));
        }
        // A ref that is a sha is its own tip: nothing else is on it.
        if tip.git_ref == tip.sha || hint.git_ref != tip.git_ref {
            return Ok(Vouched::Refused { tip, hint });
        }
        let source = self.source.clone();
        let (checked_tip, candidate) = (tip.clone(), hint.sha.clone());
        let reachable = self
            .git(move || source.descends_from(&checked_tip, &candidate, HINT_DEPTH))
            .await;
        match reachable {
            Ok(true) => Ok(Vouched::Hint(hint)),
            Ok(false) => Ok(Vouched::Refused { tip, hint }),
            Err(e) => {
                warn!(error = %e, "cannot check the fleet's commit against the ref; using the tip");
                Ok(Vouched::Refused { tip, hint })
            }
        }
    }

    /// The commit the ref points at now, in the Git cache: one conversation
    /// with the remote, whose ref advertisement is the listing; its pack
    /// comes on the same connection when the commit is new.
    pub async fn resolve(&self) -> Result<Commit, SyncError> {
        // What the next write recycles is read meanwhile (when due).
        if let Some(task) = self.prepare() {
            *self.preparing.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        }
        let source = self.source.clone();
        self.git(move || source.fetch_tip()).await
    }

    /// Runs one Git operation off the runtime, bounded by the wall clock:
    /// `--timeout` (plus a moment for libgit2's own abort to answer first).
    /// libgit2's socket timeout bounds each read, not the whole reply, so a
    /// server trickling a byte at a time would hold a listing for ever.
    /// libgit2 cannot be interrupted, so an operation over time is left to
    /// end on its own; it holds `git_lock` until then, so at most one such
    /// operation lingers, and the next one waits for it within its own limit.
    async fn git<T: Send + 'static>(
        &self,
        operation: impl FnOnce() -> Result<T, SourceError> + Send + 'static,
    ) -> Result<T, SyncError> {
        let limit = self.config.source.timeout + GIT_GRACE;
        let deadline = tokio::time::Instant::now() + limit;
        let timed_out = || {
            SyncError::Source(SourceError::Timeout {
                url: crate::source::redact_url(&self.config.source.repo),
                after: self.config.source.timeout,
            })
        };
        let Ok(guard) = tokio::time::timeout_at(deadline, self.git_lock.clone().lock_owned()).await
        else {
            warn!("an earlier Git operation is still running past its time limit");
            return Err(timed_out());
        };
        let span = tracing::Span::current();
        let task = tokio::task::spawn_blocking(move || {
            let _running = guard;
            span.in_scope(operation)
        });
        match tokio::time::timeout_at(deadline, task).await {
            Ok(Ok(result)) => Ok(result?),
            Ok(Err(e)) => Err(SyncError::Internal(format!("blocking task failed: {e}"))),
            Err(_) => Err(timed_out()),
        }
    }

    async fn pass(&self, pinned: Option<Commit>, confirm: bool) -> Result<Outcome, SyncError> {
        std::fs::create_dir_all(&self.config.root).map_err(|source| ApplyError::Io {
            action: "create",
            path: self.config.root.clone(),
            source,
        })?;
        let commit = match pinned {
            Some(c) => c,
            None => {
                // A new process reads the saved analyses while Git works.
                let _loading = self.load_analyses();
                self.resolve().await?
            }
        };
        let span = info_span!("sync", sha = %commit.short());
        let force = self.force.load(Ordering::Relaxed);
        let result = self
            .sync_commit(commit, confirm, force)
            .instrument(span)
            .await;
        // Spent once a forced pass got through; a failed one keeps it for
        // the retry.
        if result.is_ok() {
            self.force.store(false, Ordering::Relaxed);
        }
        // What a pass that read a tree allocated is free now. The compiled
        // schemas stay while commits keep coming (a burst of pushes would
        // compile them again for each), and go at the first pass that
        // finds nothing new once `SCHEMAS_IDLE` passed since one that did
        // (or since the start), with the pages of code only work ran.
        let mut last = self.last_built.lock().unwrap_or_else(|p| p.into_inner());
        if !matches!(result, Ok(Outcome::Unchanged { .. })) {
            *last = Some(Instant::now());
            // What was read ahead may be gone or renamed now. The write
            // took it if it ran; a read-ahead still under way (the pass
            // failed before writing) reads what no write has touched.
            if let Ok(mut slot) = self.prepared.try_lock() {
                slot.take();
            }
            self.prepare_due.store(true, Ordering::Relaxed);
            crate::memory::give_back();
        } else if last.is_some_and(|at| at.elapsed() >= SCHEMAS_IDLE) {
            *last = None;
            crate::validate::release_schemas();
            self.source.forget_folders();
            crate::memory::give_back();
            crate::memory::drop_idle_pages();
        }
        result
    }

    /// One pass over `commit`, as the pipeline in the README draws it:
    /// fetch → trust → read and validate → write → publish → reload and
    /// verify → record. Each stage hands the next a named value; every
    /// change of `state.json` goes through a `State` method, saved where
    /// the crash-order argument in RELIABILITY.md needs it.
    async fn sync_commit(
        &self,
        commit: Commit,
        confirm: bool,
        force: bool,
    ) -> Result<Outcome, SyncError> {
        let cfg = &self.config;
        info!(git_ref = %commit.git_ref, "resolved");
        let mut ground = Ground::read(cfg, self.shape())?;
        if let (Some(applied), false) = (ground.applied(&commit), force) {
            if !confirm && (applied.verified_at.is_some() || cfg.gateway.is_none()) {
                debug!(revision = %applied.revision, "already current");
                return Ok(Outcome::Unchanged {
                    commit,
                    verified: applied.verified_at.is_some(),
                });
            }
            let gateway = self.gateway_preflight().await?;
            return self
                .confirm_current(commit, applied, &ground.revs, gateway, &mut ground.state)
                .await;
        }
        // Before anything is written: the gateway answers and takes our
        // secret. Except a sidecar's first revision (see
        // `publishing_first_without_gateway`).
        let deferred = self.first_without_gateway && ground.current.is_none();
        let gateway = if deferred {
            None
        } else {
            self.gateway_preflight().await?
        };
        if let (Some(rejection), false) = (ground.rejection(&commit, cfg.allow_empty), force) {
            return Err(SyncError::Rejected {
                rejection: Box::new(rejection),
            });
        }
        ground.revs.check_writable()?;
        let serving = ground.serving(gateway.as_ref());

        self.fetch(&commit).await?;
        self.check_trust(&commit, &mut ground.state).await?;
        let gateway_version = gateway.as_ref().and_then(|(gw, _)| gw.version());
        let checked = self
            .check(&commit, gateway_version, serving, &mut ground)
            .await?;
        let written = self.write(&commit, checked, &ground).await?;
        let published = self.publish(&commit, written, &mut ground)?;

        let gateway = match gateway {
            None if deferred && cfg.gateway.is_some() => {
                info!(
                    "first revision published before the gateway answered; waiting for it to reload and verify"
                );
                self.gateway_preflight().await?
            }
            other => other,
        };
        let verified = match &gateway {
            None => false,
            Some((gw, _)) => {
                self.verify_published(gw, &commit, &published, &mut ground)
                    .await?;
                true
            }
        };
        self.prune(&ground).await?;
        let Published { name, manifest, .. } = published;
        Ok(Outcome::Applied {
            commit,
            revision: name,
            verified,
            apis: manifest.api_ids.len(),
            policies: manifest.policy_ids.len(),
        })
    }

    /// Fetches `commit`; a new process reads the saved analyses meanwhile.
    async fn fetch(&self, commit: &Commit) -> Result<(), SyncError> {
        let loading = self.load_analyses();
        let started = Instant::now();
        let (source, fetched) = (self.source.clone(), commit.clone());
        let fetch = self.git(move || source.fetch(&fetched)).await;
        let _ = loading.await;
        fetch?;
        debug!(ms = started.elapsed().as_millis() as u64, "fetched");
        Ok(())
    }

    /// With `--verify-signatures`, before a byte of the commit is read:
    /// whose it is. An untrusted commit is rejected like an invalid one.
    async fn check_trust(&self, commit: &Commit, state: &mut State) -> Result<(), SyncError> {
        let Some(trust) = self.config.trust.clone() else {
            return Ok(());
        };
        let (source, fetched) = (self.source.clone(), commit.clone());
        let verdict = blocking(move || {
            source
                .signatures(&fetched)
                .map(|signed| crate::trust::verify(&signed, &trust))
        })
        .await??;
        match verdict.map_err(|e| untrusted(commit, e)) {
            Ok(signer) => {
                info!(%signer, "signature verified");
                Ok(())
            }
            Err(SyncError::Untrusted { commit, reason }) => {
                state.reject(Rejection::new(
                    &commit.sha,
                    "untrusted-signature",
                    reason.clone(),
                ));
                self.save(state)?;
                Err(SyncError::Untrusted { commit, reason })
            }
            Err(other) => Err(other),
        }
    }

    /// Waits for the read-ahead (`prepare`). It opens the root, which
    /// removes staging directories left by an interrupted run: a cold pass
    /// waits before its early write makes one (with nothing to recycle,
    /// the read-ahead is quick).
    async fn read_ahead_done(&self) {
        let task = self
            .preparing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    /// Reads the commit's config root and validates it (after `${VAR}`
    /// substitution, for the gateway version that answered), off the
    /// runtime. A commit that is refused (findings, unreadable as a
    /// config, or leaving the gateway without APIs) is recorded as
    /// rejected and returned as `Invalid`: nothing was written.
    async fn check(
        &self,
        commit: &Commit,
        gateway_version: Option<crate::gateway::GatewayVersion>,
        serving: usize,
        ground: &mut Ground,
    ) -> Result<Checked, SyncError> {
        let cfg = &self.config;
        // The values of this sync (re-read: rotated secrets apply now).
        let vars = cfg
            .vars
            .load()
            .map_err(|e| SyncError::Config(ConfigError::Usage(e.to_string())))?;
        let mut opts = cfg.validate.clone();
        opts.gateway_version = gateway_version;
        let (source, fetched, subpath, cache) = (
            self.source.clone(),
            commit.clone(),
            cfg.path.clone(),
            self.cache.clone(),
        );
        let cold = ground.current.is_none().then(|| ground.revs.clone());
        if cold.is_some() {
            self.read_ahead_done().await;
        }
        let reading = Reading {
            subpath,
            allow_empty: cfg.allow_empty,
            cold,
        };
        let read = blocking(move || {
            Checked::read(&source, &fetched, reading, &opts, vars.as_ref(), &cache)
        })
        .await?;
        // A commit whose tree cannot be read as a config (a name no file
        // can have, or too large to read) is invalid, like one that fails
        // validation: rejected once, not fetched and retried for ever.
        let mut checked = match read {
            Err(SyncError::Source(e)) => match unusable(&e) {
                Some(finding) => {
                    let findings = serde_json::to_value(&finding).into_iter().collect();
                    ground.state.reject(
                        Rejection::new(&commit.sha, "invalid", e.to_string())
                            .with_findings(findings),
                    );
                    self.save(&ground.state)?;
                    let mut report = Report::default();
                    report.push(finding);
                    return Err(SyncError::Invalid {
                        commit: commit.clone(),
                        report,
                    });
                }
                None => return Err(e.into()),
            },
            other => other?,
        };
        // A commit that would leave the gateway with no API is refused like
        // an invalid one, unless --allow-empty.
        empty::check(
            &mut checked.report,
            &checked.root,
            checked.bundle.api_ids().len(),
            Some(serving),
            cfg.allow_empty,
        );
        for w in &checked.report.warnings {
            warn!(file = %w.file, line = w.line, rule = w.rule, "{}", w.message);
        }
        if checked.report.rejects(cfg.validate.strict) {
            // Refused: what was written early goes (off the runtime).
            if let Some(early) = checked.early.take() {
                blocking(move || drop(early)).await?;
            }
            if let Some(changes) = checked.changes.take() {
                let root = cfg.root.clone();
                blocking(move || save_analyses(&changes, &root)).await?;
            }
            let report = checked.report;
            ground
                .state
                .reject(refusal(&commit.sha, &report, &ground.shape));
            self.save(&ground.state)?;
            return Err(SyncError::Invalid {
                commit: commit.clone(),
                report,
            });
        }
        info!(
            files = checked.files,
            analysed = checked.analysed,
            apis = checked.bundle.api_ids().len(),
            policies = checked.bundle.policy_ids().len(),
            "validated"
        );
        Ok(checked)
    }

    /// Writes the revision completely under `revisions/` (recycling the
    /// one the prune would remove), saving new analyses beside the write.
    async fn write(
        &self,
        commit: &Commit,
        checked: Checked,
        ground: &Ground,
    ) -> Result<Written, SyncError> {
        let cfg = &self.config;
        let name = ground.revs.name_for(&commit.sha)?;
        let base = cfg.gateway_root.join("revisions").join(&name);
        let Checked {
            bundle,
            changes,
            reader,
            early,
            ..
        } = checked;
        let manifest_base = Manifest {
            sha: commit.sha.clone(),
            api_ids: bundle.api_ids(),
            policy_ids: bundle.policy_ids(),
            files: Vec::new(),
        };
        let (revs, write_name) = (ground.revs.clone(), name.clone());
        let (keep, protect, root) = (
            cfg.keep_revisions,
            protected(&ground.state),
            cfg.root.clone(),
        );
        let prepared = self.prepared.clone();
        let manifest = blocking(move || {
            let started = Instant::now();
            let files = bundle.revision_files(&base.to_string_lossy());
            // The revision the prune below would remove becomes this one,
            // or else the spare prepared while Git fetched.
            let protect: Vec<&str> = protect.iter().map(String::as_str).collect();
            let mut prepared = prepared.lock().unwrap_or_else(|p| p.into_inner());
            let written = std::thread::scope(|scope| {
                // New analyses are saved beside the write, from its start:
                // beside the wait for a cold sync's early write too.
                let span = tracing::Span::current();
                let saving = changes
                    .map(|c| scope.spawn(move || span.in_scope(|| save_analyses(&c, &root))));
                // A cold sync recycles what it wrote early.
                let written = match early.and_then(Early::finish) {
                    Some(written) => Ok(Some(written)),
                    None => revs.recyclable(keep, &protect, prepared.take()),
                }
                .and_then(|recycle| {
                    revs.write_with(&write_name, manifest_base, &files, recycle, reader.as_ref())
                });
                if let Some(saving) = saving {
                    let _ = saving.join();
                }
                written
            });
            debug!(
                ms = started.elapsed().as_millis() as u64,
                "revision written"
            );
            written
        })
        .await??;
        Ok(Written { name, manifest })
    }

    /// Switches `current` to the written revision (one rename) and records
    /// it, not yet verified.
    fn publish(
        &self,
        commit: &Commit,
        written: Written,
        ground: &mut Ground,
    ) -> Result<Published, SyncError> {
        let Written { name, manifest } = written;
        let previous = ground
            .state
            .current
            .clone()
            .filter(|p| ground.current.as_deref() == Some(p.revision.as_str()));
        ground.revs.publish(&name)?;
        info!(revision = %name, "published");
        ground.state.published(Applied {
            sha: commit.sha.clone(),
            git_ref: commit.git_ref.clone(),
            revision: name.clone(),
            applied_at: now(),
            verified_at: None,
            apis: manifest.api_ids.len(),
            policies: manifest.policy_ids.len(),
            shape: ground.shape.clone(),
        });
        // Crash-test hook (feature `failpoints`, nothing otherwise).
        #[cfg(feature = "failpoints")]
        fail::fail_point!("sync-before-state-write");
        self.save(&ground.state)?;
        Ok(Published {
            name,
            manifest,
            previous,
        })
    }

    /// Reloads the gateway and verifies the published revision; when it
    /// does not load as committed, rolls back to the previous one and
    /// rejects the commit.
    async fn verify_published(
        &self,
        gw: &Gateway,
        commit: &Commit,
        published: &Published,
        ground: &mut Ground,
    ) -> Result<(), SyncError> {
        let before = Before::Revision(published.previous.as_ref());
        let name = &published.name;
        match self
            .reload_and_verify(gw, &ground.revs, name, &published.manifest, before)
            .await
        {
            Ok(()) => {
                ground.state.verified(Some("verified"));
                self.save(&ground.state)?;
                info!(
                    apis = published.manifest.api_ids.len(),
                    policies = published.manifest.policy_ids.len(),
                    "gateway verified"
                );
                Ok(())
            }
            Err(error) if error.is_mismatch() => {
                let previous = published.previous.clone();
                let rolled_back_to = self
                    .roll_back(gw, &ground.revs, previous, &mut ground.state)
                    .await;
                ground.state.reject(Rejection::new(
                    &commit.sha,
                    "verify-failed",
                    error.to_string(),
                ));
                self.save(&ground.state)?;
                Err(SyncError::VerifyFailed {
                    commit: commit.clone(),
                    error: Box::new(error),
                    rolled_back_to,
                })
            }
            Err(error) => Err(error.into()),
        }
    }

    /// Removes revisions past `--keep-revisions`, never `current` or the
    /// one before it.
    async fn prune(&self, ground: &Ground) -> Result<(), SyncError> {
        let protect = protected(&ground.state);
        let (revs, keep) = (ground.revs.clone(), self.config.keep_revisions);
        let pruned = blocking(move || {
            revs.prune(
                keep,
                &protect.iter().map(String::as_str).collect::<Vec<_>>(),
            )
        })
        .await??;
        if !pruned.is_empty() {
            info!(removed = ?pruned, "pruned old revisions");
        }
        Ok(())
    }

    /// Reads the saved analyses into an empty cache, off the runtime.
    fn load_analyses(&self) -> tokio::task::JoinHandle<()> {
        let (cache, root) = (self.cache.clone(), self.config.root.clone());
        tokio::task::spawn_blocking(move || {
            let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
            if cache.is_empty() {
                *cache = validate::Cache::load(&root);
                // The first check of a process would compile them.
                validate::prepare_schemas();
            }
        })
    }

    /// Waits for the read-ahead under way when it is making a spare: a
    /// one-shot `sync` that exits in the middle would leave it to the next
    /// process to remove and start over. Reading what exists is not waited
    /// for: only the write it was for would use it.
    pub async fn settle(&self) {
        let task = self
            .preparing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(task) = task.filter(|_| self.linking.load(Ordering::Relaxed)) {
            let _ = task.await;
        }
    }

    /// When due, reads ahead what the next write recycles, making a spare
    /// if needed (`Revisions::prepare`), on a blocking thread. Errors only
    /// cost the next write its shortcut: logged at debug level.
    fn prepare(&self) -> Option<tokio::task::JoinHandle<()>> {
        if !self.prepare_due.swap(false, Ordering::Relaxed) {
            return None;
        }
        let (slot, due) = (self.prepared.clone(), self.prepare_due.clone());
        let linking = self.linking.clone();
        let (root, keep) = (self.config.root.clone(), self.config.keep_revisions);
        let state = self.state();
        Some(tokio::task::spawn_blocking(move || {
            let mut slot = slot.lock().unwrap_or_else(|p| p.into_inner());
            let protect = protected(&state);
            let protect: Vec<&str> = protect.iter().map(String::as_str).collect();
            match Revisions::open(&root).and_then(|r| r.prepare(keep, &protect, &linking)) {
                Ok(inventory) => *slot = inventory,
                Err(e) => {
                    due.store(true, Ordering::Relaxed);
                    debug!(error = %e, "nothing read ahead to recycle");
                }
            }
        }))
    }

    /// The flags that shape a revision besides the commit.
    fn shape(&self) -> String {
        format!(
            "path={} gateway-root={}",
            self.config.path.as_deref().unwrap_or(""),
            self.config.gateway_root.display()
        )
    }

    /// The drift check of the sidecar (no Git involved): when the gateway
    /// runs something else than `current`, reload and verify. Returns
    /// whether it had drifted.
    pub async fn check_drift(&self) -> Result<bool, SyncError> {
        let Some((gw, loaded)) = self.gateway_preflight().await? else {
            return Ok(false);
        };
        let revs = Revisions::open(&self.config.root)?;
        let Some(name) = revs.current()? else {
            return Ok(false);
        };
        let manifest = revs.manifest(&name)?;
        if loaded == expected_of(&manifest) {
            return Ok(false);
        }
        let span = info_span!("sync", sha = %crate::sha::short(&manifest.sha));
        async {
            warn!(revision = %name, "drift: the gateway does not run the current revision; reloading");
            self.reload_and_verify(&gw, &revs, &name, &manifest, Before::Same)
                .await?;
            let (mut state, _) = State::load(&self.config.root)?;
            state.verified(None);
            state.record(&manifest.sha, &name, "repaired");
            self.save(&state)?;
            info!(revision = %name, "drift repaired");
            Ok(true)
        }
        .instrument(span)
        .await
    }

    /// With a gateway configured: it answers `/hello` within the bounded
    /// wait, and it accepts our secret, before anything is written.
    /// Returns the client and what the gateway runs now.
    async fn gateway_preflight(&self) -> Result<Option<(Gateway, Loaded)>, SyncError> {
        let Some(gc) = &self.config.gateway else {
            return Ok(None);
        };
        let secret = gc.secret.read().map_err(ConfigError::from)?;
        // The flag, else the tyk.conf the gateway was started with (the
        // current revision's: tyk.conf is read at start only), else Tyk's
        // default.
        let health = match &gc.health_path {
            Some(path) => path.clone(),
            None => {
                let conf = self
                    .config
                    .root
                    .join("current")
                    .join(crate::bundle::TYK_CONF);
                blocking(move || health_path_in(&conf))
                    .await?
                    .unwrap_or_else(|| DEFAULT_HEALTH_PATH.to_string())
            }
        };
        let client = self.gateway_client(&gc.url)?;
        let gw = Gateway::with_client(&gc.url, secret.expose().to_string(), &client)?
            .with_secret_from(gc.secret.describe())
            .with_health_path(&health);
        gw.wait_ready(gc.wait).await?;
        let loaded = gw.loaded().await?;
        Ok(Some((gw, loaded)))
    }

    /// The pool every pass's `Gateway` talks through.
    fn gateway_client(&self, url: &str) -> Result<GatewayClient, GatewayError> {
        let mut kept = self
            .gateway_client
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(client) = kept.as_ref() {
            return Ok(client.clone());
        }
        let client = GatewayClient::new(url, GATEWAY_REQUEST_TIMEOUT)?;
        *kept = Some(client.clone());
        Ok(client)
    }

    /// The commit is already in `current`: check the gateway still runs it
    /// (repairing drift by a reload), and write nothing when it does.
    async fn confirm_current(
        &self,
        commit: Commit,
        applied: Applied,
        revs: &Revisions,
        gateway: Option<(Gateway, Loaded)>,
        state: &mut State,
    ) -> Result<Outcome, SyncError> {
        let Some((gw, loaded)) = gateway else {
            info!(revision = %applied.revision, "already current");
            return Ok(Outcome::Unchanged {
                commit,
                verified: false,
            });
        };
        let manifest = revs.manifest(&applied.revision)?;
        let expected = expected_of(&manifest);
        if loaded == expected {
            if applied.verified_at.is_none() {
                state.verified(None);
                self.save(state)?;
            }
            info!(revision = %applied.revision, "already current and verified");
            return Ok(Outcome::Unchanged {
                commit,
                verified: true,
            });
        }
        warn!(revision = %applied.revision, "gateway does not run the current revision; reloading");
        self.reload_and_verify(&gw, revs, &applied.revision, &manifest, Before::Same)
            .await?;
        state.verified(Some("repaired"));
        self.save(state)?;
        Ok(Outcome::Repaired { commit })
    }

    /// Reloads, then waits until the gateway serves revision `name`: its
    /// ids, and its APIs that differ from `before` listed as committed and
    /// routed.
    async fn reload_and_verify(
        &self,
        gw: &Gateway,
        revs: &Revisions,
        name: &str,
        manifest: &Manifest,
        before: Before<'_>,
    ) -> Result<(), GatewayError> {
        let Some(gc) = &self.config.gateway else {
            return Ok(());
        };
        // What verify checks is worked out while the gateway reloads (Tyk
        // runs a reload at the next tick of its 1 s reload loop).
        let (expected, reloaded) = tokio::join!(
            self.expected(revs, name, manifest, before, gc.probe),
            gw.reload(gc.reload)
        );
        reloaded?;
        gw.verify_served(&expected, gc.verify_timeout).await?;
        Ok(())
    }

    /// What verify checks for revision `name`. An unreadable file only
    /// narrows the check: the ids are still compared.
    async fn expected(
        &self,
        revs: &Revisions,
        name: &str,
        manifest: &Manifest,
        before: Before<'_>,
        mode: ProbeMode,
    ) -> Expected {
        let ids = expected_of(manifest);
        // `None`: every API is new (a first revision, or an unreadable one).
        let before = match before {
            Before::Revision(Some(b)) => revs.manifest(&b.revision).ok(),
            Before::Revision(None) => None,
            Before::Same => Some(manifest.clone()),
        };
        let (dir, manifest) = (revs.path_of(name), manifest.clone());
        let flag = self.config.validate.custom_domains;
        let apis = blocking(move || {
            // The probe names an API's domain only where the gateway matches
            // domains: a proxy in front of it may route on `Host` too.
            let domains = flag || custom_domains_in(&dir.join(crate::bundle::TYK_CONF));
            expected_apis(&dir, &manifest, before.as_ref(), mode, domains)
        })
        .await
        .unwrap_or_default();
        Expected { ids, apis }
    }

    /// Puts the previous revision back in `current`, reloads and verifies
    /// it. Returns the revision rolled back to, if there was one.
    async fn roll_back(
        &self,
        gw: &Gateway,
        revs: &Revisions,
        previous: Option<Applied>,
        state: &mut State,
    ) -> Option<String> {
        let previous = previous?;
        let name = previous.revision.clone();
        if let Err(e) = revs.publish(&name) {
            warn!(revision = %name, error = %e, "rollback failed");
            return None;
        }
        warn!(revision = %name, "rolled back");
        state.rolled_back(previous);
        match revs.manifest(&name) {
            Ok(manifest) => {
                if let Err(e) = self
                    .reload_and_verify(gw, revs, &name, &manifest, Before::Same)
                    .await
                {
                    warn!(revision = %name, error = %e, "the rolled-back revision did not verify either");
                    state.unverified();
                }
            }
            Err(e) => warn!(revision = %name, error = %e, "cannot read rolled-back revision"),
        }
        Some(name)
    }
}

/// What a pass knows before it looks at the commit: the revisions on disk,
/// the state, the revision in `current`, and the flags that shape a
/// revision besides the commit.
struct Ground {
    revs: Revisions,
    state: State,
    current: Option<String>,
    shape: String,
}

impl Ground {
    fn read(cfg: &SyncConfig, shape: String) -> Result<Ground, SyncError> {
        let revs = Revisions::open(&cfg.root)?;
        let (state, warning) = State::load(&cfg.root)?;
        if let Some(w) = warning {
            warn!("{w}");
        }
        let current = revs.current()?;
        Ok(Ground {
            revs,
            state,
            current,
            shape,
        })
    }

    /// `commit` as it stands in `current`, applied by us under the same flags.
    fn applied(&self, commit: &Commit) -> Option<Applied> {
        self.state
            .current
            .as_ref()
            .filter(|a| {
                a.sha == commit.sha
                    && a.shape == self.shape
                    && self.current.as_deref() == Some(a.revision.as_str())
            })
            .cloned()
    }

    /// The rejection of `commit` that still holds, if any.
    fn rejection(&self, commit: &Commit, allow_empty: bool) -> Option<Rejection> {
        self.state
            .rejected
            .get(&commit.sha)
            .filter(|r| r.holds(&self.shape, allow_empty))
            .cloned()
    }

    /// How many APIs the gateway would lose to a commit without any.
    fn serving(&self, gateway: Option<&(Gateway, Loaded)>) -> usize {
        self.state
            .current
            .as_ref()
            .filter(|a| self.current.as_deref() == Some(a.revision.as_str()))
            .map_or(0, |a| a.apis)
            .max(gateway.map_or(0, |(_, l)| l.api_ids.len()))
    }
}

/// A commit read and validated: the bundle to write and its findings.
struct Checked {
    bundle: crate::bundle::Bundle,
    /// Reads the bundle's files left unread, should the write need them.
    reader: Option<BlobReader>,
    report: Report,
    root: empty::ConfigRoot,
    files: usize,
    analysed: usize,
    /// Analyses new to the cache, to save.
    changes: Option<validate::Cache>,
    /// A cold sync's files, being written while validation ran.
    early: Option<Early>,
}

/// How `Checked::read` reads a commit, beside what it validates with.
struct Reading {
    /// `--path`.
    subpath: Option<String>,
    allow_empty: bool,
    /// For a cold sync, where to write the files early.
    cold: Option<Revisions>,
}

impl Checked {
    /// Reads the config root of `commit` (skipping blobs the cache knows)
    /// and validates it. Blocking.
    fn read(
        source: &Source,
        commit: &Commit,
        reading: Reading,
        opts: &validate::Options,
        vars: Option<&crate::validate::vars::Vars>,
        cache: &Mutex<validate::Cache>,
    ) -> Result<Checked, SyncError> {
        let Reading {
            subpath,
            allow_empty,
            cold,
        } = reading;
        let started = Instant::now();
        let mut cache = cache
            .lock()
            .map_err(|_| SyncError::Internal("validation cache poisoned".into()))?;
        // Nothing to link or recycle: each file is written as it is read,
        // while the rest is read and validated.
        let (early, feed) = cold.map(|revs| revs.write_early()).unzip();
        let tree = {
            // The feed ends with this block, read or not: the early write
            // waits for its end.
            let feed = feed;
            let each = |path: &str, blob, bytes: &Arc<Vec<u8>>| {
                if let Some(feed) = &feed {
                    feed.send(path, blob, bytes);
                }
            };
            let known = cache.reading();
            let cached = |blob| {
                known
                    .get(&crate::tree::key(blob))
                    .copied()
                    .unwrap_or(Cached::Unknown)
            };
            let each = feed.is_some().then_some(&each as EachFile<'_>);
            source.read_tree_feeding(
                commit,
                subpath.as_deref(),
                opts.max_file_size,
                &cached,
                each,
            )?
        };
        let reader = tree.reader.clone();
        debug!(
            files = tree.len(),
            unread = tree.unread(),
            ms = started.elapsed().as_millis() as u64,
            "tree read"
        );
        let files = tree.len();
        let holds_config = empty::holds_config(&tree);
        let suggestions = if holds_config || allow_empty {
            Vec::new()
        } else {
            source.config_roots(commit)
        };
        let (bundle, report) = crate::validate::vars::check(tree, vars, opts, &mut cache);
        // A blob left unread that could not be read when needed after all
        // (the cache changed under us) fails this pass like a failed read.
        if reader.as_ref().is_some_and(BlobReader::failed) {
            return Err(SyncError::Source(SourceError::Read {
                sha: commit.sha.clone(),
                message: "a file left unread could not be read when it was needed".into(),
            }));
        }
        debug!(ms = started.elapsed().as_millis() as u64, "checked");
        let root = empty::ConfigRoot {
            label: match subpath.as_deref().filter(|p| !p.is_empty()) {
                Some(p) => format!("--path {p} of commit {}", commit.short()),
                None => format!("the top of commit {} (no --path)", commit.short()),
            },
            holds_config,
            suggestions,
        };
        Ok(Checked {
            bundle,
            reader,
            report,
            root,
            files,
            analysed: cache.analysed(),
            changes: cache.changes(),
            early,
        })
    }
}

/// A revision written completely under `revisions/`, not yet published.
struct Written {
    name: String,
    manifest: Manifest,
}

/// A revision in `current`; `previous` is the one it replaced (the
/// rollback target).
struct Published {
    name: String,
    manifest: Manifest,
    previous: Option<Applied>,
}

/// The rejection of a commit the validation refused: its findings (the
/// first ones, see `State::reject`), or for a commit refused only for
/// leaving the gateway without APIs, the hint that `--allow-empty` lets it
/// through, held only under the same flags.
fn refusal(sha: &str, report: &Report, shape: &str) -> Rejection {
    let only_empty = empty::only_empty(report);
    let message = match report.errors.first() {
        Some(f) if only_empty => format!("{}; --allow-empty lets it through", f.message),
        _ => format!(
            "{} error(s), {} warning(s)",
            report.errors.len(),
            report.warnings.len()
        ),
    };
    let reason = if only_empty {
        Rejection::EMPTY
    } else {
        "invalid"
    };
    let findings = report
        .errors
        .iter()
        .chain(&report.warnings)
        .filter_map(|f| serde_json::to_value(f).ok())
        .collect();
    let mut rejection = Rejection::new(sha, reason, message).with_findings(findings);
    if only_empty {
        rejection.shape = shape.to_string();
    }
    rejection
}

/// A commit that fails the signature check is refused like an invalid one;
/// an unusable key file is the operator's to fix, and is retried.
fn untrusted(commit: &Commit, err: crate::trust::TrustError) -> SyncError {
    match err {
        crate::trust::TrustError::Untrusted(reason) => SyncError::Untrusted {
            commit: commit.clone(),
            reason,
        },
        key_file => SyncError::Config(ConfigError::Usage(key_file.to_string())),
    }
}

/// What a revision replaces on the gateway, for "new or changed" APIs.
#[derive(Debug, Clone, Copy)]
enum Before<'a> {
    /// The revision applied before it, if there was one (none: all new).
    Revision(Option<&'a Applied>),
    /// The same revision reloaded (drift, rollback): nothing changed, only
    /// `--probe all` probes.
    Same,
}

fn expected_of(manifest: &Manifest) -> Loaded {
    Loaded {
        api_ids: manifest.api_ids.clone(),
        policy_ids: manifest.policy_ids.clone(),
    }
}

fn read_tyk_conf(conf: &std::path::Path) -> Option<serde_json::Value> {
    serde_json::from_slice(&std::fs::read(conf).ok()?).ok()
}

/// `health_check_endpoint_name` in a tyk.conf, when it has one.
fn health_path_in(conf: &std::path::Path) -> Option<String> {
    read_tyk_conf(conf)?
        .get("health_check_endpoint_name")?
        .as_str()
        .map(|name| name.trim_matches('/').to_string())
        .filter(|name| !name.is_empty())
}

/// `enable_custom_domains: true` in a tyk.conf.
fn custom_domains_in(conf: &std::path::Path) -> bool {
    read_tyk_conf(conf)
        .and_then(|conf| conf.get("enable_custom_domains")?.as_bool())
        .unwrap_or(false)
}

/// The revision's API definitions that verify checks beyond their ids:
/// those whose file (or OAS/MCP companion) differs from `before`'s, or
/// every one with `--probe all`. Their listen path and target URL are
/// compared with `/tyk/apis` (unless the gateway rewrites them: secret
/// references, Tyk OAS); with a probe mode, their listen path is probed.
fn expected_apis(
    dir: &std::path::Path,
    manifest: &Manifest,
    before: Option<&Manifest>,
    mode: ProbeMode,
    custom_domains: bool,
) -> Vec<ExpectedApi> {
    use std::collections::HashMap;
    let old: HashMap<&str, &str> = before
        .map(|b| {
            b.files
                .iter()
                .map(|(path, blob)| (path.as_str(), blob.as_str()))
                .collect()
        })
        .unwrap_or_default();
    let new: HashMap<&str, &str> = manifest
        .files
        .iter()
        .map(|(path, blob)| (path.as_str(), blob.as_str()))
        .collect();
    let changed = |path: &str| before.is_none() || old.get(path) != new.get(path);
    let prefix = format!("{}/", crate::bundle::APPS_DIR);
    let mut out = Vec::new();
    for (path, _) in &manifest.files {
        let Some(stem) = path
            .strip_prefix(&prefix)
            .and_then(|n| n.strip_suffix(".json"))
        else {
            continue;
        };
        let companions = [crate::bundle::OAS_SUFFIX, crate::bundle::MCP_SUFFIX]
            .map(|suffix| format!("{prefix}{stem}{suffix}"));
        if mode != ProbeMode::All && !changed(path) && !companions.iter().any(|c| changed(c)) {
            continue;
        }
        let Some(def) = std::fs::read(dir.join(path))
            .ok()
            .and_then(|bytes| serde_json::from_slice::<serde_json::Value>(&bytes).ok())
        else {
            continue;
        };
        // Companion documents carry no api_id: not APIs of their own.
        let Some(api_id) = def.get("api_id").and_then(|v| v.as_str()) else {
            continue;
        };
        let text = |pointer: &str| def.pointer(pointer).and_then(|v| v.as_str());
        let listen_path = text("/proxy/listen_path").unwrap_or_default();
        let flag = |pointer: &str| def.pointer(pointer).and_then(|v| v.as_bool()) == Some(true);
        let oas = flag("/is_oas");
        // Service discovery replaces the target at run time.
        let discovered = flag("/proxy/service_discovery/use_discovery_service");
        let as_listed = |value: Option<&str>| {
            value
                .filter(|v| !oas && !names_a_secret(v))
                .map(str::to_string)
        };
        out.push(ExpectedApi {
            api_id: api_id.to_string(),
            file: path.clone(),
            listen_path: as_listed(Some(listen_path)),
            target_url: as_listed(text("/proxy/target_url").filter(|_| !discovered)),
            probe: (mode != ProbeMode::Off
                && !listen_path.is_empty()
                && !names_a_secret(listen_path))
            .then(|| listen_path.to_string()),
            domain: text("/domain")
                .filter(|_| custom_domains)
                .unwrap_or_default()
                .to_string(),
        });
    }
    out
}

/// Tyk replaces secret references in definition bytes before parsing, so
/// the value it lists is not the committed one.
fn names_a_secret(value: &str) -> bool {
    ["env://", "secrets://", "vault://", "consul://", "$secret_"]
        .iter()
        .any(|marker| value.contains(marker))
}

/// Revisions that pruning (and recycling) must leave alone besides
/// `current`: the applied one and the last one in the history, the
/// rollback target.
fn protected(state: &State) -> Vec<String> {
    state
        .current
        .iter()
        .map(|a| a.revision.clone())
        .chain(state.history.iter().take(1).map(|h| h.revision.clone()))
        .collect()
}

/// The finding for a source error that is the commit's own fault, not
/// the remote's or the disk's.
fn unusable(e: &SourceError) -> Option<validate::report::Finding> {
    let (rule, file) = match e {
        SourceError::BadPath { path, .. } => (validate::rules::INVALID_PATH, path.clone()),
        SourceError::TooLarge { .. } => (validate::rules::COMMIT_TOO_LARGE, String::new()),
        _ => return None,
    };
    Some(validate::report::Finding {
        rule,
        severity: validate::report::Severity::Error,
        file,
        line: 0,
        column: 0,
        pointer: None,
        message: e.to_string(),
        hint: None,
    })
}

/// Saves the analysis cache; only an optimisation, so a failure is logged
/// and costs the next process one full analysis.
fn save_analyses(cache: &validate::Cache, root: &std::path::Path) {
    if let Err(err) = cache.save(root) {
        warn!(error = %err, "cannot save the analysis cache");
    }
}
