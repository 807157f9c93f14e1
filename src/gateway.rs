//! Tyk control API client: wait for `/hello`, reload, and read what the
//! gateway actually loaded. Tyk's reload always answers 200, so the only
//! proof of a reload is `verify`: polling `/tyk/apis` and `/tyk/policies`
//! until they show exactly the expected ids. The gateway secret is sent in
//! `X-Tyk-Authorization` and never appears in `Debug`, errors or logs.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use reqwest::StatusCode;
use serde::Deserialize;
use tokio::time::Instant;

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
}

impl GatewayError {
    /// A verify mismatch (the commit did not load: roll back) as opposed to
    /// an outage or a configuration problem (retry or report).
    pub fn is_mismatch(&self) -> bool {
        matches!(self, GatewayError::Mismatch { .. })
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
}

impl fmt::Debug for Gateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gateway")
            .field("base", &self.display)
            .field("secret", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// Only the id of an API definition; serde skips every other field without
/// building it, so a gateway with thousands of APIs costs little to verify.
#[derive(Deserialize)]
struct ApiIdOnly {
    #[serde(default)]
    api_id: String,
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

impl Gateway {
    pub fn new(
        base_url: &str,
        secret: String,
        request_timeout: Duration,
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
        let client = reqwest::Client::builder()
            .timeout(request_timeout)
            .connect_timeout(request_timeout.min(Duration::from_secs(5)))
            .build()
            .map_err(|err| GatewayError::Setup {
                url: display.clone(),
                reason: error_chain(&err),
            })?;
        Ok(Gateway {
            base: base_url.trim_end_matches('/').to_string(),
            display: display.trim_end_matches('/').to_string(),
            secret,
            secret_from: "--gateway-secret-file".to_string(),
            client,
        })
    }

    /// Names where the secret came from in a 403's message
    /// (`TYK_GITOPS_GATEWAY_SECRET`, or the file).
    pub fn with_secret_from(mut self, source: String) -> Gateway {
        self.secret_from = source;
        self
    }

    /// Polls `GET /hello` until it answers 200 or `max_wait` has passed.
    pub async fn wait_ready(&self, max_wait: Duration) -> Result<(), GatewayError> {
        let deadline = Instant::now() + max_wait;
        let mut backoff = FIRST_BACKOFF;
        let mut last: Option<String> = None;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            // One attempt never outlives the overall wait.
            let attempt = self
                .client
                .get(self.url("/hello"))
                .timeout(remaining.max(Duration::from_millis(1)))
                .send()
                .await;
            let cause = match attempt {
                Ok(response) if response.status() == StatusCode::OK => return Ok(()),
                Ok(response) => format!("/hello answered {}", response.status()),
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
        // A blocking reload of thousands of APIs outlasts an ordinary request.
        self.get(path, Some(RELOAD_TIMEOUT)).await.map(drop)
    }

    /// The API ids and policy ids the gateway runs right now.
    pub async fn loaded(&self) -> Result<Loaded, GatewayError> {
        let apis: Option<Vec<ApiIdOnly>> = self.get_json("/tyk/apis").await?;
        let policies: Option<Vec<PolicyIdOnly>> = self.get_json("/tyk/policies").await?;
        Ok(Loaded {
            api_ids: apis.into_iter().flatten().map(|api| api.api_id).collect(),
            policy_ids: policies
                .into_iter()
                .flatten()
                .map(PolicyIdOnly::into_id)
                .collect(),
        })
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

    /// Polls `loaded()` until it equals `expected`. Reloads are merged and a
    /// group reload returns before the work is done, so one look right after
    /// the reload is not enough. Gives up after `max_wait` with `Mismatch`,
    /// or with the last error if the gateway never answered.
    pub async fn verify(
        &self,
        expected: &Loaded,
        max_wait: Duration,
    ) -> Result<Loaded, GatewayError> {
        let deadline = Instant::now() + max_wait;
        let mut backoff = FIRST_BACKOFF;
        loop {
            let last = match self.loaded().await {
                Ok(loaded) if &loaded == expected => return Ok(loaded),
                Ok(loaded) => Err(GatewayError::mismatch(expected, &loaded)),
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
