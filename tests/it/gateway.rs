//! The gateway client against the Tyk emulator: what a user sees when the
//! gateway is up, down, guarded by another secret, or silently loads
//! something else than the files it was given.

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;
use tempfile::TempDir;
use tyk_gitops::gateway::{
    Expected, ExpectedApi, Gateway, GatewayError, GatewayVersion, Loaded, ReloadMode,
};

use crate::support::free_port;
use crate::support::tyk::{EmuConfig, TykEmulator, TykVersion};

const SECRET: &str = "emulator-secret-42";
const WAIT: Duration = Duration::from_secs(5);

/// A gateway root laid out as `apply` writes it: `current -> revisions/a`.
struct Root {
    dir: TempDir,
}

impl Root {
    fn new() -> Root {
        let dir = tempfile::tempdir().expect("tempdir");
        for sub in ["revisions/a/apps", "revisions/a/policies"] {
            fs::create_dir_all(dir.path().join(sub)).expect("mkdir");
        }
        std::os::unix::fs::symlink("revisions/a", dir.path().join("current")).expect("symlink");
        Root { dir }
    }

    fn current(&self) -> PathBuf {
        self.dir.path().join("current")
    }

    fn write(&self, rel: &str, body: &str) {
        fs::write(self.current().join(rel), body).expect("write");
    }

    fn api(&self, file: &str, api_id: &str, listen_path: &str) {
        let def = json!({
            "name": api_id, "api_id": api_id, "org_id": "default", "use_keyless": true,
            "version_data": {"not_versioned": true, "versions": {"Default": {"name": "Default"}}},
            "proxy": {"listen_path": listen_path, "target_url": "http://upstream:8080/"}
        });
        self.write(&format!("apps/{file}"), &def.to_string());
    }

    fn policy(&self, id: &str) {
        let policy = json!({"id": id, "name": id, "org_id": "default", "rate": 100, "per": 60});
        self.write(&format!("policies/{id}.json"), &policy.to_string());
    }

    fn def(&self, file: &str, def: serde_json::Value) {
        self.write(&format!("apps/{file}"), &def.to_string());
    }

    fn emulator(&self) -> TykEmulator {
        self.emulator_with(EmuConfig::default())
    }

    fn emulator_on(&self, version: TykVersion) -> TykEmulator {
        self.emulator_with(EmuConfig {
            version,
            ..EmuConfig::default()
        })
    }

    fn emulator_with(&self, config: EmuConfig) -> TykEmulator {
        TykEmulator::start(EmuConfig {
            app_path: self.current().join("apps"),
            policy_path: Some(self.current().join("policies")),
            policy_record_name: None,
            secret: SECRET.to_string(),
            ..config
        })
    }
}

fn client(url: &str, secret: &str) -> Gateway {
    Gateway::new(url, secret.to_string(), Duration::from_secs(2)).expect("client")
}

fn expected(apis: &[&str], policies: &[&str]) -> Loaded {
    let set = |ids: &[&str]| ids.iter().map(|id| id.to_string()).collect::<BTreeSet<_>>();
    Loaded {
        api_ids: set(apis),
        policy_ids: set(policies),
    }
}

fn mismatch_fields(err: &GatewayError) -> (&[String], &[String]) {
    match err {
        GatewayError::Mismatch {
            missing_apis,
            unexpected_apis,
            ..
        } => (missing_apis, unexpected_apis),
        other => panic!("expected a mismatch, got {other}"),
    }
}

#[tokio::test]
async fn wait_ready_returns_once_hello_answers() {
    let root = Root::new();
    let emu = root.emulator();
    // A trailing slash and the exact form both work.
    client(&format!("{}/", emu.url()), SECRET)
        .wait_ready(WAIT)
        .await
        .expect("ready");
}

#[tokio::test]
async fn wait_ready_gives_up_in_time_when_nothing_listens() {
    let url = format!("http://127.0.0.1:{}", free_port());
    let started = Instant::now();
    let err = client(&url, SECRET)
        .wait_ready(Duration::from_millis(800))
        .await
        .expect_err("nothing listens");
    assert!(
        started.elapsed() < Duration::from_millis(800 + 700),
        "took {:?}",
        started.elapsed()
    );
    assert!(matches!(err, GatewayError::Unreachable { .. }), "{err}");
    assert!(err.is_transient() && !err.is_mismatch());
    let text = err.to_string();
    assert!(
        text.contains(&url) && text.contains("not ready after"),
        "{text}"
    );
}

#[tokio::test]
async fn wait_ready_survives_an_outage_that_ends() {
    let root = Root::new();
    let emu = root.emulator();
    emu.set_down(true);
    let gw = client(&emu.url(), SECRET);
    assert!(gw.wait_ready(Duration::from_millis(300)).await.is_err());
    let waiting = tokio::spawn(async move { gw.wait_ready(WAIT).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    emu.set_down(false);
    waiting
        .await
        .expect("join")
        .expect("ready after the outage");
}

#[tokio::test]
async fn wrong_secret_is_forbidden_and_never_echoed() {
    let root = Root::new();
    let emu = root.emulator();
    let wrong = "not-the-secret-77";
    let gw = client(&emu.url(), wrong);
    for err in [
        gw.reload(ReloadMode::Local).await.expect_err("403"),
        gw.loaded().await.expect_err("403"),
    ] {
        assert!(matches!(err, GatewayError::Forbidden { .. }), "{err}");
        let text = format!("{err} {err:?} {gw:?}");
        assert!(
            text.contains("403") && text.contains("--gateway-secret-file"),
            "{text}"
        );
        assert!(!text.contains(wrong) && !text.contains(SECRET), "{text}");
    }
    assert_eq!(emu.reload_count(), 0);
}

#[tokio::test]
async fn local_reload_then_verify_sees_the_new_files() {
    let root = Root::new();
    root.api("a.json", "a", "/a/");
    root.policy("basic");
    let emu = root.emulator();
    let gw = client(&emu.url(), SECRET);
    assert_eq!(
        gw.loaded().await.expect("loaded"),
        expected(&["a"], &["basic"])
    );

    root.api("b.json", "b", "/b/");
    gw.reload(ReloadMode::Local).await.expect("reload");
    // block=true: the reload has run when the answer comes.
    assert_eq!(
        gw.loaded().await.expect("loaded"),
        expected(&["a", "b"], &["basic"])
    );
    let want = expected(&["a", "b"], &["basic"]);
    assert_eq!(gw.verify(&want, WAIT).await.expect("verified"), want);
    assert_eq!(emu.reload_count(), 1);
}

#[tokio::test]
async fn group_reload_verifies_after_the_async_delay() {
    let root = Root::new();
    let emu = root.emulator();
    emu.set_reload_delay(Duration::from_millis(200));
    let gw = client(&emu.url(), SECRET);
    root.api("a.json", "a", "/a/");
    root.policy("basic");

    gw.reload(ReloadMode::Group).await.expect("reload");
    // The answer comes before the work: nothing new is loaded yet.
    assert_eq!(gw.loaded().await.expect("loaded"), Loaded::default());
    let want = expected(&["a"], &["basic"]);
    assert_eq!(gw.verify(&want, WAIT).await.expect("verified"), want);
}

#[tokio::test]
async fn reload_none_sends_nothing() {
    let root = Root::new();
    let emu = root.emulator();
    client(&emu.url(), SECRET)
        .reload(ReloadMode::None)
        .await
        .expect("nothing to do");
    assert_eq!(emu.reload_count(), 0);
}

/// A file that does not decode is skipped and unlisted; a spec that decodes
/// but is invalid (whitespace in its listen path) is listed all the same:
/// ids alone cannot see it.
#[tokio::test]
async fn invalid_api_file_is_skipped_and_verify_names_it() {
    let root = Root::new();
    root.api("good.json", "good", "/good/");
    root.write("apps/broken.json", r#"{"api_id": "broken", "proxy": "#);
    root.api("spaces.json", "spaces", "/has space/");
    let emu = root.emulator();
    let gw = client(&emu.url(), SECRET);
    gw.reload(ReloadMode::Local)
        .await
        .expect("reload answers 200 anyway");

    let err = gw
        .verify(
            &expected(&["good", "broken", "spaces"], &[]),
            Duration::from_millis(500),
        )
        .await
        .expect_err("mismatch");
    assert!(err.is_mismatch() && !err.is_transient());
    assert_eq!(
        mismatch_fields(&err),
        (&["broken".to_string()][..], &[][..])
    );
    assert!(err.to_string().contains("missing APIs: broken"), "{err}");
    assert_eq!(
        emu.loaded_api_ids(),
        expected(&["good", "spaces"], &[]).api_ids
    );
    assert_eq!(emu.routed_api_ids(), expected(&["good"], &[]).api_ids);
}

fn probed(api_id: &str, file: &str, listen_path: &str) -> ExpectedApi {
    ExpectedApi {
        api_id: api_id.to_string(),
        file: file.to_string(),
        listen_path: Some(listen_path.to_string()),
        target_url: None,
        probe: Some(listen_path.to_string()),
        domain: String::new(),
    }
}

fn served(apis: &[&str], probes: Vec<ExpectedApi>) -> Expected {
    Expected {
        ids: expected(apis, &[]),
        apis: probes,
    }
}

/// The gateway's router answers a path no API owns with Tyk's `handle404`:
/// 404 and the body `Not Found`, as the emulator does; everything routed
/// answers something else (an upstream, an error about it, a 401).
#[tokio::test]
async fn the_router_answers_unknown_paths_with_tyks_not_found() {
    let root = Root::new();
    root.api("open.json", "open", "/open/");
    root.def(
        "locked.json",
        json!({"api_id": "locked", "use_keyless": false,
               "proxy": {"listen_path": "/locked/", "target_url": "http://upstream:8080/"}}),
    );
    let emu = root.emulator();
    let get = |path: &str| {
        let url = format!("{}{path}", emu.url());
        async move {
            let response = reqwest::get(&url).await.expect("request");
            (
                response.status().as_u16(),
                response.text().await.expect("body"),
            )
        }
    };
    assert_eq!(get("/nothing-here/").await, (404, "Not Found".to_string()));
    let (status, body) = get("/open/x").await;
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("Upstream host lookup failed"), "{body}");
    let (status, body) = get("/locked/").await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("Authorization field missing"), "{body}");
}

/// `GET /ready` exists since v5.9; on v5.8 the router answers it.
#[tokio::test]
async fn ready_answers_on_v5_14_and_is_unknown_to_v5_8() {
    let root = Root::new();
    root.api("a.json", "a", "/a/");
    for (version, want) in [(TykVersion::V5_14, 200), (TykVersion::V5_8, 404)] {
        let emu = root.emulator_on(version);
        let status = reqwest::get(format!("{}/ready", emu.url()))
            .await
            .expect("get")
            .status();
        assert_eq!(status.as_u16(), want, "{version:?}");
    }
}

#[tokio::test]
async fn a_listed_but_unrouted_api_fails_verify_with_its_file_named() {
    let root = Root::new();
    root.api("good.json", "good", "/good/");
    root.api("spaces.json", "spaces", "/has space/");
    let emu = root.emulator();
    let gw = client(&emu.url(), SECRET);
    // By ids alone, all is well.
    gw.verify(&expected(&["good", "spaces"], &[]), WAIT)
        .await
        .expect("ids match");
    let err = gw
        .verify_served(
            &served(
                &["good", "spaces"],
                vec![
                    probed("good", "apps/good.json", "/good/"),
                    probed("spaces", "apps/spaces.json", "/has space/"),
                ],
            ),
            Duration::from_millis(300),
        )
        .await
        .expect_err("spaces is not routed");
    assert!(err.is_mismatch() && !err.is_transient(), "{err}");
    let GatewayError::NotServed { apis } = &err else {
        panic!("expected NotServed, got {err}");
    };
    assert_eq!(apis.len(), 1, "{err}");
    assert_eq!(
        (apis[0].api_id.as_str(), apis[0].file.as_str()),
        ("spaces", "apps/spaces.json")
    );
    assert!(
        err.to_string().contains("apps/spaces.json") && err.to_string().contains("not routed"),
        "{err}"
    );
}

/// A token API answers 401 without a key and a keyless API answers with
/// whatever its upstream says, a 404 included: all of them are routed.
#[tokio::test]
async fn protected_apis_and_upstream_404s_count_as_routed() {
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let upstream_url = format!("http://{}/", upstream.local_addr().expect("addr"));
    tokio::spawn(async move {
        let app = axum::Router::new()
            .fallback(|| async { (axum::http::StatusCode::NOT_FOUND, "404 page not found\n") });
        axum::serve(upstream, app).await.expect("upstream");
    });
    let root = Root::new();
    root.def(
        "locked.json",
        json!({"api_id": "locked", "use_keyless": false,
               "proxy": {"listen_path": "/locked/", "target_url": "http://upstream:8080/"}}),
    );
    root.def(
        "open.json",
        json!({"api_id": "open", "use_keyless": true,
               "proxy": {"listen_path": "/open/{id}/", "target_url": upstream_url, "strip_listen_path": true}}),
    );
    let emu = root.emulator();
    let gw = client(&emu.url(), SECRET);
    let response = reqwest::get(format!("{}/open/1/", emu.url()))
        .await
        .expect("get");
    assert_eq!(response.status().as_u16(), 404);
    gw.verify_served(
        &served(
            &["locked", "open"],
            vec![
                probed("locked", "apps/locked.json", "/locked/"),
                probed("open", "apps/open.json", "/open/{id}/"),
            ],
        ),
        WAIT,
    )
    .await
    .expect("both routed");
}

/// Custom domains off (the default): two APIs on one path with different
/// domains are not renamed, and the first takes every request.
#[tokio::test]
async fn one_path_on_two_domains_shadows_one_api() {
    let root = Root::new();
    for (id, domain) in [("a", "a.example"), ("b", "b.example")] {
        root.def(
            &format!("{id}.json"),
            json!({"api_id": id, "use_keyless": true, "domain": domain,
                   "proxy": {"listen_path": "/shared/", "target_url": "http://upstream:8080/"}}),
        );
    }
    let emu = root.emulator();
    let paths = emu.last_listen_paths();
    assert_eq!(paths.get("a").map(String::as_str), Some("/shared/"));
    assert_eq!(paths.get("b").map(String::as_str), Some("/shared/"));
    assert_eq!(emu.routed_api_ids(), expected(&["a"], &[]).api_ids);

    let custom = root.emulator_with(EmuConfig {
        enable_custom_domains: true,
        ..EmuConfig::default()
    });
    assert_eq!(custom.routed_api_ids(), expected(&["a", "b"], &[]).api_ids);
}

/// A group reload answers before any node reloads, and ids do not change
/// when only a definition's content does: verify compares the content.
#[tokio::test]
async fn group_reload_of_a_content_change_waits_for_the_new_content() {
    let root = Root::new();
    root.api("a.json", "a", "/a/");
    let emu = root.emulator();
    emu.set_reload_delay(Duration::from_millis(300));
    let gw = client(&emu.url(), SECRET);
    root.api("a.json", "a", "/a2/");
    gw.reload(ReloadMode::Group).await.expect("reload");
    // Ids alone pass at once, on the old content.
    gw.verify(&expected(&["a"], &[]), WAIT).await.expect("ids");
    assert_eq!(
        emu.last_listen_paths().get("a").map(String::as_str),
        Some("/a/")
    );
    gw.verify_served(
        &served(&["a"], vec![probed("a", "apps/a.json", "/a2/")]),
        WAIT,
    )
    .await
    .expect("served after the reload ran");
    assert_eq!(
        emu.last_listen_paths().get("a").map(String::as_str),
        Some("/a2/")
    );

    // A node that never reloads is reported with the content it still runs.
    emu.set_fail_reloads(true);
    root.api("a.json", "a", "/a3/");
    gw.reload(ReloadMode::Group).await.expect("reload");
    let err = gw
        .verify_served(
            &served(&["a"], vec![probed("a", "apps/a.json", "/a3/")]),
            Duration::from_millis(800),
        )
        .await
        .expect_err("stale");
    assert!(err.is_mismatch(), "{err}");
    assert!(
        err.to_string()
            .contains(r#"listen_path "/a2/", the commit has "/a3/""#),
        "{err}"
    );
}

/// v5.12+ leaves MCP APIs out of `/tyk/apis` unless asked with
/// `include_types=mcp`; the client asks, so an MCP pair verifies. v5.8
/// does not load the pair at all.
#[tokio::test]
async fn mcp_apis_are_listed_when_asked_and_unknown_to_v5_8() {
    let root = Root::new();
    root.api("plain.json", "plain", "/plain/");
    root.def(
        "tools.json",
        json!({"api_id": "tools", "is_oas": true, "application_protocol": "mcp",
               "json_rpc_version": "2.0", "use_keyless": true,
               "proxy": {"listen_path": "/tools/", "target_url": "http://upstream:8080/"}}),
    );
    root.write(
        "apps/tools-mcp.json",
        &json!({"openapi": "3.0.3", "info": {"title": "tools", "version": "1"}, "paths": {},
                "x-tyk-api-gateway": {"info": {"id": "tools", "name": "tools", "state": {"active": true}}}})
        .to_string(),
    );
    let emu = root.emulator_on(TykVersion::V5_14);
    let plain: Vec<serde_json::Value> = reqwest::Client::new()
        .get(format!("{}/tyk/apis", emu.url()))
        .header("X-Tyk-Authorization", SECRET)
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(plain.len(), 1, "{plain:?}");
    let gw = client(&emu.url(), SECRET);
    assert_eq!(
        gw.wait_ready(WAIT).await.expect("ready"),
        GatewayVersion::parse("5.14")
    );
    gw.verify(&expected(&["plain", "tools"], &[]), WAIT)
        .await
        .expect("the MCP API is seen");

    let old = root.emulator_on(TykVersion::V5_8);
    let gw = client(&old.url(), SECRET);
    assert_eq!(
        gw.wait_ready(WAIT).await.expect("ready"),
        GatewayVersion::parse("v5.8.15")
    );
    assert_eq!(old.loaded_api_ids(), expected(&["", "plain"], &[]).api_ids);
    assert_eq!(old.routed_api_ids(), expected(&["plain"], &[]).api_ids);
}

#[tokio::test]
async fn the_health_check_path_is_configurable() {
    let root = Root::new();
    let emu = root.emulator_with(EmuConfig {
        health_check_endpoint_name: "status/health".to_string(),
        version: TykVersion::V5_8,
        ..EmuConfig::default()
    });
    let err = client(&emu.url(), SECRET)
        .wait_ready(Duration::from_millis(300))
        .await
        .expect_err("no /hello");
    assert!(err.to_string().contains("/hello answered 404"), "{err}");
    let version = client(&emu.url(), SECRET)
        .with_health_path("/status/health/")
        .wait_ready(WAIT)
        .await
        .expect("ready");
    assert_eq!(version, GatewayVersion::parse("5.8"));
}

/// Two files, one `api_id`: the gateway keeps the later file and says
/// nothing. Verifying by id cannot see it (the id is there), so the
/// validator must reject duplicates before they reach the gateway.
#[tokio::test]
async fn duplicate_api_id_keeps_only_the_later_file() {
    let root = Root::new();
    root.api("one.json", "same", "/one/");
    root.api("two.json", "same", "/two/");
    root.api("three.json", "three", "/three/");
    let emu = root.emulator();
    let gw = client(&emu.url(), SECRET);
    assert_eq!(
        emu.last_listen_paths().get("same").map(String::as_str),
        Some("/two/")
    );
    gw.verify(&expected(&["same", "three"], &[]), WAIT)
        .await
        .expect("ids alone match");

    // A later commit fixes the id of one.json: the API it had hidden appears.
    root.api("one.json", "one", "/one/");
    gw.reload(ReloadMode::Local).await.expect("reload");
    let err = gw
        .verify(
            &expected(&["same", "three"], &[]),
            Duration::from_millis(300),
        )
        .await
        .expect_err("one more API than before");
    assert_eq!(mismatch_fields(&err), (&[][..], &["one".to_string()][..]));
}

/// On a fresh load every API sharing a listen path is renamed
/// `<path>-<api_id>`; at a reload, an API already loaded on the path keeps
/// it and only the newcomer is renamed.
#[tokio::test]
async fn listen_path_collision_renames_every_api_on_a_fresh_load() {
    let root = Root::new();
    root.api("a.json", "a", "/shared/");
    root.api("b.json", "b", "/shared/");
    let emu = root.emulator();
    let paths = emu.last_listen_paths();
    assert_eq!(paths.get("a").map(String::as_str), Some("/shared/-a"));
    assert_eq!(paths.get("b").map(String::as_str), Some("/shared/-b"));

    let root = Root::new();
    root.api("a.json", "a", "/shared/");
    let emu = root.emulator();
    root.api("c.json", "c", "/shared/");
    client(&emu.url(), SECRET)
        .reload(ReloadMode::Local)
        .await
        .expect("reload");
    let paths = emu.last_listen_paths();
    assert_eq!(paths.get("a").map(String::as_str), Some("/shared/"));
    assert_eq!(paths.get("c").map(String::as_str), Some("/shared/-c"));
}

#[tokio::test]
async fn companions_dotfiles_and_subfolders_follow_the_glob() {
    let root = Root::new();
    root.api("pet.json", "pet", "/pet/");
    root.write(
        "apps/pet-oas.json",
        r#"{"openapi": "3.0.3", "info": {"title": "x"}}"#,
    );
    root.write(
        "apps/bare.json",
        r#"{"openapi": "3.0.3", "info": {"title": "bare"}}"#,
    );
    root.api(".tmp.json", "dot", "/dot/");
    root.api("notes.json.tmp", "tmp", "/tmp/");
    fs::create_dir(root.current().join("apps/nested")).expect("mkdir");
    root.api("nested/deep.json", "deep", "/deep/");
    let emu = root.emulator();
    // The bare OpenAPI document is read as a classic definition with no id
    // and no listen path: listed, never routed.
    assert_eq!(
        emu.loaded_api_ids(),
        expected(&["", "pet", "dot"], &[]).api_ids
    );
    assert_eq!(emu.routed_api_ids(), expected(&["pet", "dot"], &[]).api_ids);
}

#[tokio::test]
async fn bad_policy_map_aborts_the_whole_reload() {
    let root = Root::new();
    root.api("a.json", "a", "/a/");
    let map = root.current().join("policies.json");
    fs::write(&map, json!({"basic": {"name": "Basic"}}).to_string()).expect("write");
    let emu = TykEmulator::start(EmuConfig {
        app_path: root.current().join("apps"),
        policy_path: None,
        policy_record_name: Some(map.clone()),
        secret: SECRET.to_string(),
        ..EmuConfig::default()
    });
    let gw = client(&emu.url(), SECRET);
    // The map key is the policy id.
    assert_eq!(
        gw.loaded().await.expect("loaded"),
        expected(&["a"], &["basic"])
    );

    fs::write(&map, "{ not json").expect("write");
    root.api("b.json", "b", "/b/");
    gw.reload(ReloadMode::Local)
        .await
        .expect("reload answers 200 anyway");
    let err = gw
        .verify(
            &expected(&["a", "b"], &["basic"]),
            Duration::from_millis(300),
        )
        .await
        .expect_err("nothing reloaded");
    assert_eq!(mismatch_fields(&err).0, &["b".to_string()][..]);
    assert_eq!(
        gw.loaded().await.expect("loaded"),
        expected(&["a"], &["basic"])
    );
}

/// Up to v5.11 a policy file that does not parse still adds a policy with
/// an empty id; since v5.12 it is dropped.
#[tokio::test]
async fn unparsable_policy_file_adds_an_empty_policy_on_v5_8_only() {
    let root = Root::new();
    root.policy("basic");
    root.write("policies/broken.json", "{");
    let emu = root.emulator_on(TykVersion::V5_8);
    let err = client(&emu.url(), SECRET)
        .verify(&expected(&[], &["basic"]), Duration::from_millis(200))
        .await
        .expect_err("mismatch");
    assert!(
        err.to_string().contains("unexpected policies: (empty id)"),
        "{err}"
    );
    let emu = root.emulator_on(TykVersion::V5_14);
    client(&emu.url(), SECRET)
        .verify(&expected(&[], &["basic"]), WAIT)
        .await
        .expect("the broken file is dropped");
}

/// Since v5.12 policies are keyed by (org_id, id): one id in two orgs is
/// two policies.
#[tokio::test]
async fn policies_are_keyed_by_org_and_id_since_v5_12() {
    let root = Root::new();
    root.write(
        "policies/one.json",
        &json!({"id": "p", "org_id": "o1"}).to_string(),
    );
    root.write(
        "policies/two.json",
        &json!({"id": "p", "org_id": "o2"}).to_string(),
    );
    let policies = |emu: &TykEmulator| {
        let url = format!("{}/tyk/policies", emu.url());
        async move {
            let list: Vec<serde_json::Value> = reqwest::Client::new()
                .get(url)
                .header("X-Tyk-Authorization", SECRET)
                .send()
                .await
                .expect("get")
                .json()
                .await
                .expect("json");
            list.len()
        }
    };
    assert_eq!(policies(&root.emulator_on(TykVersion::V5_14)).await, 2);
    assert_eq!(policies(&root.emulator_on(TykVersion::V5_8)).await, 1);
}

#[tokio::test]
async fn removed_file_unloads_the_api() {
    let root = Root::new();
    root.api("a.json", "a", "/a/");
    root.api("b.json", "b", "/b/");
    let emu = root.emulator();
    let gw = client(&emu.url(), SECRET);
    fs::remove_file(root.current().join("apps/b.json")).expect("rm");
    gw.reload(ReloadMode::Local).await.expect("reload");
    gw.verify(&expected(&["a"], &[]), WAIT)
        .await
        .expect("b unloaded");
}

#[tokio::test]
async fn symlink_swap_is_seen_at_the_next_reload() {
    let root = Root::new();
    root.api("a.json", "a", "/a/");
    let emu = root.emulator();
    let next = root.dir.path().join("revisions/b/apps");
    fs::create_dir_all(&next).expect("mkdir");
    fs::write(
        next.join("c.json"),
        fs::read(root.current().join("apps/a.json")).expect("read"),
    )
    .expect("write");
    let tmp = root.dir.path().join("current.tmp");
    std::os::unix::fs::symlink("revisions/b", &tmp).expect("symlink");
    fs::rename(&tmp, root.current()).expect("swap");

    let gw = client(&emu.url(), SECRET);
    gw.reload(ReloadMode::Local).await.expect("reload");
    // c.json holds api_id "a"; the file name does not matter.
    gw.verify(&expected(&["a"], &[]), WAIT)
        .await
        .expect("verified");
    assert!(emu.last_listen_paths().contains_key("a"));
}

#[tokio::test]
async fn failed_reload_and_drift_show_as_mismatch() {
    let root = Root::new();
    root.api("a.json", "a", "/a/");
    let emu = root.emulator();
    let gw = client(&emu.url(), SECRET);
    emu.set_fail_reloads(true);
    root.api("b.json", "b", "/b/");
    gw.reload(ReloadMode::Local).await.expect("200 even so");
    let err = gw
        .verify(&expected(&["a", "b"], &[]), Duration::from_millis(300))
        .await;
    assert!(err.expect_err("not loaded").is_mismatch());

    emu.set_fail_reloads(false);
    emu.tamper_remove_api("a");
    let err = gw
        .verify(&expected(&["a"], &[]), Duration::from_millis(200))
        .await
        .expect_err("drift");
    assert_eq!(mismatch_fields(&err), (&["a".to_string()][..], &[][..]));
}

#[tokio::test]
async fn reloads_arriving_together_are_merged() {
    let root = Root::new();
    let emu = root.emulator();
    emu.set_reload_delay(Duration::from_millis(200));
    let gw = std::sync::Arc::new(client(&emu.url(), SECRET));
    let calls: Vec<_> = (0..3)
        .map(|_| {
            let gw = gw.clone();
            tokio::spawn(async move { gw.reload(ReloadMode::Local).await })
        })
        .collect();
    for call in calls {
        call.await.expect("join").expect("reload");
    }
    assert_eq!(emu.reload_count(), 3);
    assert_eq!(emu.reloads_run(), 1);
}

#[tokio::test]
async fn outage_during_verify_is_an_outage_not_a_mismatch() {
    let root = Root::new();
    let emu = root.emulator();
    emu.set_down(true);
    let err = client(&emu.url(), SECRET)
        .verify(&expected(&["a"], &[]), Duration::from_millis(300))
        .await
        .expect_err("down");
    assert!(err.is_transient() && !err.is_mismatch(), "{err}");
}

#[tokio::test]
async fn wrong_path_prefix_is_a_status_error_naming_the_endpoint() {
    let root = Root::new();
    let emu = root.emulator();
    let gw = client(&format!("{}/not-tyk/", emu.url()), SECRET);
    let err = gw.reload(ReloadMode::Local).await.expect_err("404");
    assert!(
        matches!(err, GatewayError::Status { status: 404, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("/not-tyk/tyk/reload"), "{err}");
    let err = gw
        .wait_ready(Duration::from_millis(300))
        .await
        .expect_err("404");
    assert!(err.to_string().contains("/hello answered 404"), "{err}");
}

/// Real definitions from Tyk's repository load in the emulator as the
/// gateway loads them: no valid file skipped by mistake, and the samples'
/// two files sharing `api_id` "4" collapse into the later one.
#[tokio::test]
async fn real_tyk_definitions_load_whole_in_the_emulator() {
    let Some(corpus) = std::env::var_os("TYK_GITOPS_CORPUS").map(PathBuf::from) else {
        eprintln!("TYK_GITOPS_CORPUS not set: skipping the real-definitions check");
        return;
    };
    let mut sets = Vec::new();
    let mut dirs = vec![corpus.join("tyk")];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).expect("read corpus").flatten() {
            let path = entry.path();
            if path.file_name().is_some_and(|name| name == "apps") {
                sets.push(dir.clone());
            } else if path.is_dir() {
                dirs.push(path);
            }
        }
    }
    assert!(!sets.is_empty(), "no apps/ under {}", corpus.display());
    for set in sets {
        let apps = set.join("apps");
        let want: BTreeSet<String> = fs::read_dir(&apps)
            .expect("read apps")
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| {
                let name = path.to_string_lossy();
                name.ends_with(".json")
                    && !name.ends_with("-oas.json")
                    && !name.ends_with("-mcp.json")
            })
            .map(|path| {
                let def: serde_json::Value =
                    serde_json::from_slice(&fs::read(&path).expect("read")).expect("json");
                def["api_id"].as_str().expect("api_id").to_string()
            })
            .collect();
        let map = set.join("policies/policies.json");
        let emu = TykEmulator::start(EmuConfig {
            app_path: apps,
            policy_path: None,
            policy_record_name: map.exists().then_some(map),
            secret: SECRET.to_string(),
            ..EmuConfig::default()
        });
        assert_eq!(emu.loaded_api_ids(), want, "{}", set.display());
        if set.ends_with("samples") {
            assert_eq!(
                emu.loaded_policy_ids(),
                expected(&[], &["default"]).policy_ids
            );
            assert_eq!(
                emu.last_listen_paths().get("4").map(String::as_str),
                Some("/jq/")
            );
        }
    }
}
