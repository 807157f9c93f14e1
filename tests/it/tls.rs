//! HTTPS: a certificate is verified against the system's roots (and
//! `SSL_CERT_FILE`, OpenSSL's way to add a private CA), for Git and for the
//! gateway alike. An untrusted one is refused before any config is read or
//! any request reaches the gateway.

use crate::support::cli::{Ran, Tg};
use crate::support::git_server::GitHttp;
use crate::support::node::{Node, SECRET, ids};
use crate::support::repo::ConfigRepo;
use crate::support::served_repo;
use crate::support::tls::TlsProxy;

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

    let Ran { code, stderr, .. } = Tg::sync(&url, root.path()).run();
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

    Tg::sync(&url, root.path())
        .env("SSL_CERT_FILE", tls.cert())
        .run()
        .ok();
    assert!(root.path().join("current/apps/alpha.json").exists());
}

#[test]
fn a_gateway_behind_https_with_an_untrusted_certificate_gets_nothing() {
    let (_repo, _daemon, url) = served_repo();
    let node = Node::new();
    let tls = TlsProxy::start(node.emu.port());
    let gateway = tls.url("");
    let sync = || Tg::sync(&url, node.root()).gateway_at(&gateway);

    let Ran { code, stderr, .. } = sync().run();
    assert_eq!(code, 4, "{stderr}");
    assert!(stderr.to_lowercase().contains("certificate"), "{stderr}");
    assert!(stderr.contains("SSL_CERT_FILE"), "{stderr}");
    assert!(!stderr.contains(SECRET), "{stderr}");
    assert_eq!(node.emu.reload_count(), 0);
    assert!(!node.root().join("current").exists());
    let last = stderr.lines().last().unwrap_or_default();
    println!("RESULT tls gateway untrusted: exit {code}: {last}");

    sync().env("SSL_CERT_FILE", tls.cert()).run().ok();
    assert_eq!(node.apis(), ids(&["alpha"]));
}
