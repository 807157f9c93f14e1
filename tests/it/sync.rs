//! `tyk-gitops sync`, the init container's one pass, as a user runs it: the
//! real binary against config repos served by real Git servers and the Tyk
//! emulator.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::cli::Tg;
use crate::support::git_server::GitDaemon;
use crate::support::node::{Node, SECRET, ids};
use crate::support::repo::{ConfigRepo, api_json};

fn two_api_repo() -> ConfigRepo {
    let repo = ConfigRepo::new();
    repo.api("alpha")
        .api("beta")
        .policy("gold", &["alpha", "beta"]);
    repo.commit("two APIs");
    repo
}

#[test]
fn first_sync_writes_a_revision_the_gateway_loads_and_verifies() {
    let repo = two_api_repo();
    let node = Node::new();
    Tg::sync_node(&repo.url(), &node).run().ok();

    assert!(node.current().join("apps/alpha.json").is_file());
    let policy: Value =
        serde_json::from_slice(&fs::read(node.current().join("policies/gold.json")).unwrap())
            .unwrap();
    assert_eq!(policy["id"], "gold");
    let map: Value =
        serde_json::from_slice(&fs::read(node.current().join("policies.json")).unwrap()).unwrap();
    assert!(map.get("gold").is_some(), "{map}");
    assert_eq!(node.apis(), ids(&["alpha", "beta"]));
    assert_eq!(
        node.emu.loaded_policy_ids().into_iter().collect::<Vec<_>>(),
        ids(&["gold"])
    );
    assert_eq!(node.current_sha(), repo.head());
    let state: Value =
        serde_json::from_slice(&fs::read(node.root().join("state.json")).unwrap()).unwrap();
    assert!(state["current"]["verified_at"].is_u64(), "{state}");
}

#[test]
fn init_container_sync_without_gateway_only_writes_files() {
    let repo = two_api_repo();
    let root = tempfile::tempdir().unwrap();
    Tg::sync(&repo.url(), root.path()).run().ok();
    assert!(root.path().join("current/apps/beta.json").is_file());
    // The link is relative: the volume may be mounted elsewhere in the gateway.
    assert!(
        fs::read_link(root.path().join("current"))
            .unwrap()
            .is_relative()
    );
}

#[test]
fn second_sync_of_the_same_commit_writes_nothing_and_sends_no_reload() {
    let repo = two_api_repo();
    let node = Node::new();
    Tg::sync_node(&repo.url(), &node).run().ok();
    let reloads = node.emu.reload_count();
    let state_before = fs::metadata(node.root().join("state.json")).unwrap();
    let link_before = fs::symlink_metadata(node.current()).unwrap();

    let ran = Tg::sync_node(&repo.url(), &node).run().ok();
    assert!(ran.stderr.contains("unchanged"), "{}", ran.stderr);
    assert_eq!(node.emu.reload_count(), reloads);
    let state_after = fs::metadata(node.root().join("state.json")).unwrap();
    let link_after = fs::symlink_metadata(node.current()).unwrap();
    assert_eq!(state_before.mtime_nsec(), state_after.mtime_nsec());
    assert_eq!(state_before.ino(), state_after.ino());
    assert_eq!(link_before.ino(), link_after.ino());

    // --force writes and reloads again.
    Tg::sync_node(&repo.url(), &node).arg("--force").run().ok();
    assert!(node.emu.reload_count() > reloads);
}

#[test]
fn a_changed_file_goes_live_and_unchanged_files_are_hard_linked() {
    let repo = two_api_repo();
    let node = Node::new();
    Tg::sync_node(&repo.url(), &node).run().ok();
    let first = fs::canonicalize(node.current()).unwrap();

    let mut beta = api_json("beta");
    beta["proxy"]["target_url"] = "http://other:9090/".into();
    repo.json("apps/beta.json", &beta);
    let sha = repo.commit("retarget beta");
    let ran = Tg::sync_node(&repo.url(), &node).run().ok();
    // A new process analyses only the changed file: the others' results
    // come from the analysis cache the first sync saved under the root.
    assert!(ran.stderr.contains("analysed=1 "), "{}", ran.stderr);

    let second = fs::canonicalize(node.current()).unwrap();
    assert_ne!(first, second);
    assert_eq!(node.current_sha(), sha);
    let ino = |dir: &Path, f: &str| fs::metadata(dir.join(f)).unwrap().ino();
    assert_eq!(
        ino(&first, "apps/alpha.json"),
        ino(&second, "apps/alpha.json")
    );
    assert_ne!(
        ino(&first, "apps/beta.json"),
        ino(&second, "apps/beta.json")
    );
    let written: Value =
        serde_json::from_slice(&fs::read(second.join("apps/beta.json")).unwrap()).unwrap();
    assert_eq!(written["proxy"]["target_url"], "http://other:9090/");
}

#[test]
fn a_run_of_small_commits_recycles_old_revisions_into_exact_copies() {
    // Past --keep-revisions, each new revision is made from the directory
    // of the one about to be pruned; whatever it held, the result must be
    // exactly the commit's files.
    let repo = two_api_repo();
    let node = Node::new();
    Tg::sync_node(&repo.url(), &node).run().ok();
    let steps: [&dyn Fn(&ConfigRepo); 6] = [
        &|r| {
            r.api("gamma");
        },
        &|r| {
            let mut alpha = api_json("alpha");
            alpha["proxy"]["target_url"] = "http://moved:8080/".into();
            r.json("apps/alpha.json", &alpha);
        },
        &|r| {
            r.remove("apps/gamma.json");
        },
        &|r| {
            r.api("delta").file("templates/error.json", "{}");
        },
        &|r| {
            r.api("gamma").remove("templates/error.json");
        },
        &|r| {
            r.json("apps/alpha.json", &api_json("alpha"));
        },
    ];
    for (i, step) in steps.iter().enumerate() {
        step(&repo);
        repo.commit(&format!("step {i}"));
        let ran = Tg::sync_node(&repo.url(), &node)
            .args(["--log-level", "debug"])
            .run()
            .ok();
        // From the fourth revision on, one is about to be pruned: it is the
        // one recycled.
        if i >= 2 {
            assert!(
                ran.stderr.contains("recycled=\"") && !ran.stderr.contains("recycled=\"\""),
                "step {i}: no revision recycled\n{}",
                ran.stderr
            );
        }
        let current = fs::canonicalize(node.current()).unwrap();
        for dir in ["apps", "templates"] {
            let list = |root: &Path| -> Vec<(String, Vec<u8>)> {
                let mut files: Vec<_> = fs::read_dir(root.join(dir))
                    .map(|l| {
                        l.map(|e| {
                            let e = e.unwrap();
                            (
                                e.file_name().to_string_lossy().into_owned(),
                                fs::read(e.path()).unwrap(),
                            )
                        })
                        .collect()
                    })
                    .unwrap_or_default();
                files.sort();
                files
            };
            assert_eq!(
                list(&current),
                list(repo.path()),
                "step {i}: {dir}/ differs from the commit\n{}",
                ran.stderr
            );
        }
        let want: Vec<String> = fs::read_dir(repo.path().join("apps"))
            .unwrap()
            .map(|e| {
                let name = e.unwrap().file_name().to_string_lossy().into_owned();
                name.trim_end_matches(".json").to_string()
            })
            .collect();
        let mut want = want;
        want.sort();
        assert_eq!(node.apis(), want, "step {i}");
    }
    let revisions = fs::read_dir(node.root().join("revisions")).unwrap().count();
    assert_eq!(revisions, 3, "--keep-revisions defaults to 3");
}

#[test]
fn a_removed_file_unloads_its_api() {
    let repo = two_api_repo();
    let node = Node::new();
    Tg::sync_node(&repo.url(), &node).run().ok();
    repo.remove("apps/beta.json").policy("gold", &["alpha"]);
    repo.commit("drop beta");
    Tg::sync_node(&repo.url(), &node).run().ok();
    assert_eq!(node.apis(), ids(&["alpha"]));
    assert!(!node.current().join("apps/beta.json").exists());
}

#[test]
fn invalid_json_leaves_current_and_the_gateway_untouched() {
    let repo = two_api_repo();
    let node = Node::new();
    Tg::sync_node(&repo.url(), &node).run().ok();
    let good = repo.head();
    let before = fs::canonicalize(node.current()).unwrap();
    let reloads = node.emu.reload_count();

    repo.file(
        "apps/beta.json",
        "{\n  \"api_id\": \"beta\",\n  \"name\": oops\n}\n",
    );
    repo.commit("typo");
    let ran = Tg::sync_node(&repo.url(), &node).run().code(1);

    // File, line:column and rule, as `validate` prints them.
    assert!(ran.stderr.contains("apps/beta.json"), "{}", ran.stderr);
    assert!(ran.stderr.contains(" 3:"), "{}", ran.stderr);
    assert!(ran.stderr.contains("json-syntax"), "{}", ran.stderr);
    assert_eq!(fs::canonicalize(node.current()).unwrap(), before);
    assert_eq!(node.emu.reload_count(), reloads);
    assert_eq!(node.apis(), ids(&["alpha", "beta"]));
    assert_eq!(node.current_sha(), good);

    // The same bad commit again is refused at once, with the same code.
    Tg::sync_node(&repo.url(), &node).run().code(1);
    // A fix goes live.
    repo.api("beta");
    let fixed = repo.commit("fix");
    Tg::sync_node(&repo.url(), &node).run().ok();
    assert_eq!(node.current_sha(), fixed);
}

#[test]
fn wrong_gateway_secret_exits_4_without_leaking_either_secret() {
    let repo = two_api_repo();
    let node = Node::new();
    let wrong = "not-the-secret-91c2";
    let ran = Tg::sync_node(&repo.url(), &node)
        .secret(wrong)
        .run()
        .code(4);
    assert!(ran.stderr.contains("403"), "{}", ran.stderr);
    assert!(!ran.stderr.contains(wrong) && !ran.stderr.contains(SECRET));
    // Nothing was published for a gateway we cannot reload.
    assert!(!node.current().exists());
}

#[test]
fn gateway_not_up_is_a_bounded_wait_then_exit_4() {
    let repo = two_api_repo();
    let root = tempfile::tempdir().unwrap();
    let port = crate::support::free_port();
    let started = Instant::now();
    let ran = Tg::sync(&repo.url(), root.path())
        .secret(SECRET)
        .args([
            "--gateway",
            &format!("http://127.0.0.1:{port}"),
            "--gateway-wait",
            "1s",
        ])
        .run()
        .code(4);
    assert!(started.elapsed() < Duration::from_secs(15));
    assert!(ran.stderr.contains("unreachable"), "{}", ran.stderr);
    assert!(!root.path().join("current").exists());
}

#[test]
fn a_verify_mismatch_rolls_back_and_marks_the_commit_failed() {
    let repo = two_api_repo();
    let node = Node::new();
    Tg::sync_node(&repo.url(), &node).run().ok();
    let good = fs::canonicalize(node.current()).unwrap();

    repo.api("gamma");
    repo.commit("add gamma");
    node.emu.set_fail_reloads(true);
    let ran = Tg::sync_node(&repo.url(), &node).run().code(4);
    assert!(ran.stderr.contains("gamma"), "{}", ran.stderr);
    assert!(ran.stderr.contains("rolled back"), "{}", ran.stderr);
    assert_eq!(fs::canonicalize(node.current()).unwrap(), good);
    node.emu.set_fail_reloads(false);
    // Marked failed: not retried until a new commit arrives.
    Tg::sync_node(&repo.url(), &node).run().code(1);
}

#[test]
fn drift_on_the_gateway_is_repaired_by_a_reload() {
    let repo = two_api_repo();
    let node = Node::new();
    Tg::sync_node(&repo.url(), &node).run().ok();
    node.emu.tamper_remove_api("beta");
    let ran = Tg::sync_node(&repo.url(), &node).run().ok();
    assert!(ran.stderr.contains("repaired"), "{}", ran.stderr);
    assert_eq!(node.apis(), ids(&["alpha", "beta"]));
}

#[test]
fn branch_tag_and_sha_refs_over_git_daemon() {
    let repo = ConfigRepo::new();
    repo.api("v1");
    let v1 = repo.commit("v1");
    repo.tag("release-1");
    repo.checkout_new_branch("staging");
    repo.api("staging-only");
    let staging = repo.commit("staging");
    repo.checkout("main");
    repo.api("v2");
    repo.commit("v2");

    let daemon = GitDaemon::start(repo.path().parent().unwrap());
    let url = daemon.url(repo.path().file_name().unwrap().to_str().unwrap());
    let cases: [(&str, &str, &[&str]); 3] = [
        ("staging", &staging, &["staging-only", "v1"]),
        ("release-1", &v1, &["v1"]),
        (&v1, &v1, &["v1"]),
    ];
    for (r, sha, apis) in cases {
        let root = tempfile::tempdir().unwrap();
        Tg::sync(&url, root.path()).args(["--ref", r]).run().ok();
        let mut files: Vec<String> = fs::read_dir(root.path().join("current/apps"))
            .unwrap()
            .map(|e| {
                e.unwrap()
                    .file_name()
                    .to_string_lossy()
                    .replace(".json", "")
            })
            .collect();
        files.sort();
        assert_eq!(files, ids(apis), "ref {r}");
        let state: Value =
            serde_json::from_slice(&fs::read(root.path().join("state.json")).unwrap()).unwrap();
        assert_eq!(state["current"]["sha"], *sha, "ref {r}");
    }
    // Default: the remote's HEAD (main).
    let root = tempfile::tempdir().unwrap();
    Tg::sync(&url, root.path()).run().ok();
    assert!(root.path().join("current/apps/v2.json").is_file());
}

#[test]
fn path_picks_one_environment_of_a_repo() {
    let repo = ConfigRepo::new();
    repo.json("envs/prod/apps/p.json", &api_json("prod-api"));
    repo.json("envs/staging/apps/s.json", &api_json("staging-api"));
    repo.commit("two envs");
    let node = Node::new();
    Tg::sync_node(&repo.url(), &node)
        .args(["--path", "envs/prod"])
        .run()
        .ok();
    assert_eq!(node.apis(), ids(&["prod-api"]));
    let ran = Tg::sync(&repo.url(), node.root())
        .args(["--path", "envs/nope"])
        .run()
        .code(3);
    assert!(ran.stderr.contains("envs/nope"), "{}", ran.stderr);
}

#[test]
fn unreachable_repo_exits_3_and_keeps_the_last_good_revision() {
    let repo = two_api_repo();
    let root = tempfile::tempdir().unwrap();
    Tg::sync(&repo.url(), root.path()).run().ok();
    let before = fs::canonicalize(root.path().join("current")).unwrap();
    let port = crate::support::free_port();
    let ran = Tg::sync(&format!("git://127.0.0.1:{port}/nothing"), root.path())
        .args(["--connect-timeout", "2s"])
        .run()
        .code(3);
    assert!(!ran.stderr.is_empty());
    assert_eq!(
        fs::canonicalize(root.path().join("current")).unwrap(),
        before
    );
}

#[test]
fn json_logs_carry_the_short_sha_on_every_sync_line() {
    let repo = two_api_repo();
    let root = tempfile::tempdir().unwrap();
    let ran = Tg::sync(&repo.url(), root.path())
        .args(["--log-format", "json"])
        .run()
        .ok();
    let short = &repo.head()[..12];
    let lines: Vec<Value> = ran
        .stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(!lines.is_empty());
    for line in &lines {
        assert!(line.to_string().contains(short), "{line}");
    }
}

/// Regression: `sync --ref <sha>` exited 3 ("cannot fetch a specific
/// object") on a server with Git's default settings, even for the tip.
#[test]
fn pinning_a_sha_on_a_stock_server_applies_the_tip_an_older_commit_and_a_rollback() {
    let repo = ConfigRepo::new();
    let shas: Vec<String> = (1..=8)
        .map(|i| repo.api(&format!("c{i}")).commit(&format!("c{i}")))
        .collect();
    let daemon = GitDaemon::start(repo.path().parent().unwrap());
    let url = daemon.url(repo.path().file_name().unwrap().to_str().unwrap());
    let node = Node::new();
    let pin = |sha: &str| Tg::sync_node(&url, &node).args(["--ref", sha]).run();
    let apis = |n: usize| -> Vec<String> {
        let mut apis: Vec<String> = (1..=n).map(|i| format!("c{i}")).collect();
        apis.sort();
        apis
    };

    pin(&shas[7]).ok();
    assert_eq!(node.current_sha(), shas[7]);
    assert_eq!(node.apis(), apis(8));
    // A deploy of an older commit, then back to the tip, then the rollback.
    pin(&shas[4]).ok();
    assert_eq!(node.current_sha(), shas[4]);
    assert_eq!(node.apis(), apis(5));
    Tg::sync_node(&url, &node).run().ok();
    assert_eq!(node.current_sha(), shas[7]);
    pin(&shas[4]).ok();
    assert_eq!(node.current_sha(), shas[4]);
    assert_eq!(node.apis(), apis(5));

    // A sha the server does not have: exit 3, before a 10 s transfer
    // timeout could end it, naming the sha and what was searched; the
    // rollback keeps serving.
    let unknown = "89abcdef0123456789abcdef0123456789abcdef";
    let ran = Tg::sync_node(&url, &node)
        .args(["--ref", unknown, "--timeout", "10s"])
        .run()
        .code(3);
    assert!(ran.stderr.contains(unknown), "{}", ran.stderr);
    assert!(ran.stderr.contains("branches: main"), "{}", ran.stderr);
    assert!(!ran.stderr.contains("timed out"), "{}", ran.stderr);
    assert_eq!(node.current_sha(), shas[4]);
}

#[test]
fn the_first_change_after_a_cold_sync_recycles_a_spare_made_before_it() {
    // No revision is past --keep-revisions yet: a no-change sync leaves a
    // spare (links of current's files), whole, and the next change is
    // made from it instead of linking every file again.
    let repo = two_api_repo();
    let node = Node::new();
    Tg::sync_node(&repo.url(), &node).run().ok();
    let cold = fs::canonicalize(node.current()).unwrap();
    Tg::sync_node(&repo.url(), &node).run().ok();
    let revisions = node.root().join("revisions");
    let spare = revisions.join(".spare");
    let ino = |dir: &Path, f: &str| fs::metadata(dir.join(f)).unwrap().ino();
    assert_eq!(
        ino(&spare, "apps/alpha.json"),
        ino(&cold, "apps/alpha.json")
    );
    assert!(spare.join(".revision").is_file());
    let names: Vec<String> = fs::read_dir(&revisions)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| !n.starts_with(".spare-new-")),
        "{names:?}"
    );
    // The spare's directory becomes the new revision: its alpha.json is
    // the very file (one inode), while current keeps its own.
    let spare_ino = fs::metadata(&spare).unwrap().ino();
    let mut beta = api_json("beta");
    beta["proxy"]["target_url"] = "http://changed:8080/".into();
    repo.json("apps/beta.json", &beta);
    repo.commit("change beta");
    Tg::sync_node(&repo.url(), &node).run().ok();
    let next = fs::canonicalize(node.current()).unwrap();
    assert_ne!(next, cold);
    assert_eq!(fs::metadata(&next).unwrap().ino(), spare_ino);
    assert!(!spare.exists());
    assert_eq!(ino(&next, "apps/alpha.json"), ino(&cold, "apps/alpha.json"));
    assert_ne!(ino(&next, "apps/beta.json"), ino(&cold, "apps/beta.json"));
    assert_eq!(node.apis(), ids(&["alpha", "beta"]));
}
