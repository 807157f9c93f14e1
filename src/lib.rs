//! tyk-gitops: every Tyk gateway replica on one verified Git commit.
//!
//! The pipeline, one module per stage, each taking the previous stage's output:
//!
//! - `source`: Git remote → `Commit` (ls-remote, shallow fetch, auth) → `Tree`
//! - `tree`: the files of one config root, from a commit or a folder
//! - `bundle`: `Tree` → `Bundle` (apps, policies, middleware, templates)
//! - `trust`: with `--verify-signatures`, only commits signed by listed keys
//! - `validate::vars`: `${VAR}` substitution per environment, before validation
//! - `validate`: schemas and cross-file rules → `Report`
//! - `apply`: `Bundle` → `Revision` on disk, published by one atomic rename
//! - `gateway`: Tyk control API: wait, reload, what it `Loaded`
//! - `state`: what was applied, verified and rejected (`state.json`)
//! - `reconcile`: the only place that sequences the stages
//!
//! The sidecar (`run`): `daemon` is the loop, `live` what it knows of itself
//! (read by the server, the webhook and the fleet), `trigger` what wakes it
//! (schedule, signals, webhook), `server` its HTTP side, `metrics` what it
//! counts, `fleet` how replicas meet in Redis (notices, status, poll lease).
//!
//! `plan` diffs two sides (checkouts, commits, a gateway) for review;
//! `export` writes what a gateway serves as a config repo.
//!
//! `cli` and `config` turn flags into a validated `SyncConfig` or
//! `RunConfig`; `commands` runs `sync` and `run`; every command ends in an
//! `exit::Exit`, which `main` alone turns into the process exit code.

pub mod apply;
pub mod bundle;
pub mod cli;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod exit;
pub mod export;
pub mod flags;
pub mod fleet;
pub mod gateway;
pub mod json;
pub mod live;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod par;
pub mod plan;
pub mod reconcile;
pub mod redact;
pub mod secret;
pub mod server;
pub mod sha;
pub mod source;
pub mod state;
pub mod tree;
pub mod trigger;
pub mod trust;
pub mod validate;
