//! `tyk-gitops plan`: reads the two sides from the flags, diffs them and
//! prints the plan. The new side is a checkout (`DIR`) or a ref of a remote
//! (`--repo`); the base is another checkout (`--base`), what a gateway runs
//! (`--gateway`), or a commit (`--against`, by default the one applied under
//! `--root`). Nothing is written under `--root`: commits are read from its
//! Git cache when it has them, else fetched into a temporary one.
//!
//! Exit codes: 0 (with or without changes), 1 the new side has errors,
//! 2 usage, 3 Git, 4 gateway, 5 local state.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Compare, PlanFormat, Side, diff, render};
use crate::exit::Exit;
use crate::flags::normalise_subpath;
use crate::gateway::Gateway;
use crate::secret::{GATEWAY_SECRET_ENV, SecretSource};
use crate::source::{Commit, Source, SourceConfig};
use crate::state::State;
use crate::tree::Tree;
use crate::validate::{Cache, DEFAULT_MAX_FILE_SIZE, Options};

/// Flags of `tyk-gitops plan`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The checkout to plan (the new side); not with --repo.
    #[arg(conflicts_with = "repo", env = "TYK_GITOPS_DIR")]
    pub dir: Option<PathBuf>,

    /// The base checkout to compare with (e.g. the pull request's target branch).
    #[arg(long, value_name = "BASE_DIR", conflicts_with_all = ["gateway", "against"])]
    pub base: Option<PathBuf>,

    /// Config repo to plan a ref of, instead of DIR.
    #[arg(long, env = "TYK_GITOPS_REPO")]
    pub repo: Option<String>,

    /// Branch, tag or full sha of --repo [default: the remote's HEAD].
    #[arg(long = "ref", requires = "repo", env = "TYK_GITOPS_REF")]
    pub git_ref: Option<String>,

    /// The base commit (full sha) [default: the commit applied under --root].
    #[arg(
        long,
        value_name = "SHA",
        requires = "repo",
        conflicts_with = "gateway"
    )]
    pub against: Option<String>,

    /// Where `sync`/`run` keep state.json and the Git cache (read only).
    #[arg(long, default_value = "/var/lib/tyk-gitops", env = "TYK_GITOPS_ROOT")]
    pub root: PathBuf,

    /// Compare with what this gateway runs now (only fields the new side sets count).
    #[arg(long, env = "TYK_GITOPS_GATEWAY")]
    pub gateway: Option<String>,

    /// File holding the gateway's `secret` (or set TYK_GITOPS_GATEWAY_SECRET).
    #[arg(long, env = "TYK_GITOPS_GATEWAY_SECRET_FILE")]
    pub gateway_secret_file: Option<PathBuf>,

    /// Config root inside the checkouts or the repo (envs/prod).
    #[arg(long, value_name = "SUBDIR", env = "TYK_GITOPS_PATH")]
    pub path: Option<String>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = PlanFormat::Human, env = "TYK_GITOPS_FORMAT")]
    pub format: PlanFormat,

    /// KEY=VALUE lines (or a folder of one file per key) for ${VAR}, substituted on both sides as `sync --vars-file` does: the plan of one environment.
    #[arg(long, value_name = "FILE", env = "TYK_GITOPS_VARS_FILE")]
    pub vars_file: Option<PathBuf>,

    /// Fail (exit 1) on warnings of the new side too.
    #[arg(long, env = "TYK_GITOPS_STRICT")]
    pub strict: bool,

    /// Files larger than this are refused (they are not read).
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_FILE_SIZE, env = "TYK_GITOPS_MAX_FILE_SIZE")]
    pub max_file_size: u64,

    /// Git connect timeout.
    #[arg(long, default_value = "10s", value_parser = crate::flags::parse_duration, env = "TYK_GITOPS_CONNECT_TIMEOUT")]
    pub connect_timeout: Duration,

    /// Git transfer timeout, and the bound on each gateway request.
    #[arg(long, default_value = "120s", value_parser = crate::flags::parse_duration, env = "TYK_GITOPS_TIMEOUT")]
    pub timeout: Duration,
}

/// Why a plan could not be made, with the exit code `run` returns for it.
#[derive(Debug, thiserror::Error)]
enum PlanError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Git(#[from] crate::source::SourceError),
    #[error("{0}")]
    Gateway(#[from] crate::gateway::GatewayError),
    #[error("{0}")]
    State(String),
}

impl PlanError {
    fn exit(&self) -> Exit {
        match self {
            PlanError::Usage(_) => Exit::Usage,
            PlanError::Git(_) => Exit::Remote,
            PlanError::Gateway(_) => Exit::Gateway,
            PlanError::State(_) => Exit::Local,
        }
    }
}

/// Runs the command; returns the process exit code.
pub fn run(args: &Args) -> Exit {
    match plan(args) {
        Ok((text, rejects)) => {
            print!("{text}");
            Exit::refused_if(rejects)
        }
        Err(err) => {
            eprintln!("error: {err}");
            err.exit()
        }
    }
}

fn plan(args: &Args) -> Result<(String, bool), PlanError> {
    let subpath = subpath(args.path.as_deref())?;
    let opts = Options {
        strict: args.strict,
        max_file_size: args.max_file_size,
        ..Options::default()
    };
    let vars = (crate::validate::vars::VarsConfig {
        file: args.vars_file.clone(),
    })
    .load()
    .map_err(|e| PlanError::Usage(e.to_string()))?;
    // A temporary Git cache, only made when --root's cannot serve a commit.
    let scratch = tempfile::Builder::new()
        .prefix("tyk-gitops-plan")
        .tempdir()
        .map_err(|e| PlanError::State(format!("cannot make a temporary directory: {e}")))?;
    let source = args.repo.as_ref().map(|repo| {
        let mut config = SourceConfig::new(repo.clone());
        config.git_ref = args.git_ref.clone().filter(|r| !r.is_empty());
        config.connect_timeout = args.connect_timeout;
        config.timeout = args.timeout;
        Source::new(config, scratch.path().join("cache"))
    });

    let new_tree = match (&source, &args.dir) {
        (Some(source), _) => {
            let commit = source.resolve()?;
            source.fetch(&commit)?;
            source.read_tree(&commit, subpath.as_deref(), args.max_file_size, &|_| {
                crate::tree::Cached::Unknown
            })?
        }
        (None, dir) => dir_tree(dir.as_deref().unwrap_or(Path::new(".")), &subpath, args)?,
    };
    let (new_bundle, report) =
        crate::validate::vars::check(new_tree, vars.as_ref(), &opts, &mut Cache::default());
    let rejects = report.rejects(args.strict);
    let new = Side::from_bundle(&new_bundle);

    let (base, compare) = if let Some(url) = &args.gateway {
        (gateway_side(url, args)?, Compare::Committed)
    } else if let Some(base_dir) = &args.base {
        let tree = dir_tree(base_dir, &subpath, args)?;
        (side_of(tree, vars.as_ref(), &opts), Compare::Exact)
    } else if let Some(source) = &source {
        let sha = match &args.against {
            Some(sha) => sha.to_ascii_lowercase(),
            None => applied_sha(&args.root)?,
        };
        let tree = commit_tree(source, &sha, &args.root, subpath.as_deref(), args)?;
        (side_of(tree, vars.as_ref(), &opts), Compare::Exact)
    } else {
        return Err(PlanError::Usage(
            "plan needs a base: --base BASE_DIR, --gateway URL, or --repo URL (against the commit applied under --root, or --against SHA)".into(),
        ));
    };
    let plan = diff(&base, &new, compare, report);
    Ok((render(&plan, args.format), rejects))
}

fn side_of(tree: Tree, vars: Option<&crate::validate::vars::Vars>, opts: &Options) -> Side {
    let (bundle, _) = crate::validate::vars::check(tree, vars, opts, &mut Cache::default());
    Side::from_bundle(&bundle)
}

fn subpath(raw: Option<&str>) -> Result<Option<String>, PlanError> {
    let Some(raw) = raw.filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    let sub = normalise_subpath(raw).map_err(PlanError::Usage)?;
    Ok((!sub.is_empty()).then_some(sub))
}

fn dir_tree(dir: &Path, subpath: &Option<String>, args: &Args) -> Result<Tree, PlanError> {
    let root = match subpath {
        Some(sub) => dir.join(sub),
        None => dir.to_path_buf(),
    };
    Tree::from_dir(&root, args.max_file_size).map_err(|e| PlanError::Usage(e.to_string()))
}

/// The sha `sync`/`run` applied under `root`.
fn applied_sha(root: &Path) -> Result<String, PlanError> {
    let (state, _) = State::load(root).map_err(|e| PlanError::State(e.to_string()))?;
    state.current.map(|applied| applied.sha).ok_or_else(|| {
        PlanError::Usage(format!(
            "nothing is applied under {} yet: give --against SHA, --base or --gateway",
            root.display()
        ))
    })
}

/// The files of commit `sha`: from `--root`'s Git cache when it has the
/// commit (the applied one always is), else fetched into the scratch cache.
fn commit_tree(
    source: &Source,
    sha: &str,
    root: &Path,
    subpath: Option<&str>,
    args: &Args,
) -> Result<Tree, PlanError> {
    if !crate::sha::Sha::is_full(sha) {
        return Err(PlanError::Usage(format!(
            "--against must be a full commit sha (40 hex digits), got {sha:?}"
        )));
    }
    let commit = Commit {
        sha: sha.to_string(),
        git_ref: sha.to_string(),
    };
    let local = Source::new(source.config.clone(), root.join("cache"));
    if let Ok(tree) = local.read_tree(&commit, subpath, args.max_file_size, &|_| {
        crate::tree::Cached::Unknown
    }) {
        return Ok(tree);
    }
    source.fetch(&commit)?;
    Ok(
        source.read_tree(&commit, subpath, args.max_file_size, &|_| {
            crate::tree::Cached::Unknown
        })?,
    )
}

fn gateway_side(url: &str, args: &Args) -> Result<Side, PlanError> {
    let env = std::env::var(GATEWAY_SECRET_ENV).ok();
    let secret = SecretSource::choose(args.gateway_secret_file.as_deref(), env).ok_or_else(|| {
        PlanError::Usage(format!(
            "--gateway needs the gateway's secret: --gateway-secret-file FILE or {GATEWAY_SECRET_ENV}"
        ))
    })?;
    let secret = secret.read().map_err(|e| PlanError::Usage(e.to_string()))?;
    let gateway = Gateway::new(url, secret.expose().to_string(), args.timeout)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| PlanError::State(format!("cannot start the async runtime: {e}")))?;
    let (apis, policies) = runtime.block_on(gateway.definitions())?;
    Ok(Side::from_gateway(apis, policies))
}
