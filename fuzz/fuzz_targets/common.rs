//! Invariants every validate target checks on `check`'s output.

use std::collections::BTreeSet;

use tyk_gitops::bundle::{Bundle, is_safe_relative_path};
use tyk_gitops::validate::Report;

/// Where the gateway sees the revision in these targets.
pub const BASE: &str = "/r";

/// `revision_files` never names an unsafe path, whatever the report says
/// (unsafe entries are left out); when the report has no errors, the bundle
/// is one that would be applied, so the revision must also be writable (no
/// path twice, no file where a folder goes) and every JSON file the gateway
/// loads must parse.
pub fn check_output(bundle: &Bundle, report: &Report) {
    let files = bundle.revision_files(BASE);
    for f in &files {
        assert!(
            is_safe_relative_path(&f.path),
            "unsafe output path {:?}",
            f.path
        );
        for dir in ["apps/", "policies/"] {
            if let Some(rest) = f.path.strip_prefix(dir) {
                assert!(
                    !rest.split('/').any(|s| s.starts_with('.')),
                    "hidden file under {dir}: {:?}",
                    f.path
                );
            }
        }
    }
    if report.has_errors() {
        return;
    }
    let mut seen = BTreeSet::new();
    for f in &files {
        assert!(
            seen.insert(f.path.as_str()),
            "output path twice: {:?}",
            f.path
        );
    }
    for f in &files {
        let mut prefix = String::new();
        for seg in f
            .path
            .split('/')
            .collect::<Vec<_>>()
            .split_last()
            .unwrap()
            .1
        {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(seg);
            assert!(
                !seen.contains(prefix.as_str()),
                "{:?} is a file and also the folder of {:?}",
                prefix,
                f.path
            );
        }
    }
    for f in &files {
        let loaded = f.path == "policies.json"
            || ((f.path.starts_with("apps/") || f.path.starts_with("policies/"))
                && f.path.ends_with(".json")
                && f.path.matches('/').count() == 1);
        if loaded {
            if let Err(e) = serde_json::from_slice::<serde_json::Value>(&f.bytes) {
                panic!(
                    "accepted bundle writes {} that does not parse: {e}\n{}",
                    f.path,
                    String::from_utf8_lossy(&f.bytes)
                );
            }
        }
    }
    // policies.json holds exactly the bundle's policy ids.
    if let Some(map) = files.iter().find(|f| f.path == "policies.json") {
        let v: serde_json::Value = serde_json::from_slice(&map.bytes).unwrap();
        let keys: BTreeSet<String> = v.as_object().unwrap().keys().cloned().collect();
        assert_eq!(
            keys,
            bundle.policy_ids(),
            "policies.json keys differ from the bundle's ids"
        );
    }
}
