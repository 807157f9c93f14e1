//! HTTPS in front of a plain test server: a self-signed certificate made
//! with the `openssl` command and a small TLS-terminating proxy
//! (`tls_proxy.py`), so Git over https and a gateway behind TLS can be
//! tested for both sides of trust.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use super::{KillOnDrop, free_port, wait_for_port};

pub struct TlsProxy {
    pub port: u16,
    dir: TempDir,
    _child: KillOnDrop,
}

/// A self-signed certificate for 127.0.0.1 (and its key) written into
/// `dir`: `(cert.pem, key.pem)`.
pub fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
        ])
        .args(["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run openssl (apt-get install openssl)");
    assert!(made.success(), "openssl req failed");
    (cert, key)
}

impl TlsProxy {
    /// Serves TLS for 127.0.0.1 on a free port, forwarding to `upstream`.
    pub fn start(upstream: u16) -> TlsProxy {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = self_signed(dir.path());
        let port = free_port();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/support/tls_proxy.py");
        let child = Command::new("python3")
            .arg(script)
            .arg(&cert)
            .arg(&key)
            .arg(port.to_string())
            .arg(upstream.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start python3");
        let guard = KillOnDrop(child);
        wait_for_port(
            SocketAddr::from(([127, 0, 0, 1], port)),
            Duration::from_secs(10),
        );
        TlsProxy {
            port,
            dir,
            _child: guard,
        }
    }

    /// The certificate, to trust it through `SSL_CERT_FILE`.
    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }
}
