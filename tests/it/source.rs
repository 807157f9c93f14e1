//! The source stage against real servers: `git daemon`, `git http-backend`
//! behind Basic auth, OpenSSH `sshd`, and plain local paths. Each test is a
//! user's story: publish a config repo, resolve the ref, fetch it, read it.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use tyk_gitops::source::{Commit, Source, SourceConfig, SourceError};
use tyk_gitops::tree::{Cached, Content, EntryKind, Tree};

use crate::support::git_server::{GitDaemon, GitHttp};
use crate::support::repo::{ConfigRepo, git};
use crate::support::sshd::Sshd;

fn config(repo: &str) -> SourceConfig {
    SourceConfig {
        connect_timeout: Duration::from_secs(5),
        timeout: Duration::from_secs(30),
        ..SourceConfig::new(repo)
    }
}

/// A config repo, the folder servers export it from, and a cache folder.
struct World {
    repo: ConfigRepo,
    served: TempDir,
    bare: PathBuf,
    root: TempDir,
}

impl World {
    /// A repo with two APIs, a policy and an `envs/prod` config root,
    /// published as `<served>/config.git`.
    fn new() -> World {
        let repo = ConfigRepo::new();
        repo.api("a")
            .api("b")
            .policy("p1", &["a"])
            .file("envs/prod/apps/prod.json", "{\"api_id\":\"prod\"}");
        repo.commit("first");
        let served = tempfile::tempdir().expect("served dir");
        // Served with Git's defaults: no wants by object id.
        let bare = repo.bare_clone(served.path(), "config.git");
        World {
            repo,
            served,
            bare,
            root: tempfile::tempdir().expect("root dir"),
        }
    }

    /// Pushes every branch and tag to the served repo, rewriting history
    /// where the fixture did.
    fn publish(&self) {
        let bare = self.bare.display().to_string();
        git(
            self.repo.path(),
            &["push", "-q", "--force", &bare, "refs/heads/*:refs/heads/*"],
        );
        git(
            self.repo.path(),
            &["push", "-q", "--force", &bare, "refs/tags/*:refs/tags/*"],
        );
    }

    fn source(&self, config: SourceConfig) -> Source {
        Source::new(config, self.root.path().join("cache"))
    }
}

/// resolve → fetch → read_tree, as the reconciler runs them.
fn sync(source: &Source, subpath: Option<&str>) -> (Commit, Tree) {
    let commit = source.resolve().expect("resolve");
    source.fetch(&commit).expect("fetch");
    let tree = source
        .read_tree(&commit, subpath, 1 << 20, &|_| Cached::Unknown)
        .expect("read_tree");
    (commit, tree)
}

fn paths(tree: &Tree) -> Vec<&str> {
    tree.entries.iter().map(|e| e.path.as_str()).collect()
}

fn loaded(tree: &Tree, path: &str) -> String {
    match &tree
        .get(path)
        .unwrap_or_else(|| panic!("{path} missing"))
        .content
    {
        Content::Loaded(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        other => panic!("{path} not loaded: {other:?}"),
    }
}

fn with_ref(mut config: SourceConfig, git_ref: &str) -> SourceConfig {
    config.git_ref = Some(git_ref.to_string());
    config
}

#[test]
fn daemon_default_head_is_fetched_shallow_and_read_without_checkout() {
    let world = World::new();
    let daemon = GitDaemon::start(world.served.path());
    let source = world.source(config(&daemon.url("config.git")));

    let (commit, tree) = sync(&source, None);

    assert_eq!(commit.sha, world.repo.head());
    assert_eq!(commit.git_ref, "HEAD");
    assert_eq!(
        paths(&tree),
        [
            "apps/a.json",
            "apps/b.json",
            "envs/prod/apps/prod.json",
            "policies/p1.json"
        ]
    );
    assert!(loaded(&tree, "apps/a.json").contains("\"api_id\": \"a\""));
    let entry = tree.get("apps/a.json").expect("entry");
    assert_eq!(
        entry.blob,
        tyk_gitops::tree::blob_id(loaded(&tree, "apps/a.json").as_bytes())
    );
    // Shallow: the cache knows the commit but not its (absent) history.
    let cache = world.root.path().join("cache");
    assert!(cache.join("shallow").is_file(), "cache is not shallow");
    // Fetching a commit already present touches nothing.
    source.fetch(&commit).expect("second fetch is a no-op");
}

#[test]
fn daemon_resolves_branches_tags_annotated_tags_and_full_shas() {
    let world = World::new();
    let first = world.repo.head();
    world.repo.tag("v1");
    git(
        world.repo.path(),
        &["tag", "-a", "v1-annotated", "-m", "release"],
    );
    world.repo.checkout_new_branch("dev").api("dev-only");
    let dev = world.repo.commit("dev work");
    world.repo.checkout("main").api("c");
    let main = world.repo.commit("second on main");
    world.publish();
    let daemon = GitDaemon::start(world.served.path());
    let url = daemon.url("config.git");

    let cases = [
        ("main", &main),
        ("refs/heads/dev", &dev),
        ("dev", &dev),
        ("v1", &first),
        ("v1-annotated", &first),
        ("refs/tags/v1-annotated", &first),
        // An older commit, at no tip, from a server that refuses wants by
        // id: found by deepening the branches.
        (first.as_str(), &first),
    ];
    for (git_ref, expected) in cases {
        let source = world.source(with_ref(config(&url), git_ref));
        let (commit, tree) = sync(&source, None);
        assert_eq!(&commit.sha, expected, "ref {git_ref}");
        assert_eq!(commit.git_ref, git_ref);
        assert_eq!(
            tree.get("apps/dev-only.json").is_some(),
            expected == &dev,
            "ref {git_ref}"
        );
    }
}

#[test]
fn full_sha_resolves_without_asking_the_remote() {
    let sha = "0123456789abcdef0123456789abcdef01234567";
    // Nothing listens on this URL: resolve must not connect.
    let source = Source::new(
        with_ref(config("git://127.0.0.1:1/nowhere.git"), sha),
        PathBuf::from("/nonexistent/cache"),
    );
    assert_eq!(source.resolve().expect("resolve").sha, sha);
}

#[test]
fn subpath_is_the_config_root_and_a_missing_one_is_named() {
    let world = World::new();
    let daemon = GitDaemon::start(world.served.path());
    let source = world.source(config(&daemon.url("config.git")));

    let (commit, tree) = sync(&source, Some("envs/prod"));
    assert_eq!(paths(&tree), ["apps/prod.json"]);

    let err = source
        .read_tree(&commit, Some("envs/staging"), 1 << 20, &|_| Cached::Unknown)
        .expect_err("missing subpath");
    assert!(matches!(err, SourceError::MissingPath { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("envs/staging") && message.contains(&commit.sha),
        "{message}"
    );

    let err = source
        .read_tree(&commit, Some("apps/a.json"), 1 << 20, &|_| Cached::Unknown)
        .expect_err("file as subpath");
    assert!(matches!(err, SourceError::NotADirectory { .. }), "{err:?}");
}

#[test]
fn missing_ref_names_the_ref_the_remote_and_what_it_has() {
    let world = World::new();
    let daemon = GitDaemon::start(world.served.path());
    let url = daemon.url("config.git");
    let source = world.source(with_ref(config(&url), "mian"));

    let err = source.resolve().expect_err("no such ref");

    assert!(matches!(err, SourceError::RefNotFound { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("\"mian\""), "{message}");
    assert!(message.contains(&url), "{message}");
    assert!(message.contains("branches: main"), "{message}");
}

#[test]
fn a_no_change_poll_is_one_ref_listing_and_no_pack() {
    let world = World::new();
    let http = GitHttp::start(world.served.path(), None);
    let source = world.source(config(&http.url("config.git")));
    let (first, _) = sync(&source, None);
    assert!(
        http.requests().iter().any(|r| r.starts_with("POST")),
        "the first fetch downloads a pack: {:?}",
        http.requests()
    );
    http.clear_requests();

    let again = source.resolve().expect("resolve");
    source.fetch(&again).expect("fetch no-op");

    assert_eq!(again, first);
    assert_eq!(
        http.requests(),
        ["GET /config.git/info/refs?service=git-upload-pack"]
    );
}

/// The sync's one conversation: the fetch's own ref advertisement says what
/// the tip is; its pack comes on the same conversation, and nothing is
/// downloaded when the tip is already in the cache.
#[test]
fn fetch_tip_is_one_ref_advertisement_and_a_pack_only_when_the_tip_is_new() {
    let world = World::new();
    let http = GitHttp::start(world.served.path(), None);
    let source = world.source(config(&http.url("config.git")));

    let first = source.fetch_tip().expect("fetch_tip");
    assert_eq!(first.sha, world.repo.head());
    assert_eq!(conversations(&http), 1, "{:?}", http.requests());
    assert!(
        http.requests().iter().any(|r| r.starts_with("POST")),
        "the new tip's pack: {:?}",
        http.requests()
    );
    // In the cache already: `fetch` has nothing to do, and the tree reads.
    http.clear_requests();
    source.fetch(&first).expect("fetch no-op");
    assert!(http.requests().is_empty(), "{:?}", http.requests());
    let tree = source
        .read_tree(&first, None, 1 << 20, &|_| Cached::Unknown)
        .expect("read_tree");
    assert!(tree.get("apps/a.json").is_some());

    // Nothing new: the advertisement alone.
    let again = source.fetch_tip().expect("fetch_tip again");
    assert_eq!(again, first);
    assert_eq!(
        http.requests(),
        ["GET /config.git/info/refs?service=git-upload-pack"]
    );

    // A new tip: one advertisement, then its pack.
    world.repo.api("c");
    let second = world.repo.commit("second");
    world.publish();
    http.clear_requests();
    let next = source.fetch_tip().expect("fetch_tip after a push");
    assert_eq!(next.sha, second);
    assert_eq!(conversations(&http), 1, "{:?}", http.requests());
    let tree = source
        .read_tree(&next, None, 1 << 20, &|_| Cached::Unknown)
        .expect("read_tree");
    assert!(tree.get("apps/c.json").is_some());
}

#[test]
fn fetch_tip_resolves_refs_as_resolve_does_and_names_a_missing_one() {
    let world = World::new();
    let first = world.repo.head();
    git(
        world.repo.path(),
        &["tag", "-a", "v1-annotated", "-m", "release"],
    );
    world.repo.checkout_new_branch("dev").api("dev-only");
    let dev = world.repo.commit("dev work");
    world.repo.checkout("main");
    world.publish();
    let daemon = GitDaemon::start(world.served.path());
    let url = daemon.url("config.git");
    for (git_ref, expected) in [
        ("dev", &dev),
        ("refs/heads/dev", &dev),
        ("v1-annotated", &first),
        ("main", &first),
    ] {
        let source = world.source(with_ref(config(&url), git_ref));
        let commit = source.fetch_tip().expect("fetch_tip");
        assert_eq!(&commit.sha, expected, "ref {git_ref}");
        assert_eq!(commit, source.resolve().expect("resolve"), "ref {git_ref}");
        let tree = source
            .read_tree(&commit, None, 1 << 20, &|_| Cached::Unknown)
            .expect("read_tree");
        assert_eq!(tree.get("apps/dev-only.json").is_some(), expected == &dev);
    }
    let source = world.source(with_ref(config(&url), "nope"));
    let err = source.fetch_tip().expect_err("a missing ref");
    assert!(matches!(err, SourceError::RefNotFound { .. }), "{err}");
    assert!(err.to_string().contains("branches: "), "{err}");
}

#[test]
fn http_basic_auth_accepts_the_right_password_from_a_file() {
    let world = World::new();
    let http = GitHttp::start(world.served.path(), Some(("deploy", "s3cret-token")));
    let secret = world.root.path().join("token");
    fs::write(&secret, "s3cret-token\n").expect("write token");
    let mut cfg = config(&http.url("config.git"));
    cfg.username = Some("deploy".into());
    cfg.password_file = Some(secret);

    let (commit, tree) = sync(&world.source(cfg), None);

    assert_eq!(commit.sha, world.repo.head());
    assert!(tree.get("apps/a.json").is_some());
}

#[test]
fn http_wrong_password_is_an_auth_error_that_never_shows_the_password() {
    let world = World::new();
    let http = GitHttp::start(world.served.path(), Some(("deploy", "right-token")));
    let secret = world.root.path().join("token");
    fs::write(&secret, "wrong-token-123").expect("write token");
    let mut cfg = config(&http.url("config.git"));
    cfg.username = Some("deploy".into());
    cfg.password_file = Some(secret);

    let err = world.source(cfg).resolve().expect_err("bad password");

    assert!(matches!(err, SourceError::Auth { .. }), "{err:?}");
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("wrong-token-123"), "{shown}");
    assert!(shown.contains(&http.url("config.git")), "{shown}");
}

#[test]
fn http_credentials_in_the_url_work_and_are_redacted_from_errors() {
    let world = World::new();
    let http = GitHttp::start(world.served.path(), Some(("deploy", "url-token")));

    let good = http.url_with_credentials("config.git", "deploy", "url-token");
    let (commit, _) = sync(&world.source(config(&good)), None);
    assert_eq!(commit.sha, world.repo.head());

    let bad = http.url_with_credentials("config.git", "deploy", "leaky-token-456");
    let err = world.source(config(&bad)).resolve().expect_err("bad token");
    assert!(matches!(err, SourceError::Auth { .. }), "{err:?}");
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("leaky-token-456"), "{shown}");
    assert!(shown.contains("deploy:***@127.0.0.1"), "{shown}");
}

#[test]
fn a_rotated_token_is_read_again_on_the_next_call() {
    let world = World::new();
    let http = GitHttp::start(world.served.path(), Some(("deploy", "token-v2")));
    let secret = world.root.path().join("token");
    fs::write(&secret, "token-v1\n").expect("write token");
    let mut cfg = config(&http.url("config.git"));
    cfg.username = Some("deploy".into());
    cfg.password_file = Some(secret.clone());
    let source = world.source(cfg);

    let err = source.resolve().expect_err("old token");
    assert!(matches!(err, SourceError::Auth { .. }), "{err:?}");

    fs::write(&secret, "token-v2\n").expect("rotate token");
    let (commit, _) = sync(&source, None);
    assert_eq!(commit.sha, world.repo.head());
}

fn ssh_config(sshd: &Sshd, known_hosts: &Path) -> SourceConfig {
    let mut cfg = config(&sshd.url("config.git"));
    cfg.ssh_key_file = Some(sshd.client_key());
    cfg.ssh_known_hosts_file = Some(known_hosts.to_path_buf());
    cfg
}

#[test]
fn ssh_with_a_known_host_key_fetches() {
    let world = World::new();
    let sshd = Sshd::start(world.served.path());
    let known = sshd.write_known_hosts("known_hosts", &sshd.known_hosts_line());
    let source = world.source(ssh_config(&sshd, &known));

    let commit = source
        .resolve()
        .unwrap_or_else(|e| panic!("resolve: {e}\nsshd log:\n{}", sshd.log()));
    source.fetch(&commit).expect("fetch");
    let tree = source
        .read_tree(&commit, None, 1 << 20, &|_| Cached::Unknown)
        .expect("read");

    assert_eq!(commit.sha, world.repo.head());
    assert!(tree.get("policies/p1.json").is_some());
}

#[test]
fn ssh_hashed_known_hosts_entries_are_honoured() {
    let world = World::new();
    let sshd = Sshd::start(world.served.path());
    let known = sshd.write_known_hosts("hashed_known_hosts", &sshd.known_hosts_line());
    let hashed = std::process::Command::new("ssh-keygen")
        .arg("-H")
        .arg("-f")
        .arg(&known)
        .output()
        .expect("ssh-keygen -H");
    assert!(hashed.status.success(), "{hashed:?}");
    let text = fs::read_to_string(&known).expect("read hashed");
    assert!(text.starts_with("|1|"), "not hashed: {text}");

    let commit = world
        .source(ssh_config(&sshd, &known))
        .resolve()
        .unwrap_or_else(|e| panic!("resolve: {e}\nsshd log:\n{}", sshd.log()));

    assert_eq!(commit.sha, world.repo.head());
}

#[test]
fn ssh_key_the_server_does_not_know_is_an_auth_error() {
    let world = World::new();
    let sshd = Sshd::start(world.served.path());
    let known = sshd.write_known_hosts("known_hosts", &sshd.known_hosts_line());
    let stranger = world.root.path().join("stranger_key");
    let status = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&stranger)
        .status()
        .expect("ssh-keygen");
    assert!(status.success());
    let mut cfg = ssh_config(&sshd, &known);
    cfg.ssh_key_file = Some(stranger);

    let err = world.source(cfg).resolve().expect_err("unknown client key");

    assert!(matches!(err, SourceError::Auth { .. }), "{err:?}");
}

#[test]
fn ssh_unknown_host_is_refused_with_a_clear_message() {
    let world = World::new();
    let sshd = Sshd::start(world.served.path());
    let known = sshd.write_known_hosts("empty_known_hosts", "");

    let err = world
        .source(ssh_config(&sshd, &known))
        .resolve()
        .expect_err("unknown host");

    assert!(matches!(err, SourceError::UnknownHostKey { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains(&format!("[127.0.0.1]:{}", sshd.port)),
        "{message}"
    );
    assert!(message.contains(&known.display().to_string()), "{message}");
    assert!(message.contains("refusing"), "{message}");
}

#[test]
fn ssh_wrong_host_key_is_refused() {
    let world = World::new();
    let sshd = Sshd::start(world.served.path());
    // Someone else's ed25519 key listed for this host and port.
    let other = "AAAAC3NzaC1lZDI1NTE5AAAAIG2iZ7b3swaIFrcA8z5i/MgggH8G94VQhfG2tus00eG3";
    let known = sshd.write_known_hosts(
        "wrong_known_hosts",
        &format!("[127.0.0.1]:{} ssh-ed25519 {other}\n", sshd.port),
    );

    let err = world
        .source(ssh_config(&sshd, &known))
        .resolve()
        .expect_err("wrong key");

    assert!(
        matches!(err, SourceError::HostKeyMismatch { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("SHA256:"), "{err}");
}

#[test]
fn force_pushed_history_is_resolved_and_fetched() {
    let world = World::new();
    let daemon = GitDaemon::start(world.served.path());
    let source = world.source(with_ref(config(&daemon.url("config.git")), "main"));
    let (old, _) = sync(&source, None);

    // Rewrite main from scratch, unrelated to what the cache holds.
    git(
        world.repo.path(),
        &["checkout", "-q", "--orphan", "rewritten"],
    );
    git(world.repo.path(), &["rm", "-rq", "--cached", "."]);
    world
        .repo
        .remove("apps")
        .remove("policies")
        .remove("envs")
        .api("fresh");
    world.repo.commit("new history");
    git(
        world.repo.path(),
        &["branch", "-q", "-M", "rewritten", "main"],
    );
    world.publish();

    let (new, tree) = sync(&source, None);
    assert_ne!(new.sha, old.sha);
    assert_eq!(new.sha, world.repo.head());
    assert_eq!(paths(&tree), ["apps/fresh.json"]);
}

/// Past a few hundred blobs the tree is read on several threads: every
/// entry still gets its own bytes, a blob shared by many entries included,
/// and one over the size limit is still only sized.
#[test]
fn a_large_tree_reads_every_file_once_shared_blobs_and_oversized_ones_too() {
    let world = World::new();
    for i in 0..700 {
        world.repo.file(
            &format!("apps/many-{i:03}.json"),
            format!("{{\"api_id\": \"many-{i}\"}}"),
        );
    }
    for i in 0..20 {
        world
            .repo
            .file(&format!("policies/same-{i}.json"), "{\"id\": \"same\"}");
    }
    world.repo.file("apps/huge.json", vec![b' '; 4096]);
    world.repo.commit("many files");
    world.publish();
    let daemon = GitDaemon::start(world.served.path());
    let source = world.source(config(&daemon.url("config.git")));
    let commit = source.fetch_tip().expect("fetch_tip");
    for known in [Cached::Unknown, Cached::Known] {
        let tree = source
            .read_tree(&commit, None, 1024, &|_| known)
            .expect("read_tree");
        assert_eq!(
            loaded(&tree, "apps/many-123.json"),
            "{\"api_id\": \"many-123\"}"
        );
        for i in 0..20 {
            assert_eq!(
                loaded(&tree, &format!("policies/same-{i}.json")),
                "{\"id\": \"same\"}"
            );
        }
        assert_eq!(
            tree.get("apps/huge.json").expect("huge").content,
            Content::TooLarge { size: 4096 },
            "known: {known:?}"
        );
    }
    // A blob the cache says no stage needs is left unread with the size
    // the cache gives, and the tree reads it when asked.
    let bytes = b"{\"api_id\": \"many-123\"}";
    let unneeded = tyk_gitops::tree::blob_id(bytes);
    let tree = source
        .read_tree(&commit, None, 1024, &|blob| {
            if blob == unneeded {
                Cached::Unneeded { size: 23 }
            } else {
                Cached::Unknown
            }
        })
        .expect("read_tree");
    assert_eq!(tree.unread(), 1);
    let i = tree.index_of("apps/many-123.json").expect("listed");
    assert_eq!(tree.entries[i].content, Content::Unread { size: 23 });
    assert_eq!(&tree.bytes_of(i)[..], bytes);
    assert_eq!(
        loaded(&tree, "apps/many-124.json"),
        "{\"api_id\": \"many-124\"}"
    );
}

/// A source reading commit after commit takes the folders whose tree did
/// not change as it read them (their blobs are not looked at again), and
/// reads anew a folder that changed, or all of them under another size
/// limit: each read equals what a new source reads. A read that knew none
/// of the files (the first, cold) keeps nothing.
#[test]
fn unchanged_folders_are_taken_from_the_last_read_and_equal_a_fresh_one() {
    let world = World::new();
    world
        .repo
        .file("policies/deep/more/q.json", "{\"id\": \"q\"}")
        .file("middleware/auth.js", "var x = 1;");
    world.repo.commit("folders");
    world.publish();
    let daemon = GitDaemon::start(world.served.path());
    let url = daemon.url("config.git");
    let source = world.source(config(&url));
    // Blobs of earlier reads are known, as the validation cache knows
    // what it analysed.
    let known = std::sync::Mutex::new(std::collections::HashSet::new());
    let read = |source: &Source, limit: u64| {
        let commit = source.fetch_tip().expect("fetch_tip");
        let asked = std::sync::Mutex::new(Vec::new());
        let tree = source
            .read_tree(&commit, None, limit, &|blob| {
                asked.lock().unwrap().push(blob);
                match known.lock().unwrap().contains(&blob) {
                    true => Cached::Known,
                    false => Cached::Unknown,
                }
            })
            .expect("read_tree");
        known
            .lock()
            .unwrap()
            .extend(tree.entries.iter().map(|e| e.blob));
        (tree, asked.into_inner().unwrap())
    };
    let fresh = |limit: u64| {
        let other = tempfile::tempdir().expect("root");
        let source = Source::new(config(&url), other.path().join("cache"));
        let commit = source.fetch_tip().expect("fetch_tip");
        source
            .read_tree(&commit, None, limit, &|_| Cached::Unknown)
            .expect("read_tree")
    };
    let contents = |tree: &Tree| -> Vec<(String, Content)> {
        tree.entries
            .iter()
            .map(|e| (e.path.clone(), e.content.clone()))
            .collect()
    };
    let policy_blob = |tree: &Tree| tree.get("policies/p1.json").expect("p1").blob;
    let change_apps = |n: usize| {
        world
            .repo
            .file("apps/a.json", format!("{{\"api_id\": \"a{n}\"}}"));
        world.repo.commit("apps only");
        world.publish();
    };

    let (first, asked) = read(&source, 1 << 20);
    assert!(asked.contains(&policy_blob(&first)));
    // The cold read kept nothing: policies/ is read again, now known.
    change_apps(2);
    let (second, asked) = read(&source, 1 << 20);
    assert!(asked.contains(&policy_blob(&second)), "a cold read kept");
    assert_eq!(contents(&second), contents(&fresh(1 << 20)));

    // Only apps/ changed: policies/ and middleware/ come from the last read.
    change_apps(3);
    let (third, asked) = read(&source, 1 << 20);
    assert_eq!(contents(&third), contents(&fresh(1 << 20)));
    assert_eq!(loaded(&third, "apps/a.json"), "{\"api_id\": \"a3\"}");
    assert!(!asked.contains(&policy_blob(&third)), "policies read again");
    let q = third.get("policies/deep/more/q.json").expect("q").blob;
    assert!(!asked.contains(&q), "a folder beneath read again");

    // A file deep in policies/ changed: that folder is read again.
    world
        .repo
        .file("policies/deep/more/q.json", "{\"id\": \"q2\"}");
    world.repo.commit("policy");
    world.publish();
    let (fourth, _) = read(&source, 1 << 20);
    assert_eq!(contents(&fourth), contents(&fresh(1 << 20)));
    assert_eq!(
        loaded(&fourth, "policies/deep/more/q.json"),
        "{\"id\": \"q2\"}"
    );

    // Under a smaller limit, what was read whole before is too large now.
    let (small, _) = read(&source, 8);
    assert_eq!(contents(&small), contents(&fresh(8)));
    assert!(matches!(
        small.get("policies/p1.json").expect("p1").content,
        Content::TooLarge { .. }
    ));
}

/// The refs and pack files of the cache, as `git` sees them.
fn cache_shape(cache: &Path) -> (Vec<String>, usize) {
    let refs = git(cache, &["for-each-ref", "--format=%(refname)"]);
    let packs = fs::read_dir(cache.join("objects/pack"))
        .expect("pack dir")
        .filter(|e| {
            e.as_ref()
                .expect("entry")
                .path()
                .extension()
                .is_some_and(|x| x == "pack")
        })
        .count();
    (refs.lines().map(String::from).collect(), packs)
}

#[test]
fn a_sidecar_fetching_forever_keeps_the_cache_bounded() {
    let world = World::new();
    let daemon = GitDaemon::start(world.served.path());
    let source = world.source(with_ref(config(&daemon.url("config.git")), "main"));
    let cache = world.root.path().join("cache");
    let mut most_packs = 0;

    for i in 0..40 {
        world.repo.file("apps/counter.txt", i.to_string());
        let sha = world.repo.commit(&format!("change {i}"));
        world.publish();
        let (commit, tree) = sync(&source, None);
        assert_eq!(commit.sha, sha);
        assert_eq!(loaded(&tree, "apps/counter.txt"), i.to_string());
        let (refs, packs) = cache_shape(&cache);
        assert_eq!(refs, ["refs/tyk-gitops/fetched"], "after fetch {i}");
        most_packs = most_packs.max(packs);
    }

    // One pack per change until the cache starts over: never unbounded.
    let (_, packs) = cache_shape(&cache);
    assert!(packs < 40, "{packs} packs: the cache never started over");
    assert!(most_packs <= 33, "{most_packs} packs at most");
}

#[test]
fn symlinks_submodules_and_large_files_are_recorded_not_read() {
    let world = World::new();
    std::os::unix::fs::symlink("/etc/passwd", world.repo.path().join("apps/link.json"))
        .expect("symlink");
    world.repo.file("apps/big.json", vec![b' '; 5000]);
    // A gitlink, as `git submodule add` records it, without needing a server.
    let sub = world.repo.head();
    git(world.repo.path(), &["add", "-A"]);
    git(
        world.repo.path(),
        &[
            "update-index",
            "--add",
            "--cacheinfo",
            &format!("160000,{sub},vendor/sub"),
        ],
    );
    // Not `ConfigRepo::commit`: its `git add -A` would drop the gitlink,
    // which has no checkout behind it.
    git(world.repo.path(), &["commit", "-q", "-m", "odd entries"]);
    world.publish();
    let daemon = GitDaemon::start(world.served.path());
    let source = world.source(config(&daemon.url("config.git")));
    let commit = source.resolve().expect("resolve");
    source.fetch(&commit).expect("fetch");

    let tree = source
        .read_tree(&commit, None, 1000, &|_| Cached::Unknown)
        .expect("read");

    let link = tree.get("apps/link.json").expect("link");
    assert_eq!(link.kind, EntryKind::Symlink);
    assert_eq!(link.content, Content::Absent);
    let sub = tree
        .get("vendor/sub")
        .unwrap_or_else(|| panic!("no submodule in {:?}", paths(&tree)));
    assert_eq!(sub.kind, EntryKind::Submodule);
    assert_eq!(sub.content, Content::Absent);
    let big = tree.get("apps/big.json").expect("big");
    assert_eq!(big.kind, EntryKind::File);
    assert_eq!(big.content, Content::TooLarge { size: 5000 });
    // A blob the caller says it analysed before is read without a header
    // lookup; the limit still applies once it is read.
    let trusted = source
        .read_tree(&commit, None, 1000, &|_| Cached::Known)
        .expect("read");
    let big = trusted.get("apps/big.json").expect("big");
    assert_eq!(big.content, Content::TooLarge { size: 5000 });
    let same = |t: &tyk_gitops::tree::Tree| -> Vec<(String, Content)> {
        t.entries
            .iter()
            .map(|e| (e.path.clone(), e.content.clone()))
            .collect()
    };
    assert_eq!(same(&trusted), same(&tree));
}

#[test]
fn local_paths_and_file_urls_are_sources_too() {
    let world = World::new();
    for url in [
        world.bare.display().to_string(),
        format!("file://{}", world.bare.display()),
        world.repo.url(),
    ] {
        let root = tempfile::tempdir().expect("root");
        let source = Source::new(config(&url), root.path().join("cache"));
        let (commit, tree) = sync(&source, Some("envs/prod"));
        assert_eq!(commit.sha, world.repo.head(), "{url}");
        assert_eq!(paths(&tree), ["apps/prod.json"], "{url}");
    }
}

#[test]
fn a_transfer_that_trickles_past_the_timeout_is_aborted() {
    let world = World::new();
    let http = GitHttp::start(world.served.path(), None);
    let mut cfg = config(&http.url("config.git"));
    // Each piece comes well within the socket timeout; the whole does not.
    cfg.timeout = Duration::from_secs(1);
    let source = world.source(cfg);
    let commit = source.resolve().expect("resolve");
    http.drip(Duration::from_millis(50));
    let start = Instant::now();

    let err = source.fetch(&commit).expect_err("too slow");

    assert!(matches!(err, SourceError::Timeout { .. }), "{err:?}");
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn unreachable_server_is_a_connect_error_within_the_timeout() {
    let port = crate::support::free_port();
    let mut cfg = config(&format!("git://127.0.0.1:{port}/config.git"));
    cfg.connect_timeout = Duration::from_secs(2);
    cfg.timeout = Duration::from_secs(2);
    let root = tempfile::tempdir().expect("root");
    let start = Instant::now();

    let err = Source::new(cfg, root.path().join("cache"))
        .resolve()
        .expect_err("nothing listens");

    let SourceError::Connect { message, .. } = &err else {
        panic!("{err:?}");
    };
    assert!(
        message.contains("failed to connect to 127.0.0.1"),
        "{message}"
    );
    assert!(message.to_lowercase().contains("refused"), "{message}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn a_server_that_never_answers_times_out() {
    // Accepts connections and says nothing.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let mut cfg = config(&format!("git://127.0.0.1:{port}/config.git"));
    cfg.connect_timeout = Duration::from_secs(1);
    cfg.timeout = Duration::from_secs(1);
    let root = tempfile::tempdir().expect("root");
    let start = Instant::now();

    let err = Source::new(cfg, root.path().join("cache"))
        .resolve()
        .expect_err("silent server");

    // The read times out (the connection was accepted).
    assert!(matches!(err, SourceError::Timeout { .. }), "{err:?}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    drop(listener);
}

/// A served repo whose `main` has `n` commits, each adding `apps/c<i>.json`;
/// returns the shas, oldest first.
fn long_history(world: &World, n: usize) -> Vec<String> {
    let shas = (1..=n)
        .map(|i| world.repo.api(&format!("c{i}")).commit(&format!("c{i}")))
        .collect();
    world.publish();
    shas
}

/// resolve → fetch → read_tree of `--ref <sha>` with the cache in `root`;
/// the tree's API files.
fn apis_at(root: &Path, url: &str, sha: &str) -> Result<Vec<String>, SourceError> {
    let source = Source::new(with_ref(config(url), sha), root.join("cache"));
    let commit = source.resolve()?;
    source.fetch(&commit)?;
    let tree = source.read_tree(&commit, None, 1 << 20, &|_| Cached::Unknown)?;
    Ok(paths(&tree)
        .into_iter()
        .filter_map(|p| p.strip_prefix("apps/"))
        .map(str::to_string)
        .collect())
}

/// Conversations with the server: each listing or fetch starts with one
/// ref advertisement (a shallow fetch then takes two POSTs).
fn conversations(http: &GitHttp) -> usize {
    http.requests()
        .iter()
        .filter(|r| r.starts_with("GET") && r.contains("/info/refs"))
        .count()
}

/// Regression: `--ref <sha>` failed on every server with Git's default
/// settings ("cannot fetch a specific object from the remote repository"),
/// even for the branch tip. Pipelines pin shas, rollbacks name older ones.
#[test]
fn pinned_shas_are_fetched_from_stock_git_daemon_and_http_servers() {
    let world = World::new();
    let shas = long_history(&world, 12);
    let (tip, older) = (&shas[11], &shas[8]);
    let daemon = GitDaemon::start(world.served.path());
    let http = GitHttp::start(world.served.path(), None);
    for url in [daemon.url("config.git"), http.url("config.git")] {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        // The tip: a ref listing, then one shallow fetch by the branch's
        // name.
        http.clear_requests();
        let tip_apis = apis_at(root, &url, tip).unwrap_or_else(|e| panic!("{url}: {e}"));
        assert!(tip_apis.contains(&"c12.json".to_string()), "{tip_apis:?}");
        if url.starts_with("http") {
            assert_eq!(conversations(&http), 2, "{:?}", http.requests());
            http.clear_requests();
        }
        // Three commits back: found by deepening main, read as committed.
        let older_apis = apis_at(root, &url, older).unwrap_or_else(|e| panic!("{url}: {e}"));
        assert!(
            older_apis.contains(&"c9.json".to_string()),
            "{older_apis:?}"
        );
        assert!(
            !older_apis.contains(&"c10.json".to_string()),
            "{older_apis:?}"
        );
        if url.starts_with("http") {
            println!(
                "RESULT older sha (3 back) on a stock http server: {} conversations",
                conversations(&http)
            );
        }
        // The cache stayed shallow (12 commits, not all of them fetched) and
        // usable: the branch fetches again, then the older sha is at hand.
        assert!(
            root.join("cache/shallow").is_file(),
            "{url}: cache unshallowed"
        );
        let branch = Source::new(with_ref(config(&url), "main"), root.join("cache"));
        let (commit, _) = sync(&branch, None);
        assert_eq!(&commit.sha, tip);
        http.clear_requests();
        assert!(apis_at(root, &url, older).is_ok());
        assert_eq!(conversations(&http), 0, "the older commit is cached");
    }
}

#[test]
fn an_unknown_sha_is_refused_naming_the_sha_and_what_was_searched() {
    let world = World::new();
    long_history(&world, 3);
    world.repo.tag("v1");
    world.publish();
    let daemon = GitDaemon::start(world.served.path());
    let unknown = "0123456789abcdef0123456789abcdef01234567";
    // Bounded by a short transfer timeout: the refusal must come from the
    // search ending, not from running out of time.
    let mut cfg = with_ref(config(&daemon.url("config.git")), unknown);
    cfg.timeout = Duration::from_secs(10);
    let source = world.source(cfg);
    let commit = source.resolve().expect("a full sha resolves as is");
    let err = source
        .fetch(&commit)
        .expect_err("an unknown sha is fetched");
    assert!(matches!(err, SourceError::ShaNotFound { .. }), "{err:?}");
    let message = err.to_string();
    for part in [unknown, "branches: main", "tags: v1", "1024 commits"] {
        assert!(message.contains(part), "{part} not in: {message}");
    }
    println!("RESULT unknown sha: {message}");
}

#[test]
fn the_search_for_an_unknown_sha_stops_deepening_a_ref_whose_history_has_all_arrived() {
    let world = World::new();
    long_history(&world, 12);
    let http = GitHttp::start(world.served.path(), None);
    let unknown = "0123456789abcdef0123456789abcdef01234567";
    let err = apis_at(world.root.path(), &http.url("config.git"), unknown)
        .expect_err("an unknown sha is fetched");
    assert!(matches!(err, SourceError::ShaNotFound { .. }), "{err:?}");
    // The listing, the refused fetch by id, then main 4 deep and 16 deep:
    // its 13 commits are all here, so not 64, 256 and 1,024 deep too.
    assert_eq!(conversations(&http), 4, "{:?}", http.requests());
    // The branch still fetches into the cache the search left.
    let (commit, _) = sync(&world.source(config(&http.url("config.git"))), None);
    assert_eq!(commit.sha, world.repo.head());
}

#[test]
fn a_server_allowing_wants_by_id_serves_an_older_sha_in_one_fetch() {
    let world = World::new();
    let shas = long_history(&world, 6);
    let http = GitHttp::start_allowing_sha_wants(world.served.path());
    let url = http.url("config.git");
    let apis = apis_at(world.root.path(), &url, &shas[1]).expect("fetch by id");
    assert!(apis.contains(&"c2.json".to_string()), "{apis:?}");
    assert!(!apis.contains(&"c3.json".to_string()), "{apis:?}");
    // A listing (no ref is at that sha), then the fetch by id: no
    // deepening round trips.
    assert_eq!(conversations(&http), 2, "{:?}", http.requests());
    // A sha the server does not have: its refusal ("not our ref") is not a
    // connection failure; the search runs and names the sha.
    let unknown = "0123456789abcdef0123456789abcdef01234567";
    match apis_at(world.root.path(), &url, unknown) {
        Err(SourceError::ShaNotFound { sha, .. }) => assert_eq!(sha, unknown),
        other => panic!("{other:?}"),
    }
}
