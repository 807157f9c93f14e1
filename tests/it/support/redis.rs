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
}

impl RedisServer {
    pub fn start() -> RedisServer {
        RedisServer::start_with(None)
    }

    /// A server that refuses every command before `AUTH <password>`.
    pub fn start_with_password(password: &str) -> RedisServer {
        RedisServer::start_with(Some(password.to_string()))
    }

    fn start_with(password: Option<String>) -> RedisServer {
        let mut server = RedisServer {
            port: free_port(),
            dir: tempfile::tempdir().expect("tempdir"),
            child: None,
            password,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new("redis-server");
        if let Some(password) = &self.password {
            cmd.args(["--requirepass", password]);
        }
        let child = cmd
            .args(["--port", &self.port.to_string()])
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
