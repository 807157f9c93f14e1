//! A config repo of Tyk OAS documents kept alone, as people write them for
//! `POST /tyk/apis/oas`: one OpenAPI file per API with the
//! `x-tyk-api-gateway` extension. Each becomes the pair file mode needs
//! (`<name>.json` classic with `is_oas`, `<name>-oas.json` the document),
//! syncs and is routed with no edit by the user; what cannot be derived is
//! refused naming the user's file and line.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::sync::mpsc;
use std::thread;

use serde_json::{Value, json};

use crate::support::cli::Tg;
use crate::support::http;
use crate::support::node::{Node, SECRET};
use crate::support::repo::{ConfigRepo, api_json, policy_json};
use crate::support::tyk::{EmuConfig, TykVersion};

/// A Tyk OAS document as `POST /tyk/apis/oas` takes it.
fn document(id: &str, listen_path: &str, target: &str) -> Value {
    json!({
        "openapi": "3.0.3",
        "info": {"title": id, "version": "1.0.0"},
        "paths": {},
        "x-tyk-api-gateway": {
            "info": {"id": id, "name": id, "orgId": "default", "state": {"active": true}},
            "upstream": {"url": target},
            "server": {"listenPath": {"value": listen_path, "strip": true}}
        }
    })
}

fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).expect("json") + "\n"
}

fn findings<'a>(report: &'a Value, rule: &str) -> Vec<&'a Value> {
    ["errors", "warnings"]
        .iter()
        .flat_map(|k| report[*k].as_array().into_iter().flatten())
        .filter(|f| f["rule"] == rule)
        .collect()
}

/// 1-based line of the first line of `file` holding `needle`.
fn line_of(file: &Path, needle: &str) -> u64 {
    let text = std::fs::read_to_string(file).expect("read");
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in {}", file.display())) as u64
        + 1
}

/// An upstream on loopback that answers every request with 200 and
/// reports the path it was asked for.
fn upstream() -> (SocketAddr, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut line = String::new();
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
            // Drain the headers before answering.
            let mut header = String::new();
            while reader.read_line(&mut header).is_ok_and(|n| n > 2) {
                header.clear();
            }
            let _ = tx.send(path);
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nConnection: close\r\n\r\nupstream-ok",
            );
        }
    });
    (addr, rx)
}

#[test]
fn a_repo_of_oas_only_documents_syncs_verifies_and_is_routed() {
    for version in [TykVersion::V5_8, TykVersion::V5_14] {
        syncs_verifies_and_is_routed_on(version);
    }
}

fn syncs_verifies_and_is_routed_on(version: TykVersion) {
    let (up, asked) = upstream();
    let target = format!("http://{up}/");
    let repo = ConfigRepo::new();
    // One named like any API, one already named as the pair's half.
    let pets = pretty(&document("pets", "/pets/", &target));
    repo.file("apps/pets.json", &pets)
        .file(
            "apps/orders-oas.json",
            pretty(&document("orders", "/orders/", &target)),
        )
        // A policy granting the derived API: the cross-file rules see it.
        .json(
            "policies/gold.json",
            &policy_json("gold", &["pets", "orders"]),
        );
    repo.commit("OAS documents as written for POST /tyk/apis/oas");

    let node = Node::with(EmuConfig {
        version,
        ..EmuConfig::default()
    });
    let out = Tg::sync_node(&repo.url(), &node).run();
    assert_eq!(out.code, 0, "{version:?}: {}", out.stderr);
    assert_eq!(node.apis(), ["orders", "pets"], "{version:?}");
    assert_eq!(
        node.emu.routed_api_ids().into_iter().collect::<Vec<_>>(),
        ["orders", "pets"]
    );
    let paths = node.emu.last_listen_paths();
    assert_eq!(paths["pets"], "/pets/");
    assert_eq!(paths["orders"], "/orders/");

    // What the gateway lists is the derived classic form.
    let addr: SocketAddr = format!("127.0.0.1:{}", node.emu.port())
        .parse()
        .expect("addr");
    let (status, body) = http(
        addr,
        "GET",
        "/tyk/apis",
        &[("X-Tyk-Authorization", SECRET)],
        b"",
    );
    assert_eq!(status, 200, "{body}");
    let listed: Value = serde_json::from_str(&body).expect("json");
    let pets_def = listed
        .as_array()
        .expect("list")
        .iter()
        .find(|d| d["api_id"] == "pets")
        .expect("pets listed");
    assert_eq!(pets_def["is_oas"], true);
    assert_eq!(pets_def["proxy"]["target_url"], target.as_str());
    assert_eq!(pets_def["proxy"]["strip_listen_path"], true);
    assert_eq!(pets_def["use_keyless"], true);

    // The revision holds the pair; the document is byte for byte the user's.
    let apps = node.current().join("apps");
    assert_eq!(
        std::fs::read_to_string(apps.join("pets-oas.json")).expect("document"),
        pets
    );
    assert!(apps.join("orders.json").is_file());

    // Routed: a request on the listen path reaches the upstream, stripped.
    let (status, body) = http(addr, "GET", "/pets/list", &[], b"");
    assert_eq!((status, body.as_str()), (200, "upstream-ok"));
    // (The sync's routing probe asked first.)
    let paths: Vec<String> = asked.try_iter().collect();
    assert!(paths.iter().any(|p| p == "/list"), "{paths:?}");
}

#[test]
fn a_document_without_info_id_is_refused_naming_file_and_line() {
    let repo = ConfigRepo::new();
    let mut doc = document("pets", "/pets/", "http://upstream:8080/");
    doc["x-tyk-api-gateway"]["info"]
        .as_object_mut()
        .expect("info")
        .remove("id");
    repo.file("apps/pets.json", pretty(&doc));
    repo.commit("no id");
    let report = Tg::validate(repo.path())
        .args(["--format", "json"])
        .run()
        .code(1)
        .json();
    let found = findings(&report, "bare-oas");
    assert_eq!(found.len(), 1, "{report}");
    let f = found[0];
    assert_eq!(f["file"], "apps/pets.json");
    assert_eq!(f["pointer"], "/x-tyk-api-gateway/info");
    // The extension's info object, where the id goes.
    let file = repo.path().join("apps/pets.json");
    let info_line = std::fs::read_to_string(&file)
        .expect("read")
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains("\"info\""))
        .map(|(i, _)| i as u64 + 1)
        .last()
        .expect("info line");
    assert_eq!(f["line"], info_line, "{f}");
    assert!(f["message"].as_str().expect("message").contains("info.id"));
    assert!(
        f["hint"]
            .as_str()
            .expect("hint")
            .contains("\"id\": \"pets\"")
    );

    // Nothing is applied: the sync refuses the commit and names the rule.
    let node = Node::new();
    let out = Tg::sync_node(&repo.url(), &node).run();
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("bare-oas"));
    assert!(!node.current().exists());
}

#[test]
fn findings_on_the_derived_half_point_at_the_value_in_the_document() {
    let repo = ConfigRepo::new();
    repo.file(
        "apps/pets.json",
        pretty(&document("pets", "/pets v2/", "http://upstream:8080/")),
    );
    repo.commit("a space in the listen path");
    let report = Tg::validate(repo.path())
        .args(["--format", "json"])
        .run()
        .code(1)
        .json();
    let found = findings(&report, "invalid-listen-path");
    assert_eq!(found.len(), 1, "{report}");
    let f = found[0];
    assert_eq!(f["file"], "apps/pets.json");
    assert_eq!(f["pointer"], "/x-tyk-api-gateway/server/listenPath/value");
    let file = repo.path().join("apps/pets.json");
    assert_eq!(f["line"], line_of(&file, "/pets v2/"), "{f}");
    let text = std::fs::read_to_string(&file).expect("read");
    let line = text.lines().nth(line_of(&file, "/pets v2/") as usize - 1);
    let column = line.expect("line").find("\"/pets v2/\"").expect("col") as u64 + 1;
    assert_eq!(f["column"], column, "{f}");
    // Every finding names a file the user has, on a line it has.
    for f in ["errors", "warnings"]
        .iter()
        .flat_map(|k| report[*k].as_array().into_iter().flatten())
    {
        let path = repo.path().join(f["file"].as_str().expect("file"));
        let lines = std::fs::read_to_string(&path)
            .unwrap_or_else(|_| panic!("{f} names a file the user does not have"))
            .lines()
            .count() as u64;
        assert!(f["line"].as_u64().expect("line") <= lines, "{f}");
    }
}

#[test]
fn cross_file_rules_see_the_derived_api() {
    let repo = ConfigRepo::new();
    // A classic API with the same id, another on the same listen path, and
    // a policy naming an API nobody defines.
    let mut same_path = api_json("billing");
    same_path["proxy"]["listen_path"] = json!("/pets/");
    repo.file(
        "apps/pets.json",
        pretty(&document("pets", "/pets/", "http://upstream:8080/")),
    )
    .json("apps/pets-classic.json", &api_json("pets"))
    .json("apps/billing.json", &same_path)
    .json(
        "policies/gold.json",
        &policy_json("gold", &["pets", "ghost"]),
    )
    // A lone `-oas.json` document: messages name it, not its derived half.
    .file(
        "apps/dogs-oas.json",
        pretty(&document("dogs", "/dogs/", "http://upstream:8080/")),
    )
    .json("apps/dogs-classic.json", &api_json("dogs"));
    repo.commit("clashes");
    let report = Tg::validate(repo.path())
        .args(["--format", "json"])
        .run()
        .code(1)
        .json();
    let file = repo.path().join("apps/pets.json");
    let ids = findings(&report, "duplicate-api-id");
    let on_doc = ids
        .iter()
        .find(|f| f["file"] == "apps/pets.json")
        .unwrap_or_else(|| panic!("{report}"));
    assert_eq!(on_doc["line"], line_of(&file, "\"id\": \"pets\""));
    assert!(ids.iter().any(|f| f["file"] == "apps/pets-classic.json"));
    let on_classic = ids
        .iter()
        .find(|f| f["file"] == "apps/dogs-classic.json")
        .unwrap_or_else(|| panic!("{report}"));
    let message = on_classic["message"].as_str().expect("message");
    assert!(
        message.ends_with("also used by apps/dogs-oas.json"),
        "{message}"
    );
    assert!(ids.iter().any(|f| f["file"] == "apps/dogs-oas.json"));
    let paths = findings(&report, "duplicate-listen-path");
    let on_doc = paths
        .iter()
        .find(|f| f["file"] == "apps/pets.json")
        .unwrap_or_else(|| panic!("{report}"));
    assert_eq!(on_doc["line"], line_of(&file, "\"/pets/\""));
    // The policy's grant of the derived API is fine; only the ghost is not.
    let unknown = findings(&report, "policy-unknown-api");
    assert_eq!(unknown.len(), 1, "{report}");
    assert!(unknown[0]["message"].as_str().expect("m").contains("ghost"));
}

#[test]
fn a_document_beside_a_classic_pair_and_a_document_whose_name_is_taken() {
    let example = |name: &str| -> String {
        std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("examples/config-repo/apps")
                .join(name),
        )
        .expect("example")
    };
    let repo = ConfigRepo::new();
    repo.file("apps/petstore.json", example("petstore.json"))
        .file("apps/petstore-oas.json", example("petstore-oas.json"))
        .file(
            "apps/inventory.json",
            pretty(&document(
                "inventory",
                "/inventory/",
                "http://upstream:8080/",
            )),
        );
    repo.commit("a pair and a document");
    let node = Node::new();
    let out = Tg::sync_node(&repo.url(), &node).run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(node.apis(), ["inventory", "petstore"]);
    // The hand-written pair is untouched.
    assert_eq!(
        std::fs::read_to_string(node.current().join("apps/petstore.json")).expect("classic"),
        example("petstore.json")
    );

    // A second document whose pair would take petstore-oas.json: refused,
    // and the commit already applied keeps serving.
    repo.file(
        "apps/petstore-oas.json",
        pretty(&document("petstore", "/petstore/", "http://upstream:8080/")),
    )
    .file(
        "apps/petstore.json",
        pretty(&document(
            "petstore2",
            "/petstore2/",
            "http://upstream:8080/",
        )),
    );
    repo.commit("two documents on one name");
    let report = Tg::validate(repo.path())
        .args(["--format", "json"])
        .run()
        .code(1)
        .json();
    let taken = findings(&report, "bare-oas");
    let on_doc = taken
        .iter()
        .find(|f| f["file"] == "apps/petstore.json")
        .unwrap_or_else(|| panic!("{report}"));
    assert!(
        on_doc["message"]
            .as_str()
            .expect("m")
            .contains("already has petstore-oas.json"),
        "{on_doc}"
    );
    let out = Tg::sync_node(&repo.url(), &node).run();
    assert_eq!(out.code, 1);
    assert_eq!(node.apis(), ["inventory", "petstore"]);
}

#[test]
fn settings_the_derived_half_leaves_out_are_warned_about() {
    let repo = ConfigRepo::new();
    let mut doc = document("pets", "/pets/", "http://upstream:8080/");
    doc["x-tyk-api-gateway"]["upstream"]["rateLimit"] =
        json!({"enabled": true, "rate": 10, "per": "1s"});
    repo.file("apps/pets.json", pretty(&doc));
    repo.commit("a rate limit");
    // Warnings only.
    let report = Tg::validate(repo.path())
        .args(["--format", "json"])
        .run()
        .ok()
        .json();
    let found = findings(&report, "oas-not-derived");
    assert_eq!(found.len(), 1, "{report}");
    assert_eq!(found[0]["pointer"], "/x-tyk-api-gateway/upstream/rateLimit");
    assert_eq!(
        found[0]["line"],
        line_of(&repo.path().join("apps/pets.json"), "\"rateLimit\"")
    );
}

/// The real definitions of the corpus: no document among them is turned
/// into a pair by mistake, and no finding names a file that is not there.
#[test]
fn the_corpus_gets_no_new_finding() {
    let Some(root) = std::env::var_os("TYK_GITOPS_CORPUS") else {
        eprintln!("note: TYK_GITOPS_CORPUS is not set; skipping the corpus");
        return;
    };
    let root = Path::new(&root).join("tyk");
    let mut dirs = vec![root.join("samples"), root.join("metrics")];
    let mut regressions: Vec<_> = std::fs::read_dir(root.join("regression"))
        .expect("regression")
        .map(|e| e.expect("entry").path())
        .collect();
    regressions.sort();
    dirs.extend(regressions);
    for dir in dirs {
        let report = Tg::validate(&dir).args(["--format", "json"]).run().json();
        for rule in ["bare-oas", "oas-not-derived"] {
            assert!(
                findings(&report, rule).is_empty(),
                "{}: {report}",
                dir.display()
            );
        }
        for f in ["errors", "warnings"]
            .iter()
            .flat_map(|k| report[*k].as_array().into_iter().flatten())
        {
            let file = f["file"].as_str().expect("file");
            assert!(
                file.ends_with('/') || dir.join(file).exists(),
                "{}: {f}",
                dir.display()
            );
        }
    }
}

/// A tyk-sync repo of Tyk OAS APIs: the `.tyk.json` index names each
/// document (and the id it states is checked against `info.id`).
#[test]
fn documents_named_by_a_tyk_sync_index_become_pairs() {
    let repo = ConfigRepo::new();
    repo.file(
        "oas-pets.json",
        pretty(&document("pets", "/pets/", "http://upstream:8080/")),
    )
    .json(
        ".tyk.json",
        &json!({"type": "oas", "files": [{"file": "oas-pets.json", "api_id": "pets"}]}),
    );
    repo.commit("tyk-sync dump of a Tyk OAS API");
    let node = Node::new();
    let out = Tg::sync_node(&repo.url(), &node).run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(node.apis(), ["pets"]);
    let apps = node.current().join("apps");
    assert!(apps.join("oas-pets.json").is_file() && apps.join("oas-pets-oas.json").is_file());

    // The index's id must be the document's.
    repo.json(
        ".tyk.json",
        &json!({"type": "oas", "files": [{"file": "oas-pets.json", "api_id": "cats"}]}),
    );
    repo.commit("a wrong id in the index");
    let report = Tg::validate(repo.path())
        .args(["--format", "json"])
        .run()
        .code(1)
        .json();
    assert_eq!(findings(&report, "tyk-index").len(), 1, "{report}");
}
