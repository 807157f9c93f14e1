//! `POST /webhook` on the real sidecar: with `--period 1h` only a webhook
//! can make a new commit go live, so each story shows what a Git host's
//! request does (or must not do) to the gateway.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tempfile::TempDir;

use crate::support::node::{Node, ids};
use crate::support::repo::ConfigRepo;
use crate::support::sidecar::Sidecar;
use crate::support::{eventually, http, http_get};

const WAIT: Duration = Duration::from_secs(20);
const HOOK_SECRET: &str = "hook-secret-0d9c2e";

/// A sidecar that polls once an hour, so only the webhook triggers syncs.
struct Hooked {
    sidecar: Sidecar,
    /// Holds the webhook secret file the sidecar reads.
    dir: TempDir,
}

impl Hooked {
    fn start(repo: &ConfigRepo, node: &Node, secret: Option<&str>) -> Hooked {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("webhook-secret");
        let mut args = vec!["--log-level", "debug", "--ref", "main"];
        args.extend(["--period", "1h", "--verify-period", "1h"]);
        if let Some(secret) = secret {
            // With the newline `echo` leaves: it must be trimmed.
            fs::write(&file, format!("{secret}\n")).unwrap();
            args.extend(["--webhook-secret-file", file.to_str().unwrap()]);
        }
        let sidecar = Sidecar::start(&repo.url(), node, &args);
        let hooked = Hooked { sidecar, dir };
        eventually("ready", WAIT, || hooked.sidecar.ready());
        hooked
    }

    fn secret_file(&self) -> PathBuf {
        self.dir.path().join("webhook-secret")
    }

    fn stderr(&self) -> String {
        self.sidecar.stderr()
    }

    fn post(&self, headers: &[(&str, &str)], body: &[u8]) -> (u16, Value) {
        let (code, text) = http(self.sidecar.addr, "POST", "/webhook", headers, body);
        let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text:?}"));
        (code, json)
    }

    /// A GitHub push of `git_ref`, signed with `secret`.
    fn github_push(&self, secret: &str, git_ref: &str, sha: &str) -> (u16, Value) {
        let body = json!({"ref": git_ref, "after": sha, "repository": {"full_name": "ops/config"}})
            .to_string();
        let sig = format!("sha256={}", sign(secret, body.as_bytes()));
        self.post(
            &[
                ("X-GitHub-Event", "push"),
                ("X-Hub-Signature-256", &sig),
                ("Content-Type", "application/json"),
            ],
            body.as_bytes(),
        )
    }

    fn metric(&self, sample: &str) -> f64 {
        self.sidecar.metric(sample)
    }

    /// Syncs run since start (the start sync included), whatever their result.
    fn syncs(&self) -> f64 {
        ["applied", "noop", "rejected", "failed"]
            .iter()
            .map(|r| self.metric(&format!("tyk_gitops_syncs_total{{result=\"{r}\"}}")))
            .sum()
    }

    fn webhooks(&self, result: &str) -> f64 {
        self.metric(&format!(
            "tyk_gitops_webhook_requests_total{{result=\"{result}\"}}"
        ))
    }
}

fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

fn repo_with_alpha() -> ConfigRepo {
    let repo = ConfigRepo::new();
    repo.api("alpha").policy("gold", &["alpha"]);
    repo.commit("alpha");
    repo
}

#[test]
fn a_signed_github_push_for_our_branch_makes_the_new_commit_go_live() {
    let repo = repo_with_alpha();
    let node = Node::new();
    let sidecar = Hooked::start(&repo, &node, Some(HOOK_SECRET));
    repo.api("beta");
    let sha = repo.commit("beta");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(node.apis(), ids(&["alpha"]), "synced without a trigger");

    let (code, body) = sidecar.github_push(HOOK_SECRET, "refs/heads/main", &sha);
    assert_eq!(code, 202, "{body}");
    assert_eq!(body["status"], "queued");
    assert_eq!(body["sha"], *sha.as_str());
    eventually("beta live", WAIT, || node.apis() == ids(&["alpha", "beta"]));
    eventually("the new sha current", WAIT, || node.current_sha() == sha);
    assert_eq!(sidecar.webhooks("accepted"), 1.0);
}

#[test]
fn refused_pings_and_other_branches_change_nothing() {
    let repo = repo_with_alpha();
    let node = Node::new();
    let sidecar = Hooked::start(&repo, &node, Some(HOOK_SECRET));
    repo.api("beta");
    let sha = repo.commit("beta");
    let reloads = node.emu.reload_count();
    let syncs = sidecar.syncs();

    let (code, body) = sidecar.github_push("not-the-secret", "refs/heads/main", &sha);
    assert_eq!(code, 401, "{body}");
    assert_eq!(body["status"], "unauthorized");
    assert_eq!(body["reason"], "x-hub-signature-256 does not match");

    let (code, body) = sidecar.post(
        &[("X-GitHub-Event", "push")],
        br#"{"ref":"refs/heads/main"}"#,
    );
    assert_eq!(code, 401, "{body}");

    let (code, body) = sidecar.github_push(HOOK_SECRET, "refs/heads/dev", &sha);
    assert_eq!(code, 202, "{body}");
    assert_eq!(body["status"], "ignored");
    assert_eq!(body["reason"], "push to refs/heads/dev, not main");

    let ping = br#"{"zen":"Design for failure.","hook_id":7}"#;
    let sig = format!("sha256={}", sign(HOOK_SECRET, ping));
    let (code, body) = sidecar.post(
        &[("X-GitHub-Event", "ping"), ("X-Hub-Signature-256", &sig)],
        ping,
    );
    assert_eq!((code, &body["status"]), (200, &json!("pong")));

    let huge = vec![b' '; 1024 * 1024 + 1];
    let sig = format!("sha256={}", sign(HOOK_SECRET, &huge));
    let code = post_tolerant(
        sidecar.sidecar.addr,
        &[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &sig)],
        &huge,
    );
    assert_eq!(code, 413);

    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(node.apis(), ids(&["alpha"]));
    assert_eq!(node.emu.reload_count(), reloads);
    assert_eq!(sidecar.syncs(), syncs);
    assert_eq!(sidecar.webhooks("unauthorized"), 2.0);
    assert_eq!(sidecar.webhooks("ignored"), 1.0);
    assert_eq!(sidecar.webhooks("ping"), 1.0);
    assert_eq!(sidecar.webhooks("too_large"), 1.0);
    assert_eq!(sidecar.webhooks("accepted"), 0.0);
}

/// Sends a request and reads the status, tolerating a server that answers
/// and closes before taking the whole body (as it may for 413).
fn post_tolerant(addr: SocketAddr, headers: &[(&str, &str)], body: &[u8]) -> u16 {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut head = format!(
        "POST /webhook HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    String::from_utf8_lossy(&raw)
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[test]
fn without_a_secret_the_webhook_is_not_found() {
    let repo = repo_with_alpha();
    let node = Node::new();
    let sidecar = Hooked::start(&repo, &node, None);
    let sha = repo.head();
    let (code, body) = sidecar.github_push(HOOK_SECRET, "refs/heads/main", &sha);
    assert_eq!(code, 404, "{body}");
}

#[test]
fn gitlab_token_and_gitea_signature_are_accepted_and_the_secret_never_shows() {
    let repo = repo_with_alpha();
    let node = Node::new();
    let sidecar = Hooked::start(&repo, &node, Some(HOOK_SECRET));

    repo.api("beta");
    let sha = repo.commit("beta");
    let body =
        json!({"object_kind": "push", "ref": "refs/heads/main", "checkout_sha": sha}).to_string();
    let (code, reply) = sidecar.post(
        &[
            ("X-Gitlab-Event", "Push Hook"),
            ("X-Gitlab-Token", HOOK_SECRET),
        ],
        body.as_bytes(),
    );
    assert_eq!((code, &reply["status"]), (202, &json!("queued")), "{reply}");
    eventually("beta live", WAIT, || node.apis() == ids(&["alpha", "beta"]));

    // A wrong token is refused without being echoed.
    let (code, reply) = sidecar.post(
        &[("X-Gitlab-Event", "Push Hook"), ("X-Gitlab-Token", "guess")],
        body.as_bytes(),
    );
    assert_eq!(code, 401, "{reply}");

    repo.api("gamma");
    let sha = repo.commit("gamma");
    let body = json!({"ref": "refs/heads/main", "after": sha}).to_string();
    let sig = sign(HOOK_SECRET, body.as_bytes());
    let (code, reply) = sidecar.post(
        &[("X-Gitea-Event", "push"), ("X-Gitea-Signature", &sig)],
        body.as_bytes(),
    );
    assert_eq!(code, 202, "{reply}");
    eventually("gamma live", WAIT, || {
        node.apis() == ids(&["alpha", "beta", "gamma"])
    });

    let status = http_get(sidecar.sidecar.addr, "/status").1;
    let metrics = http_get(sidecar.sidecar.addr, "/metrics").1;
    let stderr = sidecar.stderr();
    assert!(stderr.contains("webhook"), "no webhook log line: {stderr}");
    for (what, text) in [
        ("/status", status),
        ("/metrics", metrics),
        ("stderr", stderr),
    ] {
        assert!(
            !text.contains(HOOK_SECRET),
            "the secret is in {what}:\n{text}"
        );
    }
}

#[test]
fn a_rotated_secret_applies_without_restart() {
    let repo = repo_with_alpha();
    let node = Node::new();
    let sidecar = Hooked::start(&repo, &node, Some(HOOK_SECRET));
    let sha = repo.head();
    fs::write(sidecar.secret_file(), "rotated-secret\n").unwrap();
    let (code, _) = sidecar.github_push(HOOK_SECRET, "refs/heads/main", &sha);
    assert_eq!(code, 401);
    let (code, _) = sidecar.github_push("rotated-secret", "refs/heads/main", &sha);
    assert_eq!(code, 202);
}

#[test]
fn a_burst_of_five_hundred_pushes_coalesces_into_at_most_two_syncs() {
    // A valid-signature flood (issue 7): a Git host retrying, or a leaked
    // secret replayed, must not turn into one sync per request.
    const BURST: usize = 500;
    let repo = repo_with_alpha();
    let node = Node::new();
    let sidecar = Hooked::start(&repo, &node, Some(HOOK_SECRET));
    let before = sidecar.syncs();
    // A slow reload keeps the first sync busy while the burst arrives.
    node.emu.set_reload_delay(Duration::from_millis(800));
    repo.api("beta");
    let sha = repo.commit("beta");

    // 100 senders of 5 pushes each: a burst within a second or so, without
    // 500 client threads, which a loaded test process cannot all schedule
    // within the server's 10 s header-read timeout (the server then closes
    // connections whose headers never came, and the clients see a reset).
    const SENDERS: usize = 100;
    let sidecar = Arc::new(sidecar);
    let start = Arc::new(Barrier::new(SENDERS));
    let senders: Vec<_> = (0..SENDERS)
        .map(|_| {
            let (sidecar, start, sha) = (sidecar.clone(), start.clone(), sha.clone());
            std::thread::spawn(move || {
                start.wait();
                (0..BURST / SENDERS)
                    .map(|_| sidecar.github_push(HOOK_SECRET, "refs/heads/main", &sha))
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for sender in senders {
        for (code, body) in sender.join().unwrap() {
            assert_eq!(code, 202, "{body}");
            assert!(
                ["queued", "already queued", "current"]
                    .contains(&body["status"].as_str().unwrap_or("")),
                "{body}"
            );
        }
    }
    eventually("beta live", WAIT, || node.apis() == ids(&["alpha", "beta"]));
    std::thread::sleep(Duration::from_secs(2));
    let syncs = sidecar.syncs() - before;
    assert!((1.0..=2.0).contains(&syncs), "{syncs} syncs for one burst");
    println!("RESULT valid flood: {BURST} signed pushes -> {syncs} sync(s)");
    // Pushes that arrive once beta runs need no sync at all.
    assert_eq!(
        sidecar.webhooks("accepted") + sidecar.webhooks("current"),
        BURST as f64
    );
}

#[test]
fn a_body_trickling_in_slower_than_the_read_timeout_gets_408() {
    let repo = repo_with_alpha();
    let node = Node::new();
    let sidecar = Hooked::start(&repo, &node, Some(HOOK_SECRET));
    let sig = format!("sha256={}", sign(HOOK_SECRET, b"{}"));
    let mut stream = TcpStream::connect(sidecar.sidecar.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    // Promise 100 bytes, send 1, then stall: a slow-loris sender.
    let head = format!(
        "POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\nX-Hub-Signature-256: {sig}\r\n\r\n{{"
    );
    stream.write_all(head.as_bytes()).unwrap();
    let asked = std::time::Instant::now();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(asked.elapsed() < Duration::from_secs(15));
    assert_eq!(sidecar.webhooks("invalid"), 1.0);
}

#[test]
fn a_replayed_signed_push_makes_a_few_syncs_not_one_per_request() {
    // A captured, validly signed delivery replayed: its sha is not the one
    // live, so "already current" does not stop it; the interval between
    // triggered syncs does.
    let repo = repo_with_alpha();
    let node = Node::new();
    let sidecar = Hooked::start(&repo, &node, Some(HOOK_SECRET));
    let before = sidecar.syncs();
    let replayed = "5".repeat(40);
    for _ in 0..200 {
        std::thread::sleep(Duration::from_millis(10));
        let (code, body) = sidecar.github_push(HOOK_SECRET, "refs/heads/main", &replayed);
        assert_eq!(code, 202, "{body}");
    }
    std::thread::sleep(Duration::from_secs(2));
    let syncs = sidecar.syncs() - before;
    println!("RESULT replayed push: 200 requests -> {syncs} sync(s)");
    assert!((1.0..=10.0).contains(&syncs), "{syncs} syncs");
}
