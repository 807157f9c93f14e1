//! A fixture builder for config repos: a real Git work tree, committed with
//! the `git` CLI, so every test starts from what a user would push.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};
use tempfile::TempDir;

pub struct ConfigRepo {
    dir: TempDir,
}

/// Runs git in `dir` and returns its trimmed stdout; panics on failure.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The smallest classic API the gateway loads (TYK-FACTS.md).
pub fn api_json(id: &str) -> Value {
    json!({
        "name": format!("API {id}"),
        "api_id": id,
        "org_id": "default",
        "use_keyless": true,
        "version_data": {"not_versioned": true, "versions": {"Default": {"name": "Default"}}},
        "proxy": {"listen_path": format!("/{id}/"), "target_url": "http://upstream:8080/", "strip_listen_path": true}
    })
}

/// A policy granting access to `apis`.
pub fn policy_json(id: &str, apis: &[&str]) -> Value {
    let rights: serde_json::Map<String, Value> = apis
        .iter()
        .map(|a| {
            (
                a.to_string(),
                json!({"api_id": a, "api_name": format!("API {a}"), "versions": ["Default"]}),
            )
        })
        .collect();
    json!({
        "id": id, "name": format!("Policy {id}"), "org_id": "default",
        "rate": 100, "per": 60, "quota_max": -1, "access_rights": rights
    })
}

impl ConfigRepo {
    /// An empty repository on branch `main`.
    pub fn new() -> ConfigRepo {
        let dir = tempfile::tempdir().expect("tempdir");
        git(dir.path(), &["init", "-q", "-b", "main"]);
        ConfigRepo { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn url(&self) -> String {
        self.dir.path().display().to_string()
    }

    /// Writes a file (parents created) relative to the repo root.
    pub fn file(&self, path: &str, contents: impl AsRef<[u8]>) -> &ConfigRepo {
        let full = self.dir.path().join(path);
        fs::create_dir_all(full.parent().expect("file has a parent")).expect("mkdir");
        fs::write(full, contents).expect("write");
        self
    }

    pub fn json(&self, path: &str, value: &Value) -> &ConfigRepo {
        self.file(path, serde_json::to_vec_pretty(value).expect("json"))
    }

    /// `apps/<id>.json` holding a minimal keyless API.
    pub fn api(&self, id: &str) -> &ConfigRepo {
        self.json(&format!("apps/{id}.json"), &api_json(id))
    }

    /// `policies/<id>.json` granting access to `apis`.
    pub fn policy(&self, id: &str, apis: &[&str]) -> &ConfigRepo {
        self.json(&format!("policies/{id}.json"), &policy_json(id, apis))
    }

    pub fn remove(&self, path: &str) -> &ConfigRepo {
        let full = self.dir.path().join(path);
        if full.is_dir() {
            fs::remove_dir_all(full).expect("rm -r");
        } else {
            fs::remove_file(full).expect("rm");
        }
        self
    }

    /// Commits everything and returns the new sha.
    pub fn commit(&self, message: &str) -> String {
        git(self.path(), &["add", "-A"]);
        git(
            self.path(),
            &["commit", "-q", "--allow-empty", "-m", message],
        );
        self.head()
    }

    pub fn head(&self) -> String {
        git(self.path(), &["rev-parse", "HEAD"])
    }

    pub fn tag(&self, name: &str) -> &ConfigRepo {
        git(self.path(), &["tag", name]);
        self
    }

    pub fn checkout_new_branch(&self, name: &str) -> &ConfigRepo {
        git(self.path(), &["checkout", "-q", "-b", name]);
        self
    }

    pub fn checkout(&self, name: &str) -> &ConfigRepo {
        git(self.path(), &["checkout", "-q", name]);
        self
    }

    /// A bare clone of this repo under `parent/name` (what servers export).
    pub fn bare_clone(&self, parent: &Path, name: &str) -> PathBuf {
        let dest = parent.join(name);
        git(
            parent,
            &[
                "clone",
                "-q",
                "--bare",
                &self.url(),
                dest.to_str().expect("utf8 path"),
            ],
        );
        dest
    }
}
