//! A real `redis-server` for the fleet tests, on a free loopback port, with
//! no persistence. `stop` and `restart` keep the port, so sidecars pointed
//! at it see an outage and a recovery.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use super::{KillOnDrop, free_port, wait_for_port};

pub struct RedisServer {
    pub port: u16,
    /// Its working directory; nothing is saved there (`--save ""`).
    dir: TempDir,
    child: Option<KillOnDrop>,
    /// `--requirepass`, when set (the secrets sweep).
    password: Option<String>,
    /// TLS only (`rediss://`), with a self-signed certificate.
    tls: bool,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        RedisServer::start_with(None)
    }

    /// A server that refuses every command before `AUTH <password>`.
    pub fn start_with_password(password: &str) -> RedisServer {
        RedisServer::start_with(Some(password.to_string()))
    }

    /// A server that speaks TLS only, with a certificate nobody trusts
    /// unless told to (`cert`).
    pub fn start_tls() -> RedisServer {
        let mut server = RedisServer {
            port: free_port(),
            dir: tempfile::tempdir().expect("tempdir"),
            child: None,
            password: None,
            tls: true,
        };
        super::tls::self_signed(server.dir.path());
        server.spawn();
        server
    }

    /// The certificate of a TLS server.
    pub fn cert(&self) -> std::path::PathBuf {
        self.dir.path().join("cert.pem")
    }

    fn start_with(password: Option<String>) -> RedisServer {
        let mut server = RedisServer {
            port: free_port(),
            dir: tempfile::tempdir().expect("tempdir"),
            child: None,
            password,
            tls: false,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new("redis-server");
        if let Some(password) = &self.password {
            cmd.args(["--requirepass", password]);
        }
        if self.tls {
            let (cert, key) = (
                self.dir.path().join("cert.pem"),
                self.dir.path().join("key.pem"),
            );
            cmd.args(["--port", "0", "--tls-port", &self.port.to_string()])
                .arg("--tls-cert-file")
                .arg(&cert)
                .arg("--tls-key-file")
                .arg(key)
                .arg("--tls-ca-cert-file")
                .arg(&cert)
                .args(["--tls-auth-clients", "no"]);
        } else {
            cmd.args(["--port", &self.port.to_string()]);
        }
        let child = cmd
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--protected-mode", "no"])
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server (apt-get install redis-server)");
        self.child = Some(KillOnDrop(child));
        wait_for_port(
            SocketAddr::from(([127, 0, 0, 1], self.port)),
            Duration::from_secs(10),
        );
    }

    /// Kills the server (SIGKILL: connections drop as in a crash).
    pub fn stop(&mut self) {
        self.child = None;
    }

    /// Starts it again on the same port, empty.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// With the password in it when the server has one.
    pub fn url(&self) -> String {
        if self.tls {
            return format!("rediss://127.0.0.1:{}", self.port);
        }
        match &self.password {
            Some(password) => format!("redis://:{password}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// A plain connection, to look at what the sidecars wrote.
    pub fn connection(&self) -> ::redis::Connection {
        ::redis::Client::open(self.url())
            .expect("redis url")
            .get_connection_with_timeout(Duration::from_secs(5))
            .expect("connect to redis")
    }

    pub fn get(&self, key: &str) -> Option<String> {
        ::redis::cmd("GET")
            .arg(key)
            .query(&mut self.connection())
            .expect("GET")
    }
}
