//! Tyk control API client: wait for the health check, reload, and read what
//! the gateway actually loaded. Tyk's reload always answers 200, and
//! `/tyk/apis` lists what a reload *read* (specs skipped as invalid too), so
//! the proof of a reload is `verify`: polling `/tyk/apis` and `/tyk/policies`
//! until they show exactly the expected ids and the changed definitions'
//! content, then a plain request to each probed listen path through the
//! gateway's listener (the routing probe). The gateway secret is sent in
//! `X-Tyk-Authorization` on control calls only (never on a probe, which may
//! reach an upstream) and never appears in `Debug`, errors or logs.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::StatusCode;
use serde::Deserialize;
use tokio::time::Instant;

/// The health check's default path (`health_check_endpoint_name`).
pub const DEFAULT_HEALTH_PATH: &str = "hello";

/// A gateway version as its health check reports it (`"v5.14.0"`): which
/// behaviours to expect where versions differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct GatewayVersion {
    pub major: u32,
    pub minor: u32,
}

impl GatewayVersion {
    /// The first version that loads MCP APIs (and hides them from
    /// `/tyk/apis` unless asked with `include_types=mcp`).
    pub const MCP: GatewayVersion = GatewayVersion {
        major: 5,
        minor: 12,
    };

    /// `v5.14.0`, `5.8`, `v5.8.15-rc1`; `None` for anything else.
    pub fn parse(text: &str) -> Option<GatewayVersion> {
        let text = text.trim();
        let text = text.strip_prefix(['v', 'V']).unwrap_or(text);
        let mut parts = text.split(['.', '-', '+']);
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        Some(GatewayVersion { major, minor })
    }

    pub fn knows_mcp(self) -> bool {
        self >= GatewayVersion::MCP
    }
}

impl fmt::Display for GatewayVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl std::str::FromStr for GatewayVersion {
    type Err = String;
    fn from_str(s: &str) -> Result<GatewayVersion, String> {
        GatewayVersion::parse(s).ok_or_else(|| format!("{s:?} is not a version like 5.8 or 5.14"))
    }
}

/// Which APIs `verify` sends a request to through the gateway's listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProbeMode {
    /// New or changed APIs of the commit.
    #[default]
    Changed,
    /// Every API of the commit.
    All,
    /// None: verify by what `/tyk/apis` lists only.
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadMode {
    /// `GET /tyk/reload?block=true`: this node, waits for the reload.
    Local,
    /// `GET /tyk/reload/group`: every node on the Redis; returns at once.
    Group,
    /// Write files only; something else reloads.
    None,
}

/// What the gateway reports it runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Loaded {
    pub api_ids: BTreeSet<String>,
    pub policy_ids: BTreeSet<String>,
}

/// One API of a commit as `verify` checks it beyond its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedApi {
    pub api_id: String,
    /// The revision's file, named in errors (`apps/pets.json`).
    pub file: String,
    /// Compared with what `/tyk/apis` lists, when set: a node that has not
    /// reloaded yet still lists the old content under the same id. Left
    /// out where the gateway changes the value (secret references, OAS).
    pub listen_path: Option<String>,
    pub target_url: Option<String>,
    /// The listen path to request through the listener; `None`: no probe.
    pub probe: Option<String>,
    /// Sent as `Host` with the probe, for gateways with custom domains on.
    pub domain: String,
}

/// Everything `verify` waits for: exactly these ids, and these APIs served
/// as committed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expected {
    pub ids: Loaded,
    pub apis: Vec<ExpectedApi>,
}

/// An API the gateway lists but does not serve as committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unserved {
    pub api_id: String,
    pub file: String,
    pub reason: String,
}

/// How many ids a mismatch message lists before it only counts the rest.
const LISTED_IDS: usize = 5;
/// Longest slice of an unexpected response body quoted in an error.
const BODY_SNIPPET: usize = 200;
/// First and last pause between polls; Tyk merges reloads and runs them at
/// most once per `reload_interval` (1 s by default), so polling faster than
/// that only matters right after the reload was queued.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Bound on `GET /tyk/reload?block=true`, which returns only once the
/// gateway has reloaded every API.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(300);
/// Bound on one routing probe. The router's not-found answer is immediate;
/// a probe still waiting after this went past the router to an upstream.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Probes in flight at once (`--probe all` on thousands of APIs).
const PROBES_AT_ONCE: usize = 16;
/// A path no API is meant to own: what the gateway answers for it is its
/// router's not-found answer (Tyk's `handle404`: 404, body `Not Found`).
const UNROUTED_PATH: &str = "/tyk-gitops-probe-of-an-unrouted-path/";

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The client could not be built (bad URL, TLS backend).
    #[error("gateway client for {url}: {reason}")]
    Setup { url: String, reason: String },
    /// Nothing answered, or not in time: an outage, worth retrying.
    #[error("gateway {url} unreachable: {cause}")]
    Unreachable { url: String, cause: String },
    #[error(
        "gateway {url} rejected the secret from {secret_from} (403): it must equal the gateway's `secret` (TYK_GW_SECRET)"
    )]
    Forbidden { url: String, secret_from: String },
    #[error("gateway {url} answered {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("gateway {url} sent a response that is not what Tyk sends: {reason}")]
    Decode { url: String, reason: String },
    /// The gateway answers but runs something else than the commit: the
    /// reconciler rolls back instead of retrying.
    #[error("{}", mismatch_message(.missing_apis, .unexpected_apis, .missing_policies, .unexpected_policies))]
    Mismatch {
        missing_apis: Vec<String>,
        unexpected_apis: Vec<String>,
        missing_policies: Vec<String>,
        unexpected_policies: Vec<String>,
    },
    /// The ids match, but APIs are listed with other content than the
    /// commit's (this node has not reloaded yet) or are not routed (the
    /// gateway skipped them, or another API shadows them): roll back.
    #[error("{}", unserved_message(.apis))]
    NotServed { apis: Vec<Unserved> },
}

impl GatewayError {
    /// A verify mismatch (the commit did not load: roll back) as opposed to
    /// an outage or a configuration problem (retry or report).
    pub fn is_mismatch(&self) -> bool {
        matches!(
            self,
            GatewayError::Mismatch { .. } | GatewayError::NotServed { .. }
        )
    }

    /// Worth retrying later without changing anything: the gateway was down
    /// or answered with a server error.
    pub fn is_transient(&self) -> bool {
        match self {
            GatewayError::Unreachable { .. } => true,
            GatewayError::Status { status, .. } => *status >= 500,
            _ => false,
        }
    }

    fn mismatch(expected: &Loaded, actual: &Loaded) -> GatewayError {
        let diff = |a: &BTreeSet<String>, b: &BTreeSet<String>| -> Vec<String> {
            a.difference(b).cloned().collect()
        };
        GatewayError::Mismatch {
            missing_apis: diff(&expected.api_ids, &actual.api_ids),
            unexpected_apis: diff(&actual.api_ids, &expected.api_ids),
            missing_policies: diff(&expected.policy_ids, &actual.policy_ids),
            unexpected_policies: diff(&actual.policy_ids, &expected.policy_ids),
        }
    }
}

fn mismatch_message(
    missing_apis: &[String],
    unexpected_apis: &[String],
    missing_policies: &[String],
    unexpected_policies: &[String],
) -> String {
    let parts: Vec<String> = [
        ("missing APIs", missing_apis),
        ("unexpected APIs", unexpected_apis),
        ("missing policies", missing_policies),
        ("unexpected policies", unexpected_policies),
    ]
    .into_iter()
    .filter(|(_, ids)| !ids.is_empty())
    .map(|(label, ids)| format!("{label}: {}", list_ids(ids)))
    .collect();
    format!(
        "gateway does not run the expected config: {}",
        parts.join("; ")
    )
}

fn unserved_message(apis: &[Unserved]) -> String {
    let shown: Vec<String> = apis
        .iter()
        .take(LISTED_IDS)
        .map(|api| format!("API {:?} ({}) {}", api.api_id, api.file, api.reason))
        .collect();
    let rest = apis.len().saturating_sub(LISTED_IDS);
    let more = if rest == 0 {
        String::new()
    } else {
        format!(" and {rest} more")
    };
    format!(
        "gateway lists the expected ids but does not serve the commit: {}{more}",
        shown.join("; ")
    )
}

/// `a, b, c and 4 more`: enough to find the culprit without flooding logs.
fn list_ids(ids: &[String]) -> String {
    let shown: Vec<String> = ids
        .iter()
        .take(LISTED_IDS)
        .map(|id| {
            // An unparsable policy file still loads as a policy with no id.
            if id.is_empty() {
                "(empty id)".to_string()
            } else {
                id.clone()
            }
        })
        .collect();
    let rest = ids.len().saturating_sub(LISTED_IDS);
    if rest == 0 {
        shown.join(", ")
    } else {
        format!("{} and {rest} more", shown.join(", "))
    }
}

/// A client for one gateway's control API.
pub struct Gateway {
    /// Base URL without trailing slash, so paths can be appended as is;
    /// it may carry a path prefix (a gateway behind a reverse proxy).
    base: String,
    /// The same URL with any credentials masked, for messages and logs.
    display: String,
    /// Value of `X-Tyk-Authorization`; never printed.
    secret: String,
    /// Where the secret came from, so a 403 names the setting to check.
    secret_from: String,
    client: reqwest::Client,
    /// `/<health_check_endpoint_name>`.
    health: String,
    /// From the last health answer; `None` until one named a version.
    version: Mutex<Option<GatewayVersion>>,
}

impl fmt::Debug for Gateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gateway")
            .field("base", &self.display)
            .field("secret", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// The id and route of an API definition; serde skips every other field
/// without building it, so a gateway with thousands of APIs costs little to
/// verify.
#[derive(Deserialize)]
struct ApiIdOnly {
    #[serde(default)]
    api_id: String,
    #[serde(default)]
    proxy: ListedProxy,
}

#[derive(Deserialize, Default)]
struct ListedProxy {
    #[serde(default)]
    listen_path: String,
    #[serde(default)]
    target_url: String,
}

/// The health answer's one field of interest.
#[derive(Deserialize)]
struct Health {
    #[serde(default)]
    version: String,
}

/// Only the ids of a `user.Policy`: `id` is the policy id; `_id` is the
/// database id, which Dashboard-sourced policies may carry instead.
#[derive(Deserialize)]
struct PolicyIdOnly {
    #[serde(default)]
    id: String,
    #[serde(default, rename = "_id")]
    mid: serde_json::Value,
}

impl PolicyIdOnly {
    fn into_id(self) -> String {
        match self.mid {
            serde_json::Value::String(mid) if self.id.is_empty() => mid,
            _ => self.id,
        }
    }
}

/// The connection pool `Gateway`s talk through. Building one loads the
/// system's CA bundle (tens of milliseconds of CPU on the async runtime,
/// for an `http://` gateway too): a long-running process builds one and
/// hands it to every `Gateway` it makes, which also keeps the previous
/// sync's connections to the gateway open for the next.
#[derive(Clone)]
pub struct GatewayClient {
    client: reqwest::Client,
}

impl GatewayClient {
    /// `url` only names the gateway in an error.
    pub fn new(url: &str, request_timeout: Duration) -> Result<GatewayClient, GatewayError> {
        let client = reqwest::Client::builder()
            .timeout(request_timeout)
            .connect_timeout(request_timeout.min(Duration::from_secs(5)))
            .build()
            .map_err(|err| GatewayError::Setup {
                url: redact_url(url),
                reason: error_chain(&err),
            })?;
        Ok(GatewayClient { client })
    }
}

impl Gateway {
    /// A client of its own: for one-shot commands.
    pub fn new(
        base_url: &str,
        secret: String,
        request_timeout: Duration,
    ) -> Result<Gateway, GatewayError> {
        let client = GatewayClient::new(base_url, request_timeout)?;
        Gateway::with_client(base_url, secret, &client)
    }

    /// Talks through `client`'s pool.
    pub fn with_client(
        base_url: &str,
        secret: String,
        client: &GatewayClient,
    ) -> Result<Gateway, GatewayError> {
        let display = redact_url(base_url);
        let url = reqwest::Url::parse(base_url).map_err(|err| GatewayError::Setup {
            url: display.clone(),
            reason: err.to_string(),
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(GatewayError::Setup {
                url: display,
                reason: "the URL must start with http:// or https://".to_string(),
            });
        }
        Ok(Gateway {
            base: base_url.trim_end_matches('/').to_string(),
            display: display.trim_end_matches('/').to_string(),
            secret,
            secret_from: "--gateway-secret-file".to_string(),
            client: client.client.clone(),
            health: format!("/{DEFAULT_HEALTH_PATH}"),
            version: Mutex::new(None),
        })
    }

    /// Names where the secret came from in a 403's message
    /// (`TYK_GITOPS_GATEWAY_SECRET`, or the file).
    pub fn with_secret_from(mut self, source: String) -> Gateway {
        self.secret_from = source;
        self
    }

    /// The health check at `/<name>` (tyk.conf `health_check_endpoint_name`)
    /// instead of `/hello`.
    pub fn with_health_path(mut self, name: &str) -> Gateway {
        self.health = format!("/{}", name.trim_matches('/'));
        self
    }

    /// The version the last health answer named.
    pub fn version(&self) -> Option<GatewayVersion> {
        *self.version.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Polls the health check until it answers 200 or `max_wait` has
    /// passed. Returns the version it names (`None` when it names none).
    pub async fn wait_ready(
        &self,
        max_wait: Duration,
    ) -> Result<Option<GatewayVersion>, GatewayError> {
        let deadline = Instant::now() + max_wait;
        let mut backoff = FIRST_BACKOFF;
        let mut last: Option<String> = None;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            // One attempt never outlives the overall wait.
            let attempt = self
                .client
                .get(self.url(&self.health))
                .timeout(remaining.max(Duration::from_millis(1)))
                .send()
                .await;
            let cause = match attempt {
                Ok(response) if response.status() == StatusCode::OK => {
                    // Always 200; the body says which version answers.
                    let version = response
                        .json::<Health>()
                        .await
                        .ok()
                        .and_then(|h| GatewayVersion::parse(&h.version));
                    *self.version.lock().unwrap_or_else(|p| p.into_inner()) = version;
                    return Ok(version);
                }
                Ok(response) => format!("{} answered {}", self.health, response.status()),
                // An attempt cut short by the overall deadline says less
                // than what the gateway answered before it (a 500, say).
                Err(err) if err.is_timeout() && last.is_some() => last.take().unwrap_or_default(),
                Err(err) => error_chain(&err),
            };
            // An untrusted certificate does not get better by waiting.
            if cause.to_ascii_lowercase().contains("certificate") {
                return Err(GatewayError::Unreachable {
                    url: self.display.clone(),
                    cause: format!(
                        "{cause} (a private CA is trusted through SSL_CERT_FILE or SSL_CERT_DIR)"
                    ),
                });
            }
            last = Some(cause.clone());
            tracing::debug!(gateway = %self.display, %cause, "gateway not ready yet");
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(GatewayError::Unreachable {
                    url: self.display.clone(),
                    cause: format!("not ready after {max_wait:?}; last error: {cause}"),
                });
            }
            tokio::time::sleep(backoff.min(remaining)).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Asks the gateway to reload its files. A 200 proves nothing about the
    /// result (Tyk always answers 200): call `verify` afterwards.
    pub async fn reload(&self, mode: ReloadMode) -> Result<(), GatewayError> {
        let path = match mode {
            ReloadMode::Local => "/tyk/reload?block=true",
            ReloadMode::Group => "/tyk/reload/group",
            ReloadMode::None => return Ok(()),
        };
        tracing::info!(gateway = %self.display, ?mode, "reloading gateway");
        let started = Instant::now();
        // A blocking reload of thousands of APIs outlasts an ordinary request.
        self.get(path, Some(RELOAD_TIMEOUT)).await?;
        // Mostly the wait for the gateway's next reload tick (Local).
        tracing::debug!(ms = started.elapsed().as_millis() as u64, "reload answered");
        Ok(())
    }

    /// The API ids and policy ids the gateway runs right now.
    pub async fn loaded(&self) -> Result<Loaded, GatewayError> {
        Ok(self.listed().await?.0)
    }

    /// The ids, and each listed API's (listen path, target URL). MCP APIs
    /// are listed only when asked with `include_types=mcp` (v5.12+; older
    /// gateways load none and ignore the parameter, so it is asked unless
    /// the gateway said it is older).
    async fn listed(&self) -> Result<(Loaded, HashMap<String, ListedProxy>), GatewayError> {
        let path = match self.version() {
            Some(v) if !v.knows_mcp() => "/tyk/apis",
            _ => "/tyk/apis?include_types=mcp",
        };
        let apis: Option<Vec<ApiIdOnly>> = self.get_json(path).await?;
        let policies: Option<Vec<PolicyIdOnly>> = self.get_json("/tyk/policies").await?;
        let mut routes = HashMap::new();
        let mut api_ids = BTreeSet::new();
        for api in apis.into_iter().flatten() {
            api_ids.insert(api.api_id.clone());
            routes.insert(api.api_id, api.proxy);
        }
        let loaded = Loaded {
            api_ids,
            policy_ids: policies
                .into_iter()
                .flatten()
                .map(PolicyIdOnly::into_id)
                .collect(),
        };
        Ok((loaded, routes))
    }

    /// Every API definition and policy the gateway runs, whole, as
    /// `/tyk/apis` and `/tyk/policies` list them (`plan --gateway`,
    /// `export`). MCP APIs are listed only when asked for (v5.12+; older
    /// gateways ignore the parameter and have none).
    pub async fn definitions(
        &self,
    ) -> Result<(Vec<serde_json::Value>, Vec<serde_json::Value>), GatewayError> {
        let apis: Option<Vec<serde_json::Value>> =
            self.get_json("/tyk/apis?include_types=mcp").await?;
        let policies: Option<Vec<serde_json::Value>> = self.get_json("/tyk/policies").await?;
        Ok((apis.unwrap_or_default(), policies.unwrap_or_default()))
    }

    /// The OpenAPI half of a Tyk OAS API (`GET /tyk/apis/oas/{id}`), or of
    /// an MCP API (`GET /tyk/mcps/{id}`, v5.12+); `None` when the gateway
    /// has none for that id (404).
    pub async fn companion(
        &self,
        api_id: &str,
        mcp: bool,
    ) -> Result<Option<serde_json::Value>, GatewayError> {
        let id: String = url::form_urlencoded::byte_serialize(api_id.as_bytes()).collect();
        let path = if mcp {
            format!("/tyk/mcps/{id}")
        } else {
            format!("/tyk/apis/oas/{id}")
        };
        match self.get_json(&path).await {
            Ok(doc) => Ok(Some(doc)),
            Err(GatewayError::Status { status: 404, .. }) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// `verify_served` for ids alone.
    pub async fn verify(
        &self,
        expected: &Loaded,
        max_wait: Duration,
    ) -> Result<Loaded, GatewayError> {
        let expected = Expected {
            ids: expected.clone(),
            apis: Vec::new(),
        };
        self.verify_served(&expected, max_wait).await
    }

    /// Polls until the gateway lists exactly the expected ids, lists each
    /// expected API with its committed content, and routes each probed
    /// listen path. Reloads are merged and a group reload returns before
    /// the work is done (and each node reloads on its own), so one look
    /// right after the reload is not enough. Gives up after `max_wait`
    /// with `Mismatch` or `NotServed`, or with the last error if the
    /// gateway never answered.
    pub async fn verify_served(
        &self,
        expected: &Expected,
        max_wait: Duration,
    ) -> Result<Loaded, GatewayError> {
        let deadline = Instant::now() + max_wait;
        let mut backoff = FIRST_BACKOFF;
        loop {
            let last = match self.listed().await {
                Ok((loaded, _)) if loaded != expected.ids => {
                    Err(GatewayError::mismatch(&expected.ids, &loaded))
                }
                Ok((loaded, routes)) => match stale(&expected.apis, &routes) {
                    Some(err) => Err(err),
                    None => match self.probe(&expected.apis).await {
                        Ok(()) => return Ok(loaded),
                        Err(err) => Err(err),
                    },
                },
                // A wrong secret or a foreign server will not fix itself.
                Err(err) if !err.is_transient() => return Err(err),
                Err(err) => Err(err),
            };
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return last;
            }
            tokio::time::sleep(backoff.min(remaining)).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// The routing probe: a plain request (no secret: it may reach an
    /// upstream) to each probed listen path. An API whose answer is the
    /// router's own not-found answer, learnt from a path no API owns, is
    /// not routed. Any other answer means the router handed the request
    /// to the API: an upstream's answer, an error because the upstream is
    /// down, a 401/403 of a protected API.
    async fn probe(&self, apis: &[ExpectedApi]) -> Result<(), GatewayError> {
        let probed: Vec<(&ExpectedApi, &str)> = apis
            .iter()
            .filter_map(|api| api.probe.as_deref().map(|path| (api, path)))
            .collect();
        if probed.is_empty() {
            return Ok(());
        }
        let not_found = match self.probe_once(UNROUTED_PATH, "").await? {
            Some((StatusCode::NOT_FOUND, body)) => body,
            answer => {
                // An API on "/" takes every path: nothing can look unrouted.
                tracing::warn!(
                    gateway = %self.display,
                    answer = ?answer.map(|(status, _)| status.as_u16()),
                    "the routing probe cannot tell routed from unrouted: a path no API should own is answered by an API (listen path \"/\"?)"
                );
                return Ok(());
            }
        };
        let answers: Vec<(&ExpectedApi, Result<_, GatewayError>)> =
            futures_util::stream::iter(probed)
                .map(|(api, path)| async move {
                    (api, self.probe_once(&probe_path(path), &api.domain).await)
                })
                .buffer_unordered(PROBES_AT_ONCE)
                .collect()
                .await;
        let mut unrouted = Vec::new();
        for (api, answer) in answers {
            if let Some((StatusCode::NOT_FOUND, body)) = answer?
                && body == not_found
            {
                unrouted.push(Unserved {
                    api_id: api.api_id.clone(),
                    file: api.file.clone(),
                    reason: format!(
                        "is listed but not routed: GET {} got the router's 404 (the gateway skipped the spec)",
                        probe_path(api.probe.as_deref().unwrap_or_default())
                    ),
                });
            }
        }
        if unrouted.is_empty() {
            Ok(())
        } else {
            unrouted.sort_by(|a, b| a.file.cmp(&b.file));
            Err(GatewayError::NotServed { apis: unrouted })
        }
    }

    /// One probe: the status and the start of the body; `None` when it
    /// timed out (past the router, waiting on an upstream).
    async fn probe_once(
        &self,
        path: &str,
        domain: &str,
    ) -> Result<Option<(StatusCode, String)>, GatewayError> {
        let mut request = self.client.get(self.url(path)).timeout(PROBE_TIMEOUT);
        if !domain.is_empty() {
            request = request.header(reqwest::header::HOST, domain);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(err) if err.is_timeout() => return Ok(None),
            Err(err) => {
                return Err(GatewayError::Unreachable {
                    url: self.display.clone(),
                    cause: error_chain(&err),
                });
            }
        };
        let status = response.status();
        let body = match response.bytes().await {
            Ok(bytes) => String::from_utf8_lossy(&bytes[..bytes.len().min(BODY_SNIPPET)])
                .trim()
                .to_string(),
            Err(err) if err.is_timeout() => return Ok(None),
            Err(_) => String::new(),
        };
        Ok(Some((status, body)))
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// One authenticated GET; every non-2xx answer becomes an error.
    async fn get(
        &self,
        path: &str,
        timeout: Option<Duration>,
    ) -> Result<reqwest::Response, GatewayError> {
        let mut request = self
            .client
            .get(self.url(path))
            .header("X-Tyk-Authorization", &self.secret);
        if let Some(t) = timeout {
            request = request.timeout(t);
        }
        let response = request
            .send()
            .await
            .map_err(|err| GatewayError::Unreachable {
                url: self.display.clone(),
                cause: error_chain(&err),
            })?;
        let status = response.status();
        if status == StatusCode::FORBIDDEN {
            return Err(GatewayError::Forbidden {
                url: self.display.clone(),
                secret_from: self.secret_from.clone(),
            });
        }
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            return Err(GatewayError::Status {
                url: format!("{}{path}", self.display),
                status: status.as_u16(),
                body: self.snippet(&body),
            });
        }
        Ok(response)
    }

    async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
    ) -> Result<T, GatewayError> {
        let response = self.get(path, None).await?;
        let bytes = response
            .bytes()
            .await
            .map_err(|err| GatewayError::Unreachable {
                url: self.display.clone(),
                cause: error_chain(&err),
            })?;
        serde_json::from_slice(&bytes).map_err(|err| GatewayError::Decode {
            url: format!("{}{path}", self.display),
            reason: format!("{err}; body starts with {:?}", self.snippet_bytes(&bytes)),
        })
    }

    /// The start of a body, for messages. A gateway does not echo headers,
    /// but a proxy in front of it might: mask the secret to be sure.
    fn snippet(&self, body: &str) -> String {
        let cut: String = body.trim().chars().take(BODY_SNIPPET).collect();
        if self.secret.is_empty() {
            cut
        } else {
            cut.replace(&self.secret, "<redacted>")
        }
    }

    fn snippet_bytes(&self, body: &[u8]) -> String {
        self.snippet(&String::from_utf8_lossy(
            &body[..body.len().min(BODY_SNIPPET * 4)],
        ))
    }
}

/// Expected APIs listed with other content than committed: the node still
/// runs the previous definitions (a group reload that has not reached it).
fn stale(apis: &[ExpectedApi], listed: &HashMap<String, ListedProxy>) -> Option<GatewayError> {
    let mut out = Vec::new();
    for api in apis {
        let Some(proxy) = listed.get(&api.api_id) else {
            continue;
        };
        let fields = [
            ("listen_path", &api.listen_path, &proxy.listen_path),
            ("target_url", &api.target_url, &proxy.target_url),
        ];
        for (field, want, got) in fields {
            if let Some(want) = want.as_deref().filter(|want| *want != got) {
                out.push(Unserved {
                    api_id: api.api_id.clone(),
                    file: api.file.clone(),
                    reason: format!("is listed with {field} {got:?}, the commit has {want:?}"),
                });
                break;
            }
        }
    }
    (!out.is_empty()).then_some(GatewayError::NotServed { apis: out })
}

/// A listen path as a request path: Tyk's `{name}` placeholders take any
/// segment.
fn probe_path(listen_path: &str) -> String {
    let mut out = String::with_capacity(listen_path.len() + 1);
    if !listen_path.starts_with('/') {
        out.push('/');
    }
    let mut in_placeholder = false;
    for c in listen_path.chars() {
        match c {
            '{' => {
                in_placeholder = true;
                out.push_str("probe");
            }
            '}' => in_placeholder = false,
            _ if in_placeholder => {}
            _ => out.push(c),
        }
    }
    out
}

/// An error and its causes, `a: b: c`, without the request URL (which may
/// carry credentials and is already named by the error around it).
fn error_chain(err: &reqwest::Error) -> String {
    let mut text = if err.is_timeout() {
        "timed out".to_string()
    } else if err.is_connect() {
        "cannot connect".to_string()
    } else {
        "request failed".to_string()
    };
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// The URL with any user or password replaced, for messages and logs.
fn redact_url(raw: &str) -> String {
    match reqwest::Url::parse(raw) {
        Ok(mut url) if !url.username().is_empty() || url.password().is_some() => {
            // Both setters only fail for URLs without a host, which cannot
            // carry credentials in the first place.
            let _ = url.set_password(None);
            let _ = url.set_username("redacted");
            url.to_string()
        }
        Ok(_) => raw.to_string(),
        // Unparsable: do not echo it, it might be a secret pasted by mistake.
        Err(_) => "<invalid URL>".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn versions_from_health_answers() {
        let v = |s: &str| GatewayVersion::parse(s);
        assert_eq!(
            v("v5.14.0"),
            Some(GatewayVersion {
                major: 5,
                minor: 14
            })
        );
        assert_eq!(v("5.8.15-rc1"), Some(GatewayVersion { major: 5, minor: 8 }));
        assert_eq!(v(""), None);
        assert_eq!(v("dev"), None);
        assert!(v("v5.12.0").is_some_and(GatewayVersion::knows_mcp));
        assert!(!v("v5.8.15").is_some_and(GatewayVersion::knows_mcp));
        assert!(v("v5.11.1") < v("v5.12.0") && v("v5.9.0") < v("v5.14.0"));
    }

    #[test]
    fn listen_paths_become_request_paths() {
        assert_eq!(probe_path("/pets/"), "/pets/");
        assert_eq!(probe_path("pets"), "/pets");
        assert_eq!(probe_path("/users/{id}/orders"), "/users/probe/orders");
    }

    #[test]
    fn mismatch_lists_a_few_ids_and_counts_the_rest() {
        let expected = Loaded {
            api_ids: ids(&["a", "b", "c", "d", "e", "f", "g"]),
            policy_ids: ids(&["p1"]),
        };
        let actual = Loaded {
            api_ids: ids(&["x"]),
            policy_ids: ids(&["p1", ""]),
        };
        let err = GatewayError::mismatch(&expected, &actual);
        assert!(err.is_mismatch());
        assert_eq!(
            err.to_string(),
            "gateway does not run the expected config: \
             missing APIs: a, b, c, d, e and 2 more; unexpected APIs: x; \
             unexpected policies: (empty id)"
        );
    }

    #[test]
    fn forbidden_names_the_flag_not_the_secret() {
        let gw = Gateway::new(
            "http://127.0.0.1:1/",
            "s3cr3t".into(),
            Duration::from_secs(1),
        )
        .expect("valid url");
        let gw = gw.with_secret_from("TYK_GITOPS_GATEWAY_SECRET".into());
        let err = GatewayError::Forbidden {
            url: gw.display.clone(),
            secret_from: gw.secret_from.clone(),
        };
        assert_eq!(
            err.to_string(),
            "gateway http://127.0.0.1:1 rejected the secret from TYK_GITOPS_GATEWAY_SECRET (403): it must equal the gateway's `secret` (TYK_GW_SECRET)"
        );
        assert!(!err.is_mismatch() && !err.is_transient());
        assert!(!format!("{gw:?}").contains("s3cr3t"));
    }

    #[test]
    fn status_body_is_cut_and_masks_the_secret() {
        let gw = Gateway::new(
            "http://gw:8080/prefix/",
            "s3cr3t".into(),
            Duration::from_secs(1),
        )
        .expect("valid url");
        assert_eq!(gw.url("/hello"), "http://gw:8080/prefix/hello");
        let body = format!("echo s3cr3t {}", "x".repeat(500));
        let snippet = gw.snippet(&body);
        assert!(snippet.starts_with("echo <redacted> x"));
        assert!(snippet.chars().count() <= BODY_SNIPPET + "<redacted>".len());
    }

    #[test]
    fn credentials_in_the_url_are_redacted() {
        let gw = Gateway::new(
            "https://admin:hunter2@gw.example/",
            "s".into(),
            Duration::from_secs(1),
        )
        .expect("valid url");
        assert_eq!(gw.display, "https://redacted@gw.example");
        assert!(!format!("{gw:?}").contains("hunter2"));
        let err =
            Gateway::new("gw:8080", "s".into(), Duration::from_secs(1)).expect_err("no scheme");
        assert!(err.to_string().contains("http://"), "{err}");
    }

    #[test]
    fn null_lists_mean_nothing_loaded() {
        let apis: Option<Vec<ApiIdOnly>> = serde_json::from_str("null").expect("json");
        assert!(apis.is_none());
        let apis: Option<Vec<ApiIdOnly>> =
            serde_json::from_str(r#"[{"api_id":"a","proxy":{"listen_path":"/a/"},"x":[1,{}]}]"#)
                .expect("json");
        assert_eq!(
            apis.into_iter()
                .flatten()
                .map(|a| a.api_id)
                .collect::<Vec<_>>(),
            ["a"]
        );
    }

    #[test]
    fn policy_id_falls_back_to_database_id() {
        let list: Vec<PolicyIdOnly> = serde_json::from_str(
            r#"[{"id":"basic","_id":""},{"id":"","_id":"5ead7120575961000181867e"},{"_id":null}]"#,
        )
        .expect("json");
        let got: Vec<String> = list.into_iter().map(PolicyIdOnly::into_id).collect();
        assert_eq!(got, ["basic", "5ead7120575961000181867e", ""]);
    }
}
