//! A gateway "node" for tests: a tyk-gitops root and a Tyk emulator that
//! reads `<root>/current`, as the gateway container would.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;
use tempfile::TempDir;

use super::tyk::{EmuConfig, TykEmulator};

pub const SECRET: &str = "emulator-secret-7f3a";

/// A root directory plus an emulator reading `<root>/current`.
pub struct Node {
    pub root: TempDir,
    pub emu: TykEmulator,
}

impl Node {
    pub fn new() -> Node {
        Node::with(EmuConfig::default())
    }

    /// A node whose gateway has `config`'s version and settings (its paths
    /// and secret are the node's).
    pub fn with(config: EmuConfig) -> Node {
        let root = tempfile::tempdir().expect("tempdir");
        let emu = TykEmulator::start(EmuConfig {
            app_path: root.path().join("current/apps"),
            policy_path: Some(root.path().join("current/policies")),
            policy_record_name: None,
            secret: SECRET.to_string(),
            ..config
        });
        Node { root, emu }
    }

    pub fn root(&self) -> &Path {
        self.root.path()
    }

    pub fn current(&self) -> PathBuf {
        self.root().join("current")
    }

    pub fn current_sha(&self) -> String {
        let state: Value =
            serde_json::from_slice(&fs::read(self.root().join("state.json")).expect("state"))
                .expect("state json");
        state["current"]["sha"].as_str().unwrap_or("").to_string()
    }

    pub fn apis(&self) -> Vec<String> {
        self.emu.loaded_api_ids().into_iter().collect()
    }
}

pub fn ids(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}
