//! A fleet of sidecars sharing a real `redis-server`: one trigger reaches
//! every replica, `fleet status` / `fleet wait` report on all of them, a
//! Redis outage degrades to polling, newcomers start on the fleet's
//! verified commit, and only the lease holder lists the ref (the others read
//! the tip it leaves in Redis).

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::git_server::GitHttp;
use crate::support::node::{Node, ids};
use crate::support::redis::RedisServer;
use crate::support::repo::ConfigRepo;
use crate::support::sidecar::Sidecar;
use crate::support::{bin, eventually, free_port, served_repo};

const WAIT: Duration = Duration::from_secs(20);
const CLUSTER: &str = "test";

/// One replica: a gateway emulator and its `tyk-gitops run --redis`.
struct Replica {
    id: String,
    node: Node,
    sidecar: Sidecar,
}

impl Replica {
    fn start(repo_url: &str, redis: &str, id: &str, extra: &[&str]) -> Replica {
        Replica::start_on(Node::new(), repo_url, redis, id, extra)
    }

    /// With `redis` empty, a replica without a fleet.
    fn start_on(node: Node, repo_url: &str, redis: &str, id: &str, extra: &[&str]) -> Replica {
        let mut args = vec!["--period", "1h", "--replica-id", id, "--cluster", CLUSTER];
        if !redis.is_empty() {
            args.extend(["--redis", redis]);
        }
        args.extend(extra);
        let sidecar = Sidecar::start(repo_url, &node, &args);
        Replica {
            id: id.to_string(),
            node,
            sidecar,
        }
    }

    fn ready(&self) -> bool {
        self.sidecar.ready()
    }

    fn status(&self) -> Value {
        self.sidecar.status()
    }

    fn metric(&self, sample: &str) -> f64 {
        self.sidecar.metric(sample)
    }

    fn runs(&self, sha: &str) -> bool {
        self.sidecar.runs(sha)
    }

    fn sighup(&self) {
        self.sidecar.signal(libc::SIGHUP);
    }
}

fn fleet(redis: &RedisServer, n: usize, url: &str, extra: &[&str]) -> Vec<Replica> {
    let replicas: Vec<Replica> = (0..n)
        .map(|i| Replica::start(url, &redis.url(), &format!("pod-{i}"), extra))
        .collect();
    for r in &replicas {
        eventually(&format!("{} ready", r.id), WAIT, || r.ready());
    }
    replicas
}

/// `tyk-gitops fleet <args> --redis URL --cluster test`.
fn fleet_cmd(redis_url: &str, args: &[&str]) -> Output {
    fleet_cmd_trusting(redis_url, args, None)
}

/// `fleet_cmd` trusting only the system's CAs and the certificate given
/// (`SSL_CERT_FILE`).
fn fleet_cmd_trusting(redis_url: &str, args: &[&str], cert: Option<&std::path::Path>) -> Output {
    let mut cmd = Command::new(bin());
    cmd.arg("fleet")
        .args(args)
        .args(["--redis", redis_url, "--cluster", CLUSTER])
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR");
    if let Some(cert) = cert {
        cmd.env("SSL_CERT_FILE", cert);
    }
    cmd.output().expect("run tyk-gitops fleet")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn one_signal_to_one_replica_brings_every_replica_to_the_new_commit() {
    let (repo, _daemon, url) = served_repo();
    let redis = RedisServer::start();
    let replicas = fleet(&redis, 3, &url, &[]);

    repo.api("beta");
    let sha = repo.commit("beta");
    // The period is an hour: only the fleet notice can explain the others.
    let asked = Instant::now();
    replicas[0].sighup();
    for r in &replicas {
        // And done with that sync: state.json shows the commit before the
        // loop records the attempt.
        eventually(&format!("{} on beta", r.id), WAIT, || {
            r.node.apis() == ids(&["alpha", "beta"])
                && r.runs(&sha)
                && r.status()["last_attempt"]["sha"] == *sha.as_str()
        });
    }
    assert!(asked.elapsed() < Duration::from_secs(10));
    for r in &replicas[1..] {
        assert_eq!(r.status()["last_attempt"]["trigger"], "fleet");
        assert!(r.metric("tyk_gitops_fleet_notices_total") >= 1.0);
    }
    // The commit is the fleet's verified one now.
    let verified: Value = serde_json::from_str(
        &redis
            .get(&format!("tyk-gitops:{CLUSTER}:verified"))
            .expect("verified key"),
    )
    .unwrap();
    assert_eq!(verified["sha"], *sha.as_str());
    assert_eq!(verified["ref"], "HEAD");
}

#[test]
fn fleet_wait_and_status_report_convergence_and_name_a_replica_whose_gateway_is_down() {
    let (repo, _daemon, url) = served_repo();
    let redis = RedisServer::start();
    let replicas = fleet(&redis, 3, &url, &[]);

    repo.api("beta");
    let beta = repo.commit("beta");
    replicas[0].sighup();
    let out = fleet_cmd(&redis.url(), &["wait", "--sha", &beta, "--timeout", "20s"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("3 replica(s) verified"),
        "{}",
        text(&out)
    );

    // Status keys are rewritten after each sync; wait for the last of them.
    eventually("status converged", WAIT, || {
        fleet_cmd(&redis.url(), &["status"]).status.code() == Some(0)
    });
    let out = fleet_cmd(&redis.url(), &["status"]);
    let table = text(&out);
    for r in &replicas {
        assert!(table.contains(&r.id), "{table}");
    }
    assert!(table.contains(&beta[..12]), "{table}");
    assert!(table.contains("converged on"), "{table}");
    let out = fleet_cmd(&redis.url(), &["status", "--format", "json"]);
    assert_eq!(out.status.code(), Some(0));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["converged"], true);
    assert_eq!(json["sha"], *beta.as_str());
    assert_eq!(json["replicas"].as_array().unwrap().len(), 3);
    assert_eq!(json["replicas"][0]["apis"], 2);
    assert_eq!(json["verified"]["sha"], *beta.as_str());

    // pod-2's gateway goes down; the next commit cannot reach it.
    replicas[2].node.emu.set_down(true);
    repo.api("gamma");
    let gamma = repo.commit("gamma");
    replicas[0].sighup();
    let out = fleet_cmd(&redis.url(), &["wait", "--sha", &gamma, "--timeout", "4s"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let msg = text(&out);
    assert!(msg.contains("timed out after 4s"), "{msg}");
    assert!(msg.contains("pod-2: on"), "{msg}");
    assert!(msg.contains(&beta[..12]), "{msg}");
    assert!(!msg.contains("pod-0"), "only the laggard is named: {msg}");
    let out = fleet_cmd(&redis.url(), &["status", "--format", "json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));

    replicas[2].node.emu.set_down(false);
    let out = fleet_cmd(&redis.url(), &["wait", "--sha", &gamma, "--timeout", "20s"]);
    assert!(out.status.success(), "{}", text(&out));

    // Regression: the subscriber's liveness PING (answered with an array
    // in subscribed mode) was taken for a failure every 5 s, costing a
    // reconnect and a catch-up sync each time.
    for r in &replicas {
        assert_eq!(r.metric("tyk_gitops_redis_errors_total"), 0.0, "{}", r.id);
    }
}

#[test]
fn fleet_wait_stops_as_soon_as_a_replica_rejects_the_commit() {
    let (repo, _daemon, url) = served_repo();
    let redis = RedisServer::start();
    let replicas = fleet(&redis, 2, &url, &[]);
    repo.file("apps/beta.json", "{\"api_id\": \"beta\",");
    let bad = repo.commit("broken beta");
    replicas[0].sighup();
    let started = Instant::now();
    let out = fleet_cmd(&redis.url(), &["wait", "--sha", &bad, "--timeout", "60s"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(text(&out).contains("rejected"), "{}", text(&out));
}

/// `fleet wait` looks again as soon as a replica says its status changed
/// with a sync, rather than at its next poll: the replica names the key it
/// wrote, on the cluster's status-changes channel. Heartbeats, and drift
/// checks that found nothing (every 500 ms here), say nothing.
#[test]
fn a_replica_says_when_a_sync_changed_its_status_and_heartbeats_say_nothing() {
    let (repo, _daemon, url) = served_repo();
    let redis = RedisServer::start();
    let replicas = fleet(&redis, 1, &url, &[]);
    let mut con = redis.connection();
    let mut changes = con.as_pubsub();
    changes
        .subscribe(format!("tyk-gitops:{CLUSTER}:status-changes"))
        .unwrap();
    fn quiet_for(changes: &mut ::redis::PubSub<'_>, secs: u64) {
        changes
            .set_read_timeout(Some(Duration::from_secs(secs)))
            .unwrap();
    }
    // What the start announced.
    quiet_for(&mut changes, 1);
    while changes.get_message().is_ok() {}
    quiet_for(&mut changes, 5);

    repo.api("beta");
    let sha = repo.commit("beta");
    replicas[0].sighup();
    let key: String = loop {
        let message = changes.get_message().expect("a status change within 5 s");
        let key: String = message.get_payload().unwrap();
        assert!(
            key.starts_with(&format!("tyk-gitops:{CLUSTER}:replica:pod-0:")),
            "{key}"
        );
        let status: Value = serde_json::from_str(&redis.get(&key).expect("the key named")).unwrap();
        if status["sha"] == *sha.as_str() && status["verified"] == true {
            break key;
        }
    };
    // Then heartbeats (every 2 s) rewrite the status, and drift checks
    // report, without a word.
    quiet_for(&mut changes, 1);
    while changes.get_message().is_ok() {}
    quiet_for(&mut changes, 5);
    assert!(
        changes.get_message().is_err(),
        "a heartbeat announced a change"
    );
    assert!(redis.get(&key).is_some(), "the heartbeats keep the status");
}

#[test]
fn fleet_commands_exit_3_when_redis_is_unreachable_and_1_with_no_replica() {
    let port = free_port();
    let url = format!("redis://:hunter2@127.0.0.1:{port}");
    let out = fleet_cmd(&url, &["status"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(!text(&out).contains("hunter2"), "{}", text(&out));
    let out = fleet_cmd(&url, &["wait", "--sha", "abcdef1", "--timeout", "1s"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));

    let redis = RedisServer::start();
    let out = fleet_cmd(&redis.url(), &["status"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("no live replica"), "{}", text(&out));
    let out = Command::new(bin())
        .args(["fleet", "status", "--cluster", CLUSTER])
        .env_remove("TYK_GITOPS_REDIS")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[test]
fn replicas_keep_converging_by_polling_while_redis_is_down_and_fan_out_resumes_after() {
    let (repo, _daemon, url) = served_repo();
    let mut redis = RedisServer::start();
    let replicas = fleet(&redis, 3, &url, &["--period", "300ms"]);

    redis.stop();
    repo.api("beta");
    let beta = repo.commit("beta");
    for r in &replicas {
        eventually(&format!("{} on beta without Redis", r.id), WAIT, || {
            r.runs(&beta)
        });
        assert_eq!(r.status()["replica"], *r.id.as_str(), "still serving");
    }
    eventually("errors counted", WAIT, || {
        replicas
            .iter()
            .all(|r| r.metric("tyk_gitops_redis_errors_total") >= 1.0)
    });

    redis.restart();
    eventually("every replica reports again", WAIT, || {
        let out = fleet_cmd(&redis.url(), &["status", "--format", "json"]);
        serde_json::from_slice::<Value>(&out.stdout)
            .map(|j| j["replicas"].as_array().map_or(0, Vec::len) == 3)
            .unwrap_or(false)
    });
    let notices: f64 = replicas
        .iter()
        .map(|r| r.metric("tyk_gitops_fleet_notices_total"))
        .sum();
    repo.api("gamma");
    let gamma = repo.commit("gamma");
    let out = fleet_cmd(&redis.url(), &["wait", "--sha", &gamma, "--timeout", "20s"]);
    assert!(out.status.success(), "{}", text(&out));
    // Whoever polled first told the others.
    eventually("a notice after the restart", WAIT, || {
        replicas
            .iter()
            .map(|r| r.metric("tyk_gitops_fleet_notices_total"))
            .sum::<f64>()
            > notices
    });
}

#[test]
fn a_new_replica_joins_at_the_fleets_verified_commit_not_a_rejected_head() {
    let (repo, _daemon, url) = served_repo();
    let redis = RedisServer::start();
    let replicas = fleet(&redis, 2, &url, &[]);
    repo.api("beta");
    let good = repo.commit("beta");
    replicas[0].sighup();
    let out = fleet_cmd(&redis.url(), &["wait", "--sha", &good, "--timeout", "20s"]);
    assert!(out.status.success(), "{}", text(&out));

    repo.file("apps/gamma.json", "{\"api_id\": \"gamma\",");
    let bad = repo.commit("broken gamma");
    replicas[0].sighup();
    eventually("the fleet rejected HEAD", WAIT, || {
        replicas[0].status()["rejected"]
            .as_array()
            .is_some_and(|r| r.iter().any(|x| x["sha"] == *bad.as_str()))
    });

    // A scaled-up pod: the one-shot init sync, then the sidecar.
    let node = Node::new();
    let out = Command::new(bin())
        .args(["sync", "--repo", &url, "--root"])
        .arg(node.root())
        .args(["--redis", &redis.url(), "--cluster", CLUSTER])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(node.current_sha(), good);
    let newcomer = Replica::start_on(node, &url, &redis.url(), "pod-new", &[]);
    eventually("the newcomer is ready on the good commit", WAIT, || {
        newcomer.ready() && newcomer.runs(&good)
    });
    assert_eq!(newcomer.node.apis(), ids(&["alpha", "beta"]));

    // Without the fleet, the same start lands on the broken HEAD and has
    // nothing to serve.
    let alone = Node::new();
    let out = Command::new(bin())
        .args(["sync", "--repo", &url, "--root"])
        .arg(alone.root())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
}

/// Ref listings (`GET …/info/refs`) per replica over `window`, with `n`
/// replicas polling every 500 ms. Each replica reads the same repository
/// under a name of its own (`config-<i>.git`, a link), so the server's log
/// tells who listed.
fn ref_listings(n: usize, with_redis: bool, window: Duration) -> Vec<usize> {
    let repo = ConfigRepo::new();
    repo.api("alpha");
    repo.commit("alpha");
    let served = tempfile::tempdir().unwrap();
    repo.bare_clone(served.path(), "config.git");
    for i in 0..n {
        std::os::unix::fs::symlink(
            served.path().join("config.git"),
            served.path().join(format!("config-{i}.git")),
        )
        .unwrap();
    }
    let http = GitHttp::start(served.path(), None);
    let redis = RedisServer::start();
    let redis_url = if with_redis {
        redis.url()
    } else {
        String::new()
    };
    let replicas: Vec<Replica> = (0..n)
        .map(|i| {
            Replica::start(
                &http.url(&format!("config-{i}.git")),
                &redis_url,
                &format!("pod-{i}"),
                &["--period", "500ms"],
            )
        })
        .collect();
    for r in &replicas {
        eventually("ready", WAIT, || r.ready());
    }
    // Let the lease and the tip settle (two heartbeats) before counting.
    std::thread::sleep(Duration::from_secs(5));
    http.clear_requests();
    std::thread::sleep(window);
    let requests = http.requests();
    (0..n)
        .map(|i| {
            let path = format!("/config-{i}.git/info/refs");
            requests
                .iter()
                .filter(|r| r.starts_with("GET") && r.contains(&path))
                .count()
        })
        .collect()
}

#[test]
fn with_leadership_only_the_leader_lists_the_ref_however_many_replicas() {
    let window = Duration::from_secs(12);
    let periods = 24; // window / 500 ms
    let alone: usize = ref_listings(4, false, window).iter().sum();
    let led = ref_listings(4, true, window);
    // Alone: every replica every period (±10% jitter; polls run late on a
    // loaded machine, so well over two replicas' worth is asked, not four).
    assert!(alone >= 2 * periods, "without Redis: {alone}");
    // Led: the leader every period; the followers read the tip it writes
    // to Redis instead of listing (one listing allowed for a Redis call
    // that timed out on a loaded machine; polling one period in ten, as
    // before the tip, would be seven or more).
    let mut counts = led.clone();
    counts.sort_unstable();
    let leader = counts.pop().unwrap_or_default();
    let followers: usize = counts.iter().sum();
    assert!(
        leader >= periods / 2 && leader <= periods + 4,
        "the leader listed {leader} times in {window:?} ({led:?}; without Redis: {alone})"
    );
    assert!(
        followers <= 1,
        "the followers listed {followers} times in {window:?} ({led:?})"
    );
}

#[test]
fn a_follower_that_missed_the_notice_catches_up_from_the_tip_in_redis() {
    let (repo, _daemon, url) = served_repo();
    let redis = RedisServer::start();
    let replicas = fleet(&redis, 2, &url, &[]);
    let leader_key = format!("tyk-gitops:{CLUSTER}:leader");
    eventually("a leader", WAIT, || redis.get(&leader_key).is_some());
    let leader = redis.get(&leader_key).unwrap_or_default();
    let follower = replicas
        .iter()
        .find(|r| !leader.starts_with(&format!("{}/", r.id)))
        .expect("a follower");

    // Wait out the notices of the start (each replica announces what it
    // applied): the follower is quiet when its attempts stop counting.
    let attempts = || {
        let s = follower.status();
        (s["last_attempt"]["at"].clone(), s["syncing"].clone())
    };
    let mut last = attempts();
    eventually("the follower quiet", WAIT, || {
        std::thread::sleep(Duration::from_secs(3));
        let now = attempts();
        let quiet = now == last && now.1 == false;
        last = now;
        quiet
    });
    // A commit nobody announced (the period is an hour: no poll either),
    // as if its notice had been lost: only the tip a listing left in
    // Redis tells of it.
    repo.api("beta");
    let sha = repo.commit("beta");
    let tip = serde_json::json!({"sha": sha, "replica": "elsewhere", "at": 0}).to_string();
    ::redis::cmd("SET")
        .arg(format!("tyk-gitops:{CLUSTER}:tip:HEAD"))
        .arg(tip)
        .arg("PX")
        .arg(60_000)
        .query::<()>(&mut redis.connection())
        .unwrap();
    eventually(&format!("{} on beta", follower.id), WAIT, || {
        follower.runs(&sha) && follower.node.apis() == ids(&["alpha", "beta"])
    });
    assert_eq!(follower.status()["last_attempt"]["trigger"], "fleet");
    // A tip that is not a commit id is no reason to look at Git.
    ::redis::cmd("SET")
        .arg(format!("tyk-gitops:{CLUSTER}:tip:HEAD"))
        .arg(r#"{"sha": "\u001b[2Jnot-a-sha", "replica": "x", "at": 0}"#)
        .arg("PX")
        .arg(60_000)
        .query::<()>(&mut redis.connection())
        .unwrap();
    let before = follower.metric("tyk_gitops_syncs_total{result=\"noop\"}")
        + follower.metric("tyk_gitops_syncs_total{result=\"applied\"}");
    std::thread::sleep(Duration::from_secs(5));
    let after = follower.metric("tyk_gitops_syncs_total{result=\"noop\"}")
        + follower.metric("tyk_gitops_syncs_total{result=\"applied\"}");
    assert_eq!(before, after, "a forged tip triggered a sync");
}

#[test]
fn a_fleet_on_a_tls_redis_reports_with_a_trusted_certificate_and_refuses_an_untrusted_one() {
    // Managed Redis services require TLS (`rediss://`); a private CA is
    // trusted the OpenSSL way, through SSL_CERT_FILE.
    let (_repo, _daemon, url) = served_repo();
    let redis = RedisServer::start_tls();
    let cert = redis.cert();
    let node = Node::new();
    let redis_url = redis.url();
    let sidecar = Sidecar::start_with_env(
        &url,
        &node,
        &[
            "--period",
            "1h",
            "--replica-id",
            "pod-tls",
            "--cluster",
            CLUSTER,
            "--redis",
            &redis_url,
        ],
        &[("SSL_CERT_FILE", &cert)],
    );
    eventually("ready", WAIT, || sidecar.ready());
    eventually("listed over TLS", WAIT, || {
        let out = fleet_cmd_trusting(&redis_url, &["status", "--format", "json"], Some(&cert));
        out.status.success() && text(&out).contains("pod-tls")
    });
    let out = fleet_cmd_trusting(&redis_url, &["status"], None);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).to_lowercase().contains("certificate"),
        "{}",
        text(&out)
    );
    println!("RESULT fleet rediss untrusted: {}", text(&out).trim());
}

/// A GitHub push webhook for `sha` on `main`, signed with `secret`.
fn github_push(addr: std::net::SocketAddr, secret: &str, sha: &str) -> u16 {
    use hmac::{Hmac, KeyInit, Mac};
    let body = serde_json::json!({"ref": "refs/heads/main", "after": sha}).to_string();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    let sig = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    crate::support::http(
        addr,
        "POST",
        "/webhook",
        &[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &sig)],
        body.as_bytes(),
    )
    .0
}

/// Regression: sidecars sharing a replica id (the default is the hostname:
/// cloned VMs, host-network pods, three sidecars on one host) took each
/// other's notices for their own and ignored them, all held the poll lease,
/// and showed as one row in `fleet status`: one webhook updated one replica.
#[test]
fn three_sidecars_with_one_replica_id_converge_on_one_webhook_and_report_the_clash() {
    let (repo, _daemon, url) = served_repo();
    let redis = RedisServer::start();
    let secret_dir = tempfile::tempdir().unwrap();
    let secret_file = secret_dir.path().join("webhook-secret");
    std::fs::write(&secret_file, "hook-secret").unwrap();
    let secret_arg = secret_file.to_str().unwrap();
    let replicas: Vec<Replica> = (0..3)
        .map(|_| {
            Replica::start(
                &url,
                &redis.url(),
                "same-host",
                &["--ref", "main", "--webhook-secret-file", secret_arg],
            )
        })
        .collect();
    for r in &replicas {
        eventually("ready", WAIT, || r.ready());
    }

    // Each one sees the two others under its id: log, /status, metric.
    for r in &replicas {
        eventually("the clash reported", WAIT, || {
            r.status()["replica_id_clash"] == 2
                && r.metric("tyk_gitops_fleet_replica_id_clash") == 2.0
        });
        let log = r.sidecar.stderr();
        assert!(
            log.contains("other live sidecar(s) of cluster test use replica id \"same-host\""),
            "{log}"
        );
        assert_eq!(r.status()["replica"], "same-host");
    }
    let instances: std::collections::HashSet<String> = replicas
        .iter()
        .map(|r| r.status()["instance"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(instances.len(), 3, "{instances:?}");

    // Fleet status lists all three, marked, and exactly one holds the lease.
    eventually("three rows, one leader", WAIT, || {
        let out = fleet_cmd(&redis.url(), &["status", "--format", "json"]);
        let json: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        let rows = json["replicas"].as_array().cloned().unwrap_or_default();
        rows.len() == 3
            && rows.iter().filter(|r| r["leader"] == true).count() == 1
            && json["duplicate_ids"] == serde_json::json!(["same-host"])
            && json["leader"] == "same-host"
    });
    let leaders = replicas
        .iter()
        .filter(|r| r.metric("tyk_gitops_fleet_leader") == 1.0)
        .count();
    assert_eq!(leaders, 1, "every sidecar took the poll lease");
    let table = text(&fleet_cmd(&redis.url(), &["status"]));
    assert_eq!(table.matches("same-host !").count(), 3, "{table}");
    assert!(table.contains("used by more than one sidecar"), "{table}");

    // One webhook, to one of them (the period is an hour): all three follow.
    repo.api("beta");
    let sha = repo.commit("beta");
    assert_eq!(
        github_push(replicas[1].sidecar.addr, "hook-secret", &sha),
        202
    );
    for r in &replicas {
        eventually("on beta", WAIT, || {
            r.node.apis() == ids(&["alpha", "beta"]) && r.runs(&sha)
        });
    }
    for i in [0, 2] {
        assert_eq!(replicas[i].status()["last_attempt"]["trigger"], "fleet");
    }
    let out = fleet_cmd(
        &redis.url(),
        &[
            "wait",
            "--sha",
            &sha,
            "--min-replicas",
            "3",
            "--timeout",
            "20s",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
}

/// The process ids Redis lists as live under replica id `id`.
fn live_instances(redis: &RedisServer, id: &str) -> Vec<String> {
    redis::cmd("ZRANGE")
        .arg(format!("tyk-gitops:{CLUSTER}:instances:{id}"))
        .arg(0)
        .arg(-1)
        .query(&mut redis.connection())
        .expect("ZRANGE")
}

/// A sidecar killed without a goodbye and restarted under the same id
/// (a crashed pod) is not a clash, though its old entry lingers a while.
#[test]
fn a_sidecar_restarted_after_a_crash_is_not_taken_for_a_second_one() {
    let (_repo, _daemon, url) = served_repo();
    let redis = RedisServer::start();
    let first = Replica::start(&url, &redis.url(), "pod-r", &[]);
    eventually("ready", WAIT, || first.ready());
    let old = first.status()["instance"].as_str().unwrap().to_string();
    eventually("listed", WAIT, || {
        live_instances(&redis, "pod-r") == [old.clone()]
    });
    // SIGKILL: no goodbye, the old entry stays until its TTL.
    let Replica { node, sidecar, .. } = first;
    drop(sidecar);
    let second = Replica::start_on(node, &url, &redis.url(), "pod-r", &[]);
    eventually("ready again", WAIT, || second.ready());
    let new = second.status()["instance"].as_str().unwrap().to_string();
    assert_ne!(new, old);
    eventually("the dead process dropped from the list", WAIT, || {
        live_instances(&redis, "pod-r") == [new.clone()]
    });
    let log = second.sidecar.stderr();
    assert!(!log.contains("other live sidecar"), "{log}");
    assert_eq!(second.status()["replica_id_clash"], 0);
    assert_eq!(second.metric("tyk_gitops_fleet_replica_id_clash"), 0.0);
}
