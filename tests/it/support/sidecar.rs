//! `tyk-gitops run` as a child process, next to a `Node`'s gateway
//! emulator, with timings short enough for tests. Flags passed to `start`
//! come last and win (flags may repeat). Its stderr is kept in a file the
//! test can search; the process is killed when the guard drops.

use std::fs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use super::node::{Node, SECRET};
use super::{KillOnDrop, bin, free_port, http_get, wait_for_port};

pub struct Sidecar {
    pub child: KillOnDrop,
    pub addr: SocketAddr,
    /// Holds the captured stderr (and whatever files a test puts there).
    pub dir: TempDir,
}

impl Sidecar {
    pub fn start(repo_url: &str, node: &Node, extra: &[&str]) -> Sidecar {
        Sidecar::start_with_env(repo_url, node, extra, &[])
    }

    /// With extra environment variables (`SSL_CERT_FILE`, say).
    pub fn start_with_env(
        repo_url: &str,
        node: &Node,
        extra: &[&str],
        env: &[(&str, &std::path::Path)],
    ) -> Sidecar {
        let dir = tempfile::tempdir().expect("tempdir");
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let stderr = fs::File::create(dir.path().join("stderr")).expect("stderr file");
        let child = Command::new(bin())
            .args(["run", "--repo", repo_url, "--root"])
            .arg(node.root())
            .args(["--gateway", &node.emu.url(), "--listen", &addr.to_string()])
            .args(["--period", "300ms", "--verify-period", "500ms"])
            .args(["--max-backoff", "1s", "--verify-timeout", "3s"])
            .args(["--gateway-wait", "1s", "--replica-id", "pod-a"])
            .args(extra)
            .env("TYK_GITOPS_GATEWAY_SECRET", SECRET)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn tyk-gitops run");
        wait_for_port(addr, Duration::from_secs(20));
        Sidecar {
            child: KillOnDrop(child),
            addr,
            dir,
        }
    }

    /// A path inside the sidecar's own temporary folder.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `/status` as JSON (`Null` while it does not answer).
    pub fn status(&self) -> Value {
        serde_json::from_str(&http_get(self.addr, "/status").1).unwrap_or(Value::Null)
    }

    pub fn metrics(&self) -> String {
        http_get(self.addr, "/metrics").1
    }

    /// The value of one sample line in /metrics, 0 when absent.
    pub fn metric(&self, sample: &str) -> f64 {
        self.metrics()
            .lines()
            .find_map(|l| l.strip_prefix(sample).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0.0)
    }

    pub fn ready(&self) -> bool {
        http_get(self.addr, "/readyz").0 == 200
    }

    /// Whether `/status` shows `sha` in `current`, verified.
    pub fn runs(&self, sha: &str) -> bool {
        let status = self.status();
        status["current"]["sha"] == sha && status["current"]["verified_at"].is_u64()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.0.id() as i32, sig);
        }
    }

    pub fn stderr(&self) -> String {
        fs::read_to_string(self.file("stderr")).unwrap_or_default()
    }
}
