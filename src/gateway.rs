//! Tyk control API client: wait for `/hello`, reload, and read what the
//! gateway actually loaded. (Contract fixed; implementation owned by the
//! gateway work.)

use std::collections::BTreeSet;
use std::time::Duration;

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

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("{0}")]
    Todo(String),
}

pub struct Gateway {
    pub base: String,
    pub secret: String,
    pub timeout: Duration,
}
