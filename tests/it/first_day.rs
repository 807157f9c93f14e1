//! A new user's first day: a wrong `--path`, a commit that deletes every
//! definition, boolean env vars written the Kubernetes way, and what the
//! output says next. Nothing here may leave a gateway empty by accident.

use std::fs;
use std::path::Path;

use crate::support::cli::Tg;
use crate::support::node::{Node, ids};
use crate::support::repo::ConfigRepo;

fn current_target(node: &Node) -> std::path::PathBuf {
    fs::read_link(node.current()).expect("current link")
}

#[test]
fn a_wrong_path_changes_nothing_names_the_root_and_suggests_paths_that_hold_a_config() {
    let repo = ConfigRepo::new();
    repo.json(
        "envs/prod/apps/alpha.json",
        &crate::support::repo::api_json("alpha"),
    )
    .json(
        "envs/staging/apps/beta.json",
        &crate::support::repo::api_json("beta"),
    )
    .file("README.md", "config");
    repo.commit("two environments");
    let node = Node::new();
    let ok = Tg::sync_node(&repo.url(), &node)
        .args(["--path", "envs/prod"])
        .run();
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    assert_eq!(node.apis(), ids(&["alpha"]));
    let (link, reloads) = (current_target(&node), node.emu.reload_count());

    // One level too high: a folder with neither apps/ nor policies/.
    let wrong = Tg::sync_node(&repo.url(), &node)
        .args(["--path", "envs"])
        .run();
    assert_eq!(wrong.code, 1, "{}", wrong.stderr);
    assert!(
        wrong.stderr.contains("empty-config-root"),
        "{}",
        wrong.stderr
    );
    assert!(
        wrong.stderr.contains("--path envs of commit"),
        "{}",
        wrong.stderr
    );
    assert!(
        wrong
            .stderr
            .contains("these folders have apps/: --path envs/prod, --path envs/staging"),
        "{}",
        wrong.stderr
    );
    assert_eq!(node.apis(), ids(&["alpha"]));
    assert_eq!(current_target(&node), link);
    assert_eq!(node.emu.reload_count(), reloads);

    // A folder that is not there at all: a Git error, with the same hints.
    let typo = Tg::sync_node(&repo.url(), &node)
        .args(["--path", "envs/prd"])
        .run();
    assert_eq!(typo.code, 3, "{}", typo.stderr);
    assert!(
        typo.stderr.contains("\"envs/prd\" not found in commit")
            && typo
                .stderr
                .contains("these folders have apps/: --path envs/prod, --path envs/staging"),
        "{}",
        typo.stderr
    );
    assert_eq!(current_target(&node), link);

    // The refusal belongs to that --path: the right one still syncs, and
    // so does the wrong one once an empty gateway is asked for.
    let right = Tg::sync_node(&repo.url(), &node)
        .args(["--path", "envs/staging"])
        .run();
    assert_eq!(right.code, 0, "{}", right.stderr);
    assert_eq!(node.apis(), ids(&["beta"]));
    let allowed = Tg::sync_node(&repo.url(), &node)
        .args(["--path", "envs", "--allow-empty"])
        .run();
    assert_eq!(allowed.code, 0, "{}", allowed.stderr);
    assert_eq!(node.apis(), ids(&[]));
}

#[test]
fn a_commit_deleting_every_api_is_refused_until_allow_empty_is_given() {
    let repo = ConfigRepo::new();
    repo.api("alpha").api("beta").policy("gold", &["alpha"]);
    repo.commit("two apis");
    let node = Node::new();
    Tg::sync_node(&repo.url(), &node).run().ok();
    let (link, reloads) = (current_target(&node), node.emu.reload_count());

    // The policies stay, so the root still holds a config; only the APIs go.
    repo.remove("apps").policy("gold", &[]);
    let wipe = repo.commit("delete every api");
    let refused = Tg::sync_node(&repo.url(), &node).run();
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(refused.stderr.contains("no-apis"), "{}", refused.stderr);
    assert!(
        refused.stderr.contains("the gateway serves 2"),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains("--allow-empty"),
        "{}",
        refused.stderr
    );
    assert_eq!(node.apis(), ids(&["alpha", "beta"]));
    assert_eq!(current_target(&node), link);
    assert_eq!(node.emu.reload_count(), reloads);
    let state: serde_json::Value =
        serde_json::from_slice(&fs::read(node.root().join("state.json")).expect("state"))
            .expect("json");
    assert_eq!(state["rejected"][&wipe]["reason"], "empty", "{state}");

    // Again without the flag: still refused (it was rejected before), and
    // the message says what would let it through.
    let again = Tg::sync_node(&repo.url(), &node).run();
    assert_eq!(again.code, 1, "{}", again.stderr);
    assert!(
        again.stderr.contains("was rejected before (empty)")
            && again.stderr.contains("--allow-empty lets it through"),
        "{}",
        again.stderr
    );
    // With it, from the environment as a manifest would write it, the same
    // commit goes through without --force.
    let allowed = Tg::sync_node(&repo.url(), &node)
        .env("TYK_GITOPS_ALLOW_EMPTY", "Yes")
        .run();
    assert_eq!(allowed.code, 0, "{}", allowed.stderr);
    assert_eq!(node.apis(), ids(&[]));
    assert_eq!(node.current_sha(), wipe);
}

#[test]
fn a_first_sync_of_an_empty_root_is_refused_too() {
    let repo = ConfigRepo::new();
    repo.file("README.md", "nothing yet");
    repo.commit("readme");
    let node = Node::new();
    let ran = Tg::sync_node(&repo.url(), &node).run();
    assert_eq!(ran.code, 1, "{}", ran.stderr);
    assert!(ran.stderr.contains("the top of commit"), "{}", ran.stderr);
    assert!(
        ran.stderr.contains("point --path at the folder"),
        "{}",
        ran.stderr
    );
    assert!(!node.current().exists());
}

fn write(dir: &Path, path: &str, body: &str) {
    let full = dir.join(path);
    fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
    fs::write(full, body).expect("write");
}

#[test]
fn validate_reports_an_empty_root_and_a_root_without_apis() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    write(
        d,
        "envs/prod/apps/a.json",
        &crate::support::repo::api_json("a").to_string(),
    );
    write(
        d,
        "envs/bare/policies/p.json",
        &crate::support::repo::policy_json("p", &[]).to_string(),
    );
    let dir_arg = d.to_str().expect("utf8");

    let empty = Tg::validate(dir_arg).args(["--path", "envs"]).run();
    assert_eq!(empty.code, 1, "{}", empty.stdout);
    assert!(
        empty.stdout.contains("empty-config-root"),
        "{}",
        empty.stdout
    );
    assert!(
        empty.stdout.contains("--path envs/prod"),
        "{}",
        empty.stdout
    );
    let json = Tg::validate(dir_arg)
        .args(["--path", "envs", "--format", "github"])
        .run();
    assert!(
        json.stdout.contains("::error file=envs,"),
        "{}",
        json.stdout
    );

    let no_apis = Tg::validate(dir_arg).args(["--path", "envs/bare"]).run();
    assert_eq!(no_apis.code, 1, "{}", no_apis.stdout);
    assert!(no_apis.stdout.contains("no-apis"), "{}", no_apis.stdout);

    for allow in ["1", "true", "ON", "yes"] {
        let ran = Tg::validate(dir_arg)
            .args(["--path", "envs/bare"])
            .env("TYK_GITOPS_ALLOW_EMPTY", allow)
            .run();
        assert_eq!(ran.code, 0, "{allow}: {}{}", ran.stdout, ran.stderr);
    }
    for deny in ["0", "false", "Off", "no", ""] {
        let ran = Tg::validate(dir_arg)
            .args(["--path", "envs/bare"])
            .env("TYK_GITOPS_ALLOW_EMPTY", deny)
            .run();
        assert_eq!(ran.code, 1, "{deny:?}: {}{}", ran.stdout, ran.stderr);
    }
    // A typo is not taken for either.
    let typo = Tg::validate(dir_arg)
        .args(["--path", "envs/prod"])
        .env("TYK_GITOPS_STRICT", "ture")
        .run();
    assert_eq!(typo.code, 2, "{}", typo.stderr);
    let ok = Tg::validate(dir_arg).args(["--path", "envs/prod"]).run();
    assert_eq!(ok.code, 0, "{}", ok.stdout);
}

#[test]
fn a_wrong_secret_names_where_it_came_from_and_a_missing_secret_file_is_a_setup_error() {
    let repo = ConfigRepo::new();
    repo.api("alpha");
    repo.commit("alpha");
    let node = Node::new();
    let gateway = ["--gateway".to_string(), node.emu.url()];
    let base = || Tg::sync(&repo.url(), node.root()).args(&gateway);

    let from_env = base().secret("wrong-one").run();
    assert_eq!(from_env.code, 4, "{}", from_env.stderr);
    assert!(
        from_env
            .stderr
            .contains("rejected the secret from TYK_GITOPS_GATEWAY_SECRET (403)"),
        "{}",
        from_env.stderr
    );
    assert!(!from_env.stderr.contains("wrong-one"));

    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("gateway-secret");
    fs::write(&file, "wrong-two\n").expect("write");
    let with_file = || base().arg("--gateway-secret-file").arg(&file);
    let from_file = with_file().run();
    assert_eq!(from_file.code, 4, "{}", from_file.stderr);
    assert!(
        from_file.stderr.contains(&format!(
            "rejected the secret from --gateway-secret-file {} (403)",
            file.display()
        )),
        "{}",
        from_file.stderr
    );

    fs::remove_file(&file).expect("rm");
    let missing = with_file().run();
    assert_eq!(missing.code, 2, "{}", missing.stderr);
    assert!(
        missing
            .stderr
            .contains("cannot read the gateway secret from"),
        "{}",
        missing.stderr
    );
    assert!(!node.current().exists(), "nothing written");
}

#[test]
fn a_schedule_replaces_the_manifests_period_but_both_typed_conflict() {
    let repo = ConfigRepo::new();
    repo.api("alpha");
    repo.commit("alpha");
    let root = tempfile::tempdir().expect("tmp");
    let listen = format!("127.0.0.1:{}", crate::support::free_port());
    let root_arg = root.path().display().to_string();
    let args = [
        "run",
        "--repo",
        repo.path().to_str().expect("utf8"),
        "--root",
        &root_arg,
        "--listen",
        &listen,
    ];

    let mut both_typed = args.to_vec();
    both_typed.extend(["--period", "30s", "--schedule", "0 * * * *"]);
    let conflict = Tg::new(both_typed).run();
    assert_eq!(conflict.code, 2, "{}", conflict.stderr);
    assert!(conflict.stderr.contains("--period and --schedule"));

    // The example's sidecar sets TYK_GITOPS_PERIOD; a ConfigMap adds a
    // schedule. The sidecar starts, polls on the schedule and applies.
    let child = Tg::new(args)
        .env("TYK_GITOPS_PERIOD", "30s")
        .env("TYK_GITOPS_SCHEDULE", "0 * * * *")
        .command()
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn run");
    let guard = crate::support::KillOnDrop(child);
    let addr = listen.parse().expect("addr");
    crate::support::wait_for_port(addr, std::time::Duration::from_secs(20));
    crate::support::eventually("applied", std::time::Duration::from_secs(20), || {
        crate::support::http_get(addr, "/readyz").0 == 200
    });
    drop(guard);

    // An empty schedule, as a manifest's placeholder, is no schedule.
    let child = Tg::new(args)
        .env("TYK_GITOPS_SCHEDULE", "")
        .command()
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn run");
    let _guard = crate::support::KillOnDrop(child);
    crate::support::wait_for_port(addr, std::time::Duration::from_secs(20));
}

#[test]
fn sync_says_where_the_revision_is_and_what_comes_next() {
    let repo = ConfigRepo::new();
    repo.api("alpha");
    repo.commit("alpha");
    let root = tempfile::tempdir().expect("tmp");
    let root_arg = root.path().display().to_string();
    let repo_arg = repo.path().to_str().expect("utf8");
    let ran = Tg::sync(repo_arg, root.path()).run();
    assert_eq!(ran.code, 0, "{}", ran.stderr);
    assert!(
        ran.stderr
            .contains("verified=false because no --gateway was given"),
        "{}",
        ran.stderr
    );
    assert!(
        ran.stderr
            .contains(&format!("TYK_GW_APPPATH={root_arg}/current/apps")),
        "{}",
        ran.stderr
    );
    assert!(!ran.stderr.contains("uncommitted"), "{}", ran.stderr);

    // An edit not committed yet is not synced, and the user is told.
    repo.api("beta");
    let dirty = Tg::sync(repo_arg, root.path()).run();
    assert_eq!(dirty.code, 0, "{}", dirty.stderr);
    assert!(
        dirty
            .stderr
            .contains("has uncommitted changes under its top: only committed content is synced"),
        "{}",
        dirty.stderr
    );
    assert!(dirty.stderr.contains("apps/beta.json"), "{}", dirty.stderr);
    assert!(!root.path().join("current/apps/beta.json").exists());
    let missing = Tg::sync("/no/such/path", root.path()).run();
    assert_eq!(missing.code, 3, "{}", missing.stderr);
    assert!(
        missing
            .stderr
            .contains("--repo /no/such/path: no such file or directory"),
        "{}",
        missing.stderr
    );
    assert!(!missing.stderr.contains("unsupported URL protocol"));
}

#[test]
fn fleet_help_shows_redis_as_required() {
    for command in ["status", "wait"] {
        let help = Tg::new(["fleet", command, "--help"]).run();
        assert_eq!(help.code, 0);
        let usage = help
            .stdout
            .lines()
            .find(|l| l.starts_with("Usage:"))
            .unwrap_or_default()
            .to_string();
        assert!(usage.contains(" --redis <REDIS>"), "{usage}");
        assert!(!usage.contains("[--redis"), "{usage}");
        let args: &[&str] = if command == "wait" {
            &["fleet", "wait", "--sha", "abcdef1"]
        } else {
            &["fleet", "status"]
        };
        let missing = Tg::new(args).run();
        assert_eq!(missing.code, 2, "{}", missing.stderr);
        assert!(
            missing
                .stderr
                .contains("required arguments were not provided:\n  --redis <REDIS>"),
            "{}",
            missing.stderr
        );
    }
}

#[test]
fn a_sidecar_refuses_a_commit_deleting_every_api_and_shows_why_in_status() {
    use crate::support::eventually;
    use crate::support::sidecar::Sidecar;
    use std::time::Duration;

    let (repo, _daemon, url) = crate::support::served_repo();
    let node = Node::new();
    let sidecar = Sidecar::start(&url, &node, &[]);
    eventually("ready", Duration::from_secs(20), || sidecar.ready());
    let reloads = node.emu.reload_count();

    repo.remove("apps").policy("gold", &[]);
    let wipe = repo.commit("delete every api");
    eventually("the refusal in /status", Duration::from_secs(20), || {
        sidecar.status()["rejected"]
            .as_array()
            .is_some_and(|r| r.iter().any(|x| x["sha"] == *wipe.as_str()))
    });
    let status = sidecar.status();
    let rejected = &status["rejected"][0];
    assert_eq!(rejected["reason"], "empty", "{status}");
    assert_eq!(rejected["findings"][0]["rule"], "no-apis", "{status}");
    assert_eq!(node.apis(), ids(&["alpha"]));
    assert_eq!(node.emu.reload_count(), reloads);
}
