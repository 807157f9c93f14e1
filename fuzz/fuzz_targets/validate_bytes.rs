//! One arbitrary file at each path where the validator reads something:
//! `check` must not panic, and the revision it would write must be safe.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tyk_gitops::tree::{Tree, TreeEntry};
use tyk_gitops::validate::{Cache, Options, check};

#[path = "common.rs"]
mod common;

const PATHS: [&str; 7] = [
    "apps/x.json",
    "apps/x-oas.json",
    "apps/x-mcp.json",
    "policies/p.json",
    "policies.json",
    ".tyk.json",
    "tyk.conf",
];

fn file(path: &str, bytes: &[u8]) -> TreeEntry {
    TreeEntry::file(path, bytes.to_vec())
}

fuzz_target!(|data: &[u8]| {
    let opts = Options::default();
    let strict = Options {
        strict: true,
        ..Options::default()
    };
    let mut cache = Cache::default();
    // Alone at each path.
    for path in PATHS {
        let tree = Tree::from_entries(vec![file(path, data)]);
        let (bundle, report) = check(tree, &opts, &mut cache);
        common::check_output(&bundle, &report);
    }
    // Everywhere at once (the same blob in several roles shares the cache),
    // next to a middleware file the definitions may reference.
    let mut entries: Vec<TreeEntry> = PATHS.iter().map(|p| file(p, data)).collect();
    entries.push(file("middleware/m.js", b"var m = 1;"));
    let (bundle, report) = check(Tree::from_entries(entries.clone()), &strict, &mut cache);
    common::check_output(&bundle, &report);
    // Again with a warm cache: same verdict.
    let (bundle2, report2) = check(Tree::from_entries(entries), &strict, &mut cache);
    common::check_output(&bundle2, &report2);
    assert_eq!(report, report2, "the warm cache changed the report");
});
