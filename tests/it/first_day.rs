//! A new user's first day: a wrong `--path`, a commit that deletes every
//! definition, boolean env vars written the Kubernetes way, and what the
//! output says next. Nothing here may leave a gateway empty by accident.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::support::bin;
use crate::support::node::{Node, SECRET, ids};
use crate::support::repo::ConfigRepo;

/// What a user sees of one run of the binary.
struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

fn tyk_gitops(args: &[&str], env: &[(&str, &str)]) -> Ran {
    let out = Command::new(bin())
        .args(args)
        .env_remove("TYK_GITOPS_GATEWAY_SECRET_FILE")
        .env_remove("TYK_GITOPS_ALLOW_EMPTY")
        .env_remove("TYK_GITOPS_STRICT")
        .env("NO_COLOR", "1")
        .envs(env.iter().copied())
        .output()
        .expect("run tyk-gitops");
    Ran {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `sync` of `repo` into `node`'s root, verified on its gateway.
fn sync(repo: &ConfigRepo, node: &Node, extra: &[&str], env: &[(&str, &str)]) -> Ran {
    let root = node.root().display().to_string();
    let gateway = node.emu.url();
    let mut args = vec![
        "sync",
        "--repo",
        repo.path().to_str().expect("utf8"),
        "--root",
        &root,
        "--gateway",
        &gateway,
        "--verify-timeout",
        "3s",
    ];
    args.extend_from_slice(extra);
    let mut env = env.to_vec();
    env.push(("TYK_GITOPS_GATEWAY_SECRET", SECRET));
    tyk_gitops(&args, &env)
}

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
    let ok = sync(&repo, &node, &["--path", "envs/prod"], &[]);
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    assert_eq!(node.apis(), ids(&["alpha"]));
    let (link, reloads) = (current_target(&node), node.emu.reload_count());

    // One level too high: a folder with neither apps/ nor policies/.
    let wrong = sync(&repo, &node, &["--path", "envs"], &[]);
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
    let typo = sync(&repo, &node, &["--path", "envs/prd"], &[]);
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
    let right = sync(&repo, &node, &["--path", "envs/staging"], &[]);
    assert_eq!(right.code, 0, "{}", right.stderr);
    assert_eq!(node.apis(), ids(&["beta"]));
    let allowed = sync(&repo, &node, &["--path", "envs", "--allow-empty"], &[]);
    assert_eq!(allowed.code, 0, "{}", allowed.stderr);
    assert_eq!(node.apis(), ids(&[]));
}

#[test]
fn a_commit_deleting_every_api_is_refused_until_allow_empty_is_given() {
    let repo = ConfigRepo::new();
    repo.api("alpha").api("beta").policy("gold", &["alpha"]);
    repo.commit("two apis");
    let node = Node::new();
    assert_eq!(sync(&repo, &node, &[], &[]).code, 0);
    let (link, reloads) = (current_target(&node), node.emu.reload_count());

    // The policies stay, so the root still holds a config; only the APIs go.
    repo.remove("apps").policy("gold", &[]);
    let wipe = repo.commit("delete every api");
    let refused = sync(&repo, &node, &[], &[]);
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
    let again = sync(&repo, &node, &[], &[]);
    assert_eq!(again.code, 1, "{}", again.stderr);
    assert!(
        again.stderr.contains("was rejected before (empty)")
            && again.stderr.contains("--allow-empty lets it through"),
        "{}",
        again.stderr
    );
    // With it, from the environment as a manifest would write it, the same
    // commit goes through without --force.
    let allowed = sync(&repo, &node, &[], &[("TYK_GITOPS_ALLOW_EMPTY", "Yes")]);
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
    let ran = sync(&repo, &node, &[], &[]);
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

    let empty = tyk_gitops(&["validate", dir_arg, "--path", "envs"], &[]);
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
    let json = tyk_gitops(
        &["validate", dir_arg, "--path", "envs", "--format", "github"],
        &[],
    );
    assert!(
        json.stdout.contains("::error file=envs,"),
        "{}",
        json.stdout
    );

    let no_apis = tyk_gitops(&["validate", dir_arg, "--path", "envs/bare"], &[]);
    assert_eq!(no_apis.code, 1, "{}", no_apis.stdout);
    assert!(no_apis.stdout.contains("no-apis"), "{}", no_apis.stdout);

    for allow in ["1", "true", "ON", "yes"] {
        let ran = tyk_gitops(
            &["validate", dir_arg, "--path", "envs/bare"],
            &[("TYK_GITOPS_ALLOW_EMPTY", allow)],
        );
        assert_eq!(ran.code, 0, "{allow}: {}{}", ran.stdout, ran.stderr);
    }
    for deny in ["0", "false", "Off", "no", ""] {
        let ran = tyk_gitops(
            &["validate", dir_arg, "--path", "envs/bare"],
            &[("TYK_GITOPS_ALLOW_EMPTY", deny)],
        );
        assert_eq!(ran.code, 1, "{deny:?}: {}{}", ran.stdout, ran.stderr);
    }
    // A typo is not taken for either.
    let typo = tyk_gitops(
        &["validate", dir_arg, "--path", "envs/prod"],
        &[("TYK_GITOPS_STRICT", "ture")],
    );
    assert_eq!(typo.code, 2, "{}", typo.stderr);
    let ok = tyk_gitops(&["validate", dir_arg, "--path", "envs/prod"], &[]);
    assert_eq!(ok.code, 0, "{}", ok.stdout);
}

#[test]
fn a_wrong_secret_names_where_it_came_from_and_a_missing_secret_file_is_a_setup_error() {
    let repo = ConfigRepo::new();
    repo.api("alpha");
    repo.commit("alpha");
    let node = Node::new();
    let (root, gateway) = (node.root().display().to_string(), node.emu.url());
    let base = [
        "sync",
        "--repo",
        repo.path().to_str().expect("utf8"),
        "--root",
        &root,
        "--gateway",
        &gateway,
    ];

    let from_env = tyk_gitops(&base, &[("TYK_GITOPS_GATEWAY_SECRET", "wrong-one")]);
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
    let mut with_file = base.to_vec();
    with_file.extend(["--gateway-secret-file", file.to_str().expect("utf8")]);
    let from_file = tyk_gitops(&with_file, &[]);
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
    let missing = tyk_gitops(&with_file, &[]);
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
    let conflict = tyk_gitops(&both_typed, &[]);
    assert_eq!(conflict.code, 2, "{}", conflict.stderr);
    assert!(conflict.stderr.contains("--period and --schedule"));

    // The example's sidecar sets TYK_GITOPS_PERIOD; a ConfigMap adds a
    // schedule. The sidecar starts, polls on the schedule and applies.
    let child = Command::new(bin())
        .args(args)
        .env_remove("TYK_GITOPS_GATEWAY_SECRET_FILE")
        .env("TYK_GITOPS_PERIOD", "30s")
        .env("TYK_GITOPS_SCHEDULE", "0 * * * *")
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
    let child = Command::new(bin())
        .args(args)
        .env_remove("TYK_GITOPS_GATEWAY_SECRET_FILE")
        .env("TYK_GITOPS_SCHEDULE", "")
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
    let ran = tyk_gitops(&["sync", "--repo", repo_arg, "--root", &root_arg], &[]);
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
    let dirty = tyk_gitops(&["sync", "--repo", repo_arg, "--root", &root_arg], &[]);
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
    let missing = tyk_gitops(
        &["sync", "--repo", "/no/such/path", "--root", &root_arg],
        &[],
    );
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
        let help = tyk_gitops(&["fleet", command, "--help"], &[]);
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
        let missing = tyk_gitops(args, &[]);
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
