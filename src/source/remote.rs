//! One conversation with the remote: credentials, host-key verification and
//! time limits wired into libgit2's callbacks, and libgit2's errors turned
//! into `SourceError`s that say what went wrong without any secret.

use std::cell::{Cell, RefCell};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{PoisonError, RwLock};
use std::time::{Duration, Instant};

use git2::{
    CertificateCheckStatus, Cred, CredentialType, Direction, ErrorClass, ErrorCode, Oid,
    ProxyOptions, Remote, RemoteCallbacks,
};

use super::known_hosts::{self, Verdict};
use super::url::{Transport, redact_url, scrub, transport};
use super::{SourceConfig, SourceError};

/// What a callback saw that libgit2's own error would blur: it knows only
/// "callback failed", we know why.
#[derive(Debug, Clone)]
enum Failure {
    UnknownHost {
        host: String,
    },
    HostKeyMismatch {
        host: String,
        offered: String,
        known: Vec<String>,
    },
    NoRawHostKey {
        host: String,
    },
    AuthRejected,
    NoCredentials(&'static str),
    Timeout,
}

/// The settings and secrets of one operation against the remote. Secrets
/// are read when the session starts, so a rotated token is used at once.
pub struct Session<'a> {
    config: &'a SourceConfig,
    /// Parsed once: picks credentials, host-key port and shallow support.
    transport: Transport,
    /// Redacted; the only form of the URL that may reach a message.
    pub shown_url: String,
    /// The token from `password_file`, as of this session; also scrubbed
    /// from every libgit2 message.
    password: Option<String>,
    known_hosts_path: PathBuf,
    /// Start of the operation, for the whole-transfer `timeout`.
    started: Instant,
    /// Why a callback failed the connection, for a precise error.
    failure: RefCell<Option<Failure>>,
    /// Credentials handed out on this connection; a second request means
    /// the first was refused.
    credential_attempts: Cell<u32>,
}

impl<'a> Session<'a> {
    pub fn start(config: &'a SourceConfig) -> Result<Session<'a>, SourceError> {
        super::git_protocol::register();
        let transport = transport(&config.repo);
        // libgit2 would say "unsupported URL protocol" for a missing folder.
        if let Some(path) = super::local_path(&config.repo)
            && !path.exists()
        {
            return Err(SourceError::NoSuchPath {
                path: path.display().to_string(),
            });
        }
        // http:// too: a redirect or a proxy may take it to TLS.
        if matches!(transport, Transport::Http { .. }) {
            super::tls::load_ca_bundle();
        }
        let password = match &config.password_file {
            Some(path) => Some(read_secret(path)?),
            None => None,
        };
        Ok(Session {
            config,
            transport,
            shown_url: redact_url(&config.repo),
            password,
            known_hosts_path: known_hosts_path(config),
            started: Instant::now(),
            failure: RefCell::new(None),
            credential_attempts: Cell::new(0),
        })
    }

    pub fn is_local(&self) -> bool {
        self.transport == Transport::Local
    }

    /// Runs a libgit2 operation under this session's socket timeouts. Not
    /// reentrant: one call per operation.
    pub fn run<T>(&self, operation: impl FnOnce() -> T) -> T {
        with_timeouts(self.config.connect_timeout, self.config.timeout, operation)
    }

    /// Every ref the remote advertises, with its object id: one listing.
    pub fn list(&self) -> Result<Vec<(String, Oid)>, SourceError> {
        self.run(|| self.list_now())
    }

    /// `list` for a caller already inside `run`.
    pub fn list_now(&self) -> Result<Vec<(String, Oid)>, SourceError> {
        let mut remote = Remote::create_detached(self.config.repo.as_str())
            .map_err(|e| self.connect_error(&e))?;
        let connection = remote
            .connect_auth(Direction::Fetch, Some(self.callbacks()), Some(proxy()))
            .map_err(|e| self.connect_error(&e))?;
        let heads = connection.list().map_err(|e| self.connect_error(&e))?;
        Ok(heads
            .iter()
            .map(|head| (head.name().to_string(), head.oid()))
            .collect())
    }

    /// The callbacks every connection uses: credentials, host key, timeout.
    /// Called once per connection, so it also forgets the previous one's
    /// credential attempts and failure.
    pub fn callbacks(&self) -> RemoteCallbacks<'_> {
        self.credential_attempts.set(0);
        self.failure.replace(None);
        let mut callbacks = RemoteCallbacks::new();
        callbacks
            .credentials(|_url, user_from_url, allowed| self.credentials(user_from_url, allowed));
        callbacks.certificate_check(|cert, host| {
            let Some(hostkey) = cert.as_hostkey() else {
                // TLS: libgit2 verifies the chain against the system roots.
                return Ok(CertificateCheckStatus::CertificatePassthrough);
            };
            let failure = match hostkey.hostkey() {
                Some(key) => self.check_host_key(host, key),
                None => Some(Failure::NoRawHostKey {
                    host: host.to_string(),
                }),
            };
            match failure {
                None => Ok(CertificateCheckStatus::CertificateOk),
                Some(failure) => {
                    self.failure.replace(Some(failure));
                    Err(git2::Error::from_str("host key verification failed"))
                }
            }
        });
        callbacks.transfer_progress(|_| self.within_time());
        callbacks.sideband_progress(|_| self.within_time());
        callbacks
    }

    /// A timeout error once the operation has run longer than `timeout`:
    /// checked before each further conversation of a many-step fetch.
    pub fn expired(&self) -> Option<SourceError> {
        (self.started.elapsed() > self.config.timeout).then(|| SourceError::Timeout {
            url: self.shown_url.clone(),
            after: self.config.timeout,
        })
    }

    /// False (abort) once the operation has run longer than `timeout`.
    fn within_time(&self) -> bool {
        if self.started.elapsed() > self.config.timeout {
            self.failure.replace(Some(Failure::Timeout));
            return false;
        }
        true
    }

    fn credentials(
        &self,
        user_from_url: Option<&str>,
        allowed: CredentialType,
    ) -> Result<Cred, git2::Error> {
        let refuse = |failure: Failure| {
            self.failure.replace(Some(failure));
            Err(git2::Error::from_str("no usable credentials"))
        };
        let user = self
            .config
            .username
            .as_deref()
            .or(user_from_url)
            .filter(|u| !u.is_empty());
        if allowed.contains(CredentialType::USERNAME) {
            return Cred::username(user.unwrap_or("git"));
        }
        // libgit2 asks again after the server refused what we gave: one try
        // per operation, or a wrong token loops forever.
        if self.credential_attempts.get() > 0 {
            return refuse(Failure::AuthRejected);
        }
        self.credential_attempts.set(1);
        if allowed.contains(CredentialType::SSH_KEY) {
            let Some(key) = &self.config.ssh_key_file else {
                return refuse(Failure::NoCredentials(
                    "the SSH server wants a key: set --ssh-key-file",
                ));
            };
            return Cred::ssh_key(user.unwrap_or("git"), None, key, None);
        }
        if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
            let (url_user, url_password) = match &self.transport {
                Transport::Http { user, password } => (user.as_deref(), password.as_deref()),
                _ => (None, None),
            };
            let password = self.password.as_deref().or(url_password);
            let Some(password) = password else {
                return refuse(Failure::NoCredentials(
                    "the server wants credentials: set --username and --password-file",
                ));
            };
            // A token alone needs some user name; hosts that take tokens
            // ignore it, and this is GitHub's documented one.
            let user = self
                .config
                .username
                .as_deref()
                .or(url_user)
                .unwrap_or("x-access-token");
            return Cred::userpass_plaintext(user, password);
        }
        refuse(Failure::NoCredentials(
            "the server asks for a kind of credentials this tool does not offer",
        ))
    }

    fn check_host_key(&self, host: &str, key: &[u8]) -> Option<Failure> {
        let port = match &self.transport {
            Transport::Ssh { port, .. } => *port,
            _ => None,
        };
        // A missing file knows no host: the same refusal, same message.
        let text = fs::read_to_string(&self.known_hosts_path).unwrap_or_default();
        let shown_host = known_hosts::host_pattern(host, port);
        match known_hosts::check(&text, host, port, key) {
            Verdict::Trusted => None,
            Verdict::Unknown => Some(Failure::UnknownHost { host: shown_host }),
            Verdict::Mismatch { known_types } => Some(Failure::HostKeyMismatch {
                host: shown_host,
                offered: format!(
                    "{} {}",
                    known_hosts::key_type(key),
                    known_hosts::fingerprint(key)
                ),
                known: known_types,
            }),
        }
    }

    /// An error of the listing (connect, auth, handshake).
    pub fn connect_error(&self, err: &git2::Error) -> SourceError {
        self.classify(err, |message| SourceError::Connect {
            url: self.shown_url.clone(),
            message,
        })
    }

    /// An error of a fetch; `other` builds the error for what is not a
    /// connection, auth, host-key or timeout problem.
    pub fn classify(
        &self,
        err: &git2::Error,
        other: impl FnOnce(String) -> SourceError,
    ) -> SourceError {
        if let Some(failure) = self.recorded_failure() {
            return failure;
        }
        let url = self.shown_url.clone();
        let message = self.clean(err.message());
        // Codes first; the texts cover transports that only set a message
        // (libssh2 timeouts, HTTP status lines). Substrings are matched on
        // phrases, never bare numbers, which ports and paths can contain.
        let lower = message.to_ascii_lowercase();
        if err.code() == ErrorCode::Auth
            || lower.contains("status code: 401")
            || lower.contains("status code: 403")
            || lower.contains("authentication required")
            || lower.contains("failed to authenticate")
        {
            return SourceError::Auth { url, message };
        }
        if err.code() == ErrorCode::Certificate
            || (err.class() == ErrorClass::Ssl && lower.contains("certificate"))
        {
            return SourceError::UntrustedCertificate { url, message };
        }
        if err.code() == ErrorCode::Timeout || lower.contains("timed out") {
            let after = if lower.contains("connect") {
                self.config.connect_timeout
            } else {
                self.config.timeout
            };
            return SourceError::Timeout { url, after };
        }
        // Reached, then cut off mid-transfer: the fetch failed, the server
        // was not unreachable (and the fetch is tried once more by id).
        let broken_off = [
            "eof",
            "incomplete",
            "hung up",
            "reset by peer",
            "broken pipe",
            "could not read from remote",
        ]
        .iter()
        .any(|phrase| lower.contains(phrase));
        if broken_off && matches!(err.class(), ErrorClass::Net | ErrorClass::Os) {
            return other(format!("the transfer broke off: {message}"));
        }
        match err.class() {
            ErrorClass::Net | ErrorClass::Os | ErrorClass::Ssh | ErrorClass::Ssl => {
                SourceError::Connect { url, message }
            }
            ErrorClass::Http if err.code() != ErrorCode::NotFound => {
                SourceError::Connect { url, message }
            }
            _ => other(message),
        }
    }

    /// What the callbacks saw go wrong (a host key, credentials, the
    /// clock), which says more than libgit2's own message.
    fn recorded_failure(&self) -> Option<SourceError> {
        let url = self.shown_url.clone();
        let known_hosts = self.known_hosts_path.clone();
        Some(match self.failure.borrow().clone()? {
            Failure::UnknownHost { host } => SourceError::UnknownHostKey {
                url,
                host,
                known_hosts,
            },
            Failure::HostKeyMismatch {
                host,
                offered,
                known,
            } => SourceError::HostKeyMismatch {
                url,
                host,
                known_hosts,
                offered,
                known: known.join(", "),
            },
            Failure::NoRawHostKey { host } => SourceError::Connect {
                url,
                message: format!("{host} sent no host key to verify; refusing"),
            },
            Failure::AuthRejected => SourceError::Auth {
                url,
                message: "the server rejected the credentials".to_string(),
            },
            Failure::NoCredentials(hint) => SourceError::Auth {
                url,
                message: hint.to_string(),
            },
            Failure::Timeout => SourceError::Timeout {
                url,
                after: self.config.timeout,
            },
        })
    }

    /// A libgit2 message made safe to show.
    pub fn clean(&self, message: &str) -> String {
        let mut secrets: Vec<&str> = Vec::new();
        if let Some(p) = &self.password {
            secrets.push(p);
        }
        if let Transport::Http {
            password: Some(p), ..
        } = &self.transport
        {
            secrets.push(p);
        }
        scrub(message, &secrets)
    }
}

/// Proxies as git users set them (`https_proxy`, `no_proxy`, git config):
/// a sidecar behind a corporate proxy needs nothing else.
pub fn proxy() -> ProxyOptions<'static> {
    let mut options = ProxyOptions::new();
    options.auto();
    options
}

/// Reads a secret file, without its trailing newline.
fn read_secret(path: &Path) -> Result<String, SourceError> {
    let text = fs::read_to_string(path).map_err(|source| SourceError::Secret {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}

fn known_hosts_path(config: &SourceConfig) -> PathBuf {
    config.ssh_known_hosts_file.clone().unwrap_or_else(|| {
        let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/"), PathBuf::from);
        home.join(".ssh").join("known_hosts")
    })
}

/// The socket timeouts libgit2 copies into each new connection from
/// process globals. Operations run under a read lock on the values they
/// need; changing them takes the write lock, so no operation of ours is in
/// flight while they change and none starts with another caller's values.
static TIMEOUTS: RwLock<Option<(i32, i32)>> = RwLock::new(None);

/// Runs `operation` with libgit2's socket timeouts set to `connect`/`io`.
fn with_timeouts<T>(connect: Duration, io: Duration, operation: impl FnOnce() -> T) -> T {
    let ms = |d: Duration| i32::try_from(d.as_millis()).unwrap_or(i32::MAX);
    let wanted = Some((ms(connect), ms(io)));
    loop {
        {
            let current = TIMEOUTS.read().unwrap_or_else(PoisonError::into_inner);
            if *current == wanted {
                return operation();
            }
        }
        let mut current = TIMEOUTS.write().unwrap_or_else(PoisonError::into_inner);
        if *current != wanted {
            let (connect_ms, io_ms) = (ms(connect), ms(io));
            // SAFETY: both calls store one int in libgit2's settings and
            // cannot fail; the write lock keeps our own connections (the
            // only readers) from starting meanwhile.
            unsafe {
                let _ = git2::opts::set_server_connect_timeout_in_milliseconds(connect_ms);
                let _ = git2::opts::set_server_timeout_in_milliseconds(io_ms);
            }
            *current = wanted;
        }
    }
}

/// An io::Error for a path, as the cache reports it.
pub fn io_error(path: &Path, source: io::Error) -> SourceError {
    SourceError::Io {
        path: path.to_path_buf(),
        source,
    }
}
