//! Hostile input and secrets (issue 7): every mode run with distinctive
//! secrets and everything it shows searched for them; the webhook under
//! floods, oversized bodies and slow-loris clients; config repos at a scale
//! meant to hurt. RELIABILITY.md ("Hostile input and secrets") has the
//! results and rerun commands.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::json;
use sha2::Sha256;
use tempfile::TempDir;

use crate::support::cli::{Ran, Tg};
use crate::support::git_server::{GitDaemon, GitHttp};
use crate::support::node::{Node, ids};
use crate::support::redis::RedisServer;
use crate::support::repo::ConfigRepo;
use crate::support::sidecar::Sidecar;
use crate::support::tyk::{EmuConfig, TykEmulator};
use crate::support::{KillOnDrop, eventually, free_port, http, http_get, wait_for_port};

const WAIT: Duration = Duration::from_secs(30);

fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// Resident set of a process in KiB, from `/proc/<pid>/status`.
fn rss_kib(pid: u32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

// ---------------------------------------------------------------------------
// Secrets sweep
// ---------------------------------------------------------------------------

/// Distinctive values, so a hit can only be a leak. Each also carries a
/// tail that is searched on its own: a truncated leak is still a leak.
const URL_TOKEN: &str = "urltok-SWEEP-4b1e9c7a";
const PASSWORD_FILE_TOKEN: &str = "pwfile-SWEEP-91c3d0e2";
const GATEWAY_ENV_SECRET: &str = "gwenv-SWEEP-5a7f22b8";
const GATEWAY_FILE_SECRET: &str = "gwfile-SWEEP-c0d4e6f1";
const HOOK_SECRET: &str = "hook-SWEEP-7e2a9b44";
const REDIS_PASSWORD: &str = "redispw-SWEEP-3f8d61ac";
/// A wrong Redis password is a secret too (often a near miss of the real one).
const REDIS_WRONG_PASSWORD: &str = "redisbad-SWEEP-0a9b8c7d";

/// A labelled `sync` invocation: its flags and environment.
type SyncRun<'a> = (&'a str, Vec<&'a str>, Vec<(&'a str, &'a str)>);

/// Everything a user or an attacker could read, by where it came from.
#[derive(Default)]
struct Seen {
    items: Vec<(String, Vec<u8>)>,
}

impl Seen {
    fn add(&mut self, label: impl Into<String>, bytes: impl Into<Vec<u8>>) {
        self.items.push((label.into(), bytes.into()));
    }

    /// Every file under `dir`, recursively (symlinks not followed).
    fn add_tree(&mut self, label: &str, dir: &Path, skip: &[&str]) {
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            let Ok(entries) = fs::read_dir(&d) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let rel = path
                    .strip_prefix(dir)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                if skip
                    .iter()
                    .any(|s| rel == *s || rel.starts_with(&format!("{s}/")))
                {
                    continue;
                }
                // The name itself is visible too.
                self.add(format!("{label}:name:{rel}"), rel.clone());
                let ft = entry.file_type().unwrap();
                if ft.is_dir() {
                    stack.push(path);
                } else if ft.is_symlink() {
                    let target = fs::read_link(&path).unwrap();
                    self.add(
                        format!("{label}:{rel} ->"),
                        target.to_string_lossy().into_owned(),
                    );
                } else if let Ok(bytes) = fs::read(&path) {
                    self.add(format!("{label}:{rel}"), bytes);
                }
            }
        }
    }

    fn bytes(&self) -> usize {
        self.items.iter().map(|(_, b)| b.len()).sum()
    }

    /// Every (place, needle) where a secret shows, with some context.
    fn leaks(&self, needles: &[(String, String)]) -> Vec<String> {
        let mut found = Vec::new();
        for (label, bytes) in &self.items {
            for (what, needle) in needles {
                if let Some(i) = find(bytes, needle.as_bytes()) {
                    let from = i.saturating_sub(120);
                    let to = (i + needle.len() + 120).min(bytes.len());
                    found.push(format!(
                        "{what} in {label}: …{}…",
                        String::from_utf8_lossy(&bytes[from..to])
                    ));
                }
            }
        }
        found
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The forms each secret could leak in: raw, its random tail, and the
/// Basic-auth header value built from it.
fn needles() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for secret in [
        URL_TOKEN,
        PASSWORD_FILE_TOKEN,
        GATEWAY_ENV_SECRET,
        GATEWAY_FILE_SECRET,
        HOOK_SECRET,
        REDIS_PASSWORD,
        REDIS_WRONG_PASSWORD,
    ] {
        out.push((secret.to_string(), secret.to_string()));
        let tail = secret.rsplit('-').next().unwrap();
        out.push((format!("{secret} (tail)"), tail.to_string()));
    }
    for (user, pass) in [("deploy", URL_TOKEN), ("bot", PASSWORD_FILE_TOKEN)] {
        let basic = STANDARD.encode(format!("{user}:{pass}"));
        out.push((format!("Basic auth of {pass}"), basic));
    }
    out
}

/// A root plus an emulator with our own gateway secret.
fn node_with_secret(secret: &str) -> Node {
    let root = tempfile::tempdir().unwrap();
    let emu = TykEmulator::start(EmuConfig {
        app_path: root.path().join("current/apps"),
        policy_path: Some(root.path().join("current/policies")),
        policy_record_name: None,
        secret: secret.to_string(),
        ..EmuConfig::default()
    });
    Node { root, emu }
}

/// Runs the binary to completion with a clean `TYK_GITOPS_*` environment;
/// records stdout and stderr; returns the exit code.
fn run_cli(seen: &mut Seen, label: &str, args: &[&str], env: &[(&str, &str)]) -> i32 {
    let ran = Tg::new(args).envs(env.iter().copied()).run();
    seen.add(format!("{label}:stdout"), ran.stdout);
    seen.add(format!("{label}:stderr"), ran.stderr);
    ran.code
}

/// `tyk-gitops run` with our own flags and environment (not `Sidecar::start`,
/// which sets the shared test gateway secret).
fn start_run(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Sidecar {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let sidecar_dir = tempfile::tempdir_in(dir).unwrap();
    let stderr = fs::File::create(sidecar_dir.path().join("stderr")).unwrap();
    let stdout = fs::File::create(sidecar_dir.path().join("stdout")).unwrap();
    let child = Tg::new(["run"])
        .args(args)
        .args(["--listen", &addr.to_string()])
        .envs(env.iter().copied())
        .command()
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .unwrap();
    wait_for_port(addr, Duration::from_secs(20));
    Sidecar {
        child: KillOnDrop(child),
        addr,
        dir: sidecar_dir,
    }
}

/// Everything the sidecar's HTTP server shows, and its webhook's answers to
/// good and bad requests.
fn probe_http(seen: &mut Seen, label: &str, sidecar: &Sidecar) {
    for path in ["/status", "/metrics", "/healthz", "/readyz", "/nope"] {
        let (code, body) = http_get(sidecar.addr, path);
        seen.add(format!("{label}:GET {path} ({code})"), body);
    }
    let body = json!({"ref": "refs/heads/main", "after": "0".repeat(40), "repository": {"full_name": "ops/config"}})
        .to_string();
    let good = format!("sha256={}", sign(HOOK_SECRET, body.as_bytes()));
    let bad = format!("sha256={}", sign("not-the-secret", body.as_bytes()));
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        (
            "github good",
            vec![("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &good)],
        ),
        (
            "github bad",
            vec![("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &bad)],
        ),
        (
            "gitlab good",
            vec![
                ("X-Gitlab-Event", "Push Hook"),
                ("X-Gitlab-Token", HOOK_SECRET),
            ],
        ),
        (
            "gitlab bad",
            vec![("X-Gitlab-Event", "Push Hook"), ("X-Gitlab-Token", "nope")],
        ),
        ("malformed", vec![("X-Hub-Signature-256", "sha256=zz")]),
        ("unsigned", vec![]),
        (
            "ping",
            vec![("X-GitHub-Event", "ping"), ("X-Hub-Signature-256", &good)],
        ),
    ];
    for (what, headers) in cases {
        let (code, reply) = http(sidecar.addr, "POST", "/webhook", &headers, body.as_bytes());
        seen.add(format!("{label}:webhook {what} ({code})"), reply);
    }
}

/// Every key of a Redis database and its value, as text.
fn redis_dump(redis: &RedisServer) -> String {
    let mut con = redis.connection();
    let keys: Vec<String> = ::redis::cmd("KEYS").arg("*").query(&mut con).unwrap();
    let mut out = String::new();
    for key in keys {
        let kind: String = ::redis::cmd("TYPE").arg(&key).query(&mut con).unwrap();
        let value: ::redis::Value = match kind.as_str() {
            "string" => ::redis::cmd("GET").arg(&key).query(&mut con).unwrap(),
            "hash" => ::redis::cmd("HGETALL").arg(&key).query(&mut con).unwrap(),
            "set" => ::redis::cmd("SMEMBERS").arg(&key).query(&mut con).unwrap(),
            "zset" => ::redis::cmd("ZRANGE")
                .arg(&key)
                .arg(0)
                .arg(-1)
                .query(&mut con)
                .unwrap(),
            "list" => ::redis::cmd("LRANGE")
                .arg(&key)
                .arg(0)
                .arg(-1)
                .query(&mut con)
                .unwrap(),
            _ => ::redis::Value::Nil,
        };
        let text = match &value {
            ::redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
            ::redis::Value::Array(items) | ::redis::Value::Set(items) => items
                .iter()
                .map(|v| match v {
                    ::redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                    other => format!("{other:?}"),
                })
                .collect::<Vec<_>>()
                .join(" "),
            other => format!("{other:?}"),
        };
        out.push_str(&format!("{key} ({kind}) = {text}\n"));
    }
    out
}

#[test]
fn no_secret_shows_in_any_output_file_endpoint_or_redis_key_of_any_mode() {
    let started = Instant::now();
    let work = tempfile::tempdir().unwrap();
    let w = |name: &str| work.path().join(name);
    let s = |p: &PathBuf| p.to_str().unwrap().to_string();

    let repo = ConfigRepo::new();
    repo.api("alpha").policy("gold", &["alpha"]);
    repo.commit("alpha");
    let served = tempfile::tempdir().unwrap();
    repo.bare_clone(served.path(), "config.git");
    // One server takes the token in the URL, the other the --password-file one.
    let http_url = GitHttp::start(served.path(), Some(("deploy", URL_TOKEN)));
    let http_pw = GitHttp::start(served.path(), Some(("bot", PASSWORD_FILE_TOKEN)));
    let url_tok = http_url.url_with_credentials("config.git", "deploy", URL_TOKEN);
    let url_plain = http_pw.url("config.git");
    // The token rejected (the other server's), and a server that is not there.
    let url_tok_rejected = http_pw.url_with_credentials("config.git", "deploy", URL_TOKEN);
    let url_dead = format!(
        "http://deploy:{URL_TOKEN}@127.0.0.1:{}/config.git",
        free_port()
    );

    let redis = RedisServer::start_with_password(REDIS_PASSWORD);
    let redis_url = redis.url();
    let redis_wrong = format!("redis://:{REDIS_WRONG_PASSWORD}@127.0.0.1:{}", redis.port);
    let redis_user = format!("redis://default:{REDIS_PASSWORD}@127.0.0.1:{}", redis.port);
    let redis_dead = format!("redis://:{REDIS_PASSWORD}@127.0.0.1:{}", free_port());

    let node_env = node_with_secret(GATEWAY_ENV_SECRET);
    let node_file = node_with_secret(GATEWAY_FILE_SECRET);
    fs::write(w("gateway-secret"), format!("{GATEWAY_FILE_SECRET}\n")).unwrap();
    fs::write(w("password"), format!("{PASSWORD_FILE_TOKEN}\n")).unwrap();
    fs::write(w("webhook-secret"), format!("{HOOK_SECRET}\n")).unwrap();
    let gw_file = s(&w("gateway-secret"));
    let pw_file = s(&w("password"));
    let hook_file = s(&w("webhook-secret"));
    let root_env = s(&node_env.root().to_path_buf());
    let root_file = s(&node_file.root().to_path_buf());
    let root_scratch = s(&w("scratch-root"));
    let gw_env_url = node_env.emu.url();
    let gw_file_url = node_file.emu.url();
    let env_secret = [("TYK_GITOPS_GATEWAY_SECRET", GATEWAY_ENV_SECRET)];

    let mut seen = Seen::default();
    let mut codes: BTreeMap<String, i32> = BTreeMap::new();
    let formats: [&[&str]; 2] = [
        &["--log-level", "debug"],
        &["--log-level", "debug", "--log-format", "json"],
    ];

    // sync: every credential path, good and bad, in both log formats.
    for (f, format) in formats.iter().enumerate() {
        let runs: Vec<SyncRun> = vec![
            (
                "sync url-token env-secret redis",
                vec![
                    "--repo",
                    &url_tok,
                    "--root",
                    &root_env,
                    "--gateway",
                    &gw_env_url,
                    "--redis",
                    &redis_url,
                    "--cluster",
                    "sweep",
                    "--force",
                ],
                env_secret.to_vec(),
            ),
            (
                "sync password-file secret-file redis-user",
                vec![
                    "--repo",
                    &url_plain,
                    "--username",
                    "bot",
                    "--password-file",
                    &pw_file,
                    "--root",
                    &root_file,
                    "--gateway",
                    &gw_file_url,
                    "--gateway-secret-file",
                    &gw_file,
                    "--redis",
                    &redis_user,
                    "--cluster",
                    "sweep",
                    "--force",
                ],
                vec![],
            ),
            (
                "sync url-token rejected (401)",
                vec![
                    "--repo",
                    &url_tok_rejected,
                    "--root",
                    &root_scratch,
                    "--gateway",
                    &gw_env_url,
                    "--timeout",
                    "5s",
                ],
                env_secret.to_vec(),
            ),
            (
                "sync url-token server down",
                vec![
                    "--repo",
                    &url_dead,
                    "--root",
                    &root_scratch,
                    "--gateway",
                    &gw_env_url,
                    "--connect-timeout",
                    "2s",
                ],
                env_secret.to_vec(),
            ),
            (
                "sync wrong gateway secret (403)",
                vec![
                    "--repo",
                    &url_tok,
                    "--root",
                    &root_scratch,
                    "--gateway",
                    &gw_file_url,
                    "--gateway-wait",
                    "1s",
                    "--force",
                ],
                env_secret.to_vec(),
            ),
            (
                "sync gateway secret-file against env gateway (403)",
                vec![
                    "--repo",
                    &url_tok,
                    "--root",
                    &root_scratch,
                    "--gateway",
                    &gw_env_url,
                    "--gateway-secret-file",
                    &gw_file,
                    "--gateway-wait",
                    "1s",
                    "--force",
                ],
                vec![],
            ),
            (
                "sync redis wrong password",
                vec![
                    "--repo",
                    &url_tok,
                    "--root",
                    &root_scratch,
                    "--reload",
                    "none",
                    "--redis",
                    &redis_wrong,
                ],
                vec![],
            ),
            (
                "sync redis down",
                vec![
                    "--repo",
                    &url_tok,
                    "--root",
                    &root_scratch,
                    "--reload",
                    "none",
                    "--redis",
                    &redis_dead,
                ],
                vec![],
            ),
            (
                "sync everything from the environment",
                vec!["--root", &root_scratch, "--reload", "none", "--force"],
                vec![
                    ("TYK_GITOPS_REPO", &url_plain),
                    ("TYK_GITOPS_USERNAME", "bot"),
                    ("TYK_GITOPS_PASSWORD_FILE", &pw_file),
                    ("TYK_GITOPS_REDIS", &redis_url),
                    ("TYK_GITOPS_GATEWAY_SECRET", GATEWAY_ENV_SECRET),
                ],
            ),
        ];
        for (label, args, env) in runs {
            let label = format!("{label} [{f}]");
            let mut full: Vec<&str> = format.to_vec();
            full.push("sync");
            full.extend(args);
            let code = run_cli(&mut seen, &label, &full, &env);
            codes.insert(label, code);
        }
    }
    assert_eq!(codes["sync url-token env-secret redis [0]"], 0, "{codes:?}");
    assert_eq!(
        codes["sync password-file secret-file redis-user [1]"], 0,
        "{codes:?}"
    );
    assert_ne!(codes["sync url-token rejected (401) [0]"], 0, "{codes:?}");
    assert_ne!(codes["sync wrong gateway secret (403) [0]"], 0, "{codes:?}");

    // run: two sidecars (text and JSON logs), each with a webhook, Redis with
    // a password, and one of the two gateway-secret paths; then one whose
    // repo is unreachable, so /status carries an error.
    let common = |format: &'static [&'static str]| {
        let mut v: Vec<&str> = format.to_vec();
        v.extend([
            "--period",
            "300ms",
            "--verify-period",
            "500ms",
            "--max-backoff",
            "1s",
        ]);
        v.extend([
            "--gateway-wait",
            "1s",
            "--verify-timeout",
            "3s",
            "--ref",
            "main",
        ]);
        v.extend(["--cluster", "sweep"]);
        v
    };
    let mut a_args = common(formats[0]);
    a_args.extend([
        "--repo",
        &url_tok,
        "--root",
        &root_env,
        "--gateway",
        &gw_env_url,
    ]);
    a_args.extend(["--webhook-secret-file", &hook_file, "--redis", &redis_url]);
    a_args.extend(["--replica-id", "sweep-a"]);
    let a = start_run(work.path(), &a_args, &env_secret);
    let mut b_args = common(formats[1]);
    b_args.extend([
        "--repo",
        &url_plain,
        "--username",
        "bot",
        "--password-file",
        &pw_file,
    ]);
    b_args.extend(["--root", &root_file, "--gateway", &gw_file_url]);
    b_args.extend([
        "--gateway-secret-file",
        &gw_file,
        "--webhook-secret-file",
        &hook_file,
    ]);
    b_args.extend(["--redis", &redis_user, "--replica-id", "sweep-b"]);
    let b = start_run(work.path(), &b_args, &[]);
    let mut c_args = common(formats[0]);
    c_args.extend([
        "--repo",
        &url_dead,
        "--root",
        &root_scratch,
        "--gateway",
        &gw_env_url,
    ]);
    c_args.extend(["--webhook-secret-file", &hook_file, "--redis", &redis_wrong]);
    c_args.extend(["--replica-id", "sweep-c", "--connect-timeout", "1s"]);
    let c = start_run(work.path(), &c_args, &env_secret);
    eventually("sidecars a and b ready", WAIT, || a.ready() && b.ready());
    eventually("sidecar c records its error", WAIT, || {
        c.status()["last_attempt"]["error"].is_string()
    });
    probe_http(&mut seen, "run a", &a);
    probe_http(&mut seen, "run b", &b);
    probe_http(&mut seen, "run c", &c);
    let sha = repo.head();

    // fleet: status and wait, good, wrong and unreachable Redis, both formats.
    for (f, format) in formats.iter().enumerate() {
        let fleet_runs: Vec<(&str, Vec<&str>)> = vec![
            (
                "fleet status",
                vec![
                    "fleet",
                    "status",
                    "--redis",
                    &redis_url,
                    "--cluster",
                    "sweep",
                ],
            ),
            (
                "fleet status json",
                vec![
                    "fleet",
                    "status",
                    "--redis",
                    &redis_user,
                    "--cluster",
                    "sweep",
                    "--format",
                    "json",
                ],
            ),
            (
                "fleet status wrong password",
                vec!["fleet", "status", "--redis", &redis_wrong],
            ),
            (
                "fleet status down",
                vec!["fleet", "status", "--redis", &redis_dead],
            ),
            (
                "fleet wait",
                vec![
                    "fleet",
                    "wait",
                    "--redis",
                    &redis_url,
                    "--cluster",
                    "sweep",
                    "--sha",
                    &sha,
                    "--timeout",
                    "10s",
                ],
            ),
            (
                "fleet wait timeout",
                vec![
                    "fleet",
                    "wait",
                    "--redis",
                    &redis_url,
                    "--cluster",
                    "sweep",
                    "--sha",
                    "abcdef1",
                    "--timeout",
                    "1s",
                ],
            ),
            (
                "fleet wait wrong password",
                vec![
                    "fleet",
                    "wait",
                    "--redis",
                    &redis_wrong,
                    "--sha",
                    &sha,
                    "--timeout",
                    "2s",
                ],
            ),
            (
                "fleet wait down",
                vec![
                    "fleet",
                    "wait",
                    "--redis",
                    &redis_dead,
                    "--sha",
                    &sha,
                    "--timeout",
                    "2s",
                ],
            ),
        ];
        for (label, args) in fleet_runs {
            let label = format!("{label} [{f}]");
            let mut full: Vec<&str> = format.to_vec();
            full.extend(args);
            let code = run_cli(&mut seen, &label, &full, &env_secret);
            codes.insert(label, code);
        }
        // validate, with every secret in its environment (it must ignore them).
        let label = format!("validate [{f}]");
        let mut full: Vec<&str> = format.to_vec();
        full.extend(["validate", repo.path().to_str().unwrap()]);
        let env = [
            ("TYK_GITOPS_GATEWAY_SECRET", GATEWAY_ENV_SECRET),
            ("TYK_GITOPS_REDIS", redis_url.as_str()),
            ("TYK_GITOPS_REPO", url_tok.as_str()),
        ];
        let code = run_cli(&mut seen, &label, &full, &env);
        codes.insert(label, code);
        let label = format!("validate json [{f}]");
        let mut full: Vec<&str> = format.to_vec();
        full.extend([
            "validate",
            "--format",
            "json",
            repo.path().to_str().unwrap(),
        ]);
        let code = run_cli(&mut seen, &label, &full, &env);
        codes.insert(label, code);
    }
    assert_eq!(codes["fleet status [0]"], 0, "{codes:?}");
    assert_eq!(codes["fleet wait [0]"], 0, "{codes:?}");
    assert_eq!(codes["validate [0]"], 0, "{codes:?}");

    // What the sidecars wrote to Redis, then their whole logs after a
    // graceful stop (the shutdown path logs too).
    seen.add("redis keys", redis_dump(&redis));
    for sidecar in [&a, &b, &c] {
        sidecar.signal(libc::SIGTERM);
    }
    for (label, mut sidecar) in [("run a", a), ("run b", b), ("run c", c)] {
        let deadline = Instant::now() + Duration::from_secs(10);
        while sidecar.child.0.try_wait().unwrap().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        seen.add(format!("{label}:stderr"), sidecar.stderr());
        seen.add(
            format!("{label}:stdout"),
            fs::read(sidecar.file("stdout")).unwrap_or_default(),
        );
        let _ = &mut sidecar;
    }

    // Everything on disk under the roots except the Git cache (state.json,
    // .revision manifests, revisions); the cache is checked apart below.
    for (label, root) in [
        ("root env", &root_env),
        ("root file", &root_file),
        ("root scratch", &root_scratch),
    ] {
        seen.add_tree(label, Path::new(root), &["cache"]);
    }
    let mut cache = Seen::default();
    for (label, root) in [
        ("cache env", &root_env),
        ("cache file", &root_file),
        ("cache scratch", &root_scratch),
    ] {
        cache.add_tree(label, &Path::new(root).join("cache"), &["objects"]);
    }

    // Controls: the search finds a planted secret, and the logs did show the
    // URL (redacted), so an empty result means hidden, not never printed.
    let mut canary = Seen::default();
    canary.add("canary", format!("x{GATEWAY_FILE_SECRET}y"));
    assert_eq!(canary.leaks(&needles()).len(), 2);
    let redacted = seen
        .items
        .iter()
        .filter(|(_, b)| find(b, b"deploy:***@127.0.0.1").is_some())
        .count();
    assert!(redacted >= 4, "the repo URL never showed, even redacted");

    let leaks = seen.leaks(&needles());
    let cache_leaks = cache.leaks(&needles());
    println!(
        "RESULT secrets sweep: {} artifacts, {} bytes scanned, {} runs ({codes:?}); cache: {} files; {} leaks, {} in the cache; {:.1}s",
        seen.items.len(),
        seen.bytes(),
        codes.len(),
        cache.items.len(),
        leaks.len(),
        cache_leaks.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(leaks.is_empty(), "secrets leaked:\n{}", leaks.join("\n"));
    assert!(
        cache_leaks.is_empty(),
        "secrets persisted in the Git cache:\n{}",
        cache_leaks.join("\n")
    );
}

// ---------------------------------------------------------------------------
// Webhook abuse
// ---------------------------------------------------------------------------

const ABUSE_SECRET: &str = "abuse-secret-6c1d";

/// A sidecar that polls once an hour, so only a webhook could trigger a sync.
fn hooked() -> (ConfigRepo, Node, Sidecar, TempDir) {
    let repo = ConfigRepo::new();
    repo.api("alpha").policy("gold", &["alpha"]);
    repo.commit("alpha");
    let node = Node::new();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("webhook-secret");
    fs::write(&file, ABUSE_SECRET).unwrap();
    let sidecar = Sidecar::start(
        &repo.url(),
        &node,
        &[
            "--ref",
            "main",
            "--period",
            "1h",
            "--verify-period",
            "1h",
            "--webhook-secret-file",
            file.to_str().unwrap(),
        ],
    );
    eventually("ready", WAIT, || sidecar.ready());
    (repo, node, sidecar, dir)
}

fn syncs(sidecar: &Sidecar) -> f64 {
    ["applied", "noop", "rejected", "failed"]
        .iter()
        .map(|r| sidecar.metric(&format!("tyk_gitops_syncs_total{{result=\"{r}\"}}")))
        .sum()
}

/// One keep-alive HTTP/1.1 connection sending many requests (reconnects when
/// the server closes it): 10,000 requests without 10,000 sockets in TIME_WAIT.
struct KeepAlive {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

impl KeepAlive {
    fn new(addr: SocketAddr) -> KeepAlive {
        KeepAlive {
            addr,
            stream: None,
            buf: Vec::new(),
        }
    }

    fn post(&mut self, headers: &[(&str, String)], body: &[u8]) -> u16 {
        let mut req = format!(
            "POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        let mut raw = req.into_bytes();
        raw.extend_from_slice(body);
        for _ in 0..3 {
            if self.stream.is_none() {
                let s = TcpStream::connect(self.addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                self.stream = Some(s);
                self.buf.clear();
            }
            if let Some(code) = self.exchange(&raw) {
                return code;
            }
            self.stream = None;
        }
        panic!("three connections in a row failed");
    }

    /// Sends one request and reads one response; None when the connection
    /// turned out closed.
    fn exchange(&mut self, raw: &[u8]) -> Option<u16> {
        let stream = self.stream.as_mut()?;
        stream.write_all(raw).ok()?;
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).ok()?;
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).to_ascii_lowercase();
        let code = head.split_whitespace().nth(1)?.parse().ok()?;
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while self.buf.len() < head_end + len {
            let mut chunk = [0u8; 4096];
            let n = stream.read(&mut chunk).ok()?;
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
        self.buf.drain(..head_end + len);
        if head.contains("connection: close") {
            self.stream = None;
        }
        Some(code)
    }
}

/// The i-th badly signed request: a wrong key, the right key over another
/// body (tampering), a wrong GitLab token, a wrong Gitea signature.
fn bad_request(i: usize, body: &[u8]) -> Vec<(&'static str, String)> {
    match i % 4 {
        0 => vec![
            ("X-GitHub-Event", "push".into()),
            (
                "X-Hub-Signature-256",
                format!("sha256={}", sign(&format!("guess-{i}"), body)),
            ),
        ],
        1 => vec![
            ("X-GitHub-Event", "push".into()),
            (
                "X-Hub-Signature-256",
                format!("sha256={}", sign(ABUSE_SECRET, b"another body")),
            ),
        ],
        2 => vec![
            ("X-Gitlab-Event", "Push Hook".into()),
            ("X-Gitlab-Token", format!("abuse-secret-{i}")),
        ],
        _ => vec![
            ("X-Gitea-Event", "push".into()),
            ("X-Gitea-Signature", sign(&format!("guess-{i}"), body)),
        ],
    }
}

#[test]
fn ten_thousand_badly_signed_requests_are_all_401_trigger_nothing_and_leave_memory_flat() {
    let (repo, node, sidecar, _dir) = hooked();
    // A new commit exists: one accepted request would make it go live.
    repo.api("beta");
    repo.commit("beta");
    let body = json!({"ref": "refs/heads/main", "after": repo.head()}).to_string();
    let pid = sidecar.child.0.id();
    let threads = 8;
    let per_thread = 10_000 / threads;
    let flood = |count: usize, offset: usize| {
        let codes: Vec<BTreeMap<u16, usize>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let body = body.as_bytes();
                    let addr = sidecar.addr;
                    scope.spawn(move || {
                        let mut client = KeepAlive::new(addr);
                        let mut codes = BTreeMap::new();
                        for i in 0..count {
                            let n = offset + t * count + i;
                            *codes
                                .entry(client.post(&bad_request(n, body), body))
                                .or_default() += 1;
                        }
                        codes
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut total = BTreeMap::new();
        for c in codes {
            for (k, v) in c {
                *total.entry(k).or_insert(0) += v;
            }
        }
        total
    };
    // Warm up allocator pools and lazily built state, then measure.
    let warm = flood(100, 1_000_000);
    assert_eq!(warm, BTreeMap::from([(401, 800)]));
    let syncs_before = syncs(&sidecar);
    let reloads_before = node.emu.reload_count();
    let rss_before = rss_kib(pid);
    let started = Instant::now();
    let total = flood(per_thread, 0);
    let took = started.elapsed();
    let rss_after = rss_kib(pid);
    std::thread::sleep(Duration::from_millis(500));
    println!(
        "RESULT webhook flood: {total:?} in {:.1}s ({:.0} req/s); RSS {rss_before} KiB -> {rss_after} KiB; syncs {syncs_before} -> {}; reloads {reloads_before} -> {}",
        took.as_secs_f64(),
        10_000.0 / took.as_secs_f64(),
        syncs(&sidecar),
        node.emu.reload_count()
    );
    assert_eq!(total, BTreeMap::from([(401, 10_000)]));
    assert_eq!(
        syncs(&sidecar),
        syncs_before,
        "a bad signature triggered a sync"
    );
    assert_eq!(node.emu.reload_count(), reloads_before);
    assert_eq!(
        node.apis(),
        ids(&["alpha"]),
        "the unsigned commit went live"
    );
    assert!(
        rss_after < rss_before + 2048,
        "RSS grew {rss_before} KiB -> {rss_after} KiB over 10,000 refused requests"
    );
    assert!(
        sidecar.metric("tyk_gitops_webhook_requests_total{result=\"unauthorized\"}") >= 10_800.0
    );
}

#[test]
fn oversized_bodies_get_413_before_the_body_is_read() {
    let (_repo, node, sidecar, _dir) = hooked();
    let reloads = node.emu.reload_count();
    let big = vec![b' '; 2 * 1024 * 1024];
    let sig = format!("sha256={}", sign(ABUSE_SECRET, &big));
    // Sent whole, validly signed: the size alone refuses it.
    let (code, body) = http(
        sidecar.addr,
        "POST",
        "/webhook",
        &[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &sig)],
        &big,
    );
    assert_eq!(code, 413, "{body}");
    // Announced as 1 GiB and never sent: answered at once from the header.
    let mut stream = TcpStream::connect(sidecar.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(
            format!(
                "POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nX-Hub-Signature-256: {sig}\r\n\r\n",
                1u64 << 30
            )
            .as_bytes(),
        )
        .unwrap();
    let asked = Instant::now();
    let mut head = [0u8; 64];
    let n = stream.read(&mut head).unwrap();
    let text = String::from_utf8_lossy(&head[..n]);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(asked.elapsed() < Duration::from_secs(3));
    // Chunked, no length announced: cut at the limit while streaming.
    let mut stream = TcpStream::connect(sidecar.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .write_all(
            format!(
                "POST /webhook HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nX-Hub-Signature-256: {sig}\r\n\r\n"
            )
            .as_bytes(),
        )
        .unwrap();
    let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, " ".repeat(64 * 1024));
    for _ in 0..40 {
        if stream.write_all(chunk.as_bytes()).is_err() {
            break;
        }
    }
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert_eq!(
        sidecar.metric("tyk_gitops_webhook_requests_total{result=\"too_large\"}"),
        3.0
    );
    assert_eq!(node.emu.reload_count(), reloads);
}

/// Slow-loris: many clients that open a connection and send their request
/// head one byte at a time, never finishing it, plus clients that connect
/// and send nothing. The server must keep answering others, and must close
/// such connections after its header timeout instead of holding them (and
/// their file descriptors) forever.
#[test]
fn slow_loris_clients_neither_pin_the_server_nor_stay_connected() {
    let (_repo, _node, sidecar, _dir) = hooked();
    let slow = 200;
    let idle = 50;
    let head = b"POST /webhook HTTP/1.1\r\nHost: x\r\nX-Hub-Signature-256: sha256=00\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut conns: Vec<TcpStream> = (0..slow + idle)
        .map(|_| {
            let s = TcpStream::connect(sidecar.addr).unwrap();
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect();
    let started = Instant::now();
    let mut closed_at: Vec<Option<Duration>> = vec![None; conns.len()];
    let mut healthz_worst = Duration::ZERO;
    let mut sent = 0;
    // One byte per slow connection every 250 ms, for up to 25 s.
    while started.elapsed() < Duration::from_secs(25) && closed_at.iter().any(Option::is_none) {
        for (i, conn) in conns.iter_mut().enumerate() {
            if closed_at[i].is_some() {
                continue;
            }
            let mut probe = [0u8; 256];
            let gone = match conn.read(&mut probe) {
                Ok(_) => true,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
                Err(_) => true,
            };
            let gone =
                gone || (i < slow && sent < head.len() && conn.write(&head[sent..=sent]).is_err());
            if gone {
                closed_at[i] = Some(started.elapsed());
            }
        }
        sent = (sent + 1).min(head.len() - 1);
        let asked = Instant::now();
        let (code, _) = http_get(sidecar.addr, "/healthz");
        assert_eq!(code, 200);
        healthz_worst = healthz_worst.max(asked.elapsed());
        std::thread::sleep(Duration::from_millis(250));
    }
    let closed: Vec<Duration> = closed_at.iter().flatten().copied().collect();
    println!(
        "RESULT slow loris: {slow} slow + {idle} idle connections; /healthz worst {:?}; closed by the server: {}/{} (first {:?}, last {:?}) within {:?}",
        healthz_worst,
        closed.len(),
        conns.len(),
        closed.iter().min(),
        closed.iter().max(),
        started.elapsed()
    );
    assert!(healthz_worst < Duration::from_secs(2), "{healthz_worst:?}");
    assert_eq!(
        closed.len(),
        conns.len(),
        "slow or idle connections still open after {:?}",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------
// Hostile repos at scale
// ---------------------------------------------------------------------------

/// A measured `sync` of `url` into `node`, and its wall time. A thousand
/// new APIs are each probed: the binary's own verify timeout, not the
/// tests' short one.
fn timed_sync(url: &str, node: &Node) -> (Ran, Duration) {
    let started = Instant::now();
    let ran = Tg::sync_node(url, node)
        .args(["--verify-timeout", "30s"])
        .measured()
        .run();
    (ran, started.elapsed())
}

fn daemon_url(repo: &ConfigRepo) -> (GitDaemon, String) {
    let daemon = GitDaemon::start(repo.path().parent().unwrap());
    let url = daemon.url(&repo.path().file_name().unwrap().to_string_lossy());
    (daemon, url)
}

fn count_files(dir: &Path) -> usize {
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).unwrap().flatten() {
            if entry.file_type().unwrap().is_dir() {
                stack.push(entry.path());
            } else {
                n += 1;
            }
        }
    }
    n
}

/// 100,000 files in one commit: 1,000 API definitions (all parsed and
/// validated, all loaded by the gateway) and 99,000 small templates (copied
/// byte for byte). It must apply whole and verify, with memory and time that
/// scale sanely, and a second run must be a cheap no-op. A duplicate key
/// slipped into one of the 1,000 definitions then refuses the whole commit.
#[test]
fn a_commit_of_100_000_files_applies_whole_and_one_duplicate_key_refuses_it() {
    let repo = ConfigRepo::new();
    let generated = Instant::now();
    let apis = 1_000;
    let templates = 99_000;
    fs::create_dir_all(repo.path().join("apps")).unwrap();
    for i in 0..apis {
        let id = format!("api{i:04}");
        let def = crate::support::repo::api_json(&id);
        fs::write(
            repo.path().join(format!("apps/{id}.json")),
            serde_json::to_vec(&def).unwrap(),
        )
        .unwrap();
    }
    for i in 0..templates {
        let dir = repo.path().join(format!("templates/t{:03}", i / 1000));
        if i % 1000 == 0 {
            fs::create_dir_all(&dir).unwrap();
        }
        fs::write(dir.join(format!("f{i:05}.tmpl")), format!("template {i}\n")).unwrap();
    }
    // The gateway panics at start without an error template.
    fs::write(
        repo.path().join("templates/error.json"),
        "{\"error\": \"{{.Message}}\"}\n",
    )
    .unwrap();
    let sha = repo.commit("100k files");
    let committed = generated.elapsed();
    let (_daemon, url) = daemon_url(&repo);
    let node = Node::new();

    let (first, took) = timed_sync(&url, &node);
    let rss = first.ok().peak_rss_kib();
    assert_eq!(node.current_sha(), sha);
    assert_eq!(node.apis().len(), apis);
    let files =
        count_files(&node.current().join("templates")) + count_files(&node.current().join("apps"));
    assert_eq!(files, apis + templates + 1);
    let (noop, took2) = timed_sync(&url, &node);
    let rss2 = noop.ok().peak_rss_kib();

    // One duplicate key among 100,000 files: refused, nothing changes.
    let link = fs::read_link(node.current()).unwrap();
    let reloads = node.emu.reload_count();
    let bad = r#"{"name":"API api0500","api_id":"api0500","org_id":"default","use_keyless":true,"version_data":{"not_versioned":true,"versions":{"Default":{"name":"Default"}}},"proxy":{"listen_path":"/api0500/","target_url":"http://upstream:8080/","strip_listen_path":true},"api_id":"evil"}"#;
    repo.file("apps/api0500.json", bad);
    repo.commit("duplicate key");
    let (refused, took3) = timed_sync(&url, &node);
    let rss3 = refused
        .code(1)
        .stderr_has("duplicate-key")
        .stderr_has("apps/api0500.json")
        .peak_rss_kib();
    assert_eq!(fs::read_link(node.current()).unwrap(), link);
    assert_eq!(node.current_sha(), sha);
    assert_eq!(node.emu.reload_count(), reloads);
    println!(
        "RESULT 100,000 files: generate+commit {:.1}s; first sync {:.1}s peak RSS {} MiB; no-op sync {:.1}s {} MiB; duplicate-key commit refused in {:.1}s {} MiB",
        committed.as_secs_f64(),
        took.as_secs_f64(),
        rss / 1024,
        took2.as_secs_f64(),
        rss2 / 1024,
        took3.as_secs_f64(),
        rss3 / 1024
    );
}

/// A 1 GiB file (zeros: ~1 MB once compressed, so Git can carry it) in
/// `apps/`: refused as `file-too-large` from the object's size, never read
/// whole, so the peak RSS of `sync` stays far below the file. About 10 s
/// (Git hashes and compresses the whole GiB on commit; the server packs it
/// and the client indexes it, streaming); the file is sparse, so it takes
/// no disk.
#[test]
fn a_1_gib_file_is_refused_as_too_large_without_being_read() {
    let repo = ConfigRepo::new();
    repo.api("alpha").policy("gold", &["alpha"]);
    let good = repo.commit("alpha");
    let (_daemon, url) = daemon_url(&repo);
    let node = Node::new();
    timed_sync(&url, &node).0.ok();
    let link = fs::read_link(node.current()).unwrap();

    let started = Instant::now();
    let huge = fs::File::create(repo.path().join("apps/huge.json")).unwrap();
    // Sparse: no disk blocks; Git still reads (and hashes) every byte.
    huge.set_len(1 << 30).unwrap();
    drop(huge);
    repo.commit("1 GiB");
    let committed = started.elapsed();
    let reloads = node.emu.reload_count();
    let (ran, took) = timed_sync(&url, &node);
    let rss = ran.peak_rss_kib();
    println!(
        "RESULT 1 GiB file: commit {:.1}s; sync exit {} in {:.1}s, peak RSS {} MiB",
        committed.as_secs_f64(),
        ran.code,
        took.as_secs_f64(),
        rss / 1024
    );
    ran.code(1).stderr_has("file-too-large");
    assert!(
        rss < 128 * 1024,
        "peak RSS {rss} KiB: the file was read whole"
    );
    assert_eq!(fs::read_link(node.current()).unwrap(), link);
    assert_eq!(node.current_sha(), good);
    assert_eq!(node.emu.reload_count(), reloads);
}

#[test]
fn a_low_open_files_limit_is_raised_so_idle_clients_cannot_starve_healthz() {
    // Some container runtimes start processes with a soft limit of 1,024
    // open files; the sidecar raises it to the hard limit at start.
    use std::os::unix::process::CommandExt;
    const SOFT: libc::rlim_t = 128;
    const CLIENTS: usize = 300;
    let (_repo, _daemon, url) = crate::support::served_repo();
    let root = tempfile::tempdir().expect("tempdir");
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let mut cmd = Tg::new(["run", "--repo", &url, "--root"])
        .arg(root.path())
        .args(["--listen", &addr.to_string(), "--period", "1h"])
        .command();
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    // SAFETY: setrlimit is async-signal-safe; it runs in the child between
    // fork and exec and touches nothing but its own struct.
    unsafe {
        cmd.pre_exec(|| {
            let mut limit = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            limit.rlim_cur = SOFT.min(limit.rlim_max);
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = KillOnDrop(cmd.spawn().expect("spawn tyk-gitops run"));
    wait_for_port(addr, Duration::from_secs(20));

    let limits = fs::read_to_string(format!("/proc/{}/limits", child.0.id())).expect("limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("open files line");
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (soft, hard) = (fields[3], fields[4]);
    assert_eq!(soft, hard, "soft limit not raised: {line}");
    let hard: u64 = hard.parse().unwrap_or(u64::MAX);
    if hard <= CLIENTS as u64 + 64 {
        eprintln!("hard limit {hard}: too low to hold {CLIENTS} clients here; limit check only");
        return;
    }
    // More idle clients than the original soft limit: /healthz still answers.
    let idle: Vec<TcpStream> = (0..CLIENTS)
        .map(|_| TcpStream::connect(addr).expect("idle client"))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let (code, body) = http_get(addr, "/healthz");
    assert_eq!(code, 200, "{body}");
    drop(idle);
    println!(
        "RESULT open files: soft {SOFT} raised to {hard}; {CLIENTS} idle clients, /healthz 200"
    );
}
