//! Findings of the fuzz targets (`fuzz/`, `bench/fuzz.sh`), kept as tests.
//! Each one is the smallest tree that broke an invariant the targets check
//! (see `fuzz/fuzz_targets/common.rs`).

use std::collections::BTreeSet;

use serde_json::json;
use tyk_gitops::tree::{Tree, TreeEntry};
use tyk_gitops::validate::{Cache, Options, check};

fn file(path: &str, bytes: &[u8]) -> TreeEntry {
    TreeEntry::file(path, bytes.to_vec())
}

/// A bundle the validator accepts must be writable as a revision: no path
/// that is both a file and the folder of another file. Returns whether it
/// was accepted.
fn assert_writable(entries: Vec<TreeEntry>) -> bool {
    let (bundle, report) = check(
        Tree::from_entries(entries),
        &Options::default(),
        &mut Cache::default(),
    );
    if report.has_errors() {
        return false;
    }
    let files = bundle.revision_files("/r");
    let paths: BTreeSet<&str> = files.iter().map(|f| f.path.as_str()).collect();
    for p in &paths {
        let mut dir = String::new();
        let segs: Vec<&str> = p.split('/').collect();
        for seg in &segs[..segs.len() - 1] {
            if !dir.is_empty() {
                dir.push('/');
            }
            dir.push_str(seg);
            assert!(
                !paths.contains(dir.as_str()),
                "{dir} is a file and the folder of {p}"
            );
        }
    }
    true
}

/// Found writing validate_tree's writable-revision check (by hand, not by a
/// fuzz run: 96k execs did not reach it): a definition whose middleware
/// path is `policies` (a file at the config root, next to `policies.json`)
/// shipped that file as `policies`, beside the `policies/` folder every
/// revision has: accepted by validate, then the apply failed. Now an error.
#[test]
fn middleware_file_named_like_a_revision_folder() {
    for name in ["policies", "apps"] {
        let api = json!({
            "name": "a", "api_id": "a", "org_id": "o", "active": true, "use_keyless": true,
            "proxy": {"listen_path": "/a/", "target_url": "http://u"},
            "version_data": {"not_versioned": true, "versions": {"Default": {"name": "Default"}}},
            "custom_middleware": {"driver": "otto", "pre": [{"name": "m", "path": name}]},
        });
        let map = json!({"p": {"id": "p", "rate": 1, "per": 1,
            "access_rights": {"a": {"api_id": "a", "versions": ["Default"]}}}});
        let accepted = assert_writable(vec![
            file("apps/a.json", &serde_json::to_vec(&api).unwrap()),
            file("policies.json", &serde_json::to_vec(&map).unwrap()),
            file(name, b"function m() {}"),
        ]);
        assert!(!accepted, "a middleware file named {name} must be refused");
    }
}
