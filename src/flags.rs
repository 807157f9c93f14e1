//! Flag groups and value parsers that several commands share (`--redis`
//! and `--cluster`, durations, Kubernetes-style booleans). Below `cli` and
//! the commands' own `Args`, so each can use them without a loop.

use std::path::{Component, Path};
use std::time::Duration;

use clap::Args;

/// Where replicas of one cluster meet: the Redis the gateways already use.
#[derive(Clone, Args)]
pub struct FleetArgs {
    /// Redis URL (redis://[:password@]host:port[/db], rediss:// for TLS). With it, `run` shares commits and status with the other replicas, and `sync` starts on the fleet's verified commit.
    #[arg(long = "redis", env = "TYK_GITOPS_REDIS")]
    pub redis: Option<String>,

    /// The fleet's name: replicas with the same Redis and cluster converge together.
    #[arg(long, default_value = "default", env = "TYK_GITOPS_CLUSTER")]
    pub cluster: String,
}

/// By hand: the Redis URL may hold a password.
impl std::fmt::Debug for FleetArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetArgs")
            .field(
                "redis",
                &self.redis.as_deref().map(crate::redact::redact_url),
            )
            .field("cluster", &self.cluster)
            .finish()
    }
}

/// The values a boolean flag's environment variable takes, as Kubernetes
/// users write them: `true`/`false`, `1`/`0`, `yes`/`no`, `on`/`off` (any
/// case). An empty variable counts as unset (false). Anything else is a
/// usage error rather than a guess.
pub fn env_bool() -> EnvBool {
    EnvBool
}

/// See `env_bool`.
#[derive(Debug, Clone, Copy)]
pub struct EnvBool;

impl clap::builder::TypedValueParser for EnvBool {
    type Value = bool;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<bool, clap::Error> {
        if value.is_empty() {
            return Ok(false);
        }
        clap::builder::BoolishValueParser::new().parse_ref(cmd, arg, value)
    }
}

/// `30s`, `5m`, `1h30m`, `250ms`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 30s, 5m, 250ms)"))
}

/// `./envs/prod/` → `envs/prod`; refuses `..` and absolute paths, which
/// would leave the repository.
pub fn normalise_subpath(raw: &str) -> Result<String, String> {
    let mut parts = Vec::new();
    for c in Path::new(raw).components() {
        match c {
            Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
            Component::CurDir => {}
            _ => {
                return Err(format!(
                    "--path {raw:?} must be a relative path inside the repository"
                ));
            }
        }
    }
    Ok(parts.join("/"))
}
