//! One config repo, two environments: `${VAR}` in definitions and policies,
//! values from `--vars-file` (a file, or a folder as a mounted Secret) and
//! `TYK_GITOPS_VAR_*`, substituted before validation; an unset variable is
//! refused before anything is written, and no value shows in the output.

use std::fs;

use serde_json::{Value, json};

use crate::support::cli::Tg;
use crate::support::node::Node;
use crate::support::repo::{ConfigRepo, api_json, policy_json};
use crate::support::served_repo;

/// `orders` with its upstream, port and org from variables; a policy whose
/// org is one too; a literal `$${…}` that must stay as written.
fn templated(repo: &ConfigRepo) {
    let mut orders = api_json("orders");
    orders["org_id"] = json!("${ORG}");
    orders["proxy"]["target_url"] = json!("http://${ORDERS_HOST}:${ORDERS_PORT:=8080}/");
    orders["config_data"] = json!({"note": "$${NOT_A_VAR}"});
    let mut gold = policy_json("gold", &["orders"]);
    gold["org_id"] = json!("${ORG}");
    repo.json("apps/orders.json", &orders)
        .json("policies/gold.json", &gold)
        .file(
            "templates/error.json",
            "{\"error\": \"${NOT_SUBSTITUTED}\"}",
        );
}

fn written(node: &Node, rel: &str) -> Value {
    serde_json::from_slice(&fs::read(node.current().join(rel)).expect("revision file"))
        .expect("json")
}

#[test]
fn one_repo_serves_staging_and_production_through_variables() {
    let (repo, _daemon, url) = served_repo();
    templated(&repo);
    repo.commit("templated");
    let env = tempfile::tempdir().expect("tempdir");
    let staging = env.path().join("staging.env");
    fs::write(
        &staging,
        "# staging\nORG=acme-staging\nORDERS_HOST=orders.staging.internal\n",
    )
    .expect("write");
    // Production's values as a Kubernetes Secret volume: one file per key.
    let prod = env.path().join("prod");
    fs::create_dir_all(prod.join("..data")).expect("mkdir");
    fs::write(prod.join("ORG"), "acme\n").expect("write");
    fs::write(prod.join("ORDERS_HOST"), "orders.prod.internal\n").expect("write");
    fs::write(prod.join("ORDERS_PORT"), "9443").expect("write");

    let a = Node::new();
    Tg::sync(&url, a.root())
        .arg("--vars-file")
        .arg(&staging)
        .run()
        .ok();
    let orders = written(&a, "apps/orders.json");
    assert_eq!(
        orders["proxy"]["target_url"],
        "http://orders.staging.internal:8080/"
    );
    assert_eq!(orders["org_id"], "acme-staging");
    assert_eq!(orders["config_data"]["note"], "${NOT_A_VAR}");
    assert_eq!(written(&a, "policies/gold.json")["org_id"], "acme-staging");
    assert_eq!(
        fs::read_to_string(a.current().join("templates/error.json")).expect("template"),
        "{\"error\": \"${NOT_SUBSTITUTED}\"}"
    );

    let b = Node::new();
    Tg::sync(&url, b.root())
        .arg("--vars-file")
        .arg(&prod)
        .run()
        .ok();
    assert_eq!(
        written(&b, "apps/orders.json")["proxy"]["target_url"],
        "http://orders.prod.internal:9443/"
    );
    assert_eq!(written(&b, "apps/orders.json")["org_id"], "acme");

    // The environment alone, without a file.
    let c = Node::new();
    Tg::sync(&url, c.root())
        .env("TYK_GITOPS_VAR_ORG", "env-org")
        .env("TYK_GITOPS_VAR_ORDERS_HOST", "orders.env")
        .run()
        .ok();
    assert_eq!(
        written(&c, "apps/orders.json")["proxy"]["target_url"],
        "http://orders.env:8080/"
    );
}

#[test]
fn an_unset_variable_is_refused_before_anything_is_written_and_values_never_show() {
    let (repo, _daemon, url) = served_repo();
    templated(&repo);
    let mut billing = api_json("billing");
    // A secret value that makes the target unparsable: the finding about it
    // must name the variable, not show the value.
    billing["proxy"]["target_url"] = json!("${BILLING_URL}");
    repo.json("apps/billing.json", &billing);
    repo.commit("needs ORDERS_HOST and BILLING_URL");
    let env = tempfile::tempdir().expect("tempdir");
    let vars = env.path().join("vars.env");
    fs::write(
        &vars,
        "ORG=acme\nBILLING_URL=http://user:s3cr3t-t0ken@billing host/\n",
    )
    .expect("write");

    let node = Node::new();
    let out = Tg::sync(&url, node.root())
        .arg("--vars-file")
        .arg(&vars)
        .run()
        .code(1);
    let err = out.stderr;
    assert!(err.contains("apps/orders.json"), "{err}");
    assert!(err.contains("${ORDERS_HOST} has no value"), "{err}");
    assert!(err.contains("unset-variable"), "{err}");
    assert!(err.contains("invalid-target-url"), "{err}");
    assert!(!err.contains("s3cr3t-t0ken"), "a value leaked: {err}");
    assert!(err.contains("${BILLING_URL}"), "{err}");
    assert!(!node.current().exists(), "nothing may be written");
    let state = fs::read_to_string(node.root().join("state.json")).expect("state");
    assert!(
        !state.contains("s3cr3t-t0ken"),
        "a value leaked into state.json"
    );
    assert!(state.contains("unset-variable"), "{state}");

    // A line and column a user can go to.
    let line = err
        .lines()
        .find(|l| l.contains("ORDERS_HOST} has no value"))
        .expect("finding line");
    let orders = fs::read_to_string(repo.path().join("apps/orders.json")).expect("orders");
    let expected_line = orders
        .lines()
        .position(|l| l.contains("${ORDERS_HOST}"))
        .expect("line")
        + 1;
    assert!(
        line.contains(&format!("{expected_line}:")),
        "{line} (expected line {expected_line})"
    );
}

#[test]
fn validate_and_plan_show_one_environment() {
    let repo = ConfigRepo::new();
    templated(&repo);
    repo.commit("templated");
    let env = tempfile::tempdir().expect("tempdir");
    let staging = env.path().join("staging.env");
    fs::write(&staging, "ORG=acme\nORDERS_HOST=orders.staging\n").expect("write");
    let prod = env.path().join("prod.env");
    fs::write(&prod, "ORG=acme\nORDERS_HOST=orders.prod\n").expect("write");
    let dir = repo.path().to_str().expect("utf-8");

    Tg::validate(dir)
        .arg("--vars-file")
        .arg(&staging)
        .run()
        .ok();
    let missing = Tg::validate(dir)
        .args(["--format", "json"])
        .env("TYK_GITOPS_VAR_ORG", "acme")
        .run()
        .code(1);
    let report = missing.json();
    let errors = report["errors"].as_array().expect("errors");
    assert!(
        errors.iter().any(|e| e["rule"] == "unset-variable"
            && e["message"]
                .as_str()
                .is_some_and(|m| m.contains("ORDERS_HOST"))),
        "{report}"
    );

    // The checkout planned with production's values on both sides: nothing
    // changes, and no value shows.
    let same = Tg::plan()
        .args([dir, "--base", dir, "--format", "json", "--vars-file"])
        .arg(&prod)
        .run()
        .ok();
    let p = same.json();
    assert_eq!(p["apis"]["changed"], json!([]));
    assert!(!same.stdout.contains("orders.prod"));
}
