//! A tyk-sync repo as people have it: Dashboard API exports
//! (`{"api_definition": …}`, with `"oas"` for a Tyk OAS API) and Dashboard
//! policies (`_id`, empty `id`), listed in a `.tyk.json`. It syncs to the
//! gateway with no edit by the user, and findings point into the files the
//! user wrote.

use std::fs;
use std::path::Path;

use serde_json::{Value, json};

use crate::support::cli::Tg;
use crate::support::node::Node;
use crate::support::repo::{ConfigRepo, api_json};

fn example(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/config-repo/apps")
        .join(name);
    serde_json::from_slice(&fs::read(path).expect("example file")).expect("json")
}

/// The repo tyk-sync would have written from a Dashboard.
fn tyk_sync_repo(orders: Value) -> ConfigRepo {
    let repo = ConfigRepo::new();
    let export = json!({"api_model": {}, "api_definition": orders, "hook_references": [],
        "is_site": false, "sort_by": 0});
    let petstore =
        json!({"api_definition": example("petstore.json"), "oas": example("petstore-oas.json")});
    let policy = json!({"_id": "5f8e1c2d9a0b", "id": "", "name": "Gold", "org_id": "default",
        "rate": 100, "per": 60, "quota_max": -1,
        "access_rights": {"orders": {"api_id": "orders", "api_name": "Orders", "versions": ["Default"]}}});
    let index = json!({"type": "apidef",
        "files": [{"file": "api-orders.json"}, {"file": "api-petstore.json"}],
        "policies": [{"file": "policy-gold.json"}]});
    repo.file(
        "api-orders.json",
        serde_json::to_string_pretty(&export).expect("json"),
    )
    .file(
        "api-petstore.json",
        serde_json::to_string_pretty(&petstore).expect("json"),
    )
    .file(
        "policy-gold.json",
        serde_json::to_string_pretty(&policy).expect("json"),
    )
    .json(".tyk.json", &index);
    repo.commit("tyk-sync dump");
    repo
}

#[test]
fn a_tyk_sync_repo_of_dashboard_exports_syncs_and_verifies_unedited() {
    let repo = tyk_sync_repo(api_json("orders"));
    let node = Node::new();
    Tg::sync_node(&repo.url(), &node).run().ok();
    assert_eq!(node.apis(), ["orders", "petstore"]);
    assert_eq!(
        node.emu.loaded_policy_ids().into_iter().collect::<Vec<_>>(),
        ["5f8e1c2d9a0b"]
    );
    // The revision holds the gateway's form: a classic file and the pair.
    let classic: Value = serde_json::from_slice(
        &fs::read(node.current().join("apps/api-orders.json")).expect("file"),
    )
    .expect("json");
    assert_eq!(classic["api_id"], "orders");
    assert!(classic.get("api_definition").is_none());
    let oas: Value = serde_json::from_slice(
        &fs::read(node.current().join("apps/api-petstore-oas.json")).expect("companion"),
    )
    .expect("json");
    assert_eq!(oas["openapi"], example("petstore-oas.json")["openapi"]);
}

#[test]
fn findings_in_an_export_point_at_the_line_the_user_wrote() {
    let mut orders = api_json("orders");
    orders["proxy"]["listen_path"] = json!("/orders v2/");
    let repo = tyk_sync_repo(orders);
    let report = Tg::validate(repo.path())
        .args(["--format", "json"])
        .run()
        .code(1)
        .json();
    let finding = report["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .find(|e| e["rule"] == "invalid-listen-path")
        .unwrap_or_else(|| panic!("{report}"))
        .clone();
    assert_eq!(finding["file"], "api-orders.json");
    let written = fs::read_to_string(repo.path().join("api-orders.json")).expect("file");
    let line = written
        .lines()
        .position(|l| l.contains("/orders v2/"))
        .expect("line")
        + 1;
    assert_eq!(finding["line"], line, "{finding}");
}
