//! `tyk-gitops run`, the sidecar: the real binary polling a `git daemon`
//! and keeping a Tyk emulator on the latest good commit.

use std::fs;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::node::{Node, SECRET, ids};
use crate::support::sidecar::Sidecar;
use crate::support::{eventually, free_port, http_get, served_repo};

const WAIT: Duration = Duration::from_secs(20);

#[test]
fn a_new_commit_goes_live_within_a_poll_and_readyz_turns_green() {
    let (repo, _daemon, url) = served_repo();
    let node = Node::new();
    let sidecar = Sidecar::start(&url, &node, &[]);
    eventually("ready", WAIT, || sidecar.ready());
    assert_eq!(node.apis(), ids(&["alpha"]));

    repo.api("beta");
    let sha = repo.commit("beta");
    eventually("beta live", WAIT, || node.apis() == ids(&["alpha", "beta"]));
    eventually("status shows the new sha, verified", WAIT, || {
        let status = sidecar.status();
        status["current"]["sha"] == *sha.as_str() && status["current"]["verified_at"].is_u64()
    });
    assert_eq!(sidecar.status()["replica"], "pod-a");
    eventually("two applied and a no-change poll counted", WAIT, || {
        sidecar.metric("tyk_gitops_syncs_total{result=\"applied\"}") >= 2.0
            && sidecar.metric("tyk_gitops_syncs_total{result=\"noop\"}") >= 1.0
    });
    assert_eq!(sidecar.metric("tyk_gitops_apis"), 2.0);
}

#[test]
fn a_broken_commit_is_refused_and_shown_while_the_gateway_keeps_the_last_good_set() {
    let (repo, _daemon, url) = served_repo();
    let node = Node::new();
    let sidecar = Sidecar::start(&url, &node, &[]);
    eventually("ready", WAIT, || sidecar.ready());
    let reloads = node.emu.reload_count();

    repo.file("apps/beta.json", "{\"api_id\": \"beta\",");
    let bad = repo.commit("broken beta");
    eventually("rejection in /status", WAIT, || {
        sidecar.status()["rejected"]
            .as_array()
            .is_some_and(|r| r.iter().any(|x| x["sha"] == *bad.as_str()))
    });
    let status = sidecar.status();
    let rejected = &status["rejected"][0];
    assert_eq!(
        rejected["findings"][0]["file"], "apps/beta.json",
        "{status}"
    );
    assert_eq!(rejected["findings"][0]["rule"], "json-syntax");
    assert_eq!(node.apis(), ids(&["alpha"]));
    assert_eq!(node.emu.reload_count(), reloads);
    eventually("the rejection counted", WAIT, || {
        sidecar.metric("tyk_gitops_syncs_total{result=\"rejected\"}") >= 1.0
    });

    repo.api("beta");
    repo.commit("fix beta");
    eventually("fix live", WAIT, || node.apis() == ids(&["alpha", "beta"]));
}

#[test]
fn a_commit_landing_while_the_gateway_is_down_goes_live_once_it_is_back() {
    let (repo, _daemon, url) = served_repo();
    let node = Node::new();
    let sidecar = Sidecar::start(&url, &node, &[]);
    eventually("ready", WAIT, || sidecar.ready());

    node.emu.set_down(true);
    repo.api("beta");
    repo.commit("beta");
    eventually("a failed attempt", WAIT, || {
        sidecar.status()["last_attempt"]["result"] == "failed"
    });
    assert!(sidecar.metric("tyk_gitops_reload_failures_total") >= 1.0);
    node.emu.set_down(false);
    eventually("beta live after the outage", WAIT, || {
        node.apis() == ids(&["alpha", "beta"])
    });
}

#[test]
fn a_verify_mismatch_rolls_back_and_the_commit_is_not_retried() {
    let (repo, _daemon, url) = served_repo();
    let node = Node::new();
    let sidecar = Sidecar::start(&url, &node, &[]);
    eventually("ready", WAIT, || sidecar.ready());
    let good = fs::canonicalize(node.current()).unwrap();

    node.emu.set_fail_reloads(true);
    repo.api("beta");
    let failing = repo.commit("beta");
    eventually("a rollback", WAIT, || {
        sidecar.metric("tyk_gitops_rollbacks_total") >= 1.0
    });
    assert_eq!(fs::canonicalize(node.current()).unwrap(), good);
    node.emu.set_fail_reloads(false);
    // Polls go on, but the failed sha is not applied again.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(sidecar.metric("tyk_gitops_rollbacks_total"), 1.0);
    assert_eq!(fs::canonicalize(node.current()).unwrap(), good);
    let status = sidecar.status();
    let rejected = status["rejected"].as_array().unwrap();
    assert!(
        rejected
            .iter()
            .any(|r| r["sha"] == *failing.as_str() && r["reason"] == "verify-failed"),
        "{status}"
    );
}

#[test]
fn drift_on_the_gateway_is_found_and_repaired() {
    let (_repo, _daemon, url) = served_repo();
    let node = Node::new();
    let sidecar = Sidecar::start(&url, &node, &["--period", "1h"]);
    eventually("ready", WAIT, || sidecar.ready());
    node.emu.tamper_remove_api("alpha");
    eventually("alpha restored", WAIT, || node.apis() == ids(&["alpha"]));
    eventually("drift counted", WAIT, || {
        sidecar.metric("tyk_gitops_drift_total") >= 1.0
    });
}

#[test]
fn a_drift_check_that_finds_nothing_leaves_status_not_syncing() {
    let (_repo, _daemon, url) = served_repo();
    let node = Node::new();
    let sidecar = Sidecar::start(&url, &node, &["--period", "1h", "--verify-period", "1s"]);
    eventually("ready", WAIT, || sidecar.ready());
    // Several drift checks later, each of which found the gateway in step.
    std::thread::sleep(Duration::from_secs(3));
    eventually("not syncing between checks", WAIT, || {
        sidecar.status()["syncing"] == false
    });
    assert_eq!(sidecar.metric("tyk_gitops_drift_total"), 0.0);
}

#[test]
fn sighup_syncs_now() {
    let (repo, _daemon, url) = served_repo();
    let node = Node::new();
    let sidecar = Sidecar::start(&url, &node, &["--period", "1h"]);
    eventually("ready", WAIT, || sidecar.ready());
    repo.api("beta");
    repo.commit("beta");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        node.apis(),
        ids(&["alpha"]),
        "polled although the period is 1h"
    );
    sidecar.signal(libc::SIGHUP);
    eventually("beta live after SIGHUP", WAIT, || {
        node.apis() == ids(&["alpha", "beta"])
    });
}

#[test]
fn sigterm_mid_sync_exits_0_quickly_and_leaves_one_whole_revision() {
    let (repo, _daemon, url) = served_repo();
    let node = Node::new();
    let mut sidecar = Sidecar::start(&url, &node, &[]);
    eventually("ready", WAIT, || sidecar.ready());

    // A slow reload keeps the next sync busy when SIGTERM arrives.
    node.emu.set_reload_delay(Duration::from_secs(30));
    repo.api("beta");
    repo.commit("beta");
    eventually("a sync in progress", WAIT, || {
        sidecar.status()["syncing"] == true && node.emu.reload_count() > 1
    });
    let asked = Instant::now();
    sidecar.signal(libc::SIGTERM);
    let status = loop {
        if let Some(s) = sidecar.child.0.try_wait().unwrap() {
            break s;
        }
        assert!(asked.elapsed() < Duration::from_secs(12), "still running");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    assert!(asked.elapsed() <= Duration::from_secs(10));

    // current resolves to exactly one revision, every file of its manifest there.
    let current = fs::canonicalize(node.current()).unwrap();
    let manifest: Value =
        serde_json::from_slice(&fs::read(current.join(".revision")).unwrap()).unwrap();
    for file in manifest["files"].as_array().unwrap() {
        let path = file[0].as_str().unwrap();
        assert!(current.join(path).is_file(), "{path} missing");
    }
    let listed = manifest["files"].as_array().unwrap().len();
    let on_disk = walk(&current).len() - 1; // minus .revision
    assert_eq!(listed, on_disk);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// `GET /metrics` with an `Accept` header: the `Content-Type` and the body.
fn scrape(addr: std::net::SocketAddr, accept: Option<&str>) -> (String, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    let accept = accept.map_or(String::new(), |a| format!("Accept: {a}\r\n"));
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\n{accept}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("a response");
    let content_type = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_string())
        })
        .unwrap_or_default();
    (content_type, body.to_string())
}

/// Runs `program args` with `input` on stdin: success and its output.
fn pipe(program: &str, args: &[&str], input: &str) -> (bool, String) {
    use std::io::Write;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

const DOCUMENTED_FAMILIES: [&str; 9] = [
    "tyk_gitops_syncs",
    "tyk_gitops_sync_duration_seconds",
    "tyk_gitops_last_success_timestamp_seconds",
    "tyk_gitops_revision_info",
    "tyk_gitops_apis",
    "tyk_gitops_policies",
    "tyk_gitops_rollbacks",
    "tyk_gitops_reload_failures",
    "tyk_gitops_drift",
];

#[test]
fn metrics_parse_with_the_prometheus_openmetrics_parser_when_the_scraper_asks_for_it() {
    let (_repo, _daemon, url) = served_repo();
    let node = Node::new();
    let sidecar = Sidecar::start(&url, &node, &[]);
    eventually("ready", WAIT, || sidecar.ready());
    // What Prometheus itself sends.
    let accept = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    let (content_type, text) = scrape(sidecar.addr, Some(accept));
    assert_eq!(
        content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let script = r#"
import sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
names = sorted(f.name for f in text_string_to_metric_families(sys.stdin.read()))
print("\n".join(names))
"#;
    let (ok, names) = pipe("python3", &["-c", script], &text);
    assert!(ok, "parser refused /metrics: {names}\n{text}");
    for name in DOCUMENTED_FAMILIES {
        assert!(names.lines().any(|l| l == name), "{name} not in {names}");
    }
}

/// Regression: /metrics spoke only OpenMetrics, which `promtool check
/// metrics` rejects ("no help text") and 0.0.4 scrapers misread.
#[test]
fn metrics_without_an_openmetrics_accept_are_text_0_0_4_that_promtool_accepts() {
    let (_repo, _daemon, url) = served_repo();
    let node = Node::new();
    let sidecar = Sidecar::start(&url, &node, &[]);
    eventually("ready", WAIT, || sidecar.ready());
    for accept in [None, Some("text/plain;version=0.0.4"), Some("*/*")] {
        let (content_type, text) = scrape(sidecar.addr, accept);
        assert_eq!(
            content_type, "text/plain; version=0.0.4; charset=utf-8",
            "{accept:?}"
        );
        assert!(!text.contains("# EOF"), "{text}");
        for name in DOCUMENTED_FAMILIES {
            assert!(text.contains(&format!("# HELP {name}")), "{name}: {text}");
        }
        // Counters are named with `_total` in HELP, TYPE and samples, as the
        // Go client writes them.
        assert!(
            text.contains("# TYPE tyk_gitops_syncs_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("\ntyk_gitops_syncs_total{result=\"applied\"} 1\n"),
            "{text}"
        );
    }
    let (_, text) = scrape(sidecar.addr, None);
    if Command::new("promtool").arg("--version").output().is_err() {
        println!("SKIPPED promtool check: promtool is not installed (Debian package `prometheus`)");
        return;
    }
    let (ok, verdict) = pipe("promtool", &["check", "metrics"], &text);
    assert!(
        ok,
        "promtool check metrics refused /metrics: {verdict}\n{text}"
    );
}

#[test]
fn healthz_answers_and_status_hides_credentials() {
    let (_repo, daemon, _url) = served_repo();
    let _ = daemon;
    let node = Node::new();
    // Credentials in the URL of an unreachable HTTP remote.
    let port = free_port();
    let url = format!("http://user:hunter2-token@127.0.0.1:{port}/repo.git");
    let sidecar = Sidecar::start(&url, &node, &["--connect-timeout", "1s"]);
    assert_eq!(http_get(sidecar.addr, "/healthz").0, 200);
    eventually("a failed attempt", WAIT, || {
        sidecar.status()["last_attempt"]["result"] == "failed"
    });
    assert_eq!(http_get(sidecar.addr, "/readyz").0, 503);
    let status = sidecar.status().to_string();
    assert!(!status.contains("hunter2"), "{status}");
    assert!(!status.contains(SECRET), "{status}");
    assert!(!sidecar.metrics().contains("hunter2"));
    assert!(sidecar.metric("tyk_gitops_git_failures_total") >= 1.0);
}

#[test]
fn force_rewrites_and_reloads_once_not_on_every_poll() {
    let (_repo, _daemon, url) = served_repo();
    let node = Node::new();
    let first = Sidecar::start(&url, &node, &[]);
    eventually("ready", WAIT, || first.ready());
    drop(first);
    let before = node.emu.reload_count();

    let sidecar = Sidecar::start(&url, &node, &["--force"]);
    eventually("ready", WAIT, || sidecar.ready());
    eventually("the forced reload", WAIT, || {
        node.emu.reload_count() > before
    });
    let after_start = node.emu.reload_count();
    // Five polls at 300 ms with nothing new: no rewrite, no reload.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(node.emu.reload_count(), after_start);
    assert!(sidecar.metric("tyk_gitops_syncs_total{result=\"noop\"}") >= 2.0);
}
