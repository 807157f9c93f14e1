//! Bounded under hostile input: time, memory and disk stay within limits
//! whatever a Git server, a commit or a webhook client sends.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::support::cli::Tg;
use crate::support::node::Node;
use crate::support::repo::{ConfigRepo, git};
use crate::support::sidecar::Sidecar;
use crate::support::{eventually, http_get, served_repo};

const WAIT: Duration = Duration::from_secs(20);

/// A field of `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM`: the peak).
fn proc_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

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
    let url = format!("http://127.0.0.1:{}/config.git", server.port);
    let out = Tg::sync(&url, root.path()).args(["--timeout", "3s"]).run();
    let took = started.elapsed();
    println!(
        "RESULT trickled ref listing: exit {} after {took:?}",
        out.code
    );
    out.code(3).stderr_has("timed out after 3s");
    // 3 s, the 1 s grace, process start: well under the 30 s it ran before.
    assert!(took < Duration::from_secs(15), "took {took:?}");
}

#[test]
fn a_thousand_slow_webhook_bodies_keep_the_sidecar_under_100_mib() {
    let repo = ConfigRepo::new();
    repo.api("alpha");
    repo.commit("alpha");
    let node = Node::new();
    let secrets = tempfile::tempdir().unwrap();
    let file = secrets.path().join("webhook-secret");
    std::fs::write(&file, "bounds-secret-4b1e").unwrap();
    let sidecar = Sidecar::start(
        &repo.url(),
        &node,
        &[
            "--period",
            "1h",
            "--webhook-secret-file",
            file.to_str().unwrap(),
        ],
    );
    eventually("ready", WAIT, || sidecar.ready());
    let pid = sidecar.child.0.id();
    let before = proc_kib(pid, "VmHWM:");

    // Each: a well-formed signature (only the body could refute it), a
    // length under the 1 MiB limit, 192 KiB of it sent, then nothing.
    let head = format!(
        "POST /webhook HTTP/1.1\r\nHost: x\r\nX-GitHub-Event: push\r\n\
         X-Hub-Signature-256: sha256={}\r\nContent-Length: 1000000\r\n\r\n",
        "0".repeat(64)
    );
    let chunk = vec![b' '; 192 * 1024];
    let started = Instant::now();
    let mut conns = Vec::new();
    let mut sent: u64 = 0;
    for _ in 0..1000 {
        let mut conn = std::net::TcpStream::connect(sidecar.addr).expect("connect");
        conn.write_all(head.as_bytes()).expect("head");
        conn.set_nonblocking(true).unwrap();
        // What the socket takes now; the rest is not needed to hold a body.
        let mut at = 0;
        while at < chunk.len() {
            match conn.write(&chunk[at..]) {
                Ok(n) if n > 0 => at += n,
                _ => break,
            }
        }
        sent += at as u64;
        conns.push(conn);
    }
    // Give the server time to read whatever it would read.
    std::thread::sleep(Duration::from_secs(3));
    let (code, _) = http_get(sidecar.addr, "/healthz");
    let peak = proc_kib(pid, "VmHWM:");
    let rss = proc_kib(pid, "VmRSS:");
    println!(
        "RESULT 1000 slow webhook bodies: {} MiB sent in {:?}; peak RSS {before} -> {peak} KiB, RSS now {rss} KiB; /healthz {code}",
        sent / (1024 * 1024),
        started.elapsed()
    );
    assert_eq!(code, 200);
    assert!(sent > 100 * 1024 * 1024, "only {sent} bytes were sent");
    assert!(peak < 100 * 1024, "peak RSS {peak} KiB");
    drop(conns);
}

/// A `sync` of `url` into `node` refused (exit 1, naming each of `named`)
/// with a peak RSS under 128 MiB; prints the peak as `what`.
#[track_caller]
fn refused_in_bounded_memory(url: &str, node: &Node, what: &str, named: &[&str]) {
    let ran = Tg::sync(url, node.root()).measured().run();
    let rss = ran.peak_rss_kib();
    println!("RESULT {what}: exit {}, peak RSS {rss} KiB", ran.code);
    let ran = ran.code(1);
    for needle in named {
        ran.stderr_has(needle);
    }
    assert!(rss < 128 * 1024, "peak RSS {rss} KiB");
}

/// `git mktree` of `listing` (`ls-tree` lines): the new tree's id.
fn mktree(repo: &ConfigRepo, listing: &str) -> String {
    use std::process::Stdio;
    let mut child = Command::new("git")
        .arg("mktree")
        .current_dir(repo.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("git mktree");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(listing.as_bytes()).expect("write listing");
    drop(stdin);
    let out = child.wait_with_output().expect("git mktree");
    assert!(out.status.success(), "git mktree failed");
    String::from_utf8(out.stdout)
        .expect("utf8")
        .trim()
        .to_string()
}

/// Commits on `main` the current tree plus `extra` (`ls-tree` lines),
/// with plumbing only: nothing of it is in the work tree (it may hold
/// names no file system takes).
fn commit_with(repo: &ConfigRepo, extra: &str, message: &str) -> String {
    let head_tree = git(repo.path(), &["rev-parse", "HEAD^{tree}"]);
    let listing = git(repo.path(), &["ls-tree", &head_tree]);
    let tree = mktree(repo, &format!("{listing}\n{extra}"));
    let commit = git(
        repo.path(),
        &["commit-tree", &tree, "-p", "HEAD", "-m", message],
    );
    git(repo.path(), &["update-ref", "refs/heads/main", &commit]);
    commit
}

/// One blob of `len` spaces, written to the repo's object store.
fn blob_of_spaces(repo: &ConfigRepo, len: usize) -> String {
    let path = repo.path().join(".git").join("spaces");
    std::fs::write(&path, vec![b' '; len]).unwrap();
    let id = git(repo.path(), &["hash-object", "-w", path.to_str().unwrap()]);
    std::fs::remove_file(path).unwrap();
    id
}

#[test]
fn a_commit_of_one_compressible_blob_under_300_names_is_refused_by_size_before_it_is_read() {
    let (repo, _daemon, url) = served_repo();
    let node = Node::new();
    Tg::sync(&url, node.root()).run().ok();
    let good = node.current_sha();

    // 300 templates sharing one 4 MiB blob: a pack of a few KiB, 1.2 GB
    // once every entry is read and written.
    let blob = blob_of_spaces(&repo, 4 * 1024 * 1024);
    // Under templates/, which the gateway reads byte for byte.
    let listing: String = (0..300)
        .map(|i| format!("100644 blob {blob}\terror-{i:03}.json\n"))
        .collect();
    let templates = mktree(&repo, &listing);
    let bomb = commit_with(
        &repo,
        &format!("040000 tree {templates}\ttemplates\n"),
        "300 names, one blob",
    );

    refused_in_bounded_memory(
        &url,
        &node,
        "compressible-blob commit",
        &["commit-too-large", "more than 256 MiB"],
    );
    assert_eq!(node.current_sha(), good, "current changed");
    assert!(
        !node.root().join("revisions").join(&bomb).exists(),
        "a revision of the refused commit was written"
    );
    // Rejected like an invalid commit: not fetched nor read again.
    Tg::sync(&url, node.root())
        .run()
        .code(1)
        .stderr_has("was rejected before");
}

#[test]
fn a_commit_with_a_name_no_file_can_have_is_rejected_once_not_retried() {
    let (repo, _daemon, url) = served_repo();
    let node = Node::new();
    Tg::sync(&url, node.root()).run().ok();
    let good = node.current_sha();
    let blob = blob_of_spaces(&repo, 10);
    // Over NAME_MAX (255 bytes): no file system here can write it.
    let long = format!("{}.json", "n".repeat(300));
    commit_with(
        &repo,
        &format!("100644 blob {blob}\t{long}\n"),
        "a long name",
    );

    Tg::sync(&url, node.root())
        .run()
        .code(1)
        .stderr_has("invalid-path");
    assert_eq!(node.current_sha(), good);
    Tg::sync(&url, node.root())
        .run()
        .code(1)
        .stderr_has("was rejected before");
}

#[test]
fn a_4_mib_file_of_tiny_arrays_is_refused_before_it_is_parsed() {
    let (repo, _daemon, url) = served_repo();
    let node = Node::new();
    Tg::sync(&url, node.root()).run().ok();
    let good = node.current_sha();
    // 1.4 million empty arrays in one 4 MiB document (under --max-file-size).
    let mut doc = Vec::with_capacity(4 * 1024 * 1024);
    doc.push(b'[');
    while doc.len() < 4 * 1024 * 1024 - 8 {
        doc.extend_from_slice(b"[],");
    }
    doc.extend_from_slice(b"[]]");
    repo.file("apps/arrays.json", &doc);
    repo.commit("a document of tiny arrays");

    refused_in_bounded_memory(
        &url,
        &node,
        "4 MiB of tiny arrays",
        &["file-too-large", "JSON values"],
    );
    assert_eq!(node.current_sha(), good);
}
