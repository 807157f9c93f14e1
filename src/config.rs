//! Raw flags → a validated `SyncConfig`, once. Nothing downstream re-parses
//! flags or reads the environment; secrets are kept as where-to-read-them
//! and read on each sync, so rotated files are picked up.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::cli::{Probe, Reload, RunArgs, SyncArgs};
use crate::flags::normalise_subpath;
use crate::fleet::FleetConfig;
use crate::fleet::rollout::RolloutConfig;
use crate::gateway::{ProbeMode, ReloadMode};
use crate::secret::{GATEWAY_SECRET_ENV, SecretFileError, SecretSource};
use crate::source::SourceConfig;
use crate::trigger::schedule::Schedule;

/// The env var holding the gateway secret when no file is given.

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    SecretFile(#[from] SecretFileError),
}

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub url: String,
    pub secret: SecretSource,
    pub reload: ReloadMode,
    /// Bound on waiting for `/hello`.
    pub wait: Duration,
    /// Bound on waiting for the loaded ids to match after a reload.
    pub verify_timeout: Duration,
    /// Which APIs the routing probe requests after a reload.
    pub probe: ProbeMode,
    /// `health_check_endpoint_name` as given by the flag; `None`: from the
    /// current revision's tyk.conf, else `hello`.
    pub health_path: Option<String>,
}

#[derive(Debug, Clone)]
pub struct SyncConfig {
    pub source: SourceConfig,
    /// Config root inside the repo, normalised (`envs/prod`), if any.
    pub path: Option<String>,
    /// Absolute.
    pub root: PathBuf,
    /// Where the gateway sees `root`; middleware paths point into it.
    pub gateway_root: PathBuf,
    /// `None`: write files only, as an init container before the gateway starts.
    pub gateway: Option<GatewayConfig>,
    pub force: bool,
    /// `--allow-empty`: a commit may leave the gateway without APIs.
    pub allow_empty: bool,
    pub keep_revisions: usize,
    pub validate: crate::validate::Options,
    /// `Some` with `--verify-signatures`: whose signatures a commit needs.
    pub trust: Option<crate::trust::TrustConfig>,
    /// Where `${VAR}` values come from (off without a file or env var).
    pub vars: crate::validate::vars::VarsConfig,
    /// `--redis`: share commits, status and the poll lease with the fleet
    /// (`sync` only reads the commit the fleet verified, to start on it).
    pub fleet: Option<FleetConfig>,
}

#[derive(Debug, Clone)]
pub struct RunConfig {
    /// `--listen`: where `/healthz`, `/readyz`, `/metrics`, `/status` and
    /// the webhook are served.
    pub listen: String,
    pub sync: SyncConfig,
    pub schedule: Schedule,
    /// How often to compare what the gateway runs against `current`.
    pub verify_period: Duration,
    /// Cap of the retry backoff after Git or gateway failures.
    pub max_backoff: Duration,
    pub replica_id: String,
    /// `--canary` and its hold and checks (with `--redis` only).
    pub rollout: RolloutConfig,
    /// `--webhook-secret-file`; without it `POST /webhook` answers 404.
    pub webhook_secret_file: Option<PathBuf>,
}

impl RunConfig {
    /// The flags of `run`, checked once: a bad schedule, an unreadable
    /// webhook secret or a bad fleet flag fails the pod at start, not at
    /// the first push.
    pub fn from_args(args: RunArgs) -> Result<RunConfig, ConfigError> {
        // An empty TYK_GITOPS_SCHEDULE (a manifest's placeholder) is no schedule.
        let schedule = match args.schedule.as_deref().filter(|s| !s.trim().is_empty()) {
            Some(expr) => Schedule::cron(expr).map_err(|e| ConfigError::Usage(e.to_string()))?,
            None if args.period.is_zero() => {
                return Err(ConfigError::Usage("--period must be more than zero".into()));
            }
            None => Schedule::Every(args.period),
        };
        if let Some(file) = &args.webhook_secret_file {
            crate::trigger::webhook::check_secret_file(file)
                .map_err(|e| ConfigError::Usage(e.to_string()))?;
        }
        let sync = SyncConfig::from_args(args.sync)?;
        let rollout = rollout_config(args.canary, args.canary_hold, args.canary_checks, &sync)?;
        Ok(RunConfig {
            listen: args.listen,
            sync,
            schedule,
            verify_period: args.verify_period,
            max_backoff: args.max_backoff,
            replica_id: args.replica_id.unwrap_or_else(hostname),
            rollout,
            webhook_secret_file: args.webhook_secret_file,
        })
    }
}

/// `--canary`, `--canary-hold` and `--canary-check`: only with `--redis`
/// (the rollout is decided there), a hold above zero, http(s) checks. The
/// canary's own gateway health is always one of its checks.
fn rollout_config(
    canary: bool,
    hold: Duration,
    checks: Vec<String>,
    sync: &SyncConfig,
) -> Result<RolloutConfig, ConfigError> {
    if sync.fleet.is_none() && (canary || !checks.is_empty()) {
        return Err(ConfigError::Usage(
            "--canary and --canary-check need --redis: the staged rollout is decided there".into(),
        ));
    }
    if hold.is_zero() && canary {
        return Err(ConfigError::Usage(
            "--canary-hold must be more than zero".into(),
        ));
    }
    if let Some(bad) = checks
        .iter()
        .find(|u| !url::Url::parse(u).is_ok_and(|u| matches!(u.scheme(), "http" | "https")))
    {
        return Err(ConfigError::Usage(format!(
            "--canary-check {}: give an http:// or https:// URL",
            crate::redact::redact_url(bad)
        )));
    }
    Ok(RolloutConfig {
        canary,
        hold,
        checks,
        health: sync.gateway.as_ref().map(|g| {
            format!(
                "{}/{}",
                g.url.trim_end_matches('/'),
                g.health_path
                    .as_deref()
                    .unwrap_or(crate::gateway::DEFAULT_HEALTH_PATH)
                    .trim_matches('/')
            )
        }),
    })
}

/// The host name (in Kubernetes, the pod name).
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates
    // within it on success.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".to_string();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

impl SyncConfig {
    pub fn from_args(args: SyncArgs) -> Result<SyncConfig, ConfigError> {
        let secret_env = std::env::var(GATEWAY_SECRET_ENV).ok();
        Self::from_args_and_secret(args, secret_env)
    }

    fn from_args_and_secret(
        args: SyncArgs,
        secret_env: Option<String>,
    ) -> Result<SyncConfig, ConfigError> {
        if args.repo.trim().is_empty() {
            return Err(ConfigError::Usage("--repo must not be empty".into()));
        }
        let fleet =
            FleetConfig::from_args(&args.fleet).map_err(|e| ConfigError::Usage(e.to_string()))?;
        let root = absolute(&args.root)?;
        let gateway_root = match &args.gateway_root {
            Some(p) if p.is_absolute() => p.clone(),
            Some(p) => {
                return Err(ConfigError::Usage(format!(
                    "--gateway-root must be an absolute path, got {}",
                    p.display()
                )));
            }
            None => root.clone(),
        };
        let path = args
            .path
            .as_deref()
            .map(normalise_subpath)
            .transpose()
            .map_err(ConfigError::Usage)?;
        if args.password_file.is_some() && args.ssh_key_file.is_some() {
            return Err(ConfigError::Usage(
                "--password-file (HTTPS) and --ssh-key-file (SSH) exclude each other".into(),
            ));
        }
        let gateway = gateway_config(&args, secret_env)?;
        let username = match (&args.username, &args.password_file) {
            (Some(u), _) => Some(u.clone()),
            // Token auth: the user name is ignored by GitHub, GitLab, Gitea.
            (None, Some(_)) => Some("git".to_string()),
            (None, None) => None,
        };
        let trust = trust_config(&args)?;
        let validate = crate::validate::Options {
            strict: args.strict,
            max_file_size: args.max_file_size,
            custom_domains: args.custom_domains,
            // Learnt from the gateway's health answer at each sync.
            gateway_version: None,
        };
        Ok(SyncConfig {
            source: SourceConfig {
                repo: args.repo,
                git_ref: args.git_ref.filter(|r| !r.is_empty()),
                depth: args.depth.max(1),
                username,
                password_file: args.password_file,
                ssh_key_file: args.ssh_key_file,
                ssh_known_hosts_file: args.ssh_known_hosts_file,
                connect_timeout: args.connect_timeout,
                timeout: args.timeout,
            },
            path,
            root,
            gateway_root,
            gateway,
            force: args.force,
            allow_empty: args.allow_empty,
            keep_revisions: args.keep_revisions as usize,
            validate,
            trust,
            vars: crate::validate::vars::VarsConfig {
                file: args.vars_file.clone(),
            },
            fleet,
        })
    }
}

/// `--gateway` and the flags about it; none without a gateway or with
/// `--reload none`.
fn gateway_config(
    args: &SyncArgs,
    secret_env: Option<String>,
) -> Result<Option<GatewayConfig>, ConfigError> {
    Ok(match (&args.gateway, args.reload) {
        (None, _) | (Some(_), Reload::None) => None,
        (Some(url), reload) => {
            let secret = SecretSource::choose(args.gateway_secret_file.as_deref(), secret_env)
                .ok_or_else(|| {
                    ConfigError::Usage(format!(
                        "--gateway needs the gateway's secret: --gateway-secret-file FILE or {GATEWAY_SECRET_ENV}"
                    ))
                })?;
            Some(GatewayConfig {
                url: url.clone(),
                secret,
                reload: match reload {
                    Reload::Group => ReloadMode::Group,
                    _ => ReloadMode::Local,
                },
                wait: args.gateway_wait,
                verify_timeout: args.verify_timeout,
                probe: match args.probe {
                    Probe::Changed => ProbeMode::Changed,
                    Probe::All => ProbeMode::All,
                    Probe::Off => ProbeMode::Off,
                },
                health_path: args
                    .gateway_health_path
                    .as_deref()
                    .map(|p| p.trim_matches('/').to_string())
                    .filter(|p| !p.is_empty()),
            })
        }
    })
}

/// `--verify-signatures` with its key files; each without the other is a
/// usage error.
fn trust_config(args: &SyncArgs) -> Result<Option<crate::trust::TrustConfig>, ConfigError> {
    Ok(
        match (
            args.verify_signatures,
            args.allowed_signers.is_some() || args.trusted_keys.is_some(),
        ) {
            (true, false) => {
                return Err(ConfigError::Usage(
                "--verify-signatures needs --allowed-signers FILE (SSH) and/or --trusted-keys FILE (OpenPGP)".into(),
            ));
            }
            (false, true) => {
                return Err(ConfigError::Usage(
                "--allowed-signers and --trusted-keys take effect only with --verify-signatures".into(),
            ));
            }
            (false, false) => None,
            (true, true) => Some(crate::trust::TrustConfig {
                allowed_signers: args.allowed_signers.clone(),
                trusted_keys: args.trusted_keys.clone(),
            }),
        },
    )
}

fn absolute(path: &Path) -> Result<PathBuf, ConfigError> {
    std::path::absolute(path)
        .map_err(|e| ConfigError::Usage(format!("--root {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(extra: &[&str]) -> SyncArgs {
        #[derive(Parser)]
        struct T {
            #[command(flatten)]
            a: SyncArgs,
        }
        let mut argv = vec!["t", "--repo", "file:///r", "--root", "/tmp/r"];
        argv.extend_from_slice(extra);
        T::parse_from(argv).a
    }

    #[test]
    fn subpath_is_normalised_and_escapes_are_refused() {
        assert_eq!(normalise_subpath("./envs/prod/").unwrap(), "envs/prod");
        assert!(normalise_subpath("../x").is_err());
        assert!(normalise_subpath("/etc").is_err());
    }

    #[test]
    fn a_gateway_needs_a_secret() {
        let err =
            SyncConfig::from_args_and_secret(args(&["--gateway", "http://g"]), None).unwrap_err();
        assert!(err.to_string().contains("--gateway-secret-file"));
        let ok = SyncConfig::from_args_and_secret(
            args(&["--gateway", "http://g"]),
            Some("s3cret".into()),
        )
        .unwrap();
        let debug = format!("{ok:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
    }

    #[test]
    fn reload_none_means_no_gateway_contact() {
        let c = SyncConfig::from_args_and_secret(
            args(&["--gateway", "http://g", "--reload", "none"]),
            None,
        )
        .unwrap();
        assert!(c.gateway.is_none());
    }

    #[test]
    fn secret_file_is_read_each_time_without_newline() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("s");
        std::fs::write(&f, "one\n").unwrap();
        let src = SecretSource::File(f.clone());
        assert_eq!(src.read().unwrap().expose(), "one");
        std::fs::write(&f, "two\n").unwrap();
        assert_eq!(src.read().unwrap().expose(), "two");
    }
}
