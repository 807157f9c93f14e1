//! The gateway client against the Tyk emulator: what a user sees when the
//! gateway is up, down, guarded by another secret, or silently loads
//! something else than the files it was given.

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;
use tempfile::TempDir;
use tyk_gitops::gateway::{Gateway, GatewayError, Loaded, ReloadMode};

use crate::support::free_port;
use crate::support::tyk::{EmuConfig, TykEmulator};

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

    fn emulator(&self) -> TykEmulator {
        TykEmulator::start(EmuConfig {
            app_path: self.current().join("apps"),
            policy_path: Some(self.current().join("policies")),
            policy_record_name: None,
            secret: SECRET.to_string(),
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
        (&["broken".to_string(), "spaces".to_string()][..], &[][..])
    );
    assert!(
        err.to_string().contains("missing APIs: broken, spaces"),
        "{err}"
    );
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

#[tokio::test]
async fn listen_path_collision_renames_the_second() {
    let root = Root::new();
    root.api("a.json", "a", "/shared/");
    root.api("b.json", "b", "/shared/");
    let emu = root.emulator();
    let paths = emu.last_listen_paths();
    assert_eq!(paths.get("a").map(String::as_str), Some("/shared/"));
    assert_eq!(paths.get("b").map(String::as_str), Some("/shared/-b"));
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
    assert_eq!(emu.loaded_api_ids(), expected(&["pet", "dot"], &[]).api_ids);
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

#[tokio::test]
async fn unparsable_policy_file_still_adds_an_empty_policy() {
    let root = Root::new();
    root.policy("basic");
    root.write("policies/broken.json", "{");
    let emu = root.emulator();
    let err = client(&emu.url(), SECRET)
        .verify(&expected(&[], &["basic"]), Duration::from_millis(200))
        .await
        .expect_err("mismatch");
    assert!(
        err.to_string().contains("unexpected policies: (empty id)"),
        "{err}"
    );
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
