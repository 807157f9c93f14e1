//! Staged rollout: a canary replica (`--canary`) takes each new commit
//! first; the other replicas apply it only after the canary held it,
//! verified and healthy, for `--canary-hold`. A commit the canary's
//! gateway does not load, or that fails a `--canary-check`, never reaches
//! them, and `fleet wait` says which canary stopped it and why. Real
//! `redis-server`, `git daemon` and gateway emulators on loopback.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::cli::{Ran, Tg};
use crate::support::node::Node;
use crate::support::redis::RedisServer;
use crate::support::repo::{ConfigRepo, api_json};
use crate::support::sidecar::Sidecar;
use crate::support::{eventually, free_port, served_repo};

const WAIT: Duration = Duration::from_secs(60);
const CLUSTER: &str = "staged";
/// The hold of most tests: long enough to look at the fleet mid-hold.
const HOLD_SECS: u64 = 3;

/// One replica: a gateway emulator and its `tyk-gitops run --redis`.
struct Replica {
    id: String,
    node: Node,
    sidecar: Sidecar,
    args: Vec<String>,
}

impl Replica {
    fn start(url: &str, redis: &RedisServer, id: &str, canary: bool, extra: &[&str]) -> Replica {
        Replica::start_on(Node::new(), url, redis, id, canary, extra)
    }

    fn start_on(
        node: Node,
        url: &str,
        redis: &RedisServer,
        id: &str,
        canary: bool,
        extra: &[&str],
    ) -> Replica {
        let mut args: Vec<String> = ["--period", "1h", "--replica-id", id, "--cluster", CLUSTER]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(["--redis".to_string(), redis.url()]);
        if canary {
            args.extend(["--canary".to_string(), "--canary-hold".to_string()]);
            args.push(format!("{HOLD_SECS}s"));
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let sidecar = Sidecar::start(url, &node, &refs);
        Replica {
            id: id.to_string(),
            node,
            sidecar,
            args,
        }
    }

    /// SIGKILL, as a node failure would; the root and gateway stay.
    fn kill(&mut self) {
        self.sidecar.signal(libc::SIGKILL);
        let _ = self.sidecar.child.0.wait();
    }

    /// A new process on the same root and gateway.
    fn restart(&mut self, url: &str) {
        let refs: Vec<&str> = self.args.iter().map(String::as_str).collect();
        self.sidecar = Sidecar::start(url, &self.node, &refs);
    }

    fn runs(&self, sha: &str) -> bool {
        self.sidecar.runs(sha)
    }

    fn status(&self) -> Value {
        self.sidecar.status()
    }

    /// Every commit this replica ever put in `current`.
    fn history(&self) -> String {
        let status = self.status();
        format!("{} {}", status["history"], status["current"])
    }

    fn sighup(&self) {
        self.sidecar.signal(libc::SIGHUP);
    }

    /// SIGHUP, then waits for the sync it caused to end.
    fn sync_now(&self) {
        let before = self.status()["last_attempt"]["at"].as_u64().unwrap_or(0);
        // `at` is in seconds: make sure the next attempt is a later second.
        std::thread::sleep(Duration::from_millis(1100));
        self.sighup();
        eventually(&format!("{} synced on SIGHUP", self.id), WAIT, || {
            let a = &self.status()["last_attempt"];
            a["trigger"] == "signal" && a["at"].as_u64().unwrap_or(0) > before
        });
    }
}

/// A canary (`pod-0`) and `others` replicas, all on the repo's first commit.
fn fleet(url: &str, redis: &RedisServer, others: usize, canary_extra: &[&str]) -> Vec<Replica> {
    let mut replicas = vec![Replica::start(url, redis, "pod-0", true, canary_extra)];
    for i in 1..=others {
        replicas.push(Replica::start(url, redis, &format!("pod-{i}"), false, &[]));
    }
    settle(&replicas);
    replicas
}

/// Every replica runs `sha`.
fn all_on(replicas: &[Replica], sha: &str) {
    for r in replicas {
        eventually(&format!("{} on {}", r.id, &sha[..7]), WAIT, || r.runs(sha));
    }
}

/// Everyone ready, and every non-canary knows it waits for the canaries.
fn settle(replicas: &[Replica]) {
    for r in replicas {
        eventually(&format!("{} ready", r.id), WAIT, || r.sidecar.ready());
    }
    for r in &replicas[1..] {
        eventually(&format!("{} sees the canary", r.id), WAIT, || {
            r.status()["rollout"]["gated"] == true
        });
    }
}

fn record(redis: &RedisServer) -> Value {
    redis
        .get(&format!("tyk-gitops:{CLUSTER}:rollout:HEAD"))
        .and_then(|v| serde_json::from_str(&v).ok())
        .unwrap_or(Value::Null)
}

fn phase(redis: &RedisServer) -> String {
    record(redis)["phase"].as_str().unwrap_or("").to_string()
}

fn in_progress(redis: &RedisServer, sha: &str) -> bool {
    let r = record(redis);
    r["commit"] == sha && matches!(r["phase"].as_str(), Some("canary" | "holding"))
}

/// `fleet <action> <args> --redis … --cluster test`, run to its end.
fn fleet_cmd(redis: &RedisServer, action: &str, args: &[&str]) -> Ran {
    Tg::fleet(action, &redis.url())
        .args(args)
        .args(["--cluster", CLUSTER])
        .run()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn fleet_json(redis: &RedisServer) -> Value {
    let out = fleet_cmd(redis, "status", &["--format", "json"]);
    serde_json::from_str(&out.stdout).unwrap_or(Value::Null)
}

/// Pushes beta, which `canary`'s gateway lists but does not route, and
/// signals `pusher`: `fleet wait` exits 1 naming the canary, and the
/// rollout record says failed. Returns beta's sha.
fn fails_on(canary: &Replica, pusher: &Replica, repo: &ConfigRepo, redis: &RedisServer) -> String {
    canary.node.emu.fail_service_setup("beta");
    repo.api("beta");
    let beta = repo.commit("beta");
    pusher.sighup();
    let out = fleet_cmd(redis, "wait", &["--sha", &beta, "--timeout", "60s"]).code(1);
    out.stderr_has(&canary.id);
    eventually("the rollout failed", WAIT, || phase(redis) == "failed");
    beta
}

#[test]
fn a_good_commit_reaches_the_canary_first_and_the_others_after_the_hold() {
    let (repo, _daemon, url) = served_repo();
    let redis = RedisServer::start();
    let replicas = fleet(&url, &redis, 3, &[]);
    let alpha = repo.head();
    all_on(&replicas, &alpha);

    repo.api("beta");
    let beta = repo.commit("beta");
    // A non-canary hears of it first: it tells the fleet, and waits.
    replicas[1].sighup();
    eventually("the canary on beta", WAIT, || replicas[0].runs(&beta));
    let others_on_alpha = replicas[1..].iter().all(|r| r.runs(&alpha));
    if in_progress(&redis, &beta) {
        // Read after the others: they were looked at before any release.
        assert!(
            others_on_alpha,
            "a replica took beta before the canary released it"
        );
        let shown = fleet_cmd(&redis, "status", &[]).output();
        assert!(shown.contains("[canary]"), "{shown}");
        assert!(shown.contains("rollout of "), "{shown}");
    }
    all_on(&replicas[1..], &beta);
    // Each non-canary applied beta a hold after the canary did (whole
    // seconds: one of slack).
    let canary_applied = replicas[0].status()["current"]["applied_at"]
        .as_u64()
        .expect("canary applied_at");
    for r in &replicas[1..] {
        let applied = r.status()["current"]["applied_at"]
            .as_u64()
            .expect("applied_at");
        assert!(
            applied + 1 >= canary_applied + HOLD_SECS,
            "{} applied beta at {applied}, the canary at {canary_applied}",
            r.id
        );
    }
    let status = fleet_json(&redis);
    assert_eq!(status["rollouts"][0]["phase"], "released", "{status}");
    assert_eq!(status["rollouts"][0]["commit"], *beta.as_str());
    assert_eq!(status["rollouts"][0]["canaries"], json!(["pod-0"]));
    assert_eq!(status["live_canaries"], 1);
    fleet_cmd(&redis, "wait", &["--sha", &beta, "--timeout", "30s"]).ok();
    assert_eq!(
        replicas[1]
            .sidecar
            .metric("tyk_gitops_rollout_phase{phase=\"released\"}"),
        1.0
    );
    promtool_accepts(&replicas[0].sidecar.metrics());
}

/// `promtool check metrics`, when promtool is installed.
fn promtool_accepts(metrics: &str) {
    assert!(metrics.contains("# TYPE tyk_gitops_rollout_failures_total counter"));
    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        println!("SKIPPED promtool check: promtool is not installed (Debian package `prometheus`)");
        return;
    };
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(metrics.as_bytes())
        .expect("write metrics");
    let out = child.wait_with_output().expect("promtool");
    assert!(out.status.success(), "promtool: {}\n{metrics}", text(&out));
}

#[test]
fn a_commit_the_canarys_gateway_does_not_load_never_reaches_the_others() {
    let (repo, _daemon, url) = served_repo();
    let redis = RedisServer::start();
    let replicas = fleet(&url, &redis, 2, &[]);
    let alpha = repo.head();
    all_on(&replicas, &alpha);
    // The canary's gateway lists beta but does not route it.
    let beta = fails_on(&replicas[0], &replicas[2], &repo, &redis);
    let shown = fleet_cmd(&redis, "status", &[]).output();
    assert!(shown.contains("failed on pod-0"), "{shown}");
    eventually("the canary back on alpha", WAIT, || {
        replicas[0].runs(&alpha)
    });
    for r in &replicas[1..] {
        eventually(&format!("{} counted the failure", r.id), WAIT, || {
            r.sidecar.metric("tyk_gitops_rollout_failures_total") >= 1.0
        });
        // It learns of beta, and stays.
        r.sync_now();
        assert!(r.runs(&alpha), "{}", r.status());
        assert_eq!(r.status()["rollout"]["record"]["phase"], "failed");
    }

    // A later commit starts a new rollout, and reaches everyone.
    repo.remove("apps/beta.json").api("gamma");
    let gamma = repo.commit("gamma instead of beta");
    replicas[1].sighup();
    all_on(&replicas, &gamma);
    for r in &replicas[1..] {
        assert!(!r.history().contains(&beta), "{}", r.history());
    }
}

/// An upstream that answers 200 to everything, for as long as it lives.
fn upstream() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
    port
}

fn shop(target: &str) -> Value {
    let mut api = api_json("shop");
    api["proxy"]["target_url"] = json!(target);
    api
}

#[test]
fn a_failing_canary_check_stops_the_commit_fleet_wide() {
    let (repo, _daemon, url) = served_repo();
    let up = upstream();
    repo.json("apps/shop.json", &shop(&format!("http://127.0.0.1:{up}/")));
    let good = repo.commit("shop");
    let redis = RedisServer::start();
    // The canary checks the shop through its own gateway.
    let node = Node::new();
    let check = format!("{}/shop/health", node.emu.url());
    let mut replicas = vec![Replica::start_on(
        node,
        &url,
        &redis,
        "pod-0",
        true,
        &["--canary-check", &check],
    )];
    for i in 1..=2 {
        replicas.push(Replica::start(
            &url,
            &redis,
            &format!("pod-{i}"),
            false,
            &[],
        ));
    }
    settle(&replicas);
    for r in &replicas {
        eventually(&format!("{} on the good commit", r.id), WAIT, || {
            r.runs(&good)
        });
    }

    // Valid, loads, routes: and sends the shop's traffic nowhere.
    let dead = free_port();
    repo.json(
        "apps/shop.json",
        &shop(&format!("http://127.0.0.1:{dead}/")),
    );
    let broken = repo.commit("shop: wrong upstream");
    replicas[0].sighup();

    let said = fleet_cmd(&redis, "wait", &["--sha", &broken, "--timeout", "60s"])
        .code(1)
        .output();
    assert!(said.contains("canary pod-0"), "{said}");
    assert!(said.contains("/shop/health"), "{said}");
    eventually("the canary back on the good commit", WAIT, || {
        replicas[0].runs(&good)
    });
    let status = replicas[0].status();
    assert_eq!(status["rollout"]["record"]["phase"], "failed", "{status}");
    assert_eq!(status["rollout"]["record"]["by"], "pod-0");
    for r in &replicas[1..] {
        r.sync_now();
        assert!(r.runs(&good), "{}", r.status());
        assert!(!r.history().contains(&broken), "{}", r.history());
    }
}

#[test]
fn a_canary_killed_mid_hold_pauses_the_rollout_and_its_restart_resumes_it() {
    let (repo, _daemon, url) = served_repo();
    let redis = RedisServer::start();
    let mut replicas = fleet(&url, &redis, 2, &[]);
    let alpha = repo.head();
    all_on(&replicas, &alpha);
    repo.api("beta");
    let beta = repo.commit("beta");
    replicas[0].sighup();
    eventually("the canary holds beta", WAIT, || {
        replicas[0].runs(&beta) && in_progress(&redis, &beta)
    });
    replicas[0].kill();
    // Only once no canary is live does the hold depend on nobody.
    eventually("no live canary", WAIT, || {
        fleet_json(&redis)["live_canaries"] == 0
    });
    assert!(in_progress(&redis, &beta), "{}", record(&redis));
    for r in &replicas[1..] {
        r.sync_now();
        assert!(r.runs(&alpha), "{}", r.status());
    }
    assert!(in_progress(&redis, &beta), "{}", record(&redis));

    replicas[0].restart(&url);
    all_on(&replicas, &beta);
    assert_eq!(phase(&redis), "released");
}

#[test]
fn with_redis_stopped_mid_rollout_the_others_stay_and_catch_up_when_it_returns() {
    let (repo, _daemon, url) = served_repo();
    let mut redis = RedisServer::start();
    let replicas = fleet(&url, &redis, 2, &[]);
    let alpha = repo.head();
    all_on(&replicas, &alpha);
    repo.api("beta");
    let beta = repo.commit("beta");
    replicas[0].sighup();
    eventually("the canary holds beta", WAIT, || {
        replicas[0].runs(&beta) && in_progress(&redis, &beta)
    });
    // What a replica keeps of the gate, should it restart without Redis.
    let kept = replicas[2].node.root().join("rollout.json");
    eventually("the gate kept on disk", WAIT, || {
        std::fs::read_to_string(&kept).is_ok_and(|k| k.contains("\"gated\":true"))
    });
    redis.stop();
    for r in &replicas[1..] {
        // Told directly, with Redis gone: they still wait for the canary.
        r.sync_now();
        assert!(r.runs(&alpha), "{}", r.status());
    }
    // Restarted with Redis gone: it remembers the canaries it last saw.
    let mut replicas = replicas;
    replicas[2].kill();
    replicas[2].restart(&url);
    eventually("the restarted replica synced", WAIT, || {
        replicas[2].status()["last_attempt"]["trigger"] == "start"
    });
    assert!(replicas[2].runs(&alpha), "{}", replicas[2].status());
    // Back, and empty: the canary starts the rollout again.
    redis.restart();
    all_on(&replicas, &beta);
}

#[test]
fn a_replica_started_mid_rollout_lands_on_the_released_commit() {
    let (repo, _daemon, url) = served_repo();
    let redis = RedisServer::start();
    // A long hold: the newcomer starts well inside it.
    let replicas = fleet(&url, &redis, 2, &["--canary-hold", "15s"]);
    let alpha = repo.head();
    all_on(&replicas, &alpha);
    repo.api("beta");
    let beta = repo.commit("beta");
    replicas[0].sighup();
    eventually("the canary holds beta", WAIT, || {
        replicas[0].runs(&beta) && in_progress(&redis, &beta)
    });
    let newcomer = Replica::start(&url, &redis, "pod-9", false, &[]);
    eventually("the newcomer on alpha", WAIT, || newcomer.runs(&alpha));
    // Told to sync while the canary holds beta: it stays.
    newcomer.sync_now();
    let stayed = newcomer.runs(&alpha);
    if in_progress(&redis, &beta) {
        assert!(stayed, "{}", newcomer.status());
    }
    eventually("the newcomer on beta after the hold", WAIT, || {
        newcomer.runs(&beta)
    });
    // It went through alpha first.
    let history = newcomer.status()["history"].to_string();
    assert!(history.contains(&alpha), "{history}");
}

#[test]
fn canary_flags_need_redis_and_checks_need_http_urls() {
    let repo = ConfigRepo::new();
    repo.api("alpha");
    repo.commit("alpha");
    let listen = || format!("127.0.0.1:{}", free_port());
    Tg::new([
        "run",
        "--repo",
        &repo.url(),
        "--canary",
        "--listen",
        &listen(),
    ])
    .run()
    .code(2)
    .stderr_has("--redis");
    Tg::new([
        "run",
        "--repo",
        &repo.url(),
        "--redis",
        "redis://127.0.0.1:1",
    ])
    .args([
        "--canary",
        "--canary-check",
        "ftp://gw/health",
        "--listen",
        &listen(),
    ])
    .run()
    .code(2)
    .stderr_has("--canary-check ftp://gw/health: give an http:// or https:// URL");
}

#[test]
fn when_one_of_two_canaries_fails_a_commit_both_return_to_the_released_one() {
    let (repo, _daemon, url) = served_repo();
    let redis = RedisServer::start();
    let mut replicas = vec![
        Replica::start(&url, &redis, "pod-0", true, &[]),
        Replica::start(&url, &redis, "pod-c2", true, &[]),
    ];
    for i in 1..=2 {
        replicas.push(Replica::start(
            &url,
            &redis,
            &format!("pod-{i}"),
            false,
            &[],
        ));
    }
    for r in &replicas {
        eventually(&format!("{} ready", r.id), WAIT, || r.sidecar.ready());
    }
    for r in &replicas[2..] {
        eventually(&format!("{} sees the canaries", r.id), WAIT, || {
            r.status()["rollout"]["gated"] == true
        });
    }
    let alpha = repo.head();
    all_on(&replicas, &alpha);
    // Only the second canary's gateway fails to route beta.
    let beta = fails_on(&replicas[1], &replicas[0], &repo, &redis);
    // The canary that ran beta well goes back too: beta failed fleet-wide.
    for r in &replicas[..2] {
        eventually(&format!("{} back on alpha", r.id), WAIT, || r.runs(&alpha));
    }
    for r in &replicas[2..] {
        r.sync_now();
        assert!(r.runs(&alpha), "{}", r.status());
        assert!(!r.history().contains(&beta), "{}", r.history());
    }
}
