//! Helpers shared by the integration tests: real servers on free loopback
//! ports, a config-repo builder, and the binary run as a user runs it
//! (`cli::Tg` for a one-shot command, `sidecar::Sidecar` for `run`).
#![allow(dead_code)]

pub mod cli;
pub mod git_server;
pub mod node;
pub mod port;
pub mod redis;
pub mod repo;
pub mod sidecar;
pub mod sshd;
pub mod tls;
pub mod tyk;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Child;
use std::time::{Duration, Instant};

/// A free loopback port for a server the tests start (and may stop and
/// start again on the same port).
///
/// Picked outside the kernel's ephemeral range: a port from that range can be
/// handed to a client as its source port while the server is down (a client
/// retrying against it can even end up connected to itself), and the server
/// cannot come back. Never the same port twice in one test process, so
/// parallel tests do not race for a port between probe and bind.
pub fn free_port() -> u16 {
    use std::collections::HashSet;
    use std::hash::{BuildHasher, RandomState};
    use std::sync::{Mutex, OnceLock};
    static GIVEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let ephemeral: Vec<u32> = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .map(|range| {
            range
                .split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let (eph_low, eph_high) = match ephemeral[..] {
        [low, high] => (low, high),
        _ => (32768, 60999),
    };
    // The larger port region outside the ephemeral range (a host may give
    // almost every port to it: then the kernel picks, as a last resort).
    let below = (eph_low.saturating_sub(12_000).max(1024), eph_low);
    let above: (u32, u32) = (eph_high + 1, 65536);
    let (low, high) = if below.1.saturating_sub(below.0) >= above.1.saturating_sub(above.0) {
        below
    } else {
        above
    };
    let random = RandomState::new();
    let mut given = GIVEN
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if high.saturating_sub(low) >= 1000 {
        for attempt in 0u32..10_000 {
            let port = (low + (random.hash_one(attempt) % u64::from(high - low)) as u32) as u16;
            if given.contains(&port) {
                continue;
            }
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                given.insert(port);
                return port;
            }
        }
    }
    for _ in 0..1000 {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind port 0");
        let port = listener.local_addr().expect("local addr").port();
        if given.insert(port) {
            return port;
        }
    }
    panic!("no free loopback port")
}

/// Waits until something accepts on `addr`, or panics after `timeout`.
pub fn wait_for_port(addr: SocketAddr, timeout: Duration) {
    let start = Instant::now();
    while TcpStream::connect_timeout(&addr, Duration::from_millis(100)).is_err() {
        assert!(
            start.elapsed() < timeout,
            "nothing listening on {addr} after {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child process killed when the guard drops, so a failing test never
/// leaves servers behind. A child that leads its own process group (spawned
/// with `process_group(0)`) takes the whole group with it: `git daemon` runs
/// `git-daemon` as a grandchild, which killing `git` alone would orphan.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let pid = self.0.id() as libc::pid_t;
        // SAFETY: plain syscalls on a pid we spawned and have not reaped.
        unsafe {
            if libc::getpgid(pid) == pid {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A config repo with one API and one policy, served by a `git daemon`;
/// returns the repo, the daemon guard and the repo's `git://` URL.
pub fn served_repo() -> (repo::ConfigRepo, git_server::GitDaemon, String) {
    let repo = repo::ConfigRepo::new();
    repo.api("alpha").policy("gold", &["alpha"]);
    repo.commit("alpha");
    let daemon = git_server::GitDaemon::start(repo.path().parent().expect("repo parent"));
    let name = repo.path().file_name().expect("repo dir name");
    let url = daemon.url(name.to_str().expect("utf8 name"));
    (repo, daemon, url)
}

/// Path of the binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_tyk-gitops")
}

/// A minimal blocking HTTP/1.1 request (tests only): returns status and body.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    stream.write_all(req.as_bytes()).expect("write request");
    // A server may answer early (413 for a body too large) and close while
    // the body is still being sent: the write then fails, the answer is
    // still there to read.
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    if let Err(err) = stream.read_to_end(&mut raw)
        && raw.is_empty()
    {
        panic!("{method} {path} on {addr}: no answer: {err}");
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, body)
}

pub fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    http(addr, "GET", path, &[], b"")
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Polls `check` every 50 ms until it holds, or panics with `what` after `timeout`.
#[track_caller]
pub fn eventually(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
