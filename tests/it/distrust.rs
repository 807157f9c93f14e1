//! Redis may suggest, never decide: whoever can write to the fleet's Redis
//! (the gateways' Redis, so any gateway pod) can forge the verified commit,
//! notices, replica statuses and the poll lease. Each story forges one and
//! shows that the replicas stay on their ref, keep running, and that the
//! fleet commands say what they trust.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::cli::Tg;
use crate::support::git_server::GitHttp;
use crate::support::node::{Node, ids};
use crate::support::redis::RedisServer;
use crate::support::repo::{ConfigRepo, git};
use crate::support::sidecar::Sidecar;
use crate::support::{eventually, http_get, served_repo};

const WAIT: Duration = Duration::from_secs(20);
const CLUSTER: &str = "test";

fn verified_key() -> String {
    format!("tyk-gitops:{CLUSTER}:verified")
}

fn set(redis: &RedisServer, key: &str, value: &str) {
    let _: () = ::redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query(&mut redis.connection())
        .expect("SET");
}

fn forge_verified(redis: &RedisServer, sha: &str) {
    let value = json!({"sha": sha, "ref": "HEAD", "replica": "pod-forger", "at": 1});
    set(redis, &verified_key(), &value.to_string());
}

fn publish(redis: &RedisServer, payload: &str) {
    let _: i64 = ::redis::cmd("PUBLISH")
        .arg(format!("tyk-gitops:{CLUSTER}:commits"))
        .arg(payload)
        .query(&mut redis.connection())
        .expect("PUBLISH");
}

/// A commit reachable only from `refs/pull/1/head`, as a Git host keeps
/// for an unmerged pull request; `main` is left where it was.
fn pull_request_commit(repo: &ConfigRepo) -> String {
    repo.checkout_new_branch("pr");
    repo.api("evil");
    let evil = repo.commit("evil, unmerged");
    git(repo.path(), &["update-ref", "refs/pull/1/head", &evil]);
    repo.checkout("main");
    git(repo.path(), &["branch", "-q", "-D", "pr"]);
    evil
}

fn sidecar(url: &str, node: &Node, redis: &RedisServer, id: &str, extra: &[&str]) -> Sidecar {
    let mut args = vec!["--period", "1h", "--replica-id", id, "--cluster", CLUSTER];
    let redis_url = redis.url();
    args.extend(["--redis", redis_url.as_str()]);
    args.extend(extra);
    Sidecar::start(url, node, &args)
}

#[test]
fn a_forged_verified_sha_off_the_branch_is_never_applied_and_never_blocks_a_start() {
    let (repo, _daemon, daemon_url) = served_repo();
    let old = repo.head();
    repo.api("beta");
    let tip = repo.commit("beta");
    let evil = pull_request_commit(&repo);
    // A stock server (no uploadpack.allow*SHA1InWant): a sha is not served
    // by id, so fetching the forged sha would fail for ever.
    let served = tempfile::tempdir().unwrap();
    let bare = repo.bare_clone(served.path(), "config.git");
    git(&bare, &["update-ref", "refs/pull/1/head", &evil]);
    let http = GitHttp::start(served.path(), None);
    let redis = RedisServer::start();

    for url in [daemon_url.as_str(), http.url("config.git").as_str()] {
        forge_verified(&redis, &evil);
        let node = Node::new();
        let out = Tg::sync(url, node.root())
            .args(["--redis", &redis.url(), "--cluster", CLUSTER])
            .run();
        assert_eq!(out.code, 0, "{url}: {}", out.output());
        assert_eq!(node.current_sha(), tip, "{url}: started on the tip");
        assert!(
            !node.current().join("apps/evil.json").exists(),
            "{url}: the pull request's file was applied"
        );
        assert!(
            out.output()
                .contains("neither the tip of the ref nor an ancestor"),
            "{url}: {}",
            out.output()
        );

        // A genuine verified commit behind the tip is still where a new
        // replica starts (the fleet has not verified the tip yet).
        forge_verified(&redis, &old);
        let node = Node::new();
        let out = Tg::sync(url, node.root())
            .args(["--redis", &redis.url(), "--cluster", CLUSTER])
            .run();
        assert_eq!(out.code, 0, "{url}: {}", out.output());
        assert_eq!(node.current_sha(), old, "{url}: {}", out.output());
    }

    // The sidecar: starts on the tip, counts the refusal, and what it then
    // marks verified in its own name is the tip, never the forged sha.
    forge_verified(&redis, &evil);
    let node = Node::new();
    let car = sidecar(&daemon_url, &node, &redis, "pod-0", &[]);
    eventually("ready on the tip", WAIT, || car.ready() && car.runs(&tip));
    assert_eq!(node.apis(), ids(&["alpha", "beta"]));
    assert_eq!(car.metric("tyk_gitops_fleet_refused_total"), 1.0);
    eventually("the tip is the fleet's verified commit", WAIT, || {
        redis.get(&verified_key()).is_some_and(|v| {
            serde_json::from_str::<Value>(&v).is_ok_and(|v| v["sha"] == *tip.as_str())
        })
    });
}

#[test]
fn non_hex_shas_from_redis_change_nothing_and_crash_nothing() {
    let (repo, _daemon, url) = served_repo();
    let tip = repo.head();
    let redis = RedisServer::start();
    // Byte 12 falls inside a two-byte character: slicing there panicked.
    let bad = format!("{}{}", "a".repeat(11), "é".repeat(15));

    forge_verified(&redis, &bad);
    let node = Node::new();
    let out = Tg::sync(&url, node.root())
        .args(["--redis", &redis.url(), "--cluster", CLUSTER])
        .run();
    assert_eq!(out.code, 0, "{}", out.output());
    assert_eq!(node.current_sha(), tip);

    // A replica status with that sha (with a TTL, as replicas write them).
    let status = json!({"replica": "ghost", "instance": "i1", "sha": bad, "ref": "HEAD", "verified": true,
        "apis": 1, "policies": 1, "error": null, "updated_at": 1, "rejected": [bad]});
    let _: () = ::redis::cmd("SET")
        .arg(format!("tyk-gitops:{CLUSTER}:replica:ghost:i1"))
        .arg(status.to_string())
        .arg("EX")
        .arg(60)
        .query(&mut redis.connection())
        .unwrap();
    let out = Tg::fleet("status", &redis.url())
        .args(["--cluster", CLUSTER])
        .run();
    assert_eq!(out.code, 1, "{}", out.output());
    assert!(
        out.output().contains("its sha is not a commit id"),
        "{}",
        out.output()
    );

    let node = Node::new();
    let car = sidecar(&url, &node, &redis, "pod-0", &[]);
    eventually("ready", WAIT, || car.ready() && car.runs(&tip));
    // Notices no replica could have sent, then a real one.
    for sha in [bad.as_str(), "", "not-a-sha", &"g".repeat(40)] {
        publish(
            &redis,
            &json!({"ref": "HEAD", "sha": sha, "replica": "pod-x"}).to_string(),
        );
    }
    eventually("the forged notices were refused", WAIT, || {
        car.metric("tyk_gitops_fleet_refused_total") >= 4.0
    });
    repo.api("beta");
    let beta = repo.commit("beta");
    publish(
        &redis,
        &json!({"ref": "HEAD", "sha": beta, "replica": "pod-x"}).to_string(),
    );
    eventually("the listener still hears notices", WAIT, || car.runs(&beta));
    let (code, body) = http_get(car.addr, "/healthz");
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    assert_eq!(car.metric("tyk_gitops_fleet_listener_restarts_total"), 0.0);
    assert!(!car.stderr().contains("panicked"), "{}", car.stderr());
}

#[test]
fn a_lease_without_expiry_or_held_by_no_live_replica_is_taken() {
    let (_repo, _daemon, url) = served_repo();
    let redis = RedisServer::start();
    let leader = format!("tyk-gitops:{CLUSTER}:leader");
    // No TTL: nobody would ever poll every period again.
    set(&redis, &leader, "ghost");
    let node = Node::new();
    let car = sidecar(&url, &node, &redis, "pod-0", &[]);
    eventually("pod-0 leads", WAIT, || {
        car.metric("tyk_gitops_fleet_leader") == 1.0
    });
    // The lease names the replica and its process.
    assert!(
        redis.get(&leader).is_some_and(|h| h.starts_with("pod-0/")),
        "{:?}",
        redis.get(&leader)
    );
    drop(car);

    // A TTL, but no replica named so is alive.
    let _: () = ::redis::cmd("SET")
        .arg(&leader)
        .arg("ghost")
        .arg("EX")
        .arg(3600)
        .query(&mut redis.connection())
        .unwrap();
    let node = Node::new();
    let car = sidecar(&url, &node, &redis, "pod-1", &[]);
    eventually("pod-1 leads", WAIT, || {
        car.metric("tyk_gitops_fleet_leader") == 1.0
    });
}

#[test]
fn fleet_wait_counts_only_what_replicas_wrote_and_prints_no_control_characters() {
    let (repo, _daemon, url) = served_repo();
    let tip = repo.head();
    let redis = RedisServer::start();
    let node = Node::new();
    let car = sidecar(&url, &node, &redis, "pod-0", &[]);
    eventually("ready", WAIT, || car.ready() && car.runs(&tip));

    let other = "b".repeat(40);
    let forged = |id: &str| {
        json!({"replica": id, "instance": "i1", "sha": other, "ref": "HEAD", "verified": false, "apis": 0,
            "policies": 0, "error": "\u{1b}[2Jstuck\r\n", "updated_at": 1, "rejected": []})
        .to_string()
    };
    // No TTL, a TTL of a day, and an id unlike its key's: none is a replica.
    set(
        &redis,
        &format!("tyk-gitops:{CLUSTER}:replica:ghost:i1"),
        &forged("ghost"),
    );
    let _: () = ::redis::cmd("SET")
        .arg(format!("tyk-gitops:{CLUSTER}:replica:phantom\u{1b}[31m:i1"))
        .arg(forged("phantom\u{1b}[31m"))
        .arg("EX")
        .arg(86400)
        .query(&mut redis.connection())
        .unwrap();
    let _: () = ::redis::cmd("SET")
        .arg(format!("tyk-gitops:{CLUSTER}:replica:mask:i1"))
        .arg(forged("pod-0"))
        .arg("EX")
        .arg(6)
        .query(&mut redis.connection())
        .unwrap();

    let out = Tg::fleet("wait", &redis.url())
        .args(["--cluster", CLUSTER, "--sha", &tip, "--timeout", "10s"])
        .run();
    let shown = out.output();
    assert_eq!(out.code, 0, "{shown}");
    assert!(shown.contains("1 replica(s) verified"), "{shown}");
    assert!(shown.contains(": pod-0"), "{shown}");
    assert!(shown.contains("not counted: 3 entries"), "{shown}");
    assert!(
        shown.contains("replica:ghost:i1: it never expires"),
        "{shown}"
    );
    assert!(
        !shown.contains('\u{1b}'),
        "control characters printed: {shown:?}"
    );

    let out = Tg::fleet("status", &redis.url())
        .args(["--cluster", CLUSTER])
        .run();
    let shown = out.output();
    assert_eq!(out.code, 0, "{shown}");
    assert!(shown.contains("converged on"), "{shown}");
    assert!(
        !shown.contains('\u{1b}'),
        "control characters printed: {shown:?}"
    );
}

/// Syncs run since start, whatever their result.
fn syncs(car: &Sidecar) -> f64 {
    ["applied", "noop", "rejected", "failed"]
        .iter()
        .map(|r| car.metric(&format!("tyk_gitops_syncs_total{{result=\"{r}\"}}")))
        .sum()
}

#[test]
fn five_hundred_forged_notices_make_a_few_syncs_not_five_hundred() {
    let (_repo, _daemon, url) = served_repo();
    let redis = RedisServer::start();
    let node = Node::new();
    let car = sidecar(&url, &node, &redis, "pod-0", &[]);
    eventually("ready", WAIT, || car.ready());
    let before = syncs(&car);
    // Each a different, well-formed sha (nothing to coalesce by sha),
    // spread over about 2.5 s so that each could start its own sync.
    let mut con = redis.connection();
    for i in 0..500u32 {
        std::thread::sleep(Duration::from_millis(5));
        let notice = json!({"ref": "HEAD", "sha": format!("{i:040x}"), "replica": "pod-x"});
        let _: i64 = ::redis::cmd("PUBLISH")
            .arg(format!("tyk-gitops:{CLUSTER}:commits"))
            .arg(notice.to_string())
            .query(&mut con)
            .unwrap();
    }
    eventually("all heard", WAIT, || {
        car.metric("tyk_gitops_fleet_notices_total") >= 500.0
    });
    std::thread::sleep(Duration::from_secs(2));
    let made = syncs(&car) - before;
    println!("RESULT 500 forged notices -> {made} sync(s)");
    // One per MIN_TRIGGERED_INTERVAL (1 s) at most, with room to spare.
    assert!((1.0..=10.0).contains(&made), "{made} syncs");
}
