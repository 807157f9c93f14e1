//! `tyk-gitops plan`, as a reviewer runs it in a pull request's CI or
//! against a running fleet: two real checkouts, a served repo with a commit
//! applied under `--root`, and the Tyk emulator.

use serde_json::json;

use crate::support::cli::Tg;
use crate::support::node::{Node, SECRET};
use crate::support::repo::{ConfigRepo, api_json, policy_json};
use crate::support::served_repo;

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
    let out = Tg::plan()
        .args([dir(&new), "--base", dir(&base), "--format", "json"])
        .run()
        .ok();
    let p = out.json();
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

    let human = Tg::plan()
        .args([dir(&new), "--base", dir(&base)])
        .run()
        .stdout;
    assert!(
        human.starts_with("3 APIs (1 added, 1 removed, 1 changed); 1 policy"),
        "{human}"
    );
    assert!(human.contains("  + billing\n  - legacy\n"), "{human}");
    assert!(
        human.contains("  ~ orders (apps/orders.json): proxy.listen_path, proxy.target_url"),
        "{human}"
    );

    let md = Tg::plan()
        .args([dir(&new), "--base", dir(&base), "--format", "markdown"])
        .run()
        .stdout;
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

    let same = Tg::plan().args([dir(&base), "--base", dir(&base)]).run();
    assert_eq!(same.code, 0);
    assert!(same.stdout.starts_with("No changes."), "{}", same.stdout);
}

#[test]
fn plan_exits_1_with_the_findings_when_the_new_side_is_invalid_and_2_without_a_base() {
    let base = base_checkout();
    let broken = ConfigRepo::new();
    broken
        .api("orders")
        .file("apps/typo.json", "{\"api_id\": \"x\",,}");
    broken.commit("typo");
    let out = Tg::plan()
        .args([dir(&broken), "--base", dir(&base), "--format", "json"])
        .run();
    assert_eq!(out.code, 1);
    let plan_json = out.json();
    let errors = plan_json["findings"]["errors"].as_array().expect("errors");
    assert!(
        errors
            .iter()
            .any(|f| f["file"] == "apps/typo.json" && f["rule"] == "json-syntax"),
        "{plan_json}"
    );
    assert_eq!(plan_json["apis"]["removed"], json!(["legacy"]));

    let out = Tg::plan().args([dir(&base)]).run();
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("plan needs a base"));
}

#[test]
fn plan_of_a_ref_compares_with_the_commit_applied_under_root_or_a_given_sha() {
    let (repo, _daemon, url) = served_repo();
    let first = repo.head();
    let node = Node::new();
    let root = node.root().to_str().expect("utf-8 root").to_string();
    Tg::sync(&url, node.root()).run().ok();

    let mut alpha = api_json("alpha");
    alpha["use_keyless"] = json!(false);
    alpha["auth"] = json!({"auth_header_name": "Authorization"});
    repo.json("apps/alpha.json", &alpha).api("beta");
    repo.commit("beta, alpha needs a key");

    let out = Tg::plan()
        .args(["--repo", &url, "--root", &root, "--format", "json"])
        .run()
        .ok();
    let p = out.json();
    assert_eq!(p["apis"]["added"], json!(["beta"]));
    assert_eq!(
        p["apis"]["changed"][0]["fields"],
        json!(["use_keyless", "auth"])
    );
    assert_eq!(node.current_sha(), first, "plan changed what is applied");

    // Against the commit itself: nothing to do.
    let head = repo.head();
    let out = Tg::plan()
        .args(["--repo", &url, "--root", &root, "--against", &head])
        .run()
        .ok();
    assert!(out.stdout.starts_with("No changes."), "{}", out.stdout);
}

#[test]
fn plan_against_a_gateway_compares_only_the_fields_the_commit_sets() {
    let (repo, _daemon, url) = served_repo();
    let node = Node::new();
    Tg::sync_node(&url, &node).run().ok();

    // The checkout the gateway runs: no change, although the gateway lists
    // fields the files never set.
    let secret = tempfile::NamedTempFile::new().expect("secret file");
    std::fs::write(secret.path(), SECRET).expect("write secret");
    let secret = secret.path().to_str().expect("utf-8 path");
    let gw = node.emu.url();
    let plan = || {
        Tg::plan().args([
            dir(&repo),
            "--gateway",
            &gw,
            "--gateway-secret-file",
            secret,
        ])
    };
    let out = plan().run().ok();
    assert!(out.stdout.starts_with("No changes."), "{}", out.stdout);

    let mut alpha = api_json("alpha");
    alpha["proxy"]["target_url"] = json!("http://elsewhere:9000/");
    repo.json("apps/alpha.json", &alpha).api("beta");
    let out = plan().args(["--format", "json"]).run();
    let p = out.json();
    assert_eq!(p["apis"]["added"], json!(["beta"]));
    assert_eq!(
        p["apis"]["changed"],
        json!([{"id": "alpha", "file": "apps/alpha.json", "fields": ["proxy.target_url"]}])
    );

    let out = Tg::plan().args([dir(&repo), "--gateway", &gw]).run();
    assert_eq!(out.code, 2, "no secret is a usage error");
}
