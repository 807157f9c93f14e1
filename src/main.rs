//! Entry point: parse flags, set up logging, run the command, end the
//! process with its `Exit` (0 ok, 1 refused, 2 usage, 3 Git or Redis,
//! 4 gateway, 5 local disk or state: see `exit`).

use tyk_gitops::cli::{Cli, Command};

fn main() {
    // SAFETY: first thing, before any thread: it sets environment variables.
    unsafe { tyk_gitops::source::defer_ca_bundle() };
    // Crash tests set FAILPOINTS=<name>=<action>; the process always ends
    // through `exit`, so the scenario is never torn down.
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    let cli = Cli::parse_args();
    tyk_gitops::logging::init(cli.log_format, &cli.log_level);
    let exit = match cli.command {
        Command::Validate(args) => tyk_gitops::validate::command::run(&args),
        Command::Sync(args) => tyk_gitops::commands::sync(args),
        Command::Run(args) => tyk_gitops::commands::run(args),
        Command::Fleet(args) => tyk_gitops::fleet::command::run(args),
        Command::Plan(args) => tyk_gitops::plan::command::run(&args),
        Command::Export(args) => tyk_gitops::export::run(&args),
    };
    std::process::exit(exit.code());
}
