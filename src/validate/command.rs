//! `tyk-gitops validate [DIR]`: the bundle and validate stages on a folder,
//! for a config repo's own CI. No Git, no gateway: the same findings a
//! `sync` of this checkout would reject it with.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use super::empty::{self, ConfigRoot};
use super::{Cache, DEFAULT_MAX_FILE_SIZE, Format, Options, Report, render};
use crate::exit::Exit;
use crate::tree::Tree;

/// Flags of `tyk-gitops validate`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The checkout to validate.
    #[arg(default_value = ".", env = "TYK_GITOPS_DIR")]
    pub dir: PathBuf,

    /// The config root inside DIR (one repo, many environments: envs/prod).
    #[arg(long, value_name = "SUBDIR", env = "TYK_GITOPS_PATH")]
    pub path: Option<PathBuf>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Human, env = "TYK_GITOPS_FORMAT")]
    pub format: Format,

    /// Report unknown fields, and fail on warnings too.
    #[arg(long, env = "TYK_GITOPS_STRICT", value_parser = crate::flags::env_bool())]
    pub strict: bool,

    /// Accept a config root without APIs (otherwise reported, since a sync of it would remove every API the gateway serves).
    #[arg(long, env = "TYK_GITOPS_ALLOW_EMPTY", value_parser = crate::flags::env_bool())]
    pub allow_empty: bool,

    /// KEY=VALUE lines (or a folder of one file per key) for ${VAR} in definitions and policies, as `sync --vars-file` substitutes them; TYK_GITOPS_VAR_<KEY> sets one too.
    #[arg(long, value_name = "FILE", env = "TYK_GITOPS_VARS_FILE")]
    pub vars_file: Option<PathBuf>,

    /// The gateway version the config is meant for (5.8, 5.14): definitions it cannot load (MCP APIs before 5.12) are errors.
    #[arg(long, value_name = "VERSION", env = "TYK_GITOPS_GATEWAY_VERSION")]
    pub gateway_version: Option<crate::gateway::GatewayVersion>,

    /// The gateway runs with `enable_custom_domains` (also read from the repo's tyk.conf).
    #[arg(long, env = "TYK_GITOPS_CUSTOM_DOMAINS")]
    pub custom_domains: bool,

    /// Files larger than this are refused (they are not read).
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_FILE_SIZE, env = "TYK_GITOPS_MAX_FILE_SIZE")]
    pub max_file_size: u64,
}

/// Runs the command; returns the process exit code (0 clean, 1 errors, 2 usage).
pub fn run(args: &Args) -> Exit {
    let root = match &args.path {
        Some(sub)
            if sub.is_absolute()
                || sub
                    .components()
                    .any(|c| matches!(c, std::path::Component::ParentDir)) =>
        {
            eprintln!(
                "error: --path must be a relative path inside DIR: {}",
                sub.display()
            );
            return Exit::Usage;
        }
        Some(sub) => args.dir.join(sub),
        None => args.dir.clone(),
    };
    let tree = match Tree::from_dir(&root, args.max_file_size) {
        Ok(tree) => tree,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Usage;
        }
    };
    let opts = Options {
        strict: args.strict,
        max_file_size: args.max_file_size,
        custom_domains: args.custom_domains,
        gateway_version: args.gateway_version,
    };
    let config_root = ConfigRoot {
        label: root.display().to_string(),
        holds_config: empty::holds_config(&tree),
        suggestions: Vec::new(),
    };
    let vars = match (crate::validate::vars::VarsConfig {
        file: args.vars_file.clone(),
    })
    .load()
    {
        Ok(vars) => vars,
        Err(e) => {
            eprintln!("error: {e}");
            return Exit::Usage;
        }
    };
    let (bundle, mut report) =
        crate::validate::vars::check(tree, vars.as_ref(), &opts, &mut Cache::default());
    let config_root = ConfigRoot {
        suggestions: if config_root.holds_config {
            Vec::new()
        } else {
            crate::bundle::config_roots(folders(&args.dir).iter().map(String::as_str))
        },
        ..config_root
    };
    // No gateway to ask what it serves: a root without APIs is reported,
    // since a sync of it could wipe one.
    empty::check(
        &mut report,
        &config_root,
        bundle.api_ids().len(),
        None,
        args.allow_empty,
    );
    if args.format == Format::Github {
        prefix_files(&mut report, args.path.as_ref());
    }
    let color = args.format == Format::Human
        && std::io::stdout().is_terminal()
        && std::env::var_os("NO_COLOR").is_none();
    print!("{}", render(&report, args.format, color));
    Exit::refused_if(report.rejects(args.strict))
}

/// The folders under `dir` (`.git` left out), relative and `/`-separated,
/// a few levels deep: where to look for a config root to suggest.
fn folders(dir: &Path) -> Vec<String> {
    const MAX_DEPTH: usize = 5;
    let mut found = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), String::new(), 0)];
    while let Some((path, prefix, depth)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&path) else {
            continue;
        };
        for entry in entries.flatten() {
            let (Ok(name), Ok(kind)) = (entry.file_name().into_string(), entry.file_type()) else {
                continue;
            };
            if !kind.is_dir() || name == ".git" {
                continue;
            }
            let rel = format!("{prefix}{name}");
            if depth + 1 < MAX_DEPTH {
                stack.push((entry.path(), format!("{rel}/"), depth + 1));
            }
            found.push(rel);
        }
    }
    found
}

/// GitHub resolves annotation paths from the repository root, and findings
/// are relative to the config root.
fn prefix_files(report: &mut Report, sub: Option<&PathBuf>) {
    let Some(sub) = sub else { return };
    let prefix = sub.to_string_lossy().trim_end_matches('/').to_string();
    if prefix.is_empty() || prefix == "." {
        return;
    }
    for f in report.errors.iter_mut().chain(report.warnings.iter_mut()) {
        f.file = if f.file == "." {
            prefix.clone()
        } else {
            format!("{prefix}/{}", f.file)
        };
    }
}
