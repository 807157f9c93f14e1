//! What a rejected commit leaves behind: findings that name the file, line
//! and field, never a value from the definitions (they hold secrets), in
//! the `sync` output, `state.json` and `/status`.

use std::time::Duration;

use serde_json::json;

use crate::support::cli::Tg;
use crate::support::node::Node;
use crate::support::repo::{ConfigRepo, api_json};
use crate::support::sidecar::Sidecar;
use crate::support::{eventually, http_get};

const WAIT: Duration = Duration::from_secs(20);

/// Distinctive values, each in a field of a definition that fails a check.
const SECRETS: [&str; 4] = [
    "jwt-hmac-8d1f0c2b",
    "upstream-pass-51e9a7",
    "target-token-c03e44",
    "mcp-secret-77aa19",
];

fn repo_with_secrets_in_bad_definitions() -> ConfigRepo {
    let repo = ConfigRepo::new();
    repo.api("alpha");
    repo.commit("alpha");
    let mut jwt = api_json("jwt");
    jwt["jwt_source"] = json!({"secret": SECRETS[0]});
    repo.json("apps/jwt.json", &jwt);
    let mut upstream = api_json("upstream");
    upstream["upstream_auth"] = json!([format!("basic admin:{}", SECRETS[1])]);
    upstream["proxy"]["listen_path"] = json!("/upstream/");
    repo.json("apps/upstream.json", &upstream);
    let mut target = api_json("target");
    target["proxy"]["listen_path"] = json!("/target/");
    target["proxy"]["target_url"] = json!(format!("http://deploy:{}@ upstream:8080/", SECRETS[2]));
    repo.json("apps/target.json", &target);
    let mut typed = api_json("typed");
    typed["proxy"]["listen_path"] = json!("/typed/");
    typed["name"] = json!([SECRETS[3]]);
    repo.json("apps/typed.json", &typed);
    repo
}

fn assert_no_secret(what: &str, text: &str) {
    for secret in SECRETS {
        assert!(!text.contains(secret), "{what} shows {secret}:\n{text}");
    }
}

#[test]
fn a_rejected_commit_shows_no_value_from_its_definitions() {
    let repo = repo_with_secrets_in_bad_definitions();
    let bad = repo.commit("definitions with secrets, each invalid");

    for format in ["text", "json"] {
        let node = Node::new();
        let out = Tg::sync(&repo.url(), node.root())
            .args(["--log-format", format])
            .run();
        let shown = out.output();
        assert_eq!(out.code, 1, "{shown}");
        assert_no_secret(&format!("sync --log-format {format}"), &shown);
        // The findings still say where and what.
        for file in ["apps/jwt.json", "apps/upstream.json", "apps/target.json"] {
            assert!(shown.contains(file), "{file} not named:\n{shown}");
        }
        assert!(shown.contains("invalid-target-url"), "{shown}");
        let state = std::fs::read_to_string(node.root().join("state.json")).unwrap();
        assert!(state.contains(&bad), "the rejection is recorded: {state}");
        assert!(state.contains("/jwt_source"), "{state}");
        assert_no_secret("state.json", &state);
    }

    // A sidecar rejecting the same commit, as /status shows it.
    let node = Node::new();
    let car = Sidecar::start(&repo.url(), &node, &["--period", "1h"]);
    eventually("rejected", WAIT, || {
        car.status()["rejected"]
            .as_array()
            .is_some_and(|r| r.iter().any(|x| x["sha"] == *bad.as_str()))
    });
    let (code, status) = http_get(car.addr, "/status");
    assert_eq!(code, 200);
    assert!(status.contains("/upstream_auth"), "{status}");
    assert_no_secret("/status", &status);
    assert_no_secret("the sidecar's log", &car.stderr());
}

#[test]
fn a_commit_of_two_thousand_bad_files_keeps_fifty_findings_and_a_small_status() {
    let repo = ConfigRepo::new();
    repo.api("alpha");
    repo.commit("alpha");
    for i in 0..2000 {
        repo.file(&format!("apps/bad-{i:04}.json"), "{\"api_id\": ");
    }
    let bad = repo.commit("2,000 files that do not parse");
    let node = Node::new();
    let car = Sidecar::start(&repo.url(), &node, &["--period", "1h"]);
    eventually("rejected", WAIT, || {
        car.status()["rejected"]
            .as_array()
            .is_some_and(|r| r.iter().any(|x| x["sha"] == *bad.as_str()))
    });
    let (code, text) = http_get(car.addr, "/status");
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&text).unwrap();
    let rejection = &status["rejected"][0];
    assert_eq!(rejection["findings"].as_array().map(Vec::len), Some(50));
    let message = rejection["message"].as_str().unwrap_or_default();
    assert!(message.contains("2000 error(s)"), "{message}");
    assert!(message.contains("first 50 of 2000 findings"), "{message}");
    let state = std::fs::metadata(node.root().join("state.json"))
        .unwrap()
        .len();
    println!(
        "RESULT 2,000 bad files: /status {} bytes, state.json {state} bytes",
        text.len()
    );
    assert!(text.len() < 64 * 1024, "/status is {} bytes", text.len());
}
