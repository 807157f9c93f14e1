//! A Tyk gateway emulator: the control API, the file-mode reload and the
//! router of TYK-FACTS.md, failure modes included (bad files skipped without
//! a word, duplicate `api_id` overwritten, colliding listen paths renamed,
//! invalid specs listed but not routed, an unparsable policy map aborts the
//! whole reload, and every reload answers 200), for v5.8 or v5.14
//! (`EmuConfig::version`). It serves on its own runtime, so a sync test can
//! block on the real binary while the emulator keeps answering.
//!
//! Not emulated (no test here relies on them): secret replacement in
//! definition bytes, JavaScript middleware, the classic form the gateway
//! derives from a Tyk OAS document (the `.json` file is listed as is),
//! `reload_interval` (queued reloads merge instead), `control_api_port`,
//! Redis pub/sub for group reloads (a group reload reloads this node only),
//! `node_secret`, upstream DNS (only loopback upstreams are reached; others
//! answer Tyk's "Upstream host lookup failed"), and every listen-path
//! feature beyond a prefix with `{placeholders}`. None of this was checked
//! against a running gateway: the real one could not be built here.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::runtime::{Handle, Runtime};
use tokio::sync::{Notify, oneshot, watch};

use super::port::ReservedPort;

/// The gateway versions whose behaviour the emulator reproduces where they
/// differ (TYK-FACTS.md): MCP APIs, companion files, empty policy ids, the
/// ids a policy map lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TykVersion {
    /// v5.8.15, the LTS: no MCP APIs, every `*-oas.json` skipped as an API,
    /// a broken policy file still adds a policy with an empty id.
    V5_8,
    /// v5.14.0: MCP pairs (left out of `/tyk/apis` unless asked with
    /// `include_types=mcp`), policies keyed by (`org_id`, `id`), empty ids
    /// dropped.
    V5_14,
}

impl TykVersion {
    /// As the health check's `version` field shows it.
    pub fn tag(self) -> &'static str {
        match self {
            TykVersion::V5_8 => "v5.8.15",
            TykVersion::V5_14 => "v5.14.0",
        }
    }

    fn knows_mcp(self) -> bool {
        self >= TykVersion::V5_14
    }
}

/// Where the emulated gateway reads its files, as in `tyk.conf`.
pub struct EmuConfig {
    /// `app_path`: `*.json` directly in it, resolved again at each reload so
    /// a `current` symlink swap is seen.
    pub app_path: PathBuf,
    /// `policies.policy_path`: one policy per `*.json`; wins when both set.
    pub policy_path: Option<PathBuf>,
    /// `policies.policy_record_name`: one file holding a map id → policy.
    pub policy_record_name: Option<PathBuf>,
    pub secret: String,
    pub version: TykVersion,
    /// `health_check_endpoint_name`: the health check answers at `/<name>`.
    pub health_check_endpoint_name: String,
    /// `enable_custom_domains`: off (the default), routing ignores `domain`.
    pub enable_custom_domains: bool,
}

impl Default for EmuConfig {
    fn default() -> EmuConfig {
        EmuConfig {
            app_path: PathBuf::new(),
            policy_path: None,
            policy_record_name: None,
            secret: String::new(),
            version: TykVersion::V5_14,
            health_check_endpoint_name: "hello".to_string(),
            enable_custom_domains: false,
        }
    }
}

/// How long after `/tyk/reload/group` answers the node really reloads: the
/// real gateway goes through Redis pub/sub, so the answer comes first.
const GROUP_RELOAD_LAG: Duration = Duration::from_millis(120);

const FORBIDDEN: &str = "Attempted administrative access with invalid or missing key!";

pub struct TykEmulator {
    pub secret: String,
    port: ReservedPort,
    shared: Arc<Shared>,
    /// Owned so the emulator's threads live exactly as long as it does.
    runtime: Option<Runtime>,
    handle: Handle,
    router: Router,
    /// Present while the listener is up; sending stops it (`set_down`).
    stop: Mutex<Option<oneshot::Sender<()>>>,
}

struct Shared {
    config: EmuConfig,
    state: Mutex<Gw>,
    /// Wakes the reload worker; a wake-up sent while it is busy is kept.
    wake: Notify,
    /// The highest reload request number whose reload has run.
    done: watch::Sender<u64>,
}

/// One listen path the router serves.
#[derive(Debug, Clone)]
struct Route {
    api_id: String,
    /// As routed, after any collision rename.
    listen_path: String,
    /// As committed, to tell "already loaded on this path" at the next load.
    committed_path: String,
    domain: String,
    keyless: bool,
    target_url: String,
    strip_listen_path: bool,
}

/// What one load produced: the listed definitions (skipped specs included)
/// and the router's table, longest listen path first.
#[derive(Default)]
struct Loaded {
    apis: Vec<Value>,
    routes: Vec<Route>,
}

/// What the gateway runs, plus the knobs tests turn.
#[derive(Default)]
struct Gw {
    /// Listed definitions in load order, as `/tyk/apis` returns them.
    apis: Vec<Value>,
    routes: Vec<Route>,
    /// Keyed by (`org_id`, `id`) as v5.12+ does; v5.8 keys by `id` alone
    /// (its keys have an empty org).
    policies: BTreeMap<(String, String), Value>,
    /// Reload requests numbered in arrival order; one run serves them all.
    requested: u64,
    reload_requests: u64,
    reloads_run: u64,
    fail_reloads: bool,
    reload_delay: Duration,
    /// APIs whose HTTP service setup fails at the next loads: listed, not
    /// routed (a failure the validator cannot see, such as a missing
    /// certificate or plugin).
    broken_setup: BTreeSet<String>,
    /// A load (at start or a reload) has succeeded: `/ready` answers 200.
    loaded_once: bool,
}

impl TykEmulator {
    /// Starts serving on a free loopback port, after an initial load of the
    /// files as the real gateway does at start-up.
    pub fn start(config: EmuConfig) -> TykEmulator {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("emulator runtime");
        let handle = runtime.handle().clone();
        let secret = config.secret.clone();
        let mut gw = Gw::default();
        let (apis, policies) = load(&config, &[], &BTreeSet::new());
        if let Ok(policies) = policies {
            gw.policies = policies;
            (gw.apis, gw.routes) = (apis.apis, apis.routes);
            gw.loaded_once = true;
        }
        let shared = Arc::new(Shared {
            config,
            state: Mutex::new(gw),
            wake: Notify::new(),
            done: watch::channel(0).0,
        });
        handle.spawn(reload_worker(shared.clone()));
        let port = ReservedPort::new();
        let listener = listen(&handle, &port);
        let emulator = TykEmulator {
            secret,
            port,
            router: router(shared.clone()),
            shared,
            runtime: Some(runtime),
            handle,
            stop: Mutex::new(None),
        };
        emulator.serve(listener);
        emulator
    }

    pub fn port(&self) -> u16 {
        self.port.port()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.port.addr())
    }

    /// Down: the port refuses connections and open ones are closed. Up again:
    /// the same port, the same loaded state (a network outage, not a crash).
    pub fn set_down(&self, down: bool) {
        let mut stop = lock(&self.stop);
        match (down, stop.take()) {
            (true, Some(tx)) => {
                let _ = tx.send(());
                drop(stop);
                self.wait_refused();
            }
            (false, None) => {
                drop(stop);
                self.serve(listen(&self.handle, &self.port));
            }
            (_, unchanged) => *stop = unchanged,
        }
    }

    /// Reload requests received (local and group), merged or not.
    pub fn reload_count(&self) -> u64 {
        self.state().reload_requests
    }

    /// Reloads actually run; merged requests make this lower than
    /// `reload_count`.
    pub fn reloads_run(&self) -> u64 {
        self.state().reloads_run
    }

    /// Drift: someone deleted an API through the gateway's own API.
    pub fn tamper_remove_api(&self, api_id: &str) {
        self.state()
            .apis
            .retain(|def| def["api_id"].as_str() != Some(api_id));
    }

    /// Reloads still answer 200 but leave what is loaded untouched.
    pub fn set_fail_reloads(&self, fail: bool) {
        self.state().fail_reloads = fail;
    }

    /// From the next reload on, `api_id`'s HTTP service setup fails: the
    /// gateway lists it and does not route it ("Spec not valid, skipped!").
    pub fn fail_service_setup(&self, api_id: &str) {
        self.state().broken_setup.insert(api_id.to_string());
    }

    /// Time between a reload being queued and it running; requests arriving
    /// meanwhile merge into the same run.
    pub fn set_reload_delay(&self, delay: Duration) {
        self.state().reload_delay = delay;
    }

    pub fn loaded_api_ids(&self) -> BTreeSet<String> {
        self.state()
            .apis
            .iter()
            .map(|def| str_at(def, "/api_id").to_string())
            .collect()
    }

    pub fn loaded_policy_ids(&self) -> BTreeSet<String> {
        self.state()
            .policies
            .values()
            .map(|p| str_at(p, "/id").to_string())
            .collect()
    }

    /// `api_id`s the router serves: listed and not skipped, not shadowed.
    pub fn routed_api_ids(&self) -> BTreeSet<String> {
        let gw = self.state();
        let mut seen = BTreeSet::new();
        let mut routed = BTreeSet::new();
        for route in &gw.routes {
            if self.shared.config.enable_custom_domains || seen.insert(route.listen_path.clone()) {
                routed.insert(route.api_id.clone());
            }
        }
        routed
    }

    /// `api_id` → listen path as loaded, to see the gateway's renames.
    pub fn last_listen_paths(&self) -> BTreeMap<String, String> {
        self.state()
            .apis
            .iter()
            .map(|def| {
                let id = str_at(def, "/api_id").to_string();
                (id, str_at(def, "/proxy/listen_path").to_string())
            })
            .collect()
    }

    fn state(&self) -> MutexGuard<'_, Gw> {
        lock(&self.shared.state)
    }

    fn serve(&self, listener: TcpListener) {
        let (tx, rx) = oneshot::channel::<()>();
        let app = self.router.clone();
        self.handle.spawn(async move {
            let stopped = async {
                let _ = rx.await;
            };
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(stopped)
                .await;
        });
        *lock(&self.stop) = Some(tx);
    }

    /// The listener is dropped asynchronously after the stop signal; return
    /// only once connecting fails, so a test's next request sees the outage.
    fn wait_refused(&self) {
        let addr = self.port.addr();
        let start = Instant::now();
        while TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_ok() {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "emulator still up"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for TykEmulator {
    fn drop(&mut self) {
        if let Some(tx) = lock(&self.stop).take() {
            let _ = tx.send(());
        }
        // Tests drop the emulator inside their own runtime, where a blocking
        // shutdown would panic.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A listener on the emulator's reserved port, registered with its runtime.
fn listen(handle: &Handle, port: &ReservedPort) -> TcpListener {
    let _context = handle.enter();
    let listener = port.listen();
    listener.set_nonblocking(true).expect("nonblocking");
    TcpListener::from_std(listener).expect("register listener")
}

fn router(shared: Arc<Shared>) -> Router {
    // Tyk ignores trailing slashes on its control API.
    let both = |router: Router<Arc<Shared>>, path: &str, handler: MethodRouter<Arc<Shared>>| {
        router
            .route(path, handler.clone())
            .route(&format!("{path}/"), handler)
    };
    let mut control = Router::new();
    control = both(control, "/tyk/reload", get(reload));
    control = both(control, "/tyk/reload/group", get(reload_group));
    control = both(control, "/tyk/apis", get(apis));
    control = both(control, "/tyk/policies", get(policies));
    control = both(control, "/tyk/apis/oas/{id}", get(oas_document));
    control = both(control, "/tyk/mcps/{id}", get(mcp_document));
    let control = control.route_layer(middleware::from_fn_with_state(shared.clone(), check_secret));
    let health = format!("/{}", shared.config.health_check_endpoint_name);
    let mut open = both(Router::new(), &health, get(hello));
    // `/ready` since v5.9: 503 until one reload succeeded (the emulator
    // has no Redis to wait for). On v5.8 the router answers it.
    if shared.config.version >= TykVersion::V5_14 {
        open = open.route("/ready", get(ready));
    }
    open.merge(control).fallback(proxy).with_state(shared)
}

async fn check_secret(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let given = request.headers().get("x-tyk-authorization");
    if given.map(|value| value.as_bytes()) == Some(shared.config.secret.as_bytes()) {
        next.run(request).await
    } else {
        let body = json!({"status": "error", "message": FORBIDDEN});
        (StatusCode::FORBIDDEN, Json(body)).into_response()
    }
}

async fn hello(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(json!({
        "status": "pass",
        "version": shared.config.version.tag(),
        "description": "Tyk GW",
        "details": {"redis": {"status": "pass", "componentType": "datastore", "time": "2026-01-01T00:00:00Z"}}
    }))
}

async fn ready(State(shared): State<Arc<Shared>>) -> StatusCode {
    // The start-up load counts as the first reload.
    if lock(&shared.state).loaded_once {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

fn ok() -> Json<Value> {
    Json(json!({"status": "ok", "message": ""}))
}

/// Queues a reload; with `block=true` waits until a run has covered it.
/// Answers 200 whatever the reload did, as Tyk does.
async fn reload(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Json<Value> {
    let ticket = {
        let mut gw = lock(&shared.state);
        gw.reload_requests += 1;
        queue_reload(&mut gw, &shared)
    };
    if query.get("block").map(String::as_str) == Some("true") {
        let mut done = shared.done.subscribe();
        let _ = done.wait_for(|done| *done >= ticket).await;
    }
    ok()
}

/// Answers at once; the reload is queued a little later, as when the
/// notice travels through Redis. No completion signal (tyk#716).
async fn reload_group(State(shared): State<Arc<Shared>>) -> Json<Value> {
    lock(&shared.state).reload_requests += 1;
    tokio::spawn(async move {
        tokio::time::sleep(GROUP_RELOAD_LAG).await;
        queue_reload(&mut lock(&shared.state), &shared);
    });
    ok()
}

fn queue_reload(gw: &mut Gw, shared: &Shared) -> u64 {
    gw.requested += 1;
    shared.wake.notify_one();
    gw.requested
}

/// Registered definitions, skipped specs included; MCP APIs only when asked
/// with `include_types=mcp` (v5.12+; v5.8 loads none).
async fn apis(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Json<Vec<Value>> {
    let with_mcp = query
        .get("include_types")
        .is_some_and(|types| types.split(',').any(|t| t.trim() == "mcp"));
    let apis = lock(&shared.state)
        .apis
        .iter()
        .filter(|def| with_mcp || !is_mcp(def))
        .cloned()
        .collect();
    Json(apis)
}

/// `GET /tyk/apis/oas/{id}`: the OpenAPI half of a loaded Tyk OAS API.
async fn oas_document(
    State(shared): State<Arc<Shared>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    companion_document(&shared, &id, "-oas.json")
}

/// `GET /tyk/mcps/{id}`: the OpenAPI half of a loaded MCP API.
async fn mcp_document(
    State(shared): State<Arc<Shared>>,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    companion_document(&shared, &id, "-mcp.json")
}

/// The companion of the loaded API `id`, read from its pair's file (the
/// emulator keeps no parsed copy); 404 as Tyk answers for an unknown id.
fn companion_document(shared: &Shared, id: &str, suffix: &str) -> Response {
    let loaded = lock(&shared.state)
        .apis
        .iter()
        .any(|api| str_at(api, "/api_id") == id && api["is_oas"] == json!(true));
    let found = loaded
        .then(|| {
            json_files(&shared.config.app_path)
                .into_iter()
                .find_map(|path| {
                    let def: Value = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
                    if str_at(&def, "/api_id") != id {
                        return None;
                    }
                    let stem = path.file_stem()?.to_string_lossy().into_owned();
                    let companion = path.with_file_name(format!("{stem}{suffix}"));
                    serde_json::from_slice::<Value>(&std::fs::read(companion).ok()?).ok()
                })
        })
        .flatten();
    match found {
        Some(doc) => Json(doc).into_response(),
        None => {
            let body = json!({"status": "error", "message": "API not found"});
            (StatusCode::NOT_FOUND, Json(body)).into_response()
        }
    }
}

async fn policies(State(shared): State<Arc<Shared>>) -> Json<Vec<Value>> {
    Json(lock(&shared.state).policies.values().cloned().collect())
}

/// The gateway's listener for everything that is not the control API: the
/// first route (longest listen path first) whose path prefixes the request
/// takes it; with custom domains off the `domain` is ignored, so of two APIs
/// on one path the first shadows the other. No route: Tyk's `handle404`,
/// status 404 and the body `Not Found`.
async fn proxy(State(shared): State<Arc<Shared>>, headers: HeaderMap, uri: Uri) -> Response {
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .map(|h| h.rsplit_once(':').map_or(h, |(name, _)| name).to_string())
        .unwrap_or_default();
    let custom_domains = shared.config.enable_custom_domains;
    let route = lock(&shared.state)
        .routes
        .iter()
        .filter(|r| !custom_domains || r.domain.is_empty() || r.domain == host)
        .find_map(|r| prefix_match(&r.listen_path, uri.path()).map(|len| (r.clone(), len)));
    let Some((route, matched)) = route else {
        return (StatusCode::NOT_FOUND, "Not Found").into_response();
    };
    let error = |status: StatusCode, message: &str| {
        (status, Json(json!({"error": message}))).into_response()
    };
    if !route.keyless {
        return if headers.contains_key("authorization") {
            error(
                StatusCode::FORBIDDEN,
                "Access to this API has been disallowed",
            )
        } else {
            error(StatusCode::UNAUTHORIZED, "Authorization field missing")
        };
    }
    let Ok(target) = reqwest::Url::parse(&route.target_url) else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "There was a problem proxying the request",
        );
    };
    // Tests run no DNS: only loopback upstreams are reachable.
    if !matches!(target.host_str(), Some("127.0.0.1" | "localhost")) {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Upstream host lookup failed",
        );
    }
    let rest = if route.strip_listen_path {
        &uri.path()[matched..]
    } else {
        uri.path()
    };
    let url = format!(
        "{}/{}",
        route.target_url.trim_end_matches('/'),
        rest.trim_start_matches('/')
    );
    match reqwest::get(&url).await {
        Ok(upstream) => {
            let status =
                StatusCode::from_u16(upstream.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
            let body = upstream.bytes().await.unwrap_or_default();
            (status, body).into_response()
        }
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "There was a problem proxying the request",
        ),
    }
}

/// The length of `path`'s prefix that `listen_path` matches, as gorilla mux's
/// `PathPrefix` does: a `{name}` placeholder takes one non-empty segment.
fn prefix_match(listen_path: &str, path: &str) -> Option<usize> {
    let (pattern, path) = (listen_path.as_bytes(), path.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < pattern.len() {
        if pattern[i] == b'{' {
            let close = pattern[i..].iter().position(|&c| c == b'}')? + i;
            let segment = path[j..].iter().take_while(|&&c| c != b'/').count();
            if segment == 0 {
                return None;
            }
            (i, j) = (close + 1, j + segment);
        } else if path.get(j) == Some(&pattern[i]) {
            (i, j) = (i + 1, j + 1);
        } else {
            return None;
        }
    }
    Some(j)
}

fn is_mcp(def: &Value) -> bool {
    str_at(def, "/application_protocol") == "mcp"
}

/// Runs queued reloads one at a time; every request queued before a run
/// starts reading files is served by that run (Tyk merges reloads).
async fn reload_worker(shared: Arc<Shared>) {
    loop {
        shared.wake.notified().await;
        let delay = lock(&shared.state).reload_delay;
        tokio::time::sleep(delay).await;
        let ticket = lock(&shared.state).requested;
        if ticket <= *shared.done.borrow() {
            continue;
        }
        let (previous, broken) = {
            let gw = lock(&shared.state);
            (gw.routes.clone(), gw.broken_setup.clone())
        };
        let (apis, policies) = load(&shared.config, &previous, &broken);
        {
            let mut gw = lock(&shared.state);
            gw.reloads_run += 1;
            // A failed reload (bad policy map, or the test says so) keeps
            // the previous APIs and still "succeeds"; v5.8 also loses every
            // policy on a bad policy map.
            match (gw.fail_reloads, policies) {
                (true, _) => {}
                (false, Ok(policies)) => {
                    gw.policies = policies;
                    (gw.apis, gw.routes) = (apis.apis, apis.routes);
                    gw.loaded_once = true;
                }
                (false, Err(_)) if shared.config.version == TykVersion::V5_8 => {
                    gw.policies.clear();
                }
                (false, Err(_)) => {}
            }
        }
        shared.done.send_replace(ticket);
    }
}

type Policies = BTreeMap<(String, String), Value>;

/// One reload: policies (an unparsable map aborts everything: then the APIs
/// read are thrown away) and the API definitions.
fn load(
    config: &EmuConfig,
    previous: &[Route],
    broken: &BTreeSet<String>,
) -> (Loaded, Result<Policies, String>) {
    (load_apis(config, previous, broken), load_policies(config))
}

/// `dir/*.json` as Go's `filepath.Glob` sees it: not recursive, dotfiles
/// included, sorted by name, symlinks in the path followed.
fn json_files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .is_some_and(|name| name.to_string_lossy().ends_with(".json"))
        })
        .collect();
    files.sort();
    files
}

fn read_json(path: &Path) -> Option<Value> {
    std::fs::read(path)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
}

fn load_policies(config: &EmuConfig) -> Result<Policies, String> {
    let v5_8 = config.version == TykVersion::V5_8;
    let mut loaded = BTreeMap::new();
    let mut add = |policy: Value| {
        let id = str_at(&policy, "/id").to_string();
        // v5.12+ drops a policy without id and keys by (org_id, id).
        if !v5_8 && id.is_empty() {
            return;
        }
        let org = if v5_8 {
            String::new()
        } else {
            str_at(&policy, "/org_id").to_string()
        };
        loaded.insert((org, id), with_db_id(policy));
    };
    if let Some(dir) = &config.policy_path {
        for path in json_files(dir) {
            // A bad policy file is logged; v5.8 still adds the zero policy.
            add(read_json(&path)
                .filter(Value::is_object)
                .unwrap_or_else(|| json!({"id": ""})));
        }
    } else if let Some(file) = &config.policy_record_name {
        let bytes = std::fs::read(file).map_err(|err| format!("{}: {err}", file.display()))?;
        let map: BTreeMap<String, serde_json::Map<String, Value>> =
            serde_json::from_slice(&bytes).map_err(|err| format!("{}: {err}", file.display()))?;
        for (id, mut policy) in map {
            // Current versions take the id from the map key; v5.8 lists the
            // `id` inside.
            if !v5_8 {
                policy.insert("id".to_string(), Value::String(id));
            }
            add(Value::Object(policy));
        }
    }
    Ok(loaded)
}

/// `user.Policy` always serialises its database id `_id`, empty in file mode.
fn with_db_id(mut policy: Value) -> Value {
    if let Some(object) = policy.as_object_mut() {
        object
            .entry("_id")
            .or_insert_with(|| Value::String(String::new()));
    }
    policy
}

/// Whether a `*-oas.json` / `*-mcp.json` file is read with its pair rather
/// than as a classic definition: v5.8 skips every `*-oas.json` (and knows no
/// MCP); current versions skip one only when `<stem>.json` exists and the
/// file is an OpenAPI document.
fn is_companion(config: &EmuConfig, name: &str, path: &Path) -> bool {
    let suffixes: &[&str] = if config.version.knows_mcp() {
        &["-oas.json", "-mcp.json"]
    } else {
        return name.ends_with("-oas.json");
    };
    suffixes.iter().any(|suffix| {
        name.strip_suffix(suffix).is_some_and(|stem| {
            path.with_file_name(format!("{stem}.json")).exists()
                && read_json(path)
                    .is_some_and(|doc| doc.get("openapi").is_some() || doc.get("swagger").is_some())
        })
    })
}

/// An `is_oas` definition loads only with a valid companion: `-mcp.json`
/// for an MCP API (v5.12+), `-oas.json` otherwise; v5.8 knows no MCP, so an
/// MCP pair lacks its `-oas.json` there and is dropped.
fn companion_valid(config: &EmuConfig, def: &Value, path: &Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name.strip_suffix(".json").unwrap_or(&name);
    let suffix = if config.version.knows_mcp() && is_mcp(def) {
        "-mcp.json"
    } else {
        "-oas.json"
    };
    read_json(&path.with_file_name(format!("{stem}{suffix}")))
        .is_some_and(|doc| doc.get("x-tyk-api-gateway").is_some_and(Value::is_object))
}

fn load_apis(config: &EmuConfig, previous: &[Route], broken: &BTreeSet<String>) -> Loaded {
    let mut specs: Vec<Value> = Vec::new();
    for path in json_files(&config.app_path) {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if is_companion(config, &name, &path) {
            continue;
        }
        let Some(def) = read_json(&path).filter(decodes) else {
            continue;
        };
        if def["is_oas"] == json!(true) && !companion_valid(config, &def, &path) {
            continue;
        }
        if !config.version.knows_mcp() && is_mcp(&def) {
            continue;
        }
        // `api_id` is a map key in the gateway: the later file wins.
        let id = str_at(&def, "/api_id").to_string();
        specs.retain(|other| str_at(other, "/api_id") != id);
        specs.push(def);
    }
    // `countApisByListenHash`: every API sharing (domain, listen path) with
    // another is renamed `<path>-<api_id>`, unless it was already loaded on
    // that path. Invalid specs are listed but never routed.
    let key = |def: &Value| {
        (
            str_at(def, "/domain").to_string(),
            str_at(def, "/proxy/listen_path").to_string(),
        )
    };
    let mut count: HashMap<(String, String), usize> = HashMap::new();
    for def in &specs {
        *count.entry(key(def)).or_default() += 1;
    }
    let mut routes = Vec::new();
    for def in &mut specs {
        if !spec_valid(def) || broken.contains(str_at(def, "/api_id")) {
            continue;
        }
        let (domain, committed) = key(def);
        let api_id = str_at(def, "/api_id").to_string();
        let kept = previous.iter().any(|r| {
            r.api_id == api_id
                && r.domain == domain
                && r.committed_path == committed
                && r.listen_path == committed
        });
        let mut listen_path = committed.clone();
        if count[&(domain.clone(), committed.clone())] > 1 && !kept {
            listen_path = format!("{committed}-{api_id}");
            def["proxy"]["listen_path"] = Value::String(listen_path.clone());
        }
        routes.push(Route {
            api_id,
            listen_path,
            committed_path: committed,
            domain,
            keyless: def["use_keyless"] == json!(true),
            target_url: str_at(def, "/proxy/target_url").to_string(),
            strip_listen_path: def["proxy"]["strip_listen_path"] == json!(true),
        });
    }
    // The router tries the longest listen path first (a stable sort: of two
    // APIs on one path, the earlier file wins).
    routes.sort_by_key(|r| std::cmp::Reverse(r.listen_path.len()));
    Loaded {
        apis: specs,
        routes,
    }
}

/// Whether Go's `json.Unmarshal` into an API definition succeeds: a field
/// of the wrong type fails it and the file is skipped, unlisted.
fn decodes(def: &Value) -> bool {
    let Some(object) = def.as_object() else {
        return false;
    };
    let wrong_type = |pointer: &str| {
        def.pointer(pointer)
            .is_some_and(|v| !v.is_string() && !v.is_null())
    };
    if wrong_type("/api_id") || wrong_type("/proxy/listen_path") || wrong_type("/proxy/target_url")
    {
        return false;
    }
    !object
        .get("proxy")
        .is_some_and(|p| !p.is_object() && !p.is_null())
}

/// Tyk's "Spec not valid, skipped!" check: the spec stays listed, but is
/// not routed. A bare OpenAPI document read as classic ends up here too: it
/// has no listen path.
fn spec_valid(def: &Value) -> bool {
    let listen_path = str_at(def, "/proxy/listen_path");
    !listen_path.is_empty()
        && !listen_path.contains(char::is_whitespace)
        && go_url_parses(str_at(def, "/proxy/target_url"))
}

/// The cases where Go's `url.Parse` returns an error, as far as a target
/// URL goes: control characters, a missing scheme before `:`, a bad
/// percent escape, a space or an unclosed `[` in the host.
fn go_url_parses(url: &str) -> bool {
    if url.chars().any(char::is_control) || url.starts_with(':') {
        return false;
    }
    let bytes = url.as_bytes();
    for (i, byte) in bytes.iter().enumerate() {
        if *byte == b'%' {
            let hex = |at: usize| bytes.get(at).is_some_and(u8::is_ascii_hexdigit);
            if !hex(i + 1) || !hex(i + 2) {
                return false;
            }
        }
    }
    if let Some((_, rest)) = url.split_once("://") {
        let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if host.contains(' ') || (host.contains('[') && !host.contains(']')) {
            return false;
        }
    }
    true
}

fn str_at<'a>(def: &'a Value, pointer: &str) -> &'a str {
    def.pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
}
