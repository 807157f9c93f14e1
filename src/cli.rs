//! Command-line flags (clap). Every flag has an env var `TYK_GITOPS_<FLAG>`.
//! Raw flags only: `config` turns them into a validated `Config`.

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "tyk-gitops", version, about = "Every Tyk gateway replica on one verified Git commit")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate a config repo checkout (for its CI); no Git, no gateway.
    Validate(crate::validate::command::Args),
}
