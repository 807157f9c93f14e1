//! `sync` and `run`: turn their flags into config, start the runtime, run
//! one reconcile pass (`sync`) or the sidecar loop (`run`, in `daemon`),
//! and report the outcome. Each returns the process exit code.

use crate::cli::{RunArgs, SyncArgs};
use crate::config::{RunConfig, SyncConfig};
use crate::exit::Exit;
use crate::reconcile::{Outcome, Reconciler, SyncError};

pub fn sync(args: SyncArgs) -> Exit {
    let config = match SyncConfig::from_args(args) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{e}");
            return Exit::Usage;
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return Exit::Local;
        }
    };
    warn_uncommitted(&config);
    // With a fleet, start on the commit it verified (see `run`).
    let git_ref = config.source.git_ref.clone();
    let fleet = config.fleet.clone();
    let next = NextSteps::of(&config);
    let reconciler = Reconciler::new(config);
    let once = async {
        let hint = match &fleet {
            Some(f) => crate::fleet::joining_commit(f, git_ref.as_deref().unwrap_or("HEAD")).await,
            None => None,
        };
        let pinned = match hint {
            Some(hint) => Some(reconciler.vouch(hint).await?.into_commit()),
            None => None,
        };
        let result = reconciler.sync(pinned).await;
        reconciler.settle().await;
        result
    };
    let result = runtime.block_on(once);
    // A Git operation cut by its time limit may still be blocked in
    // libgit2 on the pool: dropping the runtime would wait for it.
    runtime.shutdown_background();
    // Everything is saved by now; freeing the analyses of every file one
    // by one would only delay the exit (the process ends right after).
    std::mem::forget(reconciler);
    match result {
        Ok(outcome) => {
            report_outcome(&outcome);
            next.report(&outcome);
            Exit::Ok
        }
        Err(e) => {
            report_error(&e);
            e.exit()
        }
    }
}

/// `tyk-gitops run`: exits 0 after SIGTERM or SIGINT, 2 on bad flags, 5 when
/// the listener cannot be bound.
pub fn run(args: RunArgs) -> Exit {
    let config = match RunConfig::from_args(args) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{e}");
            return Exit::Usage;
        }
    };
    warn_uncommitted(&config.sync);
    raise_file_limit();
    crate::memory::few_arenas();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return Exit::Local;
        }
    };
    let code = runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(&config.listen).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("cannot listen on {}: {e}", config.listen);
                return Exit::Local;
            }
        };
        tracing::info!(listen = %config.listen, replica = %config.replica_id, "running");
        match crate::daemon::run(config, listener, terminated()).await {
            Ok(()) => Exit::Ok,
            Err(e) => {
                tracing::error!("server failed: {e}");
                Exit::Local
            }
        }
    });
    // As in `sync`: a Git operation past its limit must not hold the exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    code
}

/// Raises the soft limit on open files to the hard one, as Go programs do
/// at start. Some container runtimes leave the soft limit at 1,024: a
/// thousand idle clients (each held up to the 10 s header timeout) would
/// then exhaust the sidecar's descriptors, and `/healthz` could no longer
/// be accepted. Best effort: a failure leaves the limit as it was.
fn raise_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 || limit.rlim_cur >= limit.rlim_max
        {
            return;
        }
        let before = limit.rlim_cur;
        limit.rlim_cur = limit.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
            tracing::debug!(
                from = before,
                to = limit.rlim_max,
                "raised the open-files limit"
            );
        }
    }
}

/// Completes on SIGTERM (Kubernetes stopping the pod) or SIGINT.
async fn terminated() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot listen for SIGTERM/SIGINT");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = int.recv() => tracing::info!("SIGINT"),
    }
}

fn report_outcome(outcome: &Outcome) {
    let sha = outcome.commit().short().to_string();
    match outcome {
        Outcome::Applied {
            revision,
            verified,
            apis,
            policies,
            ..
        } => tracing::info!(sha, revision, verified, apis, policies, "applied"),
        Outcome::Unchanged { verified, .. } => tracing::info!(sha, verified, "unchanged"),
        Outcome::Repaired { .. } => tracing::info!(sha, "repaired drift"),
    }
}

/// A local `--repo` with edits under `--path` that are not committed: a
/// sync reads commits, so the user would wonder where the edits went.
fn warn_uncommitted(config: &SyncConfig) {
    let changed = crate::source::uncommitted(&config.source.repo, config.path.as_deref());
    if let Some(first) = changed.first() {
        tracing::warn!(
            files = changed.len(),
            first = %first,
            "{} has uncommitted changes under {}: only committed content is synced; `git commit` them first",
            config.source.repo,
            config.path.as_deref().unwrap_or("its top")
        );
    }
}

/// What a user of `sync` (and of the README's quick start) does next:
/// where the revision is for the gateway, and why it is not verified.
struct NextSteps {
    /// `current` as the gateway's container sees it.
    current: std::path::PathBuf,
    gateway: Option<String>,
}

impl NextSteps {
    fn of(config: &SyncConfig) -> NextSteps {
        NextSteps {
            current: config.gateway_root.join("current"),
            gateway: config
                .gateway
                .as_ref()
                .map(|g| crate::source::redact_url(&g.url)),
        }
    }

    fn report(&self, outcome: &Outcome) {
        // Every line of a sync names its commit (log pipelines group by it).
        let sha = outcome.commit().short();
        let current = self.current.display();
        match &self.gateway {
            None => {
                tracing::info!(
                    sha,
                    "revision in {current}; verified=false because no --gateway was given (files only, nothing reloaded)"
                );
                tracing::info!(
                    sha,
                    "next: point the gateway at it (TYK_GW_APPPATH={current}/apps, TYK_GW_POLICIES_POLICYSOURCE=file, \
                     TYK_GW_POLICIES_POLICYPATH={current}/policies, TYK_GW_MIDDLEWAREPATH={current}/middleware, \
                     TYK_GW_TEMPLATEPATH={current}/templates), then keep it in step and verified with \
                     `tyk-gitops run --gateway URL` (docs/deploy.md)"
                );
            }
            Some(url) => {
                tracing::info!(
                    sha,
                    "revision in {current}; the gateway at {url} runs it (verified)"
                )
            }
        }
    }
}

fn report_error(error: &SyncError) {
    if let SyncError::Invalid { report, .. } = error {
        use std::io::IsTerminal;
        let color = std::io::stderr().is_terminal();
        eprint!(
            "{}",
            crate::validate::report::render(report, crate::validate::report::Format::Human, color)
        );
    }
    tracing::error!("{error}");
}
