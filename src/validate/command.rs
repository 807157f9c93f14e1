//! `tyk-gitops validate [DIR]`: the bundle and validate stages on a folder,
//! for a config repo's own CI. (Owned by the validation work.)

use std::path::PathBuf;

/// Flags of `tyk-gitops validate`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The checkout to validate.
    #[arg(default_value = ".", env = "TYK_GITOPS_DIR")]
    pub dir: PathBuf,
}

/// Runs the command; returns the process exit code (0 clean, 1 errors, 2 usage).
pub fn run(args: &Args) -> i32 {
    let _ = args;
    2
}
