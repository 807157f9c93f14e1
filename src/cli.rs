//! Command-line flags (clap). Every flag also reads `TYK_GITOPS_<FLAG>`, as
//! git-sync does, so a Kubernetes manifest can use either. These are raw
//! flags only: `config` turns them into a validated `SyncConfig` (with its
//! `FleetConfig`) or `RunConfig` once.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::flags::{FleetArgs, env_bool, parse_duration};

#[derive(Debug, Parser)]
#[command(
    name = "tyk-gitops",
    version,
    about = "Every Tyk gateway replica on one verified Git commit",
    args_override_self = true
)]
pub struct Cli {
    /// Log format: `text` for people, `json` for log pipelines.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "TYK_GITOPS_LOG_FORMAT"
    )]
    pub log_format: LogFormat,

    /// Log filter, in `tracing` env-filter syntax (e.g. `info`, `debug`).
    #[arg(
        long,
        global = true,
        default_value = "info",
        env = "TYK_GITOPS_LOG_LEVEL"
    )]
    pub log_level: String,

    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parses the command line and the environment, or exits as clap does.
    /// A `--schedule` replaces the `--period` (a ConfigMap can add a
    /// schedule next to a manifest's period); only both on the command
    /// line is a conflict, since one of them would be ignored.
    pub fn parse_args() -> Cli {
        use clap::parser::ValueSource;
        use clap::{CommandFactory, FromArgMatches};
        let matches = Cli::command().get_matches();
        if let Some(("run", run)) = matches.subcommand() {
            let typed = |id| run.value_source(id) == Some(ValueSource::CommandLine);
            if typed("period") && typed("schedule") {
                Cli::command()
                    .error(
                        clap::error::ErrorKind::ArgumentConflict,
                        "--period and --schedule exclude each other: give one",
                    )
                    .exit();
            }
        }
        Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// One pass: fetch, validate, apply, reload, verify; then exit (init containers).
    Sync(SyncArgs),
    /// Sidecar: sync now, then keep syncing (schedule, SIGHUP, webhook); serve health, metrics, status.
    Run(RunArgs),
    /// Validate a config repo checkout (for its CI); no Git, no gateway.
    Validate(crate::validate::command::Args),
    /// Every replica's status, read from Redis: `status` (a table) and `wait --sha` (for deploy pipelines).
    Fleet(crate::fleet::command::Args),
    /// What applying a commit would change: APIs, policies and fields added, removed, changed; the new side's findings.
    Plan(crate::plan::command::Args),
    /// Write what a running gateway serves as a config repo (apps/, policies/, middleware/): the first step to Git.
    Export(crate::export::Args),
}

/// The flags of `run`: every `sync` flag plus the loop's own.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub sync: SyncArgs,

    /// Poll interval (±10% jitter so replicas do not poll in step); a --schedule replaces it.
    #[arg(long, default_value = "30s", value_parser = parse_duration, env = "TYK_GITOPS_PERIOD")]
    pub period: Duration,

    /// Poll on a cron schedule instead of --period: 5 fields (Kubernetes CronJob style) or 6 with seconds first.
    #[arg(long, env = "TYK_GITOPS_SCHEDULE")]
    pub schedule: Option<String>,

    /// How often to check that the gateway still runs the current revision.
    #[arg(long, default_value = "60s", value_parser = parse_duration, env = "TYK_GITOPS_VERIFY_PERIOD")]
    pub verify_period: Duration,

    /// Cap of the retry backoff after Git or gateway failures.
    #[arg(long, default_value = "5m", value_parser = parse_duration, env = "TYK_GITOPS_MAX_BACKOFF")]
    pub max_backoff: Duration,

    /// Address of the HTTP server (/healthz, /readyz, /metrics, /status).
    #[arg(long, default_value = "0.0.0.0:9090", env = "TYK_GITOPS_LISTEN")]
    pub listen: String,

    /// This replica's name in status and fleet reports [default: the hostname, i.e. the pod name].
    #[arg(long, env = "TYK_GITOPS_REPLICA_ID")]
    pub replica_id: Option<String>,

    /// File holding the shared secret of `POST /webhook` (GitHub, GitLab, Gitea/Forgejo, Bitbucket, generic); re-read on every request, so a rotated secret applies at once. Absent: /webhook answers 404.
    #[arg(long, env = "TYK_GITOPS_WEBHOOK_SECRET_FILE")]
    pub webhook_secret_file: Option<PathBuf>,

    /// Staged rollout (needs --redis): this replica takes new commits first; the others apply a commit only after every live canary ran it, verified and healthy, for --canary-hold.
    #[arg(long, env = "TYK_GITOPS_CANARY", value_parser = env_bool())]
    pub canary: bool,

    /// How long a new commit must stay verified on every live canary, its checks green, before the other replicas apply it.
    #[arg(long, default_value = "60s", value_parser = parse_duration, env = "TYK_GITOPS_CANARY_HOLD")]
    pub canary_hold: Duration,

    /// A URL the canary requests during the hold (e.g. a health route of a real API through its gateway); any answer outside 2xx, or none within 5s, fails the commit fleet-wide. Repeatable; in the environment, comma-separated.
    #[arg(
        long = "canary-check",
        env = "TYK_GITOPS_CANARY_CHECK",
        value_delimiter = ','
    )]
    pub canary_checks: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Reload {
    /// `GET /tyk/reload?block=true` on this gateway.
    Local,
    /// `GET /tyk/reload/group`: every gateway on the same Redis.
    Group,
    /// Write files only; do not contact the gateway.
    None,
}

/// Which APIs verify requests through the gateway's listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Probe {
    /// The commit's new or changed APIs.
    Changed,
    /// Every API of the commit.
    All,
    /// None: trust what /tyk/apis lists.
    Off,
}

/// The flags of one sync, shared by `sync` and `run`.
#[derive(Debug, Clone, Args)]
pub struct SyncArgs {
    /// Config repo: https://, http://, ssh://, git@host:path, git://, file:// or a local path.
    #[arg(long, env = "TYK_GITOPS_REPO")]
    pub repo: String,

    /// Branch, tag or full commit sha [default: the remote's HEAD].
    #[arg(long = "ref", env = "TYK_GITOPS_REF")]
    pub git_ref: Option<String>,

    /// Config root inside the repo (one repo, many environments: envs/prod).
    #[arg(long, env = "TYK_GITOPS_PATH")]
    pub path: Option<String>,

    /// Where revisions, the Git cache and state.json live; point the gateway at <root>/current.
    #[arg(long, default_value = "/var/lib/tyk-gitops", env = "TYK_GITOPS_ROOT")]
    pub root: PathBuf,

    /// The path at which the gateway's container sees --root (middleware paths in definitions are rewritten to it) [default: --root].
    #[arg(long, env = "TYK_GITOPS_GATEWAY_ROOT")]
    pub gateway_root: Option<PathBuf>,

    /// Tyk gateway control API, e.g. http://localhost:8080. Absent: write files only (init container).
    #[arg(long, env = "TYK_GITOPS_GATEWAY")]
    pub gateway: Option<String>,

    /// File holding the gateway's `secret` (or set TYK_GITOPS_GATEWAY_SECRET). Re-read on every sync.
    #[arg(long, env = "TYK_GITOPS_GATEWAY_SECRET_FILE")]
    pub gateway_secret_file: Option<PathBuf>,

    /// How to make the gateway load a new revision.
    #[arg(long, value_enum, default_value = "local", env = "TYK_GITOPS_RELOAD")]
    pub reload: Reload,

    /// How long to wait for the gateway's /hello before giving up.
    #[arg(long, default_value = "60s", value_parser = parse_duration, env = "TYK_GITOPS_GATEWAY_WAIT")]
    pub gateway_wait: Duration,

    /// How long the gateway may take to report exactly the commit's APIs and policies after a reload.
    #[arg(long, default_value = "30s", value_parser = parse_duration, env = "TYK_GITOPS_VERIFY_TIMEOUT")]
    pub verify_timeout: Duration,

    /// After a reload, request these APIs' listen paths through the gateway: an API the gateway lists but does not route fails verify.
    #[arg(long, value_enum, default_value = "changed", env = "TYK_GITOPS_PROBE")]
    pub probe: Probe,

    /// The gateway's health check path (tyk.conf `health_check_endpoint_name`) [default: from the current revision's tyk.conf, else `hello`].
    #[arg(long, env = "TYK_GITOPS_GATEWAY_HEALTH_PATH")]
    pub gateway_health_path: Option<String>,

    /// The gateway runs with `enable_custom_domains` (also read from the repo's tyk.conf): APIs on one listen path with different domains do not shadow each other.
    #[arg(long, env = "TYK_GITOPS_CUSTOM_DOMAINS")]
    pub custom_domains: bool,

    /// Shallow fetch depth.
    #[arg(long, default_value_t = 1, env = "TYK_GITOPS_DEPTH")]
    pub depth: u32,

    /// Write and reload even when the commit is already applied and verified.
    #[arg(long, env = "TYK_GITOPS_FORCE", value_parser = env_bool())]
    pub force: bool,

    /// Apply a commit even when it would leave the gateway without APIs: a config root with no apps/, policies/, policies.json or .tyk.json, or a commit that removes every API the gateway serves.
    #[arg(long, env = "TYK_GITOPS_ALLOW_EMPTY", value_parser = env_bool())]
    pub allow_empty: bool,

    /// HTTPS user name (the token goes in --password-file).
    #[arg(long, env = "TYK_GITOPS_USERNAME")]
    pub username: Option<String>,

    /// File holding the HTTPS password or token; re-read on every sync, so rotated tokens work.
    #[arg(long, env = "TYK_GITOPS_PASSWORD_FILE")]
    pub password_file: Option<PathBuf>,

    /// SSH private key file.
    #[arg(long, env = "TYK_GITOPS_SSH_KEY_FILE")]
    pub ssh_key_file: Option<PathBuf>,

    /// known_hosts file; SSH host keys are always verified [default: ~/.ssh/known_hosts].
    #[arg(long, env = "TYK_GITOPS_SSH_KNOWN_HOSTS_FILE")]
    pub ssh_known_hosts_file: Option<PathBuf>,

    /// Git connect timeout.
    #[arg(long, default_value = "10s", value_parser = parse_duration, env = "TYK_GITOPS_CONNECT_TIMEOUT")]
    pub connect_timeout: Duration,

    /// Wall-clock bound on each Git operation (ref listing, fetch).
    #[arg(long, default_value = "120s", value_parser = parse_duration, env = "TYK_GITOPS_TIMEOUT")]
    pub timeout: Duration,

    /// Revisions kept on disk for rollback (current always kept).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(2..), env = "TYK_GITOPS_KEEP_REVISIONS")]
    pub keep_revisions: u32,

    /// Refuse files larger than this many bytes.
    #[arg(long, default_value_t = crate::validate::DEFAULT_MAX_FILE_SIZE, env = "TYK_GITOPS_MAX_FILE_SIZE")]
    pub max_file_size: u64,

    /// Treat validation warnings as errors.
    #[arg(long, env = "TYK_GITOPS_STRICT", value_parser = env_bool())]
    pub strict: bool,

    /// KEY=VALUE lines (or a folder of one file per key, a mounted Secret) for ${VAR} in definitions and policies; re-read on every sync. TYK_GITOPS_VAR_<KEY> sets one too.
    #[arg(long, value_name = "FILE", env = "TYK_GITOPS_VARS_FILE")]
    pub vars_file: Option<PathBuf>,

    /// Apply only commits (or annotated tags named by --ref) signed by a key of --allowed-signers or --trusted-keys.
    #[arg(long, env = "TYK_GITOPS_VERIFY_SIGNATURES")]
    pub verify_signatures: bool,

    /// SSH public keys allowed to sign, in git's gpg.ssh.allowedSignersFile format; re-read on every sync.
    #[arg(long, value_name = "FILE", env = "TYK_GITOPS_ALLOWED_SIGNERS")]
    pub allowed_signers: Option<PathBuf>,

    /// Armored OpenPGP public keys allowed to sign; re-read on every sync.
    #[arg(long, value_name = "FILE", env = "TYK_GITOPS_TRUSTED_KEYS")]
    pub trusted_keys: Option<PathBuf>,

    #[command(flatten)]
    pub fleet: FleetArgs,
}
