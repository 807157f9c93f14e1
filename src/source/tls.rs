//! libgit2 sets OpenSSL up as it starts, the system's CA bundle included:
//! parsing a bundle of ~140 certificates was ~8% of an incremental sync's
//! CPU and ~2.5 MiB that a sidecar keeps for good, though only `https://`
//! remotes use it (and http ones, for a redirect or a proxy). So the process starts libgit2 with an empty bundle
//! (`defer_ca_bundle`, first thing in `main`), and hands it the bundle
//! before its first https connection (`load_ca_bundle`). The trust is the
//! same: the bundle libgit2 would have read (`SSL_CERT_FILE`, else the one
//! its probe finds), and `SSL_CERT_DIR` as it was.

use std::path::PathBuf;
use std::sync::{Once, OnceLock};

/// The bundle libgit2 started without; unset when it started as usual (a
/// library caller that never called `defer_ca_bundle`: nothing to load).
static DEFERRED: OnceLock<Option<PathBuf>> = OnceLock::new();

/// Starts libgit2 without reading a CA bundle, and leaves `SSL_CERT_FILE`
/// as libgit2's start would have (its probe's bundle, for the other TLS
/// clients of the process).
///
/// # Safety
/// Changes the environment: call before any other thread exists.
pub unsafe fn defer_ca_bundle() {
    // What git2 itself would find and export as it starts.
    let bundle = openssl_probe::probe().cert_file;
    let before = std::env::var_os("SSL_CERT_FILE");
    // SAFETY: the caller guarantees no other thread runs.
    unsafe { std::env::set_var("SSL_CERT_FILE", "/dev/null") };
    // Any git2 call starts libgit2 (and OpenSSL); this one has no effect.
    let _ = git2::Oid::hash_object(git2::ObjectType::Blob, b"");
    match (&bundle, before) {
        // SAFETY: as above.
        (Some(path), _) => unsafe { std::env::set_var("SSL_CERT_FILE", path) },
        (None, Some(value)) => unsafe { std::env::set_var("SSL_CERT_FILE", value) },
        (None, None) => unsafe { std::env::remove_var("SSL_CERT_FILE") },
    }
    let _ = DEFERRED.set(bundle);
}

/// Gives libgit2 the bundle `defer_ca_bundle` held back, once, before the
/// first http(s) connection.
pub fn load_ca_bundle() {
    static LOADED: Once = Once::new();
    let Some(Some(bundle)) = DEFERRED.get() else {
        return;
    };
    LOADED.call_once(|| {
        // SAFETY: libgit2 adds the file to its TLS context's trust store;
        // `Once` keeps a second caller out until it is done, and no https
        // connection starts before it returns (the callers wait here).
        if let Err(err) = unsafe { git2::opts::set_ssl_cert_file(bundle) } {
            tracing::warn!(bundle = %bundle.display(), error = %err.message(), "cannot read the CA bundle");
        }
    });
}
