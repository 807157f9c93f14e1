//! `--verify-signatures`: only commits signed by a listed key reach the
//! gateway. Real signatures: `git commit -S` with `gpg.format=ssh` and keys
//! from `ssh-keygen`, and with OpenPGP keys made by `gpg` in the test.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use crate::support::cli::{Ran, Tg};
use crate::support::node::Node;
use crate::support::repo::{ConfigRepo, git};
use crate::support::sidecar::Sidecar;
use crate::support::{eventually, served_repo};

/// An SSH signing key made by `ssh-keygen`, and its allowed-signers line.
struct SshKey {
    _dir: TempDir,
    private: PathBuf,
    public: String,
}

impl SshKey {
    fn new() -> SshKey {
        let dir = tempfile::tempdir().expect("tempdir");
        let private = dir.path().join("id_ed25519");
        let out = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "signer", "-f"])
            .arg(&private)
            .output()
            .expect("ssh-keygen");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let public = fs::read_to_string(private.with_extension("pub")).expect("public key");
        SshKey {
            _dir: dir,
            private,
            public: public.trim().to_string(),
        }
    }

    fn allowed(&self, principal: &str, options: &str) -> String {
        format!("{principal} {options} {}\n", self.public)
    }
}

/// Commits everything with `git commit -S`, signing as `config` (the
/// `-c` settings: format, key, program) says.
fn commit_signed(repo: &ConfigRepo, config: &[String], message: &str) -> String {
    git(repo.path(), &["add", "-A"]);
    let mut args: Vec<&str> = config.iter().flat_map(|c| ["-c", c.as_str()]).collect();
    args.extend(["commit", "-q", "-S", "--allow-empty", "-m", message]);
    git(repo.path(), &args);
    repo.head()
}

/// Commits everything, signed with `key` in git's SSH format.
fn commit_ssh(repo: &ConfigRepo, key: &SshKey, message: &str) -> String {
    let config = [
        "gpg.format=ssh".to_string(),
        format!("user.signingkey={}", key.private.display()),
    ];
    commit_signed(repo, &config, message)
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    fs::write(&path, text).expect("write key file");
    path.to_str().expect("utf-8 path").to_string()
}

/// Refused like an invalid commit: exit 1, the reason named, nothing
/// written, and the rejection recorded so the sha is not fetched again.
fn assert_refused(out: &Ran, node: &Node, sha: &str, why: &str) {
    assert_eq!(out.code, 1, "{}", out.stderr);
    let err = &out.stderr;
    assert!(err.contains("untrusted-signature"), "{err}");
    assert!(err.contains(why), "expected {why:?} in: {err}");
    assert!(!node.current().exists(), "an untrusted commit was written");
    let state: Value =
        serde_json::from_slice(&fs::read(node.root().join("state.json")).expect("state"))
            .expect("json");
    assert_eq!(
        state["rejected"][sha]["reason"], "untrusted-signature",
        "{state}"
    );
}

#[test]
fn ssh_signed_commits_apply_and_every_kind_of_untrusted_one_is_refused_with_nothing_written() {
    let (repo, _daemon, url) = served_repo();
    let (alice, mallory) = (SshKey::new(), SshKey::new());
    let keys = tempfile::tempdir().expect("tempdir");
    let allowed = write(
        keys.path(),
        "allowed_signers",
        &alice.allowed("alice@example.com", ""),
    );
    let trust = ["--verify-signatures", "--allowed-signers", &allowed];

    // Unsigned (served_repo's first commit).
    let node = Node::new();
    let unsigned = repo.head();
    assert_refused(
        &Tg::sync(&url, node.root()).args(trust).run(),
        &node,
        &unsigned,
        "not signed",
    );
    // Not fetched again: the second run answers from the rejection.
    let again = Tg::sync(&url, node.root()).args(trust).run();
    assert_eq!(again.code, 1);
    assert!(
        again.stderr.contains("was rejected before"),
        "{}",
        again.stderr
    );

    // Signed by a key the file does not list.
    repo.api("beta");
    let by_mallory = commit_ssh(&repo, &mallory, "mallory");
    let node = Node::new();
    assert_refused(
        &Tg::sync(&url, node.root()).args(trust).run(),
        &node,
        &by_mallory,
        "does not list",
    );

    // Alice's signature of another commit, put on this one.
    repo.api("gamma");
    let signed = commit_ssh(&repo, &alice, "alice");
    let raw = git(repo.path(), &["cat-file", "commit", &signed]);
    let forged = raw.replace("\n\nalice", "\n\nalice, with a route of mine");
    let forged_sha = {
        let dir = repo.path();
        let tmp = dir.join(".git/forged");
        fs::write(&tmp, format!("{forged}\n")).expect("write forged commit");
        let sha = git(
            dir,
            &[
                "hash-object",
                "-t",
                "commit",
                "-w",
                tmp.to_str().expect("utf-8"),
            ],
        );
        git(dir, &["update-ref", "refs/heads/main", &sha]);
        sha
    };
    let node = Node::new();
    assert_refused(
        &Tg::sync(&url, node.root()).args(trust).run(),
        &node,
        &forged_sha,
        "not made for this content",
    );

    // Alice's key, listed with a validity that has ended.
    git(repo.path(), &["reset", "-q", "--hard", &signed]);
    let expired = write(
        keys.path(),
        "expired_signers",
        &alice.allowed("alice@example.com", "valid-before=20200101"),
    );
    let node = Node::new();
    let out = Tg::sync(&url, node.root())
        .args(["--verify-signatures", "--allowed-signers", &expired])
        .run();
    assert_refused(&out, &node, &signed, "expired");

    // Listed and current: applied, and the log names the signer.
    let node = Node::new();
    let out = Tg::sync(&url, node.root()).args(trust).run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(node.current_sha(), signed);
    assert!(out.stderr.contains("alice@example.com"), "{}", out.stderr);

    // Key rotation: the file is read on every sync.
    fs::write(&allowed, mallory.allowed("mallory@example.com", "")).expect("rotate");
    repo.api("delta");
    let rotated = commit_ssh(&repo, &mallory, "after rotation");
    let out = Tg::sync(&url, node.root()).args(trust).run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(node.current_sha(), rotated);
}

#[test]
fn a_signed_annotated_tag_vouches_for_an_unsigned_commit() {
    let (repo, _daemon, url) = served_repo();
    let key = SshKey::new();
    let keys = tempfile::tempdir().expect("tempdir");
    let allowed = write(
        keys.path(),
        "allowed_signers",
        &key.allowed("release@example.com", "namespaces=\"git\""),
    );
    let signing_key = format!("user.signingkey={}", key.private.display());
    git(
        repo.path(),
        &[
            "-c",
            "gpg.format=ssh",
            "-c",
            &signing_key,
            "tag",
            "-s",
            "v1",
            "-m",
            "release v1",
        ],
    );
    let node = Node::new();
    let out = Tg::sync(&url, node.root())
        .args([
            "--verify-signatures",
            "--allowed-signers",
            &allowed,
            "--ref",
            "v1",
        ])
        .run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(node.current_sha(), repo.head());
    assert!(out.stderr.contains("tag"), "{}", out.stderr);
}

/// A throwaway GnuPG home with one ed25519 signing key.
struct Gpg {
    home: TempDir,
    fingerprint: String,
}

impl Gpg {
    fn new(uid: &str) -> Gpg {
        let home = tempfile::tempdir().expect("gnupg home");
        let gpg = Gpg {
            home,
            fingerprint: String::new(),
        };
        gpg.run(&["--quick-gen-key", uid, "ed25519", "sign", "never"]);
        let listing = gpg.run(&["--with-colons", "--list-keys", uid]);
        let fingerprint = listing
            .lines()
            .find_map(|l| {
                l.strip_prefix("fpr:")
                    .map(|r| r.trim_matches(':').to_string())
            })
            .expect("fingerprint");
        Gpg { fingerprint, ..gpg }
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("gpg")
            .arg("--homedir")
            .arg(self.home.path())
            .args([
                "--batch",
                "--yes",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
            ])
            .args(args)
            .output()
            .expect("run gpg");
        assert!(
            out.status.success(),
            "gpg {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn public(&self) -> String {
        self.run(&["--armor", "--export", &self.fingerprint])
    }

    fn commit(&self, repo: &ConfigRepo, message: &str) -> String {
        let config = [
            "gpg.format=openpgp".to_string(),
            format!("gpg.program={}", self.wrapper().display()),
            format!("user.signingkey={}", self.fingerprint),
        ];
        commit_signed(repo, &config, message)
    }

    /// git runs `gpg.program` without our home: a script that adds it.
    fn wrapper(&self) -> PathBuf {
        let path = self.home.path().join("gpg-wrapper");
        let script = format!(
            "#!/bin/sh\nexec gpg --homedir '{}' --batch --pinentry-mode loopback --passphrase '' \"$@\"\n",
            self.home.path().display()
        );
        fs::write(&path, script).expect("wrapper");
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
        path
    }

    /// The revocation certificate gpg made with the key, imported.
    fn revoke(&self) {
        let cert = self
            .home
            .path()
            .join("openpgp-revocs.d")
            .join(format!("{}.rev", self.fingerprint));
        let text = fs::read_to_string(&cert).expect("revocation certificate");
        // gpg guards the block with a leading ':' against accidental import.
        let armored = text.replace(
            ":-----BEGIN PGP PUBLIC KEY BLOCK-----",
            "-----BEGIN PGP PUBLIC KEY BLOCK-----",
        );
        let file = self.home.path().join("revoke.asc");
        fs::write(&file, armored).expect("write revocation");
        self.run(&["--import", file.to_str().expect("utf-8")]);
    }
}

#[test]
fn openpgp_signed_commits_apply_and_unlisted_expired_or_revoked_keys_are_refused() {
    let (repo, _daemon, url) = served_repo();
    let (alice, other) = (
        Gpg::new("Alice <alice@example.com>"),
        Gpg::new("Other <other@example.com>"),
    );
    let keys = tempfile::tempdir().expect("tempdir");
    let trusted = write(keys.path(), "trusted.asc", &alice.public());
    let trust = ["--verify-signatures", "--trusted-keys", &trusted];

    repo.api("beta");
    let by_other = other.commit(&repo, "other");
    let node = Node::new();
    assert_refused(
        &Tg::sync(&url, node.root()).args(trust).run(),
        &node,
        &by_other,
        "does not hold",
    );

    repo.api("gamma");
    let by_alice = alice.commit(&repo, "alice");
    let node = Node::new();
    let out = Tg::sync(&url, node.root()).args(trust).run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(node.current_sha(), by_alice);
    assert!(out.stderr.contains("alice@example.com"), "{}", out.stderr);

    // The same key, expired since: refused (judged now, not at the commit's date).
    alice.run(&["--quick-set-expire", &alice.fingerprint, "seconds=1"]);
    std::thread::sleep(Duration::from_secs(2));
    let expired = write(keys.path(), "expired.asc", &alice.public());
    let node = Node::new();
    assert_refused(
        &Tg::sync(&url, node.root())
            .args(["--verify-signatures", "--trusted-keys", &expired])
            .run(),
        &node,
        &by_alice,
        "expired",
    );

    // Revoked.
    let fresh = Gpg::new("Fresh <fresh@example.com>");
    repo.api("delta");
    let by_fresh = fresh.commit(&repo, "fresh");
    fresh.revoke();
    let revoked = write(keys.path(), "revoked.asc", &fresh.public());
    let node = Node::new();
    assert_refused(
        &Tg::sync(&url, node.root())
            .args(["--verify-signatures", "--trusted-keys", &revoked])
            .run(),
        &node,
        &by_fresh,
        "revoked",
    );
}

#[test]
fn run_refuses_an_unsigned_push_and_reports_it_in_status_and_metrics() {
    let (repo, _daemon, url) = served_repo();
    let key = SshKey::new();
    let keys = tempfile::tempdir().expect("tempdir");
    let allowed = write(
        keys.path(),
        "allowed_signers",
        &key.allowed("ci@example.com", ""),
    );
    repo.api("beta");
    let signed = commit_ssh(&repo, &key, "signed");
    let node = Node::new();
    let sidecar = Sidecar::start(
        &url,
        &node,
        &["--verify-signatures", "--allowed-signers", &allowed],
    );
    eventually("the signed commit runs", Duration::from_secs(20), || {
        sidecar.runs(&signed)
    });

    repo.api("gamma");
    let unsigned = repo.commit("unsigned");
    eventually(
        "the unsigned commit is refused",
        Duration::from_secs(20),
        || {
            sidecar.status()["rejected"].as_array().is_some_and(|r| {
                r.iter()
                    .any(|x| x["sha"] == unsigned && x["reason"] == "untrusted-signature")
            })
        },
    );
    // Counted once the sync returns, just after the state shows it.
    eventually("the rejection is counted", Duration::from_secs(10), || {
        sidecar.metric("tyk_gitops_syncs_total{result=\"rejected\"}") >= 1.0
    });
    assert!(sidecar.runs(&signed), "the signed commit keeps serving");
    assert!(!node.apis().contains(&"gamma".to_string()));
}
