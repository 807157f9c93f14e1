use clap::Parser;
use tyk_gitops::cli::{Cli, Command};

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Validate(args) => tyk_gitops::validate::command::run(&args),
    };
    std::process::exit(code);
}
