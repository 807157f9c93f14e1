//! `POST /webhook`: a Git host says a ref moved. The request is authenticated
//! with the shared secret (HMAC-SHA256 of the raw body, or GitLab's token),
//! then a push to our ref fires `Trigger::Webhook`.
//!
//! Invariants: nothing is triggered or passed on without a valid signature,
//! and every comparison against the secret is constant-time. The payload's
//! sha is only passed on (to `on_push`, for fleet notices), never applied:
//! the sync resolves the ref itself, so a replayed old payload cannot pin an
//! old commit.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, FailedToBufferBody};
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use thiserror::Error;
use tracing::{debug, error, info, warn};

use crate::sha::Sha;
use crate::trigger::{Trigger, Triggers};

/// Push payloads of big monorepo pushes stay far below this; more is abuse.
pub const MAX_BODY: usize = 1024 * 1024;
/// A sender trickling its body (slow loris) gets this long, then 408.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// KiB of request bodies buffered at once, whatever the number of
/// connections: each request reserves its announced length (or
/// `MAX_BODY` when it announces none) before its body is read, so sixteen
/// 1 MiB bodies fill it while thousands of the few-KiB pushes Git hosts
/// send fit at once.
pub const MAX_BUFFERED_KIB: usize = 16 * 1024;
/// Git refuses nothing this long in practice; it bounds what we echo and log.
const MAX_REF_LEN: usize = 1024;

/// Who sent the webhook, told apart by its signature header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    GitHub,
    GitLab,
    /// Gitea and Forgejo (same payloads).
    Gitea,
    Bitbucket,
    /// Any other sender signing like GitHub in `X-Signature`.
    Generic,
}

impl Provider {
    pub fn as_str(&self) -> &'static str {
        match self {
            Provider::GitHub => "github",
            Provider::GitLab => "gitlab",
            Provider::Gitea => "gitea",
            Provider::Bitbucket => "bitbucket",
            Provider::Generic => "generic",
        }
    }

    /// The header naming the event; absent for a generic sender means push.
    fn event_headers(&self) -> &'static [&'static str] {
        match self {
            Provider::GitHub => &["x-github-event"],
            Provider::GitLab => &["x-gitlab-event"],
            Provider::Gitea => &["x-forgejo-event", "x-gitea-event"],
            Provider::Bitbucket => &["x-event-key"],
            Provider::Generic => &["x-event"],
        }
    }
}

/// An authenticated push of one ref.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookEvent {
    pub provider: Provider,
    /// Full ref name: `refs/heads/main`, `refs/tags/v1`.
    pub git_ref: String,
    /// The pushed commit as the sender claims it (None for a deleted ref):
    /// for fleet notices only, see the module docs.
    pub sha: Option<String>,
}

/// Called for every authenticated push to our ref, after the sync is
/// queued. Runs on the request's task: it must not block (spawn or
/// `try_send` instead).
pub type OnPush = Arc<dyn Fn(&WebhookEvent) + Send + Sync>;

/// The webhook's configuration, held by `App` when a secret file is set.
pub struct Webhook {
    /// Re-read on every request, so a rotated Kubernetes Secret applies
    /// without a restart; its content is never logged nor returned.
    secret_file: PathBuf,
    /// Which pushes concern us, from `--ref`.
    filter: RefFilter,
    /// The fleet's hook: publishes the push to the other replicas.
    pub on_push: Option<OnPush>,
    /// One permit per KiB of body being buffered: `MAX_BUFFERED_KIB`.
    body_budget: Arc<tokio::sync::Semaphore>,
}

#[derive(Debug, Error)]
pub enum WebhookError {
    #[error("cannot read the webhook secret file {path}: {source}")]
    SecretUnreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the webhook secret file {path} is empty")]
    SecretEmpty { path: PathBuf },
    #[error(
        "no signature: expected X-Hub-Signature-256, X-Gitlab-Token, X-Gitea-Signature, X-Forgejo-Signature, X-Hub-Signature or X-Signature"
    )]
    Unsigned,
    #[error("{header} is malformed: expected {expected}")]
    Malformed {
        header: &'static str,
        expected: &'static str,
    },
    #[error("{header} does not match")]
    Mismatch { header: &'static str },
    #[error("{provider} payload: {reason}")]
    Payload {
        provider: &'static str,
        reason: String,
    },
}

/// The shared secret's bytes. No `Debug`: it must not reach a log line.
struct Secret(Vec<u8>);

/// Reads the secret file, trimming the trailing newline editors and
/// `echo` leave. Used at start (bad flags exit early) and per request.
pub fn check_secret_file(path: &Path) -> Result<(), WebhookError> {
    let bytes = std::fs::read(path).map_err(|source| WebhookError::SecretUnreadable {
        path: path.to_path_buf(),
        source,
    })?;
    secret_from(path, bytes).map(drop)
}

async fn read_secret(path: &Path) -> Result<Secret, WebhookError> {
    let bytes = tokio::fs::read(path)
        .await
        .map_err(|source| WebhookError::SecretUnreadable {
            path: path.to_path_buf(),
            source,
        })?;
    secret_from(path, bytes)
}

fn secret_from(path: &Path, mut bytes: Vec<u8>) -> Result<Secret, WebhookError> {
    // All trailing whitespace, not only the newline an editor leaves: a
    // GitLab token arrives in a header, whose value HTTP trims, so a secret
    // ending in a space could never match it.
    while bytes.last().is_some_and(u8::is_ascii_whitespace) {
        bytes.pop();
    }
    // An empty key would let anyone sign: refuse rather than accept all.
    if bytes.is_empty() {
        return Err(WebhookError::SecretEmpty {
            path: path.to_path_buf(),
        });
    }
    Ok(Secret(bytes))
}

/// How one provider proves it knows the secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proof {
    /// `sha256=<hex>` HMAC-SHA256 of the body.
    PrefixedHmac,
    /// `<hex>` HMAC-SHA256 of the body.
    BareHmac,
    /// The secret itself.
    Token,
}

struct Scheme {
    provider: Provider,
    header: &'static str,
    proof: Proof,
}

/// In order of precedence: Gitea and Forgejo also send GitHub's headers, so
/// their own come first; the first header present decides, with no
/// fallback to another (a bad signature is not retried as something else).
const SCHEMES: [Scheme; 6] = [
    Scheme {
        provider: Provider::Gitea,
        header: "x-forgejo-signature",
        proof: Proof::BareHmac,
    },
    Scheme {
        provider: Provider::Gitea,
        header: "x-gitea-signature",
        proof: Proof::BareHmac,
    },
    Scheme {
        provider: Provider::GitHub,
        header: "x-hub-signature-256",
        proof: Proof::PrefixedHmac,
    },
    Scheme {
        provider: Provider::GitLab,
        header: "x-gitlab-token",
        proof: Proof::Token,
    },
    Scheme {
        provider: Provider::Bitbucket,
        header: "x-hub-signature",
        proof: Proof::PrefixedHmac,
    },
    Scheme {
        provider: Provider::Generic,
        header: "x-signature",
        proof: Proof::PrefixedHmac,
    },
];

/// The scheme the headers claim, before the body is read (an unsigned
/// request is refused without reading it).
fn scheme_of(headers: &HeaderMap) -> Result<&'static Scheme, WebhookError> {
    SCHEMES
        .iter()
        .find(|s| headers.contains_key(s.header))
        .ok_or(WebhookError::Unsigned)
}

/// What the headers alone prove: a GitLab token is checked in full, an
/// HMAC only for its form (its tag is returned, to check against the body).
struct Claim {
    scheme: &'static Scheme,
    /// The HMAC tag to verify; `None` when the token already matched.
    tag: Option<Vec<u8>>,
}

/// Everything that can be checked before the body is read: a signature
/// header is present and well-formed, and a token equals the secret. A
/// request that fails here costs no body buffer.
fn check_headers(headers: &HeaderMap, secret: &[u8]) -> Result<Claim, WebhookError> {
    let scheme = scheme_of(headers)?;
    let malformed = || WebhookError::Malformed {
        header: scheme.header,
        expected: match scheme.proof {
            Proof::PrefixedHmac => "sha256=<64 hex digits>",
            Proof::BareHmac => "64 hex digits",
            Proof::Token => "visible ASCII",
        },
    };
    let value = headers
        .get(scheme.header)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(malformed)?
        .trim();
    let tag_hex = match scheme.proof {
        // Different lengths compare unequal at once: that leaks the
        // secret's length only, which is not a secret worth guarding.
        Proof::Token => {
            return if bool::from(value.as_bytes().ct_eq(secret)) {
                Ok(Claim { scheme, tag: None })
            } else {
                Err(WebhookError::Mismatch {
                    header: scheme.header,
                })
            };
        }
        Proof::PrefixedHmac => value.strip_prefix("sha256=").ok_or_else(malformed)?,
        Proof::BareHmac => value,
    };
    let tag = hex::decode(tag_hex).map_err(|_| malformed())?;
    if tag.len() != 32 {
        return Err(malformed());
    }
    Ok(Claim {
        scheme,
        tag: Some(tag),
    })
}

/// Checks the request's signature or token; returns who sent it.
pub fn authenticate(
    headers: &HeaderMap,
    body: &[u8],
    secret: &[u8],
) -> Result<Provider, WebhookError> {
    let Claim { scheme, tag } = check_headers(headers, secret)?;
    let Some(tag) = tag else {
        return Ok(scheme.provider);
    };
    let mismatch = || WebhookError::Mismatch {
        header: scheme.header,
    };
    // HMAC takes keys of any length, so this never fails; were it to, the
    // request is refused rather than trusted.
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret).map_err(|_| mismatch())?;
    mac.update(body);
    mac.verify_slice(&tag)
        .map(|()| scheme.provider)
        .map_err(|_| mismatch())
}

/// What an authenticated request asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// "Are you there?" (GitHub `ping`, Bitbucket `diagnostics:ping`).
    Ping,
    /// The refs a push moved (Bitbucket may carry several).
    Push(Vec<WebhookEvent>),
    /// Any other event, by name: nothing to do.
    Other(String),
}

/// Reads the event name and, for pushes, the refs and shas. Only the fields
/// we use are parsed; wrong types or missing fields are a `Payload` error,
/// never a panic.
pub fn parse_event(
    provider: Provider,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Event, WebhookError> {
    let name = provider
        .event_headers()
        .iter()
        .find_map(|h| headers.get(*h))
        .map(|v| v.to_str().unwrap_or("(not ASCII)"));
    use Provider::*;
    let pushes = match (provider, name) {
        (_, Some("ping")) | (Bitbucket, Some("diagnostics:ping")) => return Ok(Event::Ping),
        (GitHub | Gitea, Some("push")) | (Generic, None | Some("push")) => {
            ref_push(body, provider)?
        }
        // GitLab's "Test" button sends a real push hook: it syncs, harmlessly.
        (GitLab, Some("Push Hook" | "Tag Push Hook")) => ref_push(body, provider)?,
        (Bitbucket, Some("repo:push")) => bitbucket_cloud(body)?,
        (Bitbucket, Some("repo:refs_changed")) => bitbucket_server(body)?,
        (_, other) => {
            let name: String = other.unwrap_or("(none)").chars().take(64).collect();
            return Ok(Event::Other(name));
        }
    };
    let invalid = |reason: String| WebhookError::Payload {
        provider: provider.as_str(),
        reason,
    };
    let mut events = Vec::with_capacity(pushes.len());
    for (git_ref, sha) in pushes {
        if git_ref.is_empty()
            || git_ref.len() > MAX_REF_LEN
            || git_ref.chars().any(char::is_control)
        {
            return Err(invalid(
                "the ref is empty, too long or not printable".into(),
            ));
        }
        events.push(WebhookEvent {
            provider,
            git_ref,
            sha: sha.and_then(commit_sha),
        });
    }
    if events.is_empty() {
        return Err(invalid("the push names no ref".into()));
    }
    Ok(Event::Push(events))
}

/// A full hex object id, lowercased; None for the all-zero id of a deleted
/// ref or anything else (hostile payloads must not reach the fleet).
fn commit_sha(sha: String) -> Option<String> {
    let deleted = sha.bytes().all(|b| b == b'0');
    Sha::parse(&sha).filter(|_| !deleted).map(Sha::into_string)
}

type Pushed = Vec<(String, Option<String>)>;

fn payload<'a, T: Deserialize<'a>>(body: &'a [u8], provider: Provider) -> Result<T, WebhookError> {
    serde_json::from_slice(body).map_err(|e| WebhookError::Payload {
        provider: provider.as_str(),
        reason: e.to_string(),
    })
}

/// GitHub, Gitea/Forgejo, GitLab and generic: `{"ref": "refs/heads/main",
/// "after": sha}`; GitLab's `checkout_sha` is the commit checked out.
fn ref_push(body: &[u8], provider: Provider) -> Result<Pushed, WebhookError> {
    #[derive(Deserialize)]
    struct RefPush {
        #[serde(rename = "ref")]
        git_ref: String,
        after: Option<String>,
        checkout_sha: Option<String>,
        sha: Option<String>,
    }
    let p: RefPush = payload(body, provider)?;
    let sha = p.checkout_sha.or(p.after).or(p.sha);
    Ok(vec![(p.git_ref, sha)])
}

/// Bitbucket Cloud `repo:push`: `push.changes[].new` (null when deleted,
/// then `old` names the ref) with `type`, `name`, `target.hash`.
fn bitbucket_cloud(body: &[u8]) -> Result<Pushed, WebhookError> {
    #[derive(Deserialize)]
    struct Payload {
        push: Push,
    }
    #[derive(Deserialize)]
    struct Push {
        changes: Vec<Change>,
    }
    #[derive(Deserialize)]
    struct Change {
        new: Option<CloudRef>,
        old: Option<CloudRef>,
    }
    #[derive(Deserialize)]
    struct CloudRef {
        #[serde(rename = "type")]
        kind: String,
        name: String,
        target: Option<Target>,
    }
    #[derive(Deserialize)]
    struct Target {
        hash: Option<String>,
    }
    let p: Payload = payload(body, Provider::Bitbucket)?;
    Ok(p.push
        .changes
        .into_iter()
        .filter_map(|c| {
            let deleted = c.new.is_none();
            let r = c.new.or(c.old)?;
            let prefix = match r.kind.as_str() {
                "branch" => "refs/heads/",
                "tag" | "annotated_tag" => "refs/tags/",
                _ => return None,
            };
            let sha = if deleted {
                None
            } else {
                r.target.and_then(|t| t.hash)
            };
            Some((format!("{prefix}{}", r.name), sha))
        })
        .collect())
}

/// Bitbucket Data Center `repo:refs_changed`: `changes[].ref.id` (a full
/// ref) and `changes[].toHash`.
fn bitbucket_server(body: &[u8]) -> Result<Pushed, WebhookError> {
    #[derive(Deserialize)]
    struct Payload {
        changes: Vec<Change>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Change {
        #[serde(rename = "ref")]
        git_ref: ServerRef,
        to_hash: Option<String>,
    }
    #[derive(Deserialize)]
    struct ServerRef {
        id: String,
    }
    let p: Payload = payload(body, Provider::Bitbucket)?;
    Ok(p.changes
        .into_iter()
        .map(|c| (c.git_ref.id, c.to_hash))
        .collect())
}

/// Which pushed refs concern this sidecar, from `--ref`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefFilter {
    /// No `--ref` (the remote's HEAD: which branch that is would take a
    /// call to the remote) or a pinned sha (no push moves it): every push
    /// triggers, and the sync, which resolves the ref itself, decides
    /// whether anything changed. The cost is a no-op sync.
    Any,
    /// `refs/heads/main`, `refs/tags/v1`: that ref only.
    Exact(String),
    /// `main` or `v1`: resolved like `git fetch` does, so a branch or tag
    /// of that name.
    Name(String),
}

impl RefFilter {
    pub fn new(git_ref: Option<&str>) -> RefFilter {
        match git_ref {
            None | Some("HEAD") => RefFilter::Any,
            Some(r) if Sha::is_full(r) => RefFilter::Any,
            Some(r) if r.starts_with("refs/") => RefFilter::Exact(r.to_string()),
            Some(r) => RefFilter::Name(r.to_string()),
        }
    }

    pub fn matches(&self, pushed: &str) -> bool {
        match self {
            RefFilter::Any => true,
            RefFilter::Exact(r) => pushed == r,
            RefFilter::Name(n) => {
                pushed == n
                    || ["refs/heads/", "refs/tags/", "refs/"]
                        .iter()
                        .any(|p| pushed.strip_prefix(p) == Some(n.as_str()))
            }
        }
    }

    fn describe(&self) -> &str {
        match self {
            RefFilter::Any => "any ref",
            RefFilter::Exact(r) | RefFilter::Name(r) => r,
        }
    }
}

impl Webhook {
    pub fn new(secret_file: PathBuf, git_ref: Option<&str>) -> Webhook {
        Webhook {
            secret_file,
            filter: RefFilter::new(git_ref),
            on_push: None,
            body_budget: Arc::new(tokio::sync::Semaphore::new(MAX_BUFFERED_KIB)),
        }
    }

    /// Authenticates, reads and acts on one request. `current` is the sha
    /// this replica runs: a push of exactly that needs no sync.
    pub async fn receive(
        &self,
        triggers: &Triggers,
        current: Option<&str>,
        headers: &HeaderMap,
        request: Request,
    ) -> Reply {
        let (secret, body) = match self.admit(headers, request).await {
            Ok(admitted) => admitted,
            Err(reply) => return reply,
        };
        let provider = match authenticate(headers, &body, &secret.0) {
            Ok(p) => p,
            Err(e) => return Reply::unauthorized(&e),
        };
        match pushes(provider, headers, &body) {
            Ok(pushes) => self.act(triggers, current, provider, &pushes),
            Err(reply) => reply,
        }
    }

    /// What the headers can prove, checked before any body is read; then
    /// the body, within the size, time and memory bounds.
    async fn admit(&self, headers: &HeaderMap, request: Request) -> Result<(Secret, Bytes), Reply> {
        // Unsigned requests are refused before any file or body is read.
        if let Err(e) = scheme_of(headers) {
            return Err(Reply::unauthorized(&e));
        }
        let secret = match read_secret(&self.secret_file).await {
            Ok(s) => s,
            Err(e) => {
                error!("webhook: {e}");
                return Err(Reply::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    json!({"status": "unavailable", "reason": "the webhook secret cannot be read"}),
                ));
            }
        };
        // An announced length over the limit is refused from the header:
        // otherwise the body limit only fires once 1 MiB has arrived, and a
        // sender that announces 1 GiB and sends nothing holds the connection
        // for the whole READ_TIMEOUT.
        let announced = headers
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if announced.is_some_and(|n| n > MAX_BODY as u64) {
            return Err(Reply::too_large());
        }
        if let Err(e) = check_headers(headers, &secret.0) {
            return Err(Reply::unauthorized(&e));
        }
        // At most MAX_BUFFERED_KIB of bodies are buffered at once; the
        // others wait (their bytes stay in the kernel), then get 503.
        let kib = announced
            .map_or(MAX_BODY as u64, |n| n.max(1))
            .div_ceil(1024);
        let kib = u32::try_from(kib).unwrap_or(u32::MAX);
        let reserve = self.body_budget.clone().acquire_many_owned(kib);
        let Ok(Ok(_reading)) = tokio::time::timeout(READ_TIMEOUT, reserve).await else {
            return Err(Reply::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                json!({"status": "busy", "reason": "too many webhook bodies in flight; retry"}),
            ));
        };
        match tokio::time::timeout(READ_TIMEOUT, Bytes::from_request(request, &())).await {
            Err(_) => Err(Reply::new(
                StatusCode::REQUEST_TIMEOUT,
                "invalid",
                json!({"status": "timeout", "reason": format!("body not received within {}s", READ_TIMEOUT.as_secs())}),
            )),
            Ok(Err(BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(
                _,
            )))) => Err(Reply::too_large()),
            Ok(Err(e)) => Err(Reply::new(
                StatusCode::BAD_REQUEST,
                "invalid",
                json!({"status": "invalid", "reason": e.body_text()}),
            )),
            Ok(Ok(body)) => Ok((secret, body)),
        }
    }

    /// Fires a sync for the first push to our ref, unless it pushed the
    /// commit this replica already runs.
    fn act(
        &self,
        triggers: &Triggers,
        current: Option<&str>,
        provider: Provider,
        pushes: &[WebhookEvent],
    ) -> Reply {
        let Some(event) = pushes.iter().find(|e| self.filter.matches(&e.git_ref)) else {
            let pushed: Vec<&str> = pushes.iter().map(|e| e.git_ref.as_str()).collect();
            let reason = format!(
                "push to {}, not {}",
                pushed.join(", "),
                self.filter.describe()
            );
            debug!(provider = provider.as_str(), "webhook: {reason}");
            return Reply::new(
                StatusCode::ACCEPTED,
                "ignored",
                json!({"status": "ignored", "reason": reason}),
            );
        };
        // A retried delivery or a replayed burst of a push that is already
        // live: nothing to do (the sha is trusted only to skip, never to
        // apply). Without this, a burst spread over a second re-queues a
        // no-op sync every time the queue drains.
        if event.sha.is_some() && event.sha.as_deref() == current {
            debug!(
                provider = provider.as_str(),
                "webhook: push of the current commit"
            );
            return Reply::new(
                StatusCode::ACCEPTED,
                "current",
                json!({"status": "current", "ref": event.git_ref, "sha": event.sha}),
            );
        }
        let queued = triggers.fire(Trigger::Webhook);
        info!(
            provider = provider.as_str(),
            git_ref = %event.git_ref,
            sha = event.sha.as_deref().unwrap_or("-"),
            queued,
            "webhook: push"
        );
        if let Some(on_push) = &self.on_push {
            on_push(event);
        }
        Reply::new(
            StatusCode::ACCEPTED,
            "accepted",
            json!({
                "status": if queued { "queued" } else { "already queued" },
                "ref": event.git_ref,
                "sha": event.sha,
            }),
        )
    }
}

/// The pushes a verified body announces; anything else is answered here.
fn pushes(
    provider: Provider,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Vec<WebhookEvent>, Reply> {
    match parse_event(provider, headers, body) {
        Ok(Event::Push(pushes)) => Ok(pushes),
        Ok(Event::Ping) => {
            info!(provider = provider.as_str(), "webhook: ping");
            Err(Reply::new(
                StatusCode::OK,
                "ping",
                json!({"status": "pong"}),
            ))
        }
        Ok(Event::Other(name)) => {
            debug!(provider = provider.as_str(), event = %name, "webhook: ignored");
            Err(Reply::new(
                StatusCode::ACCEPTED,
                "ignored",
                json!({"status": "ignored", "reason": format!("event {name:?} is not a push")}),
            ))
        }
        Err(e) => {
            warn!("webhook: {e}");
            Err(Reply::new(
                StatusCode::BAD_REQUEST,
                "invalid",
                json!({"status": "invalid", "reason": e.to_string()}),
            ))
        }
    }
}

/// A response and the label it is counted under.
pub struct Reply {
    pub status: StatusCode,
    /// `tyk_gitops_webhook_requests_total{result}`.
    pub result: &'static str,
    pub body: Value,
}

impl Reply {
    fn new(status: StatusCode, result: &'static str, body: Value) -> Reply {
        Reply {
            status,
            result,
            body,
        }
    }

    fn too_large() -> Reply {
        Reply::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            json!({"status": "too large", "reason": format!("the body exceeds {MAX_BODY} bytes")}),
        )
    }

    fn unauthorized(e: &WebhookError) -> Reply {
        warn!("webhook refused: {e}");
        Reply::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            json!({"status": "unauthorized", "reason": e.to_string()}),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const SECRET: &[u8] = b"s3cret-webhook";

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn sign(secret: &[u8], body: &[u8]) -> String {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret).unwrap();
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }

    #[test]
    fn githubs_documented_test_vector_verifies() {
        let sig = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        let h = headers(&[("x-hub-signature-256", sig)]);
        let got = authenticate(&h, b"Hello, World!", b"It's a Secret to Everybody");
        assert_eq!(got.unwrap(), Provider::GitHub);
        let tampered = authenticate(&h, b"Hello, World?", b"It's a Secret to Everybody");
        assert!(matches!(tampered, Err(WebhookError::Mismatch { .. })));
    }

    #[test]
    fn each_provider_accepts_its_good_signature_and_refuses_a_bad_one() {
        let body = br#"{"ref":"refs/heads/main"}"#;
        let good = sign(SECRET, body);
        let bad = sign(b"another secret", body);
        // (header, with the `sha256=` prefix, who it is)
        let cases = [
            ("x-hub-signature-256", true, Provider::GitHub),
            ("x-gitea-signature", false, Provider::Gitea),
            ("x-forgejo-signature", false, Provider::Gitea),
            ("x-hub-signature", true, Provider::Bitbucket),
            ("x-signature", true, Provider::Generic),
        ];
        for (header, prefixed, provider) in cases {
            let format = |hex: &str| {
                if prefixed {
                    format!("sha256={hex}")
                } else {
                    hex.to_string()
                }
            };
            let ok = authenticate(&headers(&[(header, &format(&good))]), body, SECRET);
            assert_eq!(ok.unwrap(), provider, "{header}");
            let refused = authenticate(&headers(&[(header, &format(&bad))]), body, SECRET);
            assert!(
                matches!(refused, Err(WebhookError::Mismatch { header: h }) if h == header),
                "{header}: {refused:?}"
            );
        }
    }

    #[test]
    fn gitlab_token_must_equal_the_secret() {
        let ok = authenticate(
            &headers(&[("x-gitlab-token", "s3cret-webhook")]),
            b"{}",
            SECRET,
        );
        assert_eq!(ok.unwrap(), Provider::GitLab);
        for wrong in ["s3cret-webhooK", "s3cret-webhook2", "s3cret", ""] {
            let got = authenticate(&headers(&[("x-gitlab-token", wrong)]), b"{}", SECRET);
            assert!(matches!(got, Err(WebhookError::Mismatch { .. })), "{wrong}");
        }
    }

    #[test]
    fn malformed_signatures_are_refused_before_any_hmac() {
        let body = b"{}";
        let good = sign(SECRET, body);
        for (header, value) in [
            ("x-hub-signature-256", good.clone()), // no sha256= prefix
            ("x-hub-signature-256", format!("sha1={good}")),
            ("x-hub-signature-256", format!("sha256={}", &good[..63])), // odd length
            ("x-hub-signature-256", format!("sha256={}", &good[..62])), // 31 bytes
            ("x-hub-signature-256", format!("sha256={good}00")),        // 33 bytes
            ("x-hub-signature-256", format!("sha256={}zz", &good[..62])),
            ("x-gitea-signature", format!("sha256={good}")),
            (
                "x-hub-signature",
                "sha1=0123456789abcdef0123456789abcdef01234567".into(),
            ),
            ("x-signature", String::new()),
        ] {
            let got = authenticate(&headers(&[(header, &value)]), body, SECRET);
            assert!(
                matches!(got, Err(WebhookError::Malformed { .. })),
                "{header}: {value}: {got:?}"
            );
        }
    }

    #[test]
    fn unsigned_requests_are_refused() {
        let h = headers(&[
            ("x-github-event", "push"),
            ("content-type", "application/json"),
        ]);
        assert!(matches!(
            authenticate(&h, b"{}", SECRET),
            Err(WebhookError::Unsigned)
        ));
    }

    #[test]
    fn a_gitea_request_with_githubs_header_too_is_checked_as_gitea() {
        let body = b"{}";
        let h = headers(&[
            ("x-hub-signature-256", "sha256=00"),
            ("x-gitea-signature", &sign(SECRET, body)),
        ]);
        assert_eq!(authenticate(&h, body, SECRET).unwrap(), Provider::Gitea);
    }

    #[test]
    fn the_secret_file_loses_its_trailing_newline_and_must_not_be_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "s3cret-webhook\r\n").unwrap();
        let secret = tokio::runtime::Runtime::new()
            .unwrap()
            .block_on(read_secret(&path))
            .ok()
            .unwrap();
        assert_eq!(secret.0, SECRET);
        std::fs::write(&path, "\n").unwrap();
        assert!(matches!(
            check_secret_file(&path),
            Err(WebhookError::SecretEmpty { .. })
        ));
        assert!(matches!(
            check_secret_file(&dir.path().join("missing")),
            Err(WebhookError::SecretUnreadable { .. })
        ));
    }

    #[test]
    fn ref_filter_follows_the_ref_flag() {
        let any = RefFilter::new(None);
        assert!(any.matches("refs/heads/whatever"));
        assert_eq!(RefFilter::new(Some("HEAD")), RefFilter::Any);
        let sha = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(RefFilter::new(Some(sha)), RefFilter::Any);

        let main = RefFilter::new(Some("main"));
        assert!(main.matches("refs/heads/main"));
        assert!(main.matches("main"));
        assert!(!main.matches("refs/heads/main2"));
        assert!(!main.matches("refs/heads/dev"));
        assert!(!main.matches("refs/heads/feature/main"));

        let full = RefFilter::new(Some("refs/heads/main"));
        assert!(full.matches("refs/heads/main"));
        assert!(!full.matches("refs/tags/main"));

        let tag = RefFilter::new(Some("v1"));
        assert!(tag.matches("refs/tags/v1"));
        assert!(!tag.matches("refs/tags/v10"));
    }

    fn push(provider: Provider, event: &str, body: &str) -> Result<Event, WebhookError> {
        let header = provider.event_headers()[0];
        parse_event(provider, &headers(&[(header, event)]), body.as_bytes())
    }

    fn pushed(git_ref: &str, sha: Option<&str>, provider: Provider) -> Event {
        Event::Push(vec![WebhookEvent {
            provider,
            git_ref: git_ref.into(),
            sha: sha.map(str::to_string),
        }])
    }

    const SHA: &str = "6113728f27ae82c7b1a177c8d03f9e96e0adf246";

    #[test]
    fn github_push_and_ping_payloads() {
        let body = format!(
            r#"{{"ref":"refs/heads/main","before":"0000000000000000000000000000000000000000",
            "after":"{SHA}","created":false,"deleted":false,"forced":false,
            "repository":{{"id":1296269,"full_name":"octocat/config","default_branch":"main"}},
            "pusher":{{"name":"octocat","email":"octocat@github.com"}},
            "commits":[{{"id":"{SHA}","message":"beta","added":["apps/beta.json"]}}],
            "head_commit":{{"id":"{SHA}"}}}}"#
        );
        let got = push(Provider::GitHub, "push", &body).unwrap();
        assert_eq!(got, pushed("refs/heads/main", Some(SHA), Provider::GitHub));
        let ping =
            r#"{"zen":"Keep it logically awesome.","hook_id":1,"hook":{"type":"Repository"}}"#;
        assert_eq!(push(Provider::GitHub, "ping", ping).unwrap(), Event::Ping);
        assert_eq!(
            push(Provider::GitHub, "issues", "{}").unwrap(),
            Event::Other("issues".into())
        );
    }

    #[test]
    fn a_deleted_branch_has_no_sha() {
        let body = r#"{"ref":"refs/heads/main","before":"6113728f27ae82c7b1a177c8d03f9e96e0adf246",
            "after":"0000000000000000000000000000000000000000","deleted":true}"#;
        let got = push(Provider::GitHub, "push", body).unwrap();
        assert_eq!(got, pushed("refs/heads/main", None, Provider::GitHub));
    }

    #[test]
    fn gitlab_push_payload_prefers_checkout_sha() {
        let body = format!(
            r#"{{"object_kind":"push","event_name":"push",
            "before":"95790bf891e76fee5e1747ab589903a6a1f80f22",
            "after":"da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
            "ref":"refs/heads/main","ref_protected":true,"checkout_sha":"{SHA}",
            "user_username":"jsmith","project_id":15,
            "project":{{"path_with_namespace":"ops/config","default_branch":"main"}},
            "commits":[],"total_commits_count":1}}"#
        );
        let got = push(Provider::GitLab, "Push Hook", &body).unwrap();
        assert_eq!(got, pushed("refs/heads/main", Some(SHA), Provider::GitLab));
        let tag = r#"{"object_kind":"tag_push","ref":"refs/tags/v1.0.0",
            "before":"0000000000000000000000000000000000000000",
            "after":"82b3d5ae55f7080f1e6022629cdb57bfae7cccc7","checkout_sha":null}"#;
        let got = push(Provider::GitLab, "Tag Push Hook", tag).unwrap();
        assert_eq!(
            got,
            pushed(
                "refs/tags/v1.0.0",
                Some("82b3d5ae55f7080f1e6022629cdb57bfae7cccc7"),
                Provider::GitLab
            )
        );
        assert_eq!(
            push(Provider::GitLab, "Merge Request Hook", "{}").unwrap(),
            Event::Other("Merge Request Hook".into())
        );
    }

    #[test]
    fn gitea_push_payload() {
        let body = format!(
            r#"{{"ref":"refs/heads/dev","before":"28e1879d029cb852e4844d9c718537df08844e03",
            "after":"{SHA}","compare_url":"https://gitea.example/ops/config/compare/28e1879...6113728",
            "commits":[{{"id":"{SHA}","message":"beta\n"}}],
            "repository":{{"full_name":"ops/config","default_branch":"main"}},
            "pusher":{{"login":"ops"}}}}"#
        );
        let h = headers(&[("x-gitea-event", "push"), ("x-github-event", "push")]);
        let got = parse_event(Provider::Gitea, &h, body.as_bytes()).unwrap();
        assert_eq!(got, pushed("refs/heads/dev", Some(SHA), Provider::Gitea));
    }

    #[test]
    fn bitbucket_cloud_push_payload() {
        let body = format!(
            r#"{{"actor":{{"display_name":"Ops"}},"repository":{{"full_name":"ops/config"}},
            "push":{{"changes":[
              {{"old":{{"type":"branch","name":"dev","target":{{"hash":"28e1879d029cb852e4844d9c718537df08844e03"}}}},
                "new":{{"type":"branch","name":"dev","target":{{"type":"commit","hash":"{SHA}"}}}},
                "created":false,"closed":false,"forced":false}},
              {{"old":null,"new":{{"type":"tag","name":"v2","target":{{"hash":"{SHA}"}}}}}},
              {{"old":{{"type":"branch","name":"gone","target":{{"hash":"{SHA}"}}}},"new":null,"closed":true}}
            ]}}}}"#
        );
        let Event::Push(events) = push(Provider::Bitbucket, "repo:push", &body).unwrap() else {
            panic!("not a push");
        };
        let refs: Vec<(&str, Option<&str>)> = events
            .iter()
            .map(|e| (e.git_ref.as_str(), e.sha.as_deref()))
            .collect();
        assert_eq!(
            refs,
            [
                ("refs/heads/dev", Some(SHA)),
                ("refs/tags/v2", Some(SHA)),
                ("refs/heads/gone", None)
            ]
        );
        assert_eq!(
            push(Provider::Bitbucket, "diagnostics:ping", "{}").unwrap(),
            Event::Ping
        );
    }

    #[test]
    fn bitbucket_server_refs_changed_payload() {
        let body = format!(
            r#"{{"eventKey":"repo:refs_changed","date":"2024-01-01T00:00:00+0000",
            "repository":{{"slug":"config","project":{{"key":"OPS"}}}},
            "changes":[{{"ref":{{"id":"refs/heads/main","displayId":"main","type":"BRANCH"}},
              "refId":"refs/heads/main","fromHash":"28e1879d029cb852e4844d9c718537df08844e03",
              "toHash":"{SHA}","type":"UPDATE"}}]}}"#
        );
        let got = push(Provider::Bitbucket, "repo:refs_changed", &body).unwrap();
        assert_eq!(
            got,
            pushed("refs/heads/main", Some(SHA), Provider::Bitbucket)
        );
    }

    #[test]
    fn generic_push_defaults_to_push_without_an_event_header() {
        let body = format!(r#"{{"ref":"refs/heads/main","sha":"{SHA}"}}"#);
        let got = parse_event(Provider::Generic, &HeaderMap::new(), body.as_bytes()).unwrap();
        assert_eq!(got, pushed("refs/heads/main", Some(SHA), Provider::Generic));
    }

    #[test]
    fn hostile_payloads_are_errors_not_panics() {
        let long_ref = format!(r#"{{"ref":"refs/heads/{}"}}"#, "x".repeat(2000));
        for body in [
            "",
            "null",
            "[]",
            "{",
            r#"{"ref":42}"#,
            r#"{"ref":""}"#,
            r#"{"ref":"refs/heads/a\u0000b"}"#,
            r#"{"ref":"refs/heads/main","after":{"x":1}}"#,
            &long_ref,
            &"[".repeat(10_000),
        ] {
            let got = push(Provider::GitHub, "push", body);
            assert!(
                matches!(got, Err(WebhookError::Payload { .. })),
                "{body:.40}: {got:?}"
            );
        }
        for body in [
            r#"{"push":{"changes":"no"}}"#,
            r#"{"push":{"changes":[]}}"#,
            r#"{"push":{"changes":[{"new":{"type":"branch"}}]}}"#,
        ] {
            let got = push(Provider::Bitbucket, "repo:push", body);
            assert!(matches!(got, Err(WebhookError::Payload { .. })), "{body}");
        }
        // A sha that is not an object id is dropped, not passed on.
        let odd = r#"{"ref":"refs/heads/main","after":"$(rm -rf /)"}"#;
        assert_eq!(
            push(Provider::GitHub, "push", odd).unwrap(),
            pushed("refs/heads/main", None, Provider::GitHub)
        );
    }
}
