//! `tyk-gitops plan`, as a reviewer runs it in a pull request's CI or
//! against a running fleet: two real checkouts, a served repo with a commit
//! applied under `--root`, and the Tyk emulator.

use std::process::{Command, Output};

use serde_json::{Value, json};

use crate::support::bin;
use crate::support::node::{Node, SECRET};
use crate::support::repo::{ConfigRepo, api_json, policy_json};
use crate::support::served_repo;

fn plan(args: &[&str]) -> Output {
    Command::new(bin())
        .arg("plan")
        .args(args)
        .env_remove("TYK_GITOPS_GATEWAY_SECRET")
        .output()
        .expect("run tyk-gitops plan")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The base of a pull request: two APIs, a policy, a script.
fn base_checkout() -> ConfigRepo {
    let repo = ConfigRepo::new();
    repo.api("orders")
        .api("legacy")
        .policy("gold", &["orders"])
        .file("middleware/auth.js", "var a = 1;\n");
    repo.commit("base");
    repo
}

/// The pull request: `orders` moves upstream and path, `legacy` goes,
/// `billing` comes, `gold` doubles its rate, the script changes.
fn changed_checkout() -> ConfigRepo {
    let repo = ConfigRepo::new();
    let mut orders = api_json("orders");
    orders["proxy"]["listen_path"] = json!("/orders/v2/");
    orders["proxy"]["target_url"] = json!("http://orders.internal:8080/");
    let mut gold = policy_json("gold", &["orders"]);
    gold["rate"] = json!(200);
    repo.json("apps/orders.json", &orders)
        .api("billing")
        .json("policies/gold.json", &gold)
        .file("middleware/auth.js", "var a = 2;\n");
    repo.commit("change");
    repo
}

fn dir(repo: &ConfigRepo) -> &str {
    repo.path().to_str().expect("utf-8 temp path")
}

#[test]
fn plan_of_two_checkouts_lists_exactly_the_changed_apis_policies_and_fields() {
    let (base, new) = (base_checkout(), changed_checkout());
    let out = plan(&[dir(&new), "--base", dir(&base), "--format", "json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p: Value = serde_json::from_slice(&out.stdout).expect("json plan");
    assert_eq!(p["apis"]["added"], json!(["billing"]));
    assert_eq!(p["apis"]["removed"], json!(["legacy"]));
    assert_eq!(
        p["apis"]["changed"],
        json!([{"id": "orders", "file": "apps/orders.json",
                "fields": ["proxy.listen_path", "proxy.target_url"]}])
    );
    assert_eq!(p["policies"]["added"], json!([]));
    assert_eq!(
        p["policies"]["changed"],
        json!([{"id": "gold", "file": "policies/gold.json", "fields": ["rate"]}])
    );
    assert_eq!(p["files"]["changed"], json!(["middleware/auth.js"]));
    assert_eq!(p["findings"], json!({"errors": [], "warnings": []}));

    let human = stdout(&plan(&[dir(&new), "--base", dir(&base)]));
    assert!(
        human.starts_with("3 APIs (1 added, 1 removed, 1 changed); 1 policy"),
        "{human}"
    );
    assert!(human.contains("  + billing\n  - legacy\n"), "{human}");
    assert!(
        human.contains("  ~ orders (apps/orders.json): proxy.listen_path, proxy.target_url"),
        "{human}"
    );

    let md = stdout(&plan(&[
        dir(&new),
        "--base",
        dir(&base),
        "--format",
        "markdown",
    ]));
    assert!(
        md.contains("| kind | id | change | file | fields |"),
        "{md}"
    );
    assert!(
        md.contains(
            "| API | `orders` | changed | apps/orders.json | proxy.listen_path, proxy.target_url |"
        ),
        "{md}"
    );
    assert!(
        md.contains("| policy | `gold` | changed | policies/gold.json | rate |"),
        "{md}"
    );
    assert!(
        md.contains("| file | `middleware/auth.js` | changed | | |"),
        "{md}"
    );

    let same = plan(&[dir(&base), "--base", dir(&base)]);
    assert_eq!(same.status.code(), Some(0));
    assert!(
        stdout(&same).starts_with("No changes."),
        "{}",
        stdout(&same)
    );
}

#[test]
fn plan_exits_1_with_the_findings_when_the_new_side_is_invalid_and_2_without_a_base() {
    let base = base_checkout();
    let broken = ConfigRepo::new();
    broken
        .api("orders")
        .file("apps/typo.json", "{\"api_id\": \"x\",,}");
    broken.commit("typo");
    let out = plan(&[dir(&broken), "--base", dir(&base), "--format", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let plan_json: Value = serde_json::from_slice(&out.stdout).expect("json plan");
    let errors = plan_json["findings"]["errors"].as_array().expect("errors");
    assert!(
        errors
            .iter()
            .any(|f| f["file"] == "apps/typo.json" && f["rule"] == "json-syntax"),
        "{plan_json}"
    );
    assert_eq!(plan_json["apis"]["removed"], json!(["legacy"]));

    let out = plan(&[dir(&base)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("plan needs a base"));
}

#[test]
fn plan_of_a_ref_compares_with_the_commit_applied_under_root_or_a_given_sha() {
    let (repo, _daemon, url) = served_repo();
    let first = repo.head();
    let node = Node::new();
    let root = node.root().to_str().expect("utf-8 root").to_string();
    let synced = Command::new(bin())
        .args(["sync", "--repo", &url, "--root", &root])
        .output()
        .expect("sync");
    assert_eq!(
        synced.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&synced.stderr)
    );

    let mut alpha = api_json("alpha");
    alpha["use_keyless"] = json!(false);
    alpha["auth"] = json!({"auth_header_name": "Authorization"});
    repo.json("apps/alpha.json", &alpha).api("beta");
    repo.commit("beta, alpha needs a key");

    let out = plan(&["--repo", &url, "--root", &root, "--format", "json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p: Value = serde_json::from_slice(&out.stdout).expect("json plan");
    assert_eq!(p["apis"]["added"], json!(["beta"]));
    assert_eq!(
        p["apis"]["changed"][0]["fields"],
        json!(["use_keyless", "auth"])
    );
    assert_eq!(node.current_sha(), first, "plan changed what is applied");

    // Against the commit itself: nothing to do.
    let head = repo.head();
    let out = plan(&["--repo", &url, "--root", &root, "--against", &head]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout(&out).starts_with("No changes."), "{}", stdout(&out));
}

#[test]
fn plan_against_a_gateway_compares_only_the_fields_the_commit_sets() {
    let (repo, _daemon, url) = served_repo();
    let node = Node::new();
    let root = node.root().to_str().expect("utf-8 root").to_string();
    let synced = Command::new(bin())
        .args([
            "sync",
            "--repo",
            &url,
            "--root",
            &root,
            "--gateway",
            &node.emu.url(),
        ])
        .env("TYK_GITOPS_GATEWAY_SECRET", SECRET)
        .output()
        .expect("sync");
    assert_eq!(
        synced.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&synced.stderr)
    );

    // The checkout the gateway runs: no change, although the gateway lists
    // fields the files never set.
    let secret = tempfile::NamedTempFile::new().expect("secret file");
    std::fs::write(secret.path(), SECRET).expect("write secret");
    let secret = secret.path().to_str().expect("utf-8 path");
    let gw = node.emu.url();
    let out = plan(&[
        dir(&repo),
        "--gateway",
        &gw,
        "--gateway-secret-file",
        secret,
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout(&out).starts_with("No changes."), "{}", stdout(&out));

    let mut alpha = api_json("alpha");
    alpha["proxy"]["target_url"] = json!("http://elsewhere:9000/");
    repo.json("apps/alpha.json", &alpha).api("beta");
    let out = plan(&[
        dir(&repo),
        "--gateway",
        &gw,
        "--gateway-secret-file",
        secret,
        "--format",
        "json",
    ]);
    let p: Value = serde_json::from_slice(&out.stdout).expect("json plan");
    assert_eq!(p["apis"]["added"], json!(["beta"]));
    assert_eq!(
        p["apis"]["changed"],
        json!([{"id": "alpha", "file": "apps/alpha.json", "fields": ["proxy.target_url"]}])
    );

    let out = plan(&[dir(&repo), "--gateway", &gw]);
    assert_eq!(out.status.code(), Some(2), "no secret is a usage error");
}
