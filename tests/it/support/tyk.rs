//! A Tyk gateway emulator: the control API and the file-mode reload of
//! TYK-FACTS.md, failure modes included (bad files skipped without a word,
//! duplicate `api_id` overwritten, an unparsable policy map aborts the whole
//! reload, and every reload answers 200). It serves on its own runtime, so a
//! sync test can block on the real binary while the emulator keeps answering.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::extract::{Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get};
use axum::{Json, Router};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::runtime::{Handle, Runtime};
use tokio::sync::{Notify, oneshot, watch};

use super::port::ReservedPort;

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

/// What the gateway runs, plus the knobs tests turn.
#[derive(Default)]
struct Gw {
    /// Loaded definitions in load order, as `/tyk/apis` returns them.
    apis: Vec<Value>,
    policies: BTreeMap<String, Value>,
    /// Reload requests numbered in arrival order; one run serves them all.
    requested: u64,
    reload_requests: u64,
    reloads_run: u64,
    fail_reloads: bool,
    reload_delay: Duration,
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
        if let Ok(files) = load(&config) {
            (gw.apis, gw.policies) = files;
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
        self.state().policies.keys().cloned().collect()
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
    both(Router::new(), "/hello", get(hello))
        .merge(control)
        .with_state(shared)
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

async fn hello() -> Json<Value> {
    Json(json!({
        "status": "pass",
        "version": "v5.8.0",
        "description": "Tyk GW",
        "details": {"redis": {"status": "pass", "componentType": "datastore", "time": "2026-01-01T00:00:00Z"}}
    }))
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

async fn apis(State(shared): State<Arc<Shared>>) -> Json<Vec<Value>> {
    Json(lock(&shared.state).apis.clone())
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
        let files = load(&shared.config);
        {
            let mut gw = lock(&shared.state);
            gw.reloads_run += 1;
            // A failed reload (bad policy map, or the test says so) keeps
            // the previous state and still "succeeds".
            if let (false, Ok((apis, policies))) = (gw.fail_reloads, files) {
                gw.apis = apis;
                gw.policies = policies;
            }
        }
        shared.done.send_replace(ticket);
    }
}

type Files = (Vec<Value>, BTreeMap<String, Value>);

/// One reload: policies first (an unparsable map aborts everything), then
/// the API definitions.
fn load(config: &EmuConfig) -> Result<Files, String> {
    let policies = load_policies(config)?;
    Ok((load_apis(&config.app_path), policies))
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

fn load_policies(config: &EmuConfig) -> Result<BTreeMap<String, Value>, String> {
    let mut loaded = BTreeMap::new();
    if let Some(dir) = &config.policy_path {
        for path in json_files(dir) {
            // Tyk logs a bad policy file and still adds the zero policy.
            let policy = std::fs::read(&path)
                .ok()
                .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
                .filter(Value::is_object)
                .unwrap_or_else(|| json!({"id": ""}));
            let id = str_at(&policy, "/id").to_string();
            loaded.insert(id, with_db_id(policy));
        }
    } else if let Some(file) = &config.policy_record_name {
        let bytes = std::fs::read(file).map_err(|err| format!("{}: {err}", file.display()))?;
        let map: BTreeMap<String, serde_json::Map<String, Value>> =
            serde_json::from_slice(&bytes).map_err(|err| format!("{}: {err}", file.display()))?;
        for (id, mut policy) in map {
            // The map key wins over the `id` inside.
            policy.insert("id".to_string(), Value::String(id.clone()));
            loaded.insert(id, with_db_id(Value::Object(policy)));
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

fn load_apis(app_path: &Path) -> Vec<Value> {
    let mut specs: Vec<Value> = Vec::new();
    for path in json_files(app_path) {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // Companion documents of Tyk OAS and MCP APIs, read with their pair.
        if name.ends_with("-oas.json") || name.ends_with("-mcp.json") {
            continue;
        }
        let Some(def) = std::fs::read(&path)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
            .filter(spec_valid)
        else {
            continue;
        };
        // `api_id` is a map key in the gateway: the later file wins.
        let id = str_at(&def, "/api_id").to_string();
        specs.retain(|other| str_at(other, "/api_id") != id);
        specs.push(def);
    }
    // Same domain and listen path: the later API is renamed, not refused.
    let mut taken = HashSet::new();
    for def in &mut specs {
        let domain = str_at(def, "/domain").to_string();
        let mut listen_path = str_at(def, "/proxy/listen_path").to_string();
        if !taken.insert(format!("{domain}{listen_path}")) {
            listen_path = format!("{listen_path}-{}", str_at(def, "/api_id"));
            def["proxy"]["listen_path"] = Value::String(listen_path.clone());
            taken.insert(format!("{domain}{listen_path}"));
        }
    }
    specs
}

/// What Go's decoder and Tyk's "Spec not valid, skipped!" check let through.
fn spec_valid(def: &Value) -> bool {
    let Some(object) = def.as_object() else {
        return false;
    };
    // A field of the wrong type makes Go's json.Unmarshal fail: file skipped.
    let wrong_type = |pointer: &str| {
        def.pointer(pointer)
            .is_some_and(|v| !v.is_string() && !v.is_null())
    };
    if wrong_type("/api_id") || wrong_type("/proxy/listen_path") || wrong_type("/proxy/target_url")
    {
        return false;
    }
    if object
        .get("proxy")
        .is_some_and(|p| !p.is_object() && !p.is_null())
    {
        return false;
    }
    // A bare OpenAPI document ends up here too: it has no listen path.
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
