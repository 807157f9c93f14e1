//! HTTPS: a certificate is verified against the system's roots (and
//! `SSL_CERT_FILE`, OpenSSL's way to add a private CA), for Git and for the
//! gateway alike. An untrusted one is refused before any config is read or
//! any request reaches the gateway.

use std::path::Path;
use std::process::Command;

use crate::support::bin;
use crate::support::git_server::GitHttp;
use crate::support::node::{Node, SECRET, ids};
use crate::support::repo::ConfigRepo;
use crate::support::served_repo;
use crate::support::tls::TlsProxy;

/// `tyk-gitops sync` with only the trust the test gives it.
fn sync(args: &[&str], root: &Path, trust: Option<&Path>) -> (i32, String) {
    let mut cmd = Command::new(bin());
    cmd.arg("sync").args(args).arg("--root").arg(root);
    for (key, _) in std::env::vars() {
        if key.starts_with("TYK_GITOPS_") || key.starts_with("SSL_CERT_") {
            cmd.env_remove(key);
        }
    }
    if let Some(cert) = trust {
        cmd.env("SSL_CERT_FILE", cert);
    }
    cmd.env("TYK_GITOPS_GATEWAY_SECRET", SECRET);
    let out = cmd.output().expect("run tyk-gitops");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn git_over_https_with_an_untrusted_certificate_is_refused_and_a_trusted_one_works() {
    let repo = ConfigRepo::new();
    repo.api("alpha").policy("gold", &["alpha"]);
    repo.commit("alpha");
    let served = tempfile::tempdir().expect("tempdir");
    repo.bare_clone(served.path(), "config.git");
    let http = GitHttp::start(served.path(), None);
    let tls = TlsProxy::start(http.port);
    let url = tls.url("/config.git");
    let root = tempfile::tempdir().expect("tempdir");

    let (code, stderr) = sync(&["--repo", &url], root.path(), None);
    assert_eq!(code, 3, "{stderr}");
    assert!(stderr.contains("TLS certificate"), "{stderr}");
    assert!(stderr.contains("SSL_CERT_FILE"), "{stderr}");
    assert!(!root.path().join("current").exists());
    println!("RESULT tls git untrusted: exit {code}: {}", stderr.trim());
    assert!(
        http.requests().is_empty(),
        "a request crossed an untrusted connection: {:?}",
        http.requests()
    );

    let (code, stderr) = sync(&["--repo", &url], root.path(), Some(&tls.cert()));
    assert_eq!(code, 0, "{stderr}");
    assert!(root.path().join("current/apps/alpha.json").exists());
}

#[test]
fn a_gateway_behind_https_with_an_untrusted_certificate_gets_nothing() {
    let (_repo, _daemon, url) = served_repo();
    let node = Node::new();
    let tls = TlsProxy::start(node.emu.port());
    let gateway = tls.url("");
    let args = ["--repo", url.as_str(), "--gateway", gateway.as_str()];

    let (code, stderr) = sync(&args, node.root(), None);
    assert_eq!(code, 4, "{stderr}");
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");
    assert!(stderr.contains("SSL_CERT_FILE"), "{stderr}");
    assert!(!stderr.contains(SECRET), "{stderr}");
    assert_eq!(node.emu.reload_count(), 0);
    assert!(!node.root().join("current").exists());
    let last = stderr.lines().last().unwrap_or_default();
    println!("RESULT tls gateway untrusted: exit {code}: {last}");

    let (code, stderr) = sync(&args, node.root(), Some(&tls.cert()));
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(node.apis(), ids(&["alpha"]));
}
