//! The sidecar's HTTP server: `/healthz`, `/readyz`, `/metrics`, `/status`,
//! and `POST /webhook` (`trigger::webhook`).
//! `serve` takes its listener and a shutdown future, so tests bind port 0
//! and stop it cleanly. Nothing it returns carries a secret: the repo URL is
//! redacted and findings name files, not contents.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::State as Extract;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::daemon::App;
use crate::state::State;

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/webhook", crate::trigger::webhook::route())
        .with_state(app)
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Arc<App>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(app))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn healthz(Extract(app): Extract<Arc<App>>) -> Response {
    let busy = app.live().busy_since.map(|t| t.elapsed());
    match busy {
        Some(running) if running > app.stuck_after => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("stuck: one sync has run for {}s\n", running.as_secs()),
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

async fn metrics(Extract(app): Extract<Arc<App>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.encode(),
    )
        .into_response()
}

async fn status(Extract(app): Extract<Arc<App>>) -> Response {
    let root = app.root.clone();
    let state = tokio::task::spawn_blocking(move || State::load(&root))
        .await
        .ok()
        .and_then(|r| r.ok())
        .map(|(s, _)| s)
        .unwrap_or_default();
    let live = app.live();
    let body = json!({
        "replica": app.replica_id,
        "repo": app.repo,
        "ref": app.git_ref,
        "path": app.path,
        "ready": live.ready,
        "syncing": live.busy_since.is_some(),
        "current": state.current,
        "last_attempt": live.last_attempt,
        "consecutive_failures": live.consecutive_failures,
        "rejected": state.rejected.values().collect::<Vec<_>>(),
        "history": state.history,
    });
    axum::Json(body).into_response()
}
