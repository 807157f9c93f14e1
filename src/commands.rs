//! The `sync` command: build the config, run one reconcile pass on a
//! runtime, report the outcome. Returns the process exit code.

use crate::cli::SyncArgs;
use crate::config::SyncConfig;
use crate::reconcile::{Outcome, Reconciler, SyncError};

pub fn sync(args: SyncArgs) -> i32 {
    let config = match SyncConfig::from_args(args) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{e}");
            return 2;
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return 5;
        }
    };
    let reconciler = Reconciler::new(config);
    match runtime.block_on(reconciler.sync(None)) {
        Ok(outcome) => {
            report_outcome(&outcome);
            0
        }
        Err(e) => {
            report_error(&e);
            e.exit_code()
        }
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

fn report_error(error: &SyncError) {
    if let SyncError::Invalid { report, .. } = error {
        for f in report.errors.iter().chain(&report.warnings) {
            eprintln!(
                "{}:{}:{}: {:?}[{}]: {}",
                f.file, f.line, f.column, f.severity, f.rule, f.message
            );
        }
    }
    tracing::error!("{error}");
}
