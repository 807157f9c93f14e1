//! `tyk-gitops export`, as someone moving a hand-made gateway to Git runs
//! it: export gateway A, validate and commit the folder, sync it to an empty
//! gateway B, and B serves what A served. Exporting again changes nothing.

use std::fs;
use std::path::Path;

use serde_json::Value;

use crate::support::cli::Tg;
use crate::support::node::{Node, SECRET};
use crate::support::repo::{ConfigRepo, git};

fn copy_tree(from: &Path, to: &Path) {
    for entry in fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let dest = to.join(entry.file_name());
        if entry.path().is_dir() {
            fs::create_dir_all(&dest).expect("mkdir");
            copy_tree(&entry.path(), &dest);
        } else {
            fs::copy(entry.path(), dest).expect("copy");
        }
    }
}

/// What a gateway lists, by id, with tyk-gitops' own rewrite of script
/// paths (into each node's revision) undone, so two nodes compare.
fn served(node: &Node, path: &str) -> Vec<(String, Value)> {
    let (status, body) = crate::support::http(
        format!("127.0.0.1:{}", node.emu.port())
            .parse()
            .expect("addr"),
        "GET",
        path,
        &[("X-Tyk-Authorization", SECRET)],
        b"",
    );
    assert_eq!(status, 200, "{body}");
    let revisions = format!("{}/revisions/", node.root().display());
    let normalised = without_revision_paths(&body, &revisions);
    let list: Vec<Value> = serde_json::from_str(&normalised).expect("json list");
    let mut out: Vec<(String, Value)> = list
        .into_iter()
        .map(|v| {
            let id = v["api_id"]
                .as_str()
                .or(v["id"].as_str())
                .unwrap_or("")
                .to_string();
            (id, v)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// `<root>/revisions/<sha>/` → `<rev>/` in every string.
fn without_revision_paths(body: &str, prefix: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some(at) = rest.find(prefix) {
        out.push_str(&rest[..at]);
        out.push_str("<rev>/");
        let after = &rest[at + prefix.len()..];
        let skip = after.find('/').map_or(after.len(), |i| i + 1);
        rest = &after[skip..];
    }
    out.push_str(rest);
    out
}

#[test]
fn export_then_sync_to_an_empty_gateway_reproduces_it_and_a_second_export_is_byte_identical() {
    // Gateway A serves the bundled example: classic APIs, a Tyk OAS pair,
    // a Tyk OAS document kept alone, JavaScript middleware, two policies.
    let source = ConfigRepo::new();
    copy_tree(
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/config-repo")),
        source.path(),
    );
    source.commit("example");
    let a = Node::new();
    Tg::sync_node(&source.url(), &a).run().ok();

    // Step 1 of "Coming from …": export.
    let out_dir = tempfile::tempdir().expect("tempdir");
    let out = out_dir.path().to_str().expect("utf-8");
    let export = || {
        Tg::export(out)
            .gateway(&a.emu)
            .arg("--middleware-from")
            .arg(a.current())
    };
    let exported = export().run().ok();
    exported.stdout_has("exported 5 APIs and 2 policies");
    assert_eq!(exported.stderr, "", "no finding expected");
    for file in [
        "apps/petstore-tyk-oas-api.json",
        "apps/petstore-tyk-oas-api-oas.json",
        "policies/standard.json",
        "middleware/add-request-id.js",
        "README.md",
    ] {
        assert!(out_dir.path().join(file).is_file(), "{file} missing");
    }
    let readme = fs::read_to_string(out_dir.path().join("README.md")).expect("readme");
    assert!(readme.contains(&a.emu.url()), "{readme}");
    assert!(
        !readme.contains(SECRET)
            && !fs::read_dir(out_dir.path().join("apps"))
                .expect("apps")
                .any(|f| {
                    fs::read_to_string(f.expect("entry").path())
                        .expect("read")
                        .contains(SECRET)
                })
    );

    // Step 2: validate and commit.
    Tg::validate(out).run().ok();
    git(out_dir.path(), &["init", "-q", "-b", "main"]);
    git(out_dir.path(), &["add", "-A"]);
    git(
        out_dir.path(),
        &[
            "-c",
            "user.name=T",
            "-c",
            "user.email=t@x",
            "commit",
            "-q",
            "-m",
            "export",
        ],
    );

    // Step 3: sync it to an empty gateway B: the same APIs and policies.
    let b = Node::new();
    Tg::sync_node(out, &b).run().ok();
    assert_eq!(served(&a, "/tyk/apis"), served(&b, "/tyk/apis"));
    assert_eq!(served(&a, "/tyk/policies"), served(&b, "/tyk/policies"));
    let oas = |node: &Node| served(node, "/tyk/apis").len();
    assert_eq!(oas(&b), 5);

    // Exporting again from the unchanged gateway: no diff at all.
    export().arg("--force").run().ok();
    assert_eq!(git(out_dir.path(), &["status", "--porcelain"]), "");

    // A change on the gateway shows as exactly that file.
    fs::remove_file(a.current().join("policies/partner.json")).expect("rm");
    let reload = crate::support::http(
        format!("127.0.0.1:{}", a.emu.port()).parse().expect("addr"),
        "GET",
        "/tyk/reload?block=true",
        &[("X-Tyk-Authorization", SECRET)],
        b"",
    );
    assert_eq!(reload.0, 200);
    export().arg("--force").run().ok();
    let status = git(out_dir.path(), &["status", "--porcelain"]);
    assert!(status.contains("D policies/partner.json"), "{status}");
    assert!(status.contains("M README.md"), "{status}");
    assert_eq!(status.lines().count(), 2, "{status}");
}

#[test]
fn export_refuses_a_non_empty_folder_and_lists_scripts_it_did_not_copy() {
    let source = ConfigRepo::new();
    copy_tree(
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/config-repo")),
        source.path(),
    );
    source.commit("example");
    let a = Node::new();
    Tg::sync_node(&source.url(), &a).run().ok();

    let dir = tempfile::tempdir().expect("tempdir");
    fs::write(dir.path().join("notes.txt"), "mine").expect("write");
    let out = dir.path().to_str().expect("utf-8");
    Tg::export(out)
        .gateway(&a.emu)
        .run()
        .code(2)
        .stderr_has("is not empty");
    assert!(!dir.path().join("apps").exists());

    let forced = Tg::export(out).gateway(&a.emu).arg("--force").run().ok();
    let warnings = forced.stderr;
    assert!(
        warnings.contains("add-request-id.js") && warnings.contains("--middleware-from"),
        "{warnings}"
    );
    assert_eq!(
        fs::read_to_string(dir.path().join("notes.txt")).expect("kept"),
        "mine"
    );

    Tg::export(out)
        .args(["--gateway", &a.emu.url(), "--force"])
        .run()
        .code(2);
}
