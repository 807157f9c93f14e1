//! Faults (issue 7): Git and gateway outages and misbehaviour, a full disk
//! and a read-only root, through the real binary. Each test checks the same
//! three things: the last good revision keeps serving (`current` and the
//! gateway unchanged), the error names the cause, and once the fault clears
//! the next `sync` (or the sidecar on its own) recovers. Recovery times are
//! printed as `RESULT fault ...` lines (RELIABILITY.md collects them).

use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::cli::{Ran, Tg};
use crate::support::git_server::{GitDaemon, GitHttp};
use crate::support::node::Node;
use crate::support::port::ReservedPort;
use crate::support::repo::{ConfigRepo, api_json, git};
use crate::support::sidecar::Sidecar;
use crate::support::{eventually, wait_for_port};

/// What the proxy in front of a server does with each new connection.
#[derive(Clone, Debug)]
enum Mode {
    /// Forward both ways.
    Pass,
    /// Forward, but close after this many bytes from the server.
    Cut(usize),
    /// Answer these bytes without asking the server, then close.
    Respond(Vec<u8>),
    /// As `Respond`, except `GET /hello`, answered as a healthy Tyk would:
    /// a gateway that is up but whose control API fails.
    RespondExceptHello(Vec<u8>),
}

/// A TCP proxy on a fixed port, to break a real server in chosen ways and
/// mend it again on the same address (what a client sees of an outage).
struct FaultProxy {
    port: Arc<ReservedPort>,
    mode: Arc<Mutex<Mode>>,
    /// Down: the port refuses connections.
    down: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl FaultProxy {
    fn start(upstream: SocketAddr) -> FaultProxy {
        let port = Arc::new(ReservedPort::new());
        let proxy = FaultProxy {
            port: port.clone(),
            mode: Arc::new(Mutex::new(Mode::Pass)),
            down: Arc::new(AtomicBool::new(false)),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let (mode, down, stop) = (proxy.mode.clone(), proxy.down.clone(), proxy.stop.clone());
        std::thread::spawn(move || {
            let mut listener: Option<TcpListener> = None;
            while !stop.load(Ordering::SeqCst) {
                if down.load(Ordering::SeqCst) {
                    // Dropping the listener makes connects fail with ECONNREFUSED.
                    listener = None;
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
                let l = match &listener {
                    Some(l) => l,
                    None => {
                        let l = port.listen();
                        l.set_nonblocking(true).expect("nonblocking");
                        listener.insert(l)
                    }
                };
                match l.accept() {
                    Ok((client, _)) => {
                        let m = mode.lock().expect("mode").clone();
                        std::thread::spawn(move || serve(client, upstream, m));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        wait_for_port(proxy.addr(), Duration::from_secs(5));
        proxy
    }

    fn addr(&self) -> SocketAddr {
        self.port.addr()
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().expect("mode") = mode;
    }

    fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(self.addr()).is_ok() == down {
            assert!(Instant::now() < deadline, "proxy did not go down={down}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn serve(mut client: TcpStream, upstream: SocketAddr, mode: Mode) {
    client.set_nonblocking(false).ok();
    if let Mode::Respond(bytes) | Mode::RespondExceptHello(bytes) = &mode {
        // Read what the client sent first, so it does not see a reset.
        client
            .set_read_timeout(Some(Duration::from_millis(200)))
            .ok();
        let mut buf = [0u8; 4096];
        let n = client.read(&mut buf).unwrap_or(0);
        let first = &buf[..n];
        let hello = first.starts_with(b"GET /hello ");
        let answer = if hello && matches!(mode, Mode::RespondExceptHello(_)) {
            http_response(
                "200 OK",
                r#"{"status":"pass","version":"v5.8.0","description":"Tyk GW"}"#,
            )
        } else {
            bytes.clone()
        };
        let _ = client.write_all(&answer);
        let _ = client.shutdown(Shutdown::Both);
        return;
    }
    let Ok(server) = TcpStream::connect(upstream) else {
        return;
    };
    let limit = match mode {
        Mode::Cut(n) => n,
        _ => usize::MAX,
    };
    let (mut c_read, mut s_write) = (
        client.try_clone().expect("clone"),
        server.try_clone().expect("clone"),
    );
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut c_read, &mut s_write);
        let _ = s_write.shutdown(Shutdown::Write);
    });
    let (mut s_read, mut c_write) = (server, client);
    let mut sent = 0usize;
    let mut buf = [0u8; 8192];
    loop {
        let n = match s_read.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let n = n.min(limit - sent);
        if c_write.write_all(&buf[..n]).is_err() {
            break;
        }
        sent += n;
        if sent >= limit {
            break;
        }
    }
    let _ = c_write.shutdown(Shutdown::Both);
    let _ = s_read.shutdown(Shutdown::Both);
}

/// A canned HTTP response.
fn http_response(status: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A repo served by `git daemon` behind a fault proxy, and a node that
/// already serves its first commit.
struct Setup {
    repo: ConfigRepo,
    _daemon: GitDaemon,
    proxy: FaultProxy,
    url: String,
    node: Node,
    good: String,
}

impl Setup {
    fn new() -> Setup {
        let repo = ConfigRepo::new();
        repo.api("alpha").policy("gold", &["alpha"]);
        repo.commit("alpha");
        let daemon = GitDaemon::start(repo.path().parent().expect("parent"));
        let name = repo
            .path()
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let proxy = FaultProxy::start(SocketAddr::from(([127, 0, 0, 1], daemon.port)));
        let url = format!("git://127.0.0.1:{}/{name}", proxy.port.port());
        let node = Node::new();
        let setup = Setup {
            good: repo.head(),
            repo,
            _daemon: daemon,
            proxy,
            url,
            node,
        };
        setup.sync(&[]).ok();
        setup
    }

    /// `sync` into the node, with short Git and gateway waits.
    fn sync(&self, extra: &[&str]) -> Ran {
        Tg::sync_node(&self.url, &self.node)
            .args(["--connect-timeout", "2s", "--timeout", "4s"])
            .args(["--gateway-wait", "1s"])
            .args(extra)
            .run()
    }

    /// A valid new commit that is not live yet.
    fn push_beta(&self) -> String {
        self.repo.api("beta").policy("gold", &["alpha", "beta"]);
        self.repo.commit("beta")
    }

    fn current_target(&self) -> PathBuf {
        fs::read_link(self.node.current()).expect("current")
    }

    /// The last good commit still serves: link, state and gateway.
    #[track_caller]
    fn still_serving(&self, link: &Path) {
        assert_eq!(self.current_target(), link, "current moved");
        assert_eq!(self.node.current_sha(), self.good);
        assert_eq!(self.node.apis(), vec!["alpha".to_string()]);
    }

    /// The fault cleared: the next sync applies `sha` and verifies.
    #[track_caller]
    fn recovers(&self, sha: &str, fault: &str) -> Duration {
        let t0 = Instant::now();
        let ran = self.sync(&[]);
        let took = t0.elapsed();
        assert_eq!(ran.code, 0, "{fault}: no recovery:\n{}", ran.stderr);
        assert_eq!(self.node.current_sha(), sha);
        assert_eq!(
            self.node.apis(),
            vec!["alpha".to_string(), "beta".to_string()]
        );
        eprintln!("RESULT fault {fault}: recovered by the next sync in {took:?}");
        took
    }
}

/// The last line of a log, for messages.
fn last_error(stderr: &str) -> &str {
    stderr
        .lines()
        .rev()
        .find(|l| l.contains("ERROR"))
        .unwrap_or(stderr)
}

#[track_caller]
fn expect_failure(fault: &str, ran: Ran, exit: i32, names: &[&str]) {
    let Ran {
        code, stderr: err, ..
    } = ran;
    assert_eq!(code, exit, "{fault}: exit code\n{err}");
    let lower = err.to_lowercase();
    assert!(
        names.iter().any(|n| lower.contains(&n.to_lowercase())),
        "{fault}: the error should name the cause ({names:?}):\n{err}"
    );
    eprintln!(
        "RESULT fault {fault}: exit {code}: {}",
        last_error(&err).trim()
    );
}

#[test]
fn git_server_down_then_back() {
    let s = Setup::new();
    let link = s.current_target();
    let sha = s.push_beta();
    s.proxy.set_down(true);
    expect_failure("git down", s.sync(&[]), 3, &["cannot reach", "refused"]);
    s.still_serving(&link);
    s.proxy.set_down(false);
    s.recovers(&sha, "git down");
}

#[test]
fn git_server_answering_garbage_then_mended() {
    let s = Setup::new();
    let link = s.current_target();
    let sha = s.push_beta();
    s.proxy.set(Mode::Respond(
        b"\x00\x01garbage garbage\r\nHTTP/1.1 200 OK\r\n\r\n{}".to_vec(),
    ));
    expect_failure(
        "git garbage",
        s.sync(&[]),
        3,
        &["protocol", "invalid", "git"],
    );
    s.still_serving(&link);
    s.proxy.set(Mode::Pass);
    s.recovers(&sha, "git garbage");
}

#[test]
fn git_pack_cut_mid_transfer_then_mended() {
    let s = Setup::new();
    let link = s.current_target();
    // A pack of about 1 MB that does not compress, so a cut lands mid-pack.
    let mut beta = api_json("beta");
    let mut rng = crate::crash::Rng::from_env();
    let noise: String = (0..1_000_000u32)
        .map(|_| char::from(b'a' + (rng.next() % 26) as u8))
        .collect();
    beta["description"] = json!(noise);
    s.repo
        .json("apps/beta.json", &beta)
        .policy("gold", &["alpha", "beta"]);
    let sha = s.repo.commit("big beta");
    s.proxy.set(Mode::Cut(16 * 1024));
    let ran = s.sync(&[]);
    // The server was reached: a broken transfer, not "cannot reach".
    assert!(ran.stderr.contains("fetching "), "{}", ran.stderr);
    assert!(!ran.stderr.contains("cannot reach"), "{}", ran.stderr);
    expect_failure(
        "git pack cut",
        ran,
        3,
        &[
            "early eof",
            "unexpected",
            "could not read",
            "incomplete",
            "closed",
        ],
    );
    s.still_serving(&link);
    s.proxy.set(Mode::Pass);
    s.recovers(&sha, "git pack cut");
}

#[test]
fn git_transfer_too_slow_times_out_then_recovers() {
    let repo = ConfigRepo::new();
    repo.api("alpha").policy("gold", &["alpha"]);
    let good = repo.commit("alpha");
    let parent = repo.path().parent().expect("parent").to_path_buf();
    let name = repo
        .path()
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    let server = GitHttp::start(&parent, None);
    let url = server.url(&name);
    let node = Node::new();
    let sync = || {
        Tg::sync_node(&url, &node)
            .args(["--connect-timeout", "2s", "--timeout", "3s"])
            .run()
    };
    sync().ok();
    let link = fs::read_link(node.current()).expect("current");
    repo.api("beta").policy("gold", &["alpha", "beta"]);
    let sha = repo.commit("beta");
    // 64 bytes every 100 ms: never stalls, never ends within the timeout.
    server.drip(Duration::from_millis(100));
    let t0 = Instant::now();
    let out = sync();
    let took = t0.elapsed();
    expect_failure("git slow", out, 3, &["timed out"]);
    assert!(
        took < Duration::from_secs(15),
        "timeout did not fire: {took:?}"
    );
    assert_eq!(fs::read_link(node.current()).expect("current"), link);
    assert_eq!(node.current_sha(), good);
    server.drip(Duration::ZERO);
    let t1 = Instant::now();
    sync().ok();
    assert_eq!(node.current_sha(), sha);
    eprintln!(
        "RESULT fault git slow: timed out after {took:?}; recovered by the next sync in {:?}",
        t1.elapsed()
    );
}

#[test]
fn history_force_pushed_applies_the_new_head() {
    let s = Setup::new();
    let sha = s.push_beta();
    s.sync(&[]).ok();
    assert_eq!(s.node.current_sha(), sha);
    // Rewrite: drop beta's commit and push another in its place.
    git(s.repo.path(), &["reset", "-q", "--hard", &s.good]);
    s.repo.api("gamma").policy("gold", &["alpha", "gamma"]);
    let rewritten = s.repo.commit("gamma instead of beta");
    let t0 = Instant::now();
    s.sync(&[]).ok();
    assert_eq!(s.node.current_sha(), rewritten);
    assert_eq!(
        s.node.apis(),
        vec!["alpha".to_string(), "gamma".to_string()]
    );
    eprintln!(
        "RESULT fault force-push: applied the rewritten head in {:?}",
        t0.elapsed()
    );
}

#[test]
fn ref_deleted_keeps_serving_then_recreated() {
    let s = Setup::new();
    s.repo.checkout_new_branch("release");
    let release = s.push_beta();
    s.repo.checkout("main");
    s.sync(&["--ref", "release"]).ok();
    let link = s.current_target();
    git(s.repo.path(), &["branch", "-q", "-D", "release"]);
    expect_failure(
        "ref deleted",
        s.sync(&["--ref", "release"]),
        3,
        &["not found"],
    );
    assert_eq!(s.current_target(), link);
    assert_eq!(s.node.current_sha(), release);
    git(s.repo.path(), &["branch", "-q", "release", &release]);
    let t0 = Instant::now();
    s.sync(&["--ref", "release"]).ok();
    eprintln!(
        "RESULT fault ref deleted: recovered by the next sync in {:?}",
        t0.elapsed()
    );
}

#[test]
fn gateway_down_then_back() {
    let s = Setup::new();
    let link = s.current_target();
    let sha = s.push_beta();
    s.node.emu.set_down(true);
    expect_failure("gateway down", s.sync(&[]), 4, &["unreachable"]);
    assert_eq!(
        s.current_target(),
        link,
        "written while the gateway was down"
    );
    assert_eq!(s.node.current_sha(), s.good);
    s.node.emu.set_down(false);
    s.recovers(&sha, "gateway down");
}

#[test]
fn gateway_wrong_secret_403_then_fixed() {
    let s = Setup::new();
    let link = s.current_target();
    let sha = s.push_beta();
    let rotated = Tg::sync_node(&s.url, &s.node).secret("rotated-away");
    expect_failure("gateway 403", rotated.run(), 4, &["403"]);
    s.still_serving(&link);
    s.recovers(&sha, "gateway 403");
}

#[test]
fn gateway_answering_500_then_mended() {
    let s = Setup::new();
    let link = s.current_target();
    let sha = s.push_beta();
    let emu_addr: SocketAddr = s.node.emu.url()["http://".len()..].parse().expect("addr");
    let front = FaultProxy::start(emu_addr);
    let front_url = format!("http://{}", front.addr());
    let run = |extra: &[&str]| {
        Tg::sync(&s.url, s.node.root())
            .gateway_at(&front_url)
            .args(["--gateway-wait", "1s"])
            .args(extra)
            .run()
    };
    let boom = http_response(
        "500 Internal Server Error",
        r#"{"status":"error","message":"boom"}"#,
    );
    // Control API failing behind a healthy /hello.
    front.set(Mode::RespondExceptHello(boom.clone()));
    expect_failure("gateway 500 (control API)", run(&[]), 4, &["500"]);
    s.still_serving(&link);
    // Everything failing, /hello included: the bounded wait gives up.
    front.set(Mode::Respond(boom));
    expect_failure(
        "gateway 500 (all, /hello too)",
        run(&[]),
        4,
        &["500", "not ready"],
    );
    s.still_serving(&link);
    front.set(Mode::Pass);
    let t0 = Instant::now();
    run(&[]).ok();
    assert_eq!(s.node.current_sha(), sha);
    eprintln!(
        "RESULT fault gateway 500: recovered by the next sync in {:?}",
        t0.elapsed()
    );
}

#[test]
fn gateway_slow_then_restarting_mid_reload() {
    let s = Setup::new();
    let sha = s.push_beta();
    // Slow: the reload (bounded at 300 s by the client) is waited for.
    s.node.emu.set_reload_delay(Duration::from_secs(3));
    let t0 = Instant::now();
    s.sync(&[]).ok();
    assert_eq!(s.node.current_sha(), sha);
    eprintln!(
        "RESULT fault gateway slow (3 s reload): applied and verified in {:?}",
        t0.elapsed()
    );

    // Restarting mid-reload: the connection of the blocking reload drops.
    // The valid revision stays published, unverified; nothing says it is
    // bad, so no rollback. The next sync verifies it.
    s.repo
        .api("gamma")
        .policy("gold", &["alpha", "beta", "gamma"]);
    let gamma = s.repo.commit("gamma");
    let reloads = s.node.emu.reload_count();
    let child = Tg::sync_node(&s.url, &s.node)
        .args(["--gateway-wait", "1s"])
        .command()
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    eventually("reload in flight", Duration::from_secs(20), || {
        s.node.emu.reload_count() > reloads
    });
    s.node.emu.set_down(true);
    let out = child.wait_with_output().expect("wait");
    s.node.emu.set_reload_delay(Duration::ZERO);
    s.node.emu.set_down(false);
    expect_failure(
        "gateway restarting mid-reload",
        Ran::of("sync (gateway restarting)", out),
        4,
        &["unreachable", "connection", "closed", "error sending"],
    );
    let state: Value =
        serde_json::from_slice(&fs::read(s.node.root().join("state.json")).expect("state"))
            .expect("state");
    assert_eq!(state["current"]["sha"], *gamma.as_str(), "{state}");
    assert!(state["current"]["verified_at"].is_null(), "{state}");
    let t2 = Instant::now();
    s.sync(&[]).ok();
    assert_eq!(s.node.current_sha(), gamma);
    assert_eq!(s.node.apis().len(), 3);
    let state: Value =
        serde_json::from_slice(&fs::read(s.node.root().join("state.json")).expect("state"))
            .expect("state");
    assert!(state["current"]["verified_at"].is_u64(), "{state}");
    eprintln!(
        "RESULT fault gateway restarting mid-reload: recovered (reloaded, verified) by the next sync in {:?}",
        t2.elapsed()
    );
}

/// A small tmpfs at a fresh directory, unmounted on drop. `None` (and a
/// message) when mounting is not permitted here.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().expect("tempdir");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("SKIPPED: cannot mount a tmpfs here (needs root / CAP_SYS_ADMIN)");
            return None;
        }
        Some(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn remount(&self, opts: &str) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,{opts}")])
            .arg(self.path())
            .status()
            .expect("mount");
        assert!(st.success(), "remount {opts}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// A node whose root lives on a fresh tmpfs of `size`, synced once to a
/// one-API commit (`good`); `None` where a tmpfs cannot be mounted.
struct TmpfsNode {
    fs: Tmpfs,
    repo: ConfigRepo,
    good: String,
    node: Node,
    root: PathBuf,
    /// Where `current` pointed after the good sync.
    link: PathBuf,
}

impl TmpfsNode {
    fn start(size: &str) -> Option<TmpfsNode> {
        let fs = Tmpfs::mount(size)?;
        let repo = ConfigRepo::new();
        repo.api("alpha").policy("gold", &["alpha"]);
        let good = repo.commit("alpha");
        let node = Node::new();
        let root = fs.path().join("root");
        // The emulator reads <node root>/current: point that at the tmpfs root.
        fs::remove_dir_all(node.root()).ok();
        std::os::unix::fs::symlink(&root, node.root()).expect("link node root");
        Tg::sync(&repo.url(), &root).gateway(&node.emu).run().ok();
        let link = fs::read_link(root.join("current")).expect("current");
        Some(TmpfsNode {
            fs,
            repo,
            good,
            node,
            root,
            link,
        })
    }

    fn sync(&self) -> Ran {
        Tg::sync(&self.repo.url(), &self.root)
            .gateway(&self.node.emu)
            .run()
    }

    /// The good commit still serves: `current`, state and gateway unchanged.
    #[track_caller]
    fn still_serves_the_good_commit(&self) {
        let current = fs::read_link(self.root.join("current")).expect("current");
        assert_eq!(current, self.link);
        assert_eq!(self.node.apis(), vec!["alpha".to_string()]);
        assert_eq!(self.state_sha(), self.good);
    }

    fn state_sha(&self) -> String {
        let state: Value =
            serde_json::from_slice(&fs::read(self.root.join("state.json")).expect("state"))
                .expect("state");
        state["current"]["sha"].as_str().unwrap_or("").to_string()
    }
}

#[test]
fn disk_full_during_the_write_keeps_serving_then_recovers() {
    let Some(t) = TmpfsNode::start("1m") else {
        return;
    };
    // 400 files x 8 KB of text that compresses to almost nothing: the Git
    // cache fits, the revision (3.2 MB) does not.
    for i in 0..400 {
        let mut def = api_json(&format!("big-{i:03}"));
        def["description"] = json!("x".repeat(8000));
        t.repo.json(&format!("apps/big-{i:03}.json"), &def);
    }
    let sha = t.repo.commit("big");
    expect_failure("disk full", t.sync(), 5, &["no space left"]);
    t.still_serves_the_good_commit();
    t.fs.remount("size=64m");
    let t0 = Instant::now();
    t.sync().ok();
    assert_eq!(t.state_sha(), sha);
    assert_eq!(t.node.apis().len(), 401);
    eprintln!(
        "RESULT fault disk full: recovered by the next sync in {:?}",
        t0.elapsed()
    );
}

#[test]
fn read_only_root_keeps_serving_then_recovers() {
    let Some(t) = TmpfsNode::start("64m") else {
        return;
    };
    t.repo.api("beta").policy("gold", &["alpha", "beta"]);
    let sha = t.repo.commit("beta");
    t.fs.remount("ro");
    // A local disk error (5), not blamed on Git.
    expect_failure("read-only root", t.sync(), 5, &["read-only file system"]);
    t.still_serves_the_good_commit();
    t.fs.remount("rw");
    let t0 = Instant::now();
    t.sync().ok();
    assert_eq!(t.state_sha(), sha);
    assert_eq!(t.node.apis(), vec!["alpha".to_string(), "beta".to_string()]);
    eprintln!(
        "RESULT fault read-only root: recovered by the next sync in {:?}",
        t0.elapsed()
    );
}

/// The sidecar on its own: Git down and the gateway down, each cleared
/// while it runs; it recovers without anyone calling it.
#[test]
fn sidecar_recovers_by_itself_after_git_and_gateway_outages() {
    let s = Setup::new();
    let sidecar = Sidecar::start(&s.url, &s.node, &["--connect-timeout", "1s"]);
    let status = || sidecar.status();
    let error_of = |v: &Value| v["last_attempt"].to_string().to_lowercase();

    // Git down while a new commit waits.
    s.proxy.set_down(true);
    let sha = s.push_beta();
    eventually(
        "/status shows the Git error",
        Duration::from_secs(20),
        || {
            let e = error_of(&status());
            e.contains("cannot reach") || e.contains("refused")
        },
    );
    assert_eq!(s.node.apis(), vec!["alpha".to_string()]);
    let msg = status()["last_attempt"].clone();
    s.proxy.set_down(false);
    let t0 = Instant::now();
    eventually(
        "sidecar applies beta by itself",
        Duration::from_secs(30),
        || s.node.apis().len() == 2 && status()["current"]["sha"] == *sha.as_str(),
    );
    let git_recovery = t0.elapsed();
    eprintln!(
        "RESULT fault sidecar git down: /status last_attempt {msg}; recovered by itself in {git_recovery:?}"
    );

    // Gateway down while another commit waits.
    s.node.emu.set_down(true);
    s.repo
        .api("gamma")
        .policy("gold", &["alpha", "beta", "gamma"]);
    let gamma = s.repo.commit("gamma");
    eventually(
        "/status shows the gateway error",
        Duration::from_secs(20),
        || error_of(&status()).contains("unreachable"),
    );
    let msg = status()["last_attempt"].clone();
    s.node.emu.set_down(false);
    let t1 = Instant::now();
    eventually(
        "sidecar applies gamma by itself",
        Duration::from_secs(30),
        || s.node.apis().len() == 3 && status()["current"]["sha"] == *gamma.as_str(),
    );
    eprintln!(
        "RESULT fault sidecar gateway down: /status last_attempt {msg}; recovered by itself in {:?}",
        t1.elapsed()
    );
}

/// Hostile config repos through `sync` (the validator has its own tests;
/// these check the whole path: nothing applied, `current` unchanged, no
/// reload, the rule named).
mod hostile {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

    /// A node serving a good commit; each case builds on top of it.
    fn base() -> (ConfigRepo, Node, String, PathBuf) {
        let repo = ConfigRepo::new();
        repo.api("alpha").policy("gold", &["alpha"]);
        let good = repo.commit("good");
        let node = Node::new();
        Tg::sync_node(&repo.url(), &node).run().ok();
        let link = fs::read_link(node.current()).expect("current");
        (repo, node, good, link)
    }

    /// Refused: exit 1, the rule in the output, nothing changed.
    #[track_caller]
    fn refused(case: &str, repo: &ConfigRepo, node: &Node, link: &Path, good: &str, rule: &str) {
        let reloads = node.emu.reload_count();
        let Ran {
            code, stderr: err, ..
        } = Tg::sync_node(&repo.url(), node).run();
        assert_eq!(code, 1, "{case}: exit code\n{err}");
        assert!(err.contains(rule), "{case}: rule {rule} not named:\n{err}");
        assert_eq!(
            fs::read_link(node.current()).expect("current"),
            link,
            "{case}"
        );
        assert_eq!(node.current_sha(), good, "{case}");
        assert_eq!(
            node.emu.reload_count(),
            reloads,
            "{case}: a reload was sent"
        );
        assert_eq!(node.apis(), vec!["alpha".to_string()], "{case}");
        eprintln!("RESULT hostile {case}: exit 1, [{rule}], nothing changed");
    }

    #[test]
    fn symlink_to_a_host_file_is_refused() {
        let (repo, node, good, link) = base();
        std::os::unix::fs::symlink("/etc/passwd", repo.path().join("apps/evil.json"))
            .expect("symlink");
        repo.commit("symlink");
        refused("symlink", &repo, &node, &link, &good, "symlink");
    }

    #[test]
    fn submodule_is_refused() {
        let (repo, node, good, link) = base();
        git(
            repo.path(),
            &[
                "update-index",
                "--add",
                "--cacheinfo",
                &format!("160000,{good},apps/sub"),
            ],
        );
        git(repo.path(), &["commit", "-q", "-m", "gitlink"]);
        refused("submodule", &repo, &node, &link, &good, "submodule");
    }

    #[test]
    fn invalid_utf8_is_refused() {
        let (repo, node, good, link) = base();
        repo.file("apps/beta.json", b"{\"api_id\": \"b\xff\xfe\"}".as_slice());
        repo.commit("latin1");
        refused("not-utf8", &repo, &node, &link, &good, "not-utf8");
    }

    #[test]
    fn deep_nesting_is_refused_without_a_stack_overflow() {
        let (repo, node, good, link) = base();
        let depth = 100_000;
        let mut deep = String::from("{\"api_id\": \"beta\", \"x\": ");
        deep.push_str(&"[".repeat(depth));
        deep.push_str(&"]".repeat(depth));
        deep.push('}');
        repo.file("apps/beta.json", deep);
        repo.commit("deep");
        refused("too-deep", &repo, &node, &link, &good, "too-deep");
    }

    #[test]
    fn a_100_mb_file_is_refused_with_low_memory() {
        let (repo, node, good, link) = base();
        // 100 MB that compresses to ~100 KB: cheap to commit and to fetch,
        // and a process that read it whole would show it in its peak RSS.
        let mut f = fs::File::create(repo.path().join("apps/huge.json")).expect("create");
        f.write_all(b"{\"api_id\": \"huge\", \"x\": \"")
            .expect("write");
        let chunk = vec![b'a'; 1 << 20];
        for _ in 0..100 {
            f.write_all(&chunk).expect("write");
        }
        f.write_all(b"\"}").expect("write");
        drop(f);
        repo.commit("huge");
        // Over git:// as in production: libgit2's local-path transport
        // packs in memory, which says nothing about this tool.
        let daemon = GitDaemon::start(repo.path().parent().expect("parent"));
        let url = daemon.url(&repo.path().file_name().expect("name").to_string_lossy());
        let reloads = node.emu.reload_count();
        let ran = Tg::sync_node(&url, &node).measured().run().code(1);
        ran.stderr_has("file-too-large");
        let rss_kb = ran.peak_rss_kib();
        assert!(
            rss_kb < 64 * 1024,
            "peak RSS {rss_kb} kB: the 100 MB file was read whole"
        );
        assert_eq!(fs::read_link(node.current()).expect("current"), link);
        assert_eq!(node.current_sha(), good);
        assert_eq!(node.emu.reload_count(), reloads);
        eprintln!("RESULT hostile 100 MB file: exit 1, [file-too-large], peak RSS {rss_kb} kB");
    }

    /// Names a gateway would load although nobody meant it to (dotfiles,
    /// `..json`) or that no tool should write (a newline): never in
    /// `current/apps`. Either refused or applied without them.
    #[test]
    fn hidden_and_odd_names_never_reach_the_gateway() {
        for (case, name) in [
            ("dotfile", ".hidden.json"),
            ("dot-dot", "..json"),
            ("newline", "a\nb.json"),
            ("carriage-return", "c\rd.json"),
        ] {
            let (repo, node, good, link) = base();
            let path = repo
                .path()
                .join("apps")
                .join(std::ffi::OsStr::from_bytes(name.as_bytes()));
            fs::write(
                &path,
                serde_json::to_vec(&api_json(&format!("sneaky-{case}"))).expect("json"),
            )
            .expect("write");
            repo.commit(case);
            let Ran {
                code, stderr: err, ..
            } = Tg::sync_node(&repo.url(), &node).run();
            let in_current: Vec<String> = fs::read_dir(node.current().join("apps"))
                .expect("apps")
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect();
            assert!(
                !in_current.iter().any(|n| n != "alpha.json"),
                "{case}: {in_current:?} in current/apps\n{err}"
            );
            assert!(
                !node.apis().iter().any(|a| a.starts_with("sneaky")),
                "{case}: the gateway loaded it"
            );
            if code == 0 {
                assert!(
                    err.contains("dotfile") || err.contains("WARN"),
                    "{case}: no warning:\n{err}"
                );
                eprintln!(
                    "RESULT hostile name {name:?}: applied with a warning, kept out of current/apps"
                );
            } else {
                assert_eq!(code, 1, "{case}:\n{err}");
                assert_eq!(fs::read_link(node.current()).expect("current"), link);
                assert_eq!(node.current_sha(), good);
                let rule = err
                    .lines()
                    .find_map(|l| {
                        l.split_once('[')
                            .and_then(|(_, r)| r.split_once(']'))
                            .map(|(r, _)| r.to_string())
                    })
                    .unwrap_or_default();
                eprintln!("RESULT hostile name {name:?}: exit 1 [{rule}], nothing changed");
            }
        }
    }

    #[test]
    fn tyk_index_naming_files_outside_the_config_path_is_refused() {
        let repo = ConfigRepo::new();
        repo.json("envs/prod/apps/a.json", &api_json("alpha"));
        repo.commit("good");
        let node = Node::new();
        let run = |repo: &ConfigRepo| {
            Tg::sync_node(&repo.url(), &node)
                .args(["--path", "envs/prod"])
                .run()
        };
        run(&repo).ok();
        let link = fs::read_link(node.current()).expect("current");
        repo.json("secrets/stolen.json", &api_json("stolen"));
        repo.json(
            "envs/prod/.tyk.json",
            &json!({"type": "apidef", "files": [{"file": "../../secrets/stolen.json"}, {"file": "apps/a.json"}]}),
        );
        repo.commit("index escapes");
        run(&repo).code(1).stderr_has("tyk-index");
        assert_eq!(fs::read_link(node.current()).expect("current"), link);
        assert_eq!(node.apis(), vec!["alpha".to_string()]);
        eprintln!("RESULT hostile .tyk.json outside --path: exit 1, [tyk-index], nothing changed");
    }
}
