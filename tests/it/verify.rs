//! What "verified" means against the calibrated gateway emulator, as a
//! user of `tyk-gitops sync` sees it: an MCP pair on v5.14 and on v5.8, an
//! API the gateway lists but does not route, the health check's path.

use std::fs;

use serde_json::{Value, json};

use crate::support::cli::{Ran, Tg};
use crate::support::node::Node;
use crate::support::repo::{ConfigRepo, api_json};
use crate::support::tyk::{EmuConfig, TykVersion};

fn on(version: TykVersion) -> Node {
    Node::with(EmuConfig {
        version,
        ..EmuConfig::default()
    })
}

/// `apps/tools.json` and `apps/tools-mcp.json`: an MCP pair.
fn mcp_repo() -> ConfigRepo {
    let repo = ConfigRepo::new();
    let mut tools = api_json("tools");
    tools["is_oas"] = json!(true);
    tools["application_protocol"] = json!("mcp");
    tools["json_rpc_version"] = json!("2.0");
    repo.api("plain").json("apps/tools.json", &tools).json(
        "apps/tools-mcp.json",
        &json!({
            "openapi": "3.0.3", "info": {"title": "Tools", "version": "1.0.0"}, "paths": {},
            "x-tyk-api-gateway": {
                "info": {"id": "tools", "name": "Tools", "state": {"active": true}},
                "upstream": {"url": "http://upstream:8080/"},
                "server": {"listenPath": {"value": "/tools/", "strip": true}}
            }
        }),
    );
    repo.commit("an MCP pair");
    repo
}

/// v5.14 hides MCP APIs from a plain `/tyk/apis`: verify asks with
/// `include_types=mcp`, so the pair verifies, and the next sync finds the
/// gateway in step instead of reloading it again and again.
#[test]
fn an_mcp_pair_applies_and_verifies_on_v5_14_without_a_reload_loop() {
    let repo = mcp_repo();
    let node = on(TykVersion::V5_14);
    let Ran { code, stderr, .. } = Tg::sync_node(&repo.url(), &node).run();
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(node.apis(), ["plain", "tools"]);
    let reloads = node.emu.reload_count();
    let Ran { code, stderr, .. } = Tg::sync_node(&repo.url(), &node).run();
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("already current and verified"), "{stderr}");
    assert_eq!(node.emu.reload_count(), reloads);
}

/// v5.8 does not know MCP APIs: the commit is refused before anything is
/// written, naming the file and the version, instead of rolled back.
#[test]
fn an_mcp_pair_is_refused_for_a_v5_8_gateway() {
    let repo = mcp_repo();
    let node = on(TykVersion::V5_8);
    let Ran { code, stderr, .. } = Tg::sync_node(&repo.url(), &node).run();
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("needs-newer-gateway") && stderr.contains("apps/tools.json"),
        "{stderr}"
    );
    assert!(stderr.contains("5.8"), "{stderr}");
    assert!(!node.current().exists());
    assert_eq!(node.emu.reload_count(), 0);
}

/// The gateway lists the new API (ids match) but does not route it: its
/// HTTP service setup failed, which no validator can see. The routing probe
/// catches it, names the file, and the commit is rolled back; with the probe
/// off, the same commit would have been declared verified.
#[test]
fn an_api_listed_but_not_routed_fails_verify_and_rolls_back() {
    let repo = ConfigRepo::new();
    repo.api("alpha");
    repo.commit("one API");
    let node = on(TykVersion::V5_14);
    let Ran { code, stderr, .. } = Tg::sync_node(&repo.url(), &node).run();
    assert_eq!(code, 0, "{stderr}");
    let good = fs::canonicalize(node.current()).expect("current");

    node.emu.fail_service_setup("gamma");
    repo.api("gamma");
    repo.commit("add gamma");
    let Ran { code, stderr, .. } = Tg::sync_node(&repo.url(), &node).run();
    assert_eq!(code, 4, "{stderr}");
    assert!(
        stderr.contains("apps/gamma.json") && stderr.contains("not routed"),
        "{stderr}"
    );
    assert!(stderr.contains("rolled back"), "{stderr}");
    assert_eq!(fs::canonicalize(node.current()).expect("current"), good);
    assert!(!node.emu.routed_api_ids().contains("gamma"));

    repo.api("delta");
    repo.commit("add delta");
    let Ran { code, stderr, .. } = Tg::sync_node(&repo.url(), &node)
        .args(["--probe", "off"])
        .run();
    assert_eq!(code, 0, "{stderr}");
    assert!(node.emu.loaded_api_ids().contains("gamma"));
    assert!(!node.emu.routed_api_ids().contains("gamma"));
}

/// A first sync has no previous revision: every API is new and probed.
#[test]
fn the_first_sync_probes_every_api() {
    let repo = ConfigRepo::new();
    repo.api("alpha").api("beta");
    repo.commit("two APIs");
    let node = on(TykVersion::V5_8);
    node.emu.fail_service_setup("beta");
    let Ran { code, stderr, .. } = Tg::sync_node(&repo.url(), &node).run();
    assert_eq!(code, 4, "{stderr}");
    assert!(
        stderr.contains("apps/beta.json") && stderr.contains("not routed"),
        "{stderr}"
    );
    assert!(!stderr.contains("apps/alpha.json"), "{stderr}");
    assert!(stderr.contains("no earlier revision"), "{stderr}");
}

/// One listen path on two domains with custom domains off: the gateway
/// routes one of them only, and a probe cannot tell (the path answers, for
/// the other API), so the validator refuses it; `--custom-domains` (or
/// `enable_custom_domains` in the repo's tyk.conf) says the gateway matches
/// domains.
#[test]
fn one_listen_path_on_two_domains_is_refused_unless_custom_domains_are_on() {
    let repo = ConfigRepo::new();
    for (id, domain) in [("one", "one.example"), ("two", "two.example")] {
        let mut def = api_json(id);
        def["domain"] = json!(domain);
        def["proxy"]["listen_path"] = json!("/shared/");
        repo.json(&format!("apps/{id}.json"), &def);
    }
    repo.commit("one path, two domains");
    let node = Node::with(EmuConfig {
        enable_custom_domains: true,
        ..EmuConfig::default()
    });
    let Ran { code, stderr, .. } = Tg::sync_node(&repo.url(), &node).run();
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("shadowed-listen-path"), "{stderr}");
    assert!(!node.current().exists());

    repo.json("tyk.conf", &json!({"enable_custom_domains": true}));
    repo.commit("custom domains on");
    let Ran { code, stderr, .. } = Tg::sync_node(&repo.url(), &node).run();
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(node.emu.routed_api_ids().len(), 2);
}

/// The health check answers at `/<health_check_endpoint_name>`: the flag
/// names it, and so does the tyk.conf of the revision the gateway started
/// with.
#[test]
fn the_health_path_comes_from_the_flag_or_the_current_tyk_conf() {
    let node = Node::with(EmuConfig {
        health_check_endpoint_name: "status".to_string(),
        ..EmuConfig::default()
    });
    let repo = ConfigRepo::new();
    repo.api("alpha")
        .json("tyk.conf", &json!({"health_check_endpoint_name": "status"}));
    repo.commit("tyk.conf with its health path");
    let Ran { code, stderr, .. } = Tg::sync_node(&repo.url(), &node)
        .args(["--gateway-wait", "1s"])
        .run();
    assert_eq!(code, 4, "{stderr}");
    assert!(stderr.contains("/hello answered 404"), "{stderr}");

    let Ran { code, stderr, .. } = Tg::sync_node(&repo.url(), &node)
        .args(["--gateway-health-path", "status"])
        .run();
    assert_eq!(code, 0, "{stderr}");
    repo.api("beta");
    repo.commit("beta");
    let Ran { code, stderr, .. } = Tg::sync_node(&repo.url(), &node).run();
    assert_eq!(code, 0, "{stderr}");
    let state: Value =
        serde_json::from_slice(&fs::read(node.root().join("state.json")).expect("state"))
            .expect("json");
    assert_eq!(state["current"]["sha"], repo.head());
    assert_eq!(node.apis(), ["alpha", "beta"]);
}

/// `validate` in a config repo's CI: the gateway version it targets comes
/// from `--gateway-version` (or its env var); a `templates/` without an
/// error template is refused whatever the version.
#[test]
fn validate_checks_for_the_targeted_gateway_version_and_error_templates() {
    let repo = mcp_repo();
    let validate = || Tg::validate(repo.path());
    let old = validate().args(["--gateway-version", "5.8"]).run().code(1);
    assert!(
        old.stdout.contains("needs-newer-gateway") && old.stdout.contains("apps/tools.json"),
        "{}",
        old.stdout
    );
    validate()
        .env("TYK_GITOPS_GATEWAY_VERSION", "v5.8.15")
        .run()
        .code(1);
    validate().args(["--gateway-version", "5.14"]).run().ok();
    validate().run().ok();
    validate().args(["--gateway-version", "five"]).run().code(2);

    repo.file("templates/playground/index.html", "<html></html>\n");
    validate()
        .run()
        .code(1)
        .stdout_has("missing-error-template");
    repo.file("templates/error.json", "{\"error\": \"{{.Message}}\"}\n");
    validate().run().ok();
}
