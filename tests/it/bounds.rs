//! Bounded under hostile input: time, memory and disk stay within limits
//! whatever a Git server, a commit or a webhook client sends.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::support::bin;

/// An HTTP server that answers every request with a status line, then
/// headers one byte every 500 ms, for ever: each read gets a byte well
/// within any socket timeout, so only a wall-clock limit ends the wait.
struct Trickle {
    port: u16,
    stop: Arc<AtomicBool>,
}

impl Trickle {
    fn start() -> Trickle {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(mut stream) = stream else { continue };
                let stopped = stopped.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    let _ = stream.read(&mut buf);
                    if stream.write_all(b"HTTP/1.1 200 OK\r\n").is_err() {
                        return;
                    }
                    for byte in b"X-Pad: a\r\n".iter().cycle() {
                        if stopped.load(Ordering::SeqCst) || stream.write_all(&[*byte]).is_err() {
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(500));
                    }
                });
            }
        });
        Trickle { port, stop }
    }
}

impl Drop for Trickle {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
    }
}

#[test]
fn a_server_trickling_its_ref_listing_is_cut_at_the_timeout() {
    let server = Trickle::start();
    let root = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = Command::new(bin())
        .args(["sync", "--repo"])
        .arg(format!("http://127.0.0.1:{}/config.git", server.port))
        .arg("--root")
        .arg(root.path())
        .args(["--timeout", "3s"])
        .output()
        .expect("run tyk-gitops sync");
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!(
        "RESULT trickled ref listing: exit {:?} after {took:?}",
        out.status.code()
    );
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("timed out after 3s"), "{stderr}");
    // 3 s, the 1 s grace, process start: well under the 30 s it ran before.
    assert!(took < Duration::from_secs(15), "took {took:?}");
}
