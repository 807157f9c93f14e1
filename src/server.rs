//! The sidecar's HTTP server: `/healthz`, `/readyz`, `/metrics`, `/status`,
//! and `POST /webhook` (`trigger::webhook`).
//! `serve` takes its listener and a shutdown future, so tests bind port 0
//! and stop it cleanly. Nothing it returns carries a secret: the repo URL is
//! redacted and findings name files, not contents.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State as Extract;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use tracing::{debug, warn};

use crate::live::App;

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/webhook", webhook())
        .with_state(app)
}

/// How long a client may take to send a request's head (request line and
/// headers), from when the server starts waiting for it: on a new
/// connection, and between requests on a kept-alive one. `axum::serve` sets
/// no timer, so hyper's header timeout never fired there: a slow-loris
/// client (or one that connects and sends nothing) held its connection and
/// file descriptor forever, and enough of them exhaust the descriptors, after
/// which `/healthz` cannot be accepted and the pod is restarted. Bodies have
/// their own bound (`trigger::webhook::READ_TIMEOUT`).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections served at once. Past it, accepting waits (new clients queue
/// in the kernel's backlog) until one closes: each connection costs a task,
/// buffers and a descriptor, and the header and body timeouts bound how
/// long any one is held.
pub const MAX_CONNECTIONS: usize = 2048;

/// Serves HTTP/1.1 (probes, Prometheus and Git hosts all speak it) until
/// `shutdown` completes, then stops accepting and waits for the requests in
/// flight, as `axum::serve(..).with_graceful_shutdown(..)` did.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = router(app);
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break, // never closed; treated as a shutdown
            },
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    accept_error(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(router.clone());
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                debug!("http connection: {e}");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// As axum does: a connection reset before `accept` is the peer's business;
/// anything else (EMFILE: out of descriptors) is logged, and accepting
/// pauses a second rather than spin.
async fn accept_error(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    ) {
        return;
    }
    warn!("http server: cannot accept a connection: {e}");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

async fn healthz(Extract(app): Extract<Arc<App>>) -> Response {
    let (busy, restarts) = {
        let live = app.live();
        (
            live.busy_since.map(|t| t.elapsed()),
            live.fleet_listener_restarts,
        )
    };
    match busy {
        Some(running) if running > app.stuck_after => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("stuck: one sync has run for {}s\n", running.as_secs()),
        )
            .into_response(),
        // The listener is supervised: it runs again, but a restart means
        // something went wrong, and a probe's reader should see it.
        _ if restarts > 0 => (
            StatusCode::OK,
            format!("ok; fleet notice listener restarted {restarts} time(s)\n"),
        )
            .into_response(),
        _ => (StatusCode::OK, "ok\n").into_response(),
    }
}

async fn readyz(Extract(app): Extract<Arc<App>>) -> Response {
    if app.live().ready {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no revision applied and verified yet\n",
        )
            .into_response()
    }
}

async fn metrics(Extract(app): Extract<Arc<App>>, headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = crate::metrics::negotiate(accept);
    (
        [(header::CONTENT_TYPE, format.content_type())],
        app.metrics.encode(format),
    )
        .into_response()
}

async fn status(Extract(app): Extract<Arc<App>>) -> Response {
    let state = app.state_view();
    let live = app.live();
    let body = json!({
        "replica": app.replica_id,
        "instance": app.instance,
        "replica_id_clash": live.replica_id_clash,
        "repo": app.repo,
        "ref": app.git_ref,
        "path": app.path,
        "ready": live.ready,
        "syncing": live.busy_since.is_some(),
        "current": state["current"],
        "last_attempt": live.last_attempt,
        "consecutive_failures": live.consecutive_failures,
        "rejected": state["rejected"],
        "history": state["history"],
        "rollout": live.rollout,
    });
    axum::Json(body).into_response()
}

/// `POST /webhook`, with the body limit the handler relies on.
fn webhook() -> axum::routing::MethodRouter<Arc<App>> {
    axum::routing::post(receive).layer(axum::extract::DefaultBodyLimit::max(
        crate::trigger::webhook::MAX_BODY,
    ))
}

async fn receive(
    Extract(app): Extract<Arc<App>>,
    headers: HeaderMap,
    request: axum::extract::Request,
) -> Response {
    let Some(webhook) = &app.webhook else {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"status": "not found", "reason": "no webhook secret is configured"})),
        )
            .into_response();
    };
    let current = app.live().current_sha.clone();
    let reply = webhook
        .receive(&app.triggers, current.as_deref(), &headers, request)
        .await;
    app.metrics.count_webhook(reply.result);
    (reply.status, axum::Json(reply.body)).into_response()
}
