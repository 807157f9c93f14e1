//! The Kubernetes examples, started from nothing in the order Kubernetes
//! starts their containers, with the settings the manifests give them (read
//! from `examples/kubernetes/`; only cluster addresses, paths and secrets
//! are replaced by the test's own Git daemon, Redis, root and emulator).

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use crate::support::cli::Tg;
use crate::support::node::{Node, SECRET, ids};
use crate::support::redis::RedisServer;
use crate::support::{KillOnDrop, eventually, free_port, http_get, served_repo, wait_for_port};

const WAIT: Duration = Duration::from_secs(30);

fn example(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/kubernetes")
        .join(path);
    fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// `TYK_GITOPS_*: "value"` lines of a ConfigMap's `data:` (comments left out).
fn config_map(yaml: &str) -> BTreeMap<String, String> {
    yaml.lines()
        .map(str::trim)
        .filter(|l| l.starts_with("TYK_GITOPS_"))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_string(), v.trim().trim_matches('"').to_string()))
        .collect()
}

/// `- name: TYK_GITOPS_*` / `value: "…"` pairs of a container's `env:`.
fn container_env(yaml: &str) -> BTreeMap<String, String> {
    let lines: Vec<&str> = yaml.lines().map(str::trim).collect();
    lines
        .windows(2)
        .filter_map(|w| {
            let name = w[0].strip_prefix("- name: ")?;
            let value = w[1].strip_prefix("value: ")?;
            name.starts_with("TYK_GITOPS_")
                .then(|| (name.to_string(), value.trim_matches('"').to_string()))
        })
        .collect()
}

/// The `args:` lines of a manifest, in order (`sync`, `run`).
fn container_args(yaml: &str) -> Vec<String> {
    yaml.lines()
        .filter_map(|l| l.trim().strip_prefix("args: [\""))
        .map(|l| l.trim_end_matches("\"]").to_string())
        .collect()
}

/// What this machine replaces in a manifest's environment: the cluster's
/// addresses, the mounted secrets and the volume's path.
struct Site {
    repo: String,
    redis: String,
    secrets: tempfile::TempDir,
}

impl Site {
    fn new(repo: String, redis: &RedisServer) -> Site {
        let secrets = tempfile::tempdir().expect("tmp");
        fs::write(secrets.path().join("gateway-secret"), format!("{SECRET}\n")).expect("secret");
        fs::write(secrets.path().join("webhook-secret"), "hook\n").expect("secret");
        Site {
            repo,
            redis: redis.url(),
            secrets,
        }
    }

    /// One container of the example: `args` with `env` as the
    /// manifest gives it, localised for `node`.
    fn container(
        &self,
        args: &str,
        env: &BTreeMap<String, String>,
        node: &Node,
        listen: Option<&str>,
    ) -> Tg {
        let mut env = env.clone();
        let secret = |name: &str| self.secrets.path().join(name).display().to_string();
        let root = node.root().display().to_string();
        for (key, value) in [
            ("TYK_GITOPS_REPO", self.repo.clone()),
            ("TYK_GITOPS_ROOT", root.clone()),
            ("TYK_GITOPS_GATEWAY_SECRET_FILE", secret("gateway-secret")),
        ] {
            env.insert(key.into(), value);
        }
        // git:// needs no SSH key nor host keys.
        env.remove("TYK_GITOPS_SSH_KEY_FILE");
        env.remove("TYK_GITOPS_SSH_KNOWN_HOSTS_FILE");
        for (key, value) in [
            ("TYK_GITOPS_REDIS", self.redis.clone()),
            ("TYK_GITOPS_GATEWAY", node.emu.url()),
            ("TYK_GITOPS_GATEWAY_ROOT", root),
            ("TYK_GITOPS_WEBHOOK_SECRET_FILE", secret("webhook-secret")),
            ("TYK_GITOPS_LISTEN", listen.unwrap_or_default().to_string()),
        ] {
            if let Some(v) = env.get_mut(key) {
                *v = value;
            }
        }
        Tg::new([args]).envs(&env)
    }
}

/// A sidecar or puller started from `container`, once it listens.
fn start(container: Tg, listen: &str) -> (KillOnDrop, tempfile::NamedTempFile) {
    let log = tempfile::NamedTempFile::new().expect("log");
    let child = container
        .command()
        .stdout(Stdio::null())
        .stderr(log.reopen().expect("log"))
        .spawn()
        .expect("spawn");
    let guard = KillOnDrop(child);
    wait_for_port(listen.parse().expect("addr"), WAIT);
    (guard, log)
}

fn ready(listen: &str) -> bool {
    http_get(listen.parse().expect("addr"), "/readyz").0 == 200
}

#[test]
fn base_pods_start_from_nothing_and_a_new_pod_joins_at_the_fleets_verified_commit() {
    let (repo, _daemon, url) = served_repo();
    let first = repo.head();
    let redis = RedisServer::start();
    let site = Site::new(url, &redis);
    let config = config_map(&example("base/config.yaml"));
    let gateway_yaml = example("base/gateway.yaml");
    assert_eq!(container_args(&gateway_yaml), ["sync", "run"]);
    // The init container has only the ConfigMap (envFrom); the sidecar
    // adds its own env.
    let mut sidecar_env = config.clone();
    sidecar_env.extend(container_env(&gateway_yaml));

    // Pod 1: init container, then the gateway, then the sidecar.
    let pod1 = Node::new();
    site.container("sync", &config, &pod1, None).run().ok();
    assert_eq!(pod1.current_sha(), first);
    let listen1 = format!("127.0.0.1:{}", free_port());
    let (sidecar1, _log1) = start(
        site.container("run", &sidecar_env, &pod1, Some(&listen1)),
        &listen1,
    );
    eventually("pod 1 ready: verified on its gateway", WAIT, || {
        ready(&listen1)
    });
    assert_eq!(pod1.apis(), ids(&["alpha"]));
    eventually("the fleet verified the first commit", WAIT, || {
        redis
            .get("tyk-gitops:example:verified")
            .is_some_and(|v| v.contains(first.as_str()))
    });
    drop(sidecar1);

    // A commit nobody has verified yet: a pod scaled up now starts on the
    // fleet's commit, which its init container learns from the ConfigMap's
    // Redis.
    repo.api("beta");
    let newer = repo.commit("beta");
    let pod2 = Node::new();
    site.container("sync", &config, &pod2, None).run().ok();
    assert_eq!(pod2.current_sha(), first, "not {newer}");
    let listen2 = format!("127.0.0.1:{}", free_port());
    let (_sidecar2, _log2) = start(
        site.container("run", &sidecar_env, &pod2, Some(&listen2)),
        &listen2,
    );
    eventually("pod 2 ready", WAIT, || ready(&listen2));
    assert_eq!(pod2.apis(), ids(&["alpha"]));
}

#[test]
fn the_shared_volume_puller_publishes_before_any_gateway_and_verifies_once_one_answers() {
    let (_repo, _daemon, url) = served_repo();
    let redis = RedisServer::start();
    let site = Site::new(url, &redis);
    let puller_yaml = example("shared-volume/puller.yaml");
    assert_eq!(container_args(&puller_yaml), ["run"]);
    let mut env = config_map(&example("base/config.yaml"));
    env.extend(container_env(&puller_yaml));
    assert_eq!(env["TYK_GITOPS_RELOAD"], "group");
    // What the gateways' init container waits for before they start.
    let wait_for = example("shared-volume/patches/gateway-shared-volume.yaml");
    assert!(wait_for.contains("until [ -d /var/lib/tyk-gitops/current/apps ]"));

    // No gateway answers yet: the Service has no ready endpoint.
    let node = Node::new();
    node.emu.set_down(true);
    let listen = format!("127.0.0.1:{}", free_port());
    let (_puller, _log) = start(site.container("run", &env, &node, Some(&listen)), &listen);
    eventually("the first revision on the volume", WAIT, || {
        node.current().join("apps").is_dir()
    });
    assert!(!ready(&listen), "not verified while no gateway answers");

    // The gateways' init container sees it and lets them start.
    node.emu.set_down(false);
    eventually("the puller reloads and verifies the gateway", WAIT, || {
        ready(&listen)
    });
    assert_eq!(node.apis(), ids(&["alpha"]));
    assert!(node.emu.reload_count() >= 1);
}
