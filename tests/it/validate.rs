//! Validation stories: a config repo's CI runs `tyk-gitops validate` and
//! learns, with file, line and rule, what the gateway would silently get
//! wrong. The bad-input corpus lives in `tests/cases/<rule>/<case>/`: each
//! case is a config root plus `expect.txt` (`<rule> <file>` per line, and
//! `# strict` / `# max-file-size N` options).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use git2::Oid;
use proptest::prelude::*;
use serde_json::{Value, json};
use tyk_gitops::tree::{Content, EntryKind, Tree, TreeEntry};
use tyk_gitops::validate::rules;
use tyk_gitops::validate::{Cache, Options, Report, check};

use crate::support::cli::Tg;
use crate::support::{self, repo::ConfigRepo};

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases")
}

fn findings(report: &Report) -> BTreeSet<(String, String)> {
    report
        .errors
        .iter()
        .chain(&report.warnings)
        .map(|f| (f.rule.to_string(), f.file.clone()))
        .collect()
}

fn run_case(dir: &Path) -> (Report, BTreeSet<(String, String)>) {
    let expect = fs::read_to_string(dir.join("expect.txt")).expect("expect.txt");
    let mut opts = Options::default();
    let mut expected = BTreeSet::new();
    for line in expect.lines() {
        if let Some(opt) = line.strip_prefix("# ") {
            match opt.split_once(' ') {
                Some(("max-file-size", n)) => opts.max_file_size = n.parse().expect("size"),
                Some(("gateway-version", v)) => {
                    opts.gateway_version = Some(v.parse().expect("version"))
                }
                None if opt == "strict" => opts.strict = true,
                None if opt == "custom-domains" => opts.custom_domains = true,
                _ => panic!("unknown option {opt:?} in {}", dir.display()),
            }
        } else if let Some((rule, file)) = line.split_once(' ') {
            expected.insert((rule.to_string(), file.to_string()));
        }
    }
    let tree = Tree::from_dir(dir, opts.max_file_size).expect("read case");
    let mut cache = Cache::default();
    let (_, report) = check(tree.clone(), &opts, &mut cache);
    // The same verdict from the analyses saved on disk and loaded by another
    // process (a one-shot sync), without analysing anything again.
    let saved = tempfile::tempdir().expect("tempdir");
    cache.save(saved.path()).expect("save the analysis cache");
    let mut loaded = Cache::load(saved.path());
    let (_, again) = check(tree, &opts, &mut loaded);
    assert_eq!(
        again,
        report,
        "{}: verdict from the saved cache",
        dir.display()
    );
    assert_eq!(loaded.analysed(), 0, "{}: analysed again", dir.display());
    (report, expected)
}

#[test]
fn every_case_reports_exactly_its_rule_and_file() {
    let mut seen_rules = BTreeSet::new();
    let mut failures = Vec::new();
    let mut groups: Vec<_> = fs::read_dir(cases_dir())
        .expect("cases")
        .map(|e| e.expect("entry").path())
        .collect();
    groups.sort();
    for group in groups {
        let mut cases: Vec<_> = fs::read_dir(&group)
            .expect("group")
            .map(|e| e.expect("entry").path())
            .collect();
        cases.sort();
        for case in cases {
            let (report, expected) = run_case(&case);
            let got = findings(&report);
            if got != expected {
                failures.push(format!(
                    "{}:\n  expected {expected:?}\n  got      {got:?}\n{report:#?}",
                    case.display()
                ));
            }
            seen_rules.extend(got.into_iter().map(|(rule, _)| rule));
            // Every finding points somewhere a user can go.
            for f in report.errors.iter().chain(&report.warnings) {
                assert!(!f.message.is_empty());
                if f.pointer.is_some() {
                    assert!(f.line >= 1 && f.column >= 1, "{f:?}");
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Rules that need a tree no folder can hold are covered below; the
    // empty-gateway guards (tests/it/first_day.rs) and variable substitution
    // (tests/it/vars.rs) run outside `check`.
    let by_code = [
        rules::SYMLINK,
        rules::SUBMODULE,
        rules::INVALID_PATH,
        rules::EMPTY_CONFIG_ROOT,
        rules::NO_APIS,
        rules::UNSET_VARIABLE,
        rules::COMMIT_TOO_LARGE,
    ];
    for (rule, _) in rules::ALL {
        assert!(
            seen_rules.contains(rule) || by_code.contains(&rule),
            "no case in tests/cases exercises {rule}"
        );
    }
}

fn file(path: &str, bytes: &[u8]) -> TreeEntry {
    TreeEntry::file(path, bytes.to_vec())
}

fn api_bytes(id: &str) -> Vec<u8> {
    serde_json::to_vec_pretty(&support::repo::api_json(id)).expect("json")
}

#[test]
fn symlinks_submodules_and_odd_paths_are_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    fs::create_dir_all(dir.path().join("apps")).expect("mkdir");
    fs::write(dir.path().join("apps/a.json"), api_bytes("a")).expect("write");
    std::os::unix::fs::symlink("/etc/passwd", dir.path().join("apps/b.json")).expect("symlink");
    let tree = Tree::from_dir(dir.path(), 1 << 20).expect("tree");
    let (bundle, report) = check(tree, &Options::default(), &mut Cache::default());
    assert_eq!(
        findings(&report),
        BTreeSet::from([("symlink".into(), "apps/b.json".into())])
    );
    assert_eq!(bundle.api_ids(), BTreeSet::from(["a".to_string()]));

    // A linked folder would silently empty the bundle: refused too.
    let linked = tempfile::tempdir().expect("tmp");
    std::os::unix::fs::symlink(dir.path().join("apps"), linked.path().join("apps"))
        .expect("symlink");
    let tree = Tree::from_dir(linked.path(), 1 << 20).expect("tree");
    let (_, report) = check(tree, &Options::default(), &mut Cache::default());
    assert_eq!(
        findings(&report),
        BTreeSet::from([("symlink".into(), "apps".into())])
    );

    let tree = Tree::from_entries(vec![
        file("apps/a.json", &api_bytes("a")),
        TreeEntry {
            path: "middleware/lib".into(),
            kind: EntryKind::Submodule,
            content: Content::Absent,
            blob: Oid::ZERO_SHA1,
        },
        file("apps/../escape.json", b"{}"),
    ]);
    let (_, report) = check(tree, &Options::default(), &mut Cache::default());
    assert_eq!(
        findings(&report),
        BTreeSet::from([
            ("invalid-path".into(), "apps/../escape.json".into()),
            ("submodule".into(), "middleware/lib".into()),
        ])
    );
}

#[test]
fn findings_carry_line_column_and_pointer() {
    let tree = Tree::from_entries(vec![file(
        "apps/a.json",
        b"{\n  \"api_id\": \"a\",\n  \"version_data\": {},\n  \"proxy\": {\n    \"listen_path\": \"/a b/\",\n    \"target_url\": \"http://u/\"\n  }\n}\n",
    )]);
    let (_, report) = check(tree, &Options::default(), &mut Cache::default());
    let f = &report.errors[0];
    assert_eq!(f.rule, "invalid-listen-path");
    assert_eq!((f.line, f.column), (5, 20));
    assert_eq!(f.pointer.as_deref(), Some("/proxy/listen_path"));
}

#[test]
fn cache_reanalyses_only_changed_files() {
    let mut entries: Vec<TreeEntry> = (0..50)
        .map(|i| file(&format!("apps/a{i}.json"), &api_bytes(&format!("a{i}"))))
        .collect();
    let mut cache = Cache::default();
    let (_, report) = check(
        Tree::from_entries(entries.clone()),
        &Options::default(),
        &mut cache,
    );
    assert!(!report.has_errors());
    assert_eq!(cache.len(), 50);
    // One file changes: the cache keeps the 49 others and adds one.
    entries[0] = file("apps/a0.json", br#"{"api_id": "a0"}"#);
    let (_, report) = check(Tree::from_entries(entries), &Options::default(), &mut cache);
    assert_eq!(
        findings(&report),
        BTreeSet::from([("schema".into(), "apps/a0.json".into())])
    );
    assert_eq!(cache.len(), 50);
    assert_eq!(cache.analysed(), 1);
}

#[test]
fn many_new_files_analysed_in_parallel_give_the_sequential_verdict() {
    // 600 files (past the parallel threshold), with defects of several
    // kinds spread through them.
    let entries: Vec<TreeEntry> = (0..600)
        .map(|i| {
            let path = format!("apps/a{i:03}.json");
            match i % 7 {
                0 => file(&path, br#"{"api_id": "x"}"#),
                1 => file(&path, b"{ not json"),
                2 => file(&path, &api_bytes("dup")),
                _ => file(&path, &api_bytes(&format!("a{i}"))),
            }
        })
        .collect();
    let tree = Tree::from_entries(entries.clone());
    let mut parallel = Cache::default();
    let (bundle, report) = check(tree.clone(), &Options::default(), &mut parallel);
    let unique: std::collections::HashSet<Oid> = entries.iter().map(|e| e.blob).collect();
    assert_eq!(parallel.analysed(), unique.len());
    assert!(unique.len() > 256, "{}", unique.len());
    assert!(report.has_errors());

    // The same files analysed one by one: growing trees that each add
    // fewer new files than the parallel threshold.
    let mut sequential = Cache::default();
    for n in [200, 400] {
        check(
            Tree::from_entries(entries[..n].to_vec()),
            &Options::default(),
            &mut sequential,
        );
        assert!(sequential.analysed() < 256);
    }
    let (bundle2, report2) = check(tree, &Options::default(), &mut sequential);
    assert!(sequential.analysed() < 256);
    assert_eq!(report2, report);
    assert_eq!(bundle2.api_ids(), bundle.api_ids());
}

/// Once a cache file exists, it is written again only after enough new
/// analyses: a new process re-analyses the few files changed since, and an
/// older file (keyed by content) never changes a verdict.
#[test]
fn a_saved_cache_is_written_again_only_after_many_new_analyses() {
    let tree_with = |changed: usize, tag: &str| {
        Tree::from_entries(
            (0..100)
                .map(|i| {
                    let mut api = support::repo::api_json(&format!("a{i}"));
                    if i < changed {
                        api["proxy"]["target_url"] = format!("http://{tag}:8080/").into();
                    }
                    file(
                        &format!("apps/a{i}.json"),
                        &serde_json::to_vec_pretty(&api).expect("json"),
                    )
                })
                .collect(),
        )
    };
    let root = tempfile::tempdir().expect("tempdir");
    let mut first = Cache::default();
    check(tree_with(0, "x"), &Options::default(), &mut first);
    first
        .changes()
        .expect("no file yet: saved")
        .save(root.path())
        .expect("save");

    // One file changed: not worth writing 100 analyses again.
    let mut second = Cache::load(root.path());
    let (_, one) = check(tree_with(1, "one"), &Options::default(), &mut second);
    assert_eq!(second.analysed(), 1);
    assert!(second.changes().is_none());
    // The next process analyses that file again, and agrees.
    let mut third = Cache::load(root.path());
    let (_, again) = check(tree_with(1, "one"), &Options::default(), &mut third);
    assert_eq!(third.analysed(), 1);
    assert_eq!(again, one);

    // Many changed files: written, and the next process analyses none.
    let (_, many) = check(tree_with(80, "many"), &Options::default(), &mut third);
    third
        .changes()
        .expect("80 new analyses: saved")
        .save(root.path())
        .expect("save");
    let mut fourth = Cache::load(root.path());
    let (_, reread) = check(tree_with(80, "many"), &Options::default(), &mut fourth);
    assert_eq!(fourth.analysed(), 0);
    assert_eq!(reread, many);
}

#[test]
fn a_saved_cache_from_another_build_or_torn_is_ignored() {
    let mut entries: Vec<TreeEntry> = (0..20)
        .map(|i| file(&format!("apps/a{i}.json"), &api_bytes(&format!("a{i}"))))
        .collect();
    entries[0] = file("apps/a0.json", br#"{"api_id": "a0"}"#);
    let tree = Tree::from_entries(entries);
    let root = tempfile::tempdir().expect("tempdir");
    let mut cache = Cache::default();
    let (_, fresh) = check(tree.clone(), &Options::default(), &mut cache);
    assert!(fresh.has_errors());
    cache.save(root.path()).expect("save");
    let saved = root.path().join("analysis-cache");
    let text = fs::read_to_string(&saved).expect("saved cache");

    let mut loaded = Cache::load(root.path());
    assert_eq!(loaded.len(), 20);
    check(tree.clone(), &Options::default(), &mut loaded);
    assert_eq!(loaded.analysed(), 0);

    let tag = serde_json::from_str::<Value>(&text).expect("json")["tag"]
        .as_str()
        .expect("tag")
        .to_string();
    assert!(tag.contains(env!("CARGO_PKG_VERSION")), "{tag}");
    assert!(text.contains(r#""rule":"schema""#));
    let others = [
        text.replacen(&tag, "tyk-gitops 0.0.0 analysis 1 schemas other", 1),
        text[..text.len() / 2].to_string(),
        text.replacen(r#""rule":"schema""#, r#""rule":"no-such-rule""#, 1),
        String::new(),
    ];
    for other in others {
        fs::write(&saved, &other).expect("write");
        let mut cache = Cache::load(root.path());
        let (_, report) = check(tree.clone(), &Options::default(), &mut cache);
        assert_eq!(report, fresh);
        assert_eq!(
            cache.analysed(),
            20,
            "trusted: {}",
            &other[..other.len().min(200)]
        );
    }
}

#[test]
fn revision_files_of_a_checked_bundle_are_safe_and_complete() {
    let (bundle, report) = {
        let (report, _) = run_case(&cases_dir().join("clean/everything"));
        assert!(
            report.errors.is_empty() && report.warnings.is_empty(),
            "{report:#?}"
        );
        let tree = Tree::from_dir(&cases_dir().join("clean/everything"), 1 << 20).expect("tree");
        let (bundle, report) = check(tree, &Options::default(), &mut Cache::default());
        (bundle, report)
    };
    assert!(!report.has_errors());
    assert_eq!(
        bundle.api_ids(),
        BTreeSet::from(["a".into(), "pets".into(), "tools".into()])
    );
    assert_eq!(
        bundle.policy_ids(),
        BTreeSet::from(["gold".into(), "silver".into()])
    );
    let files = bundle.revision_files("/var/lib/tyk-gitops/current");
    for f in &files {
        if let Some(blob) = f.blob {
            assert_eq!(blob, tyk_gitops::tree::blob_id(&f.bytes), "{}", f.path);
        }
    }
    let paths: BTreeSet<&str> = files.iter().map(|f| f.path.as_str()).collect();
    let want: BTreeSet<&str> = [
        "apps/a.json",
        "apps/pets.json",
        "apps/pets-oas.json",
        "apps/tools.json",
        "apps/tools-mcp.json",
        "policies/gold.json",
        "policies/silver.json",
        "policies.json",
        "middleware/pre.js",
        "scripts/post.js",
        "templates/error.json",
        "tyk.conf",
    ]
    .into();
    assert_eq!(paths, want);
    let get = |p: &str| -> Value {
        let f = files.iter().find(|f| f.path == p).expect(p);
        serde_json::from_slice(&f.bytes).expect("json")
    };
    let a = get("apps/a.json");
    assert_eq!(
        a["custom_middleware"]["pre"][0]["path"],
        "/var/lib/tyk-gitops/current/middleware/pre.js"
    );
    assert_eq!(
        a["custom_middleware"]["post"][0]["path"],
        "/var/lib/tyk-gitops/current/scripts/post.js"
    );
    // The map key wins over the object's own id.
    assert_eq!(get("policies/silver.json")["id"], "silver");
    assert_eq!(get("policies.json")["silver"]["id"], "silver");
    assert_eq!(get("policies.json")["gold"]["rate"], 100);
    // Untouched files keep their bytes.
    let template = files
        .iter()
        .find(|f| f.path == "templates/error.json")
        .expect("template");
    assert_eq!(&*template.bytes, b"{\"error\": \"{{.Message}}\"}\n");
    let pets = files
        .iter()
        .find(|f| f.path == "apps/pets.json")
        .expect("pets");
    assert_eq!(
        &*pets.bytes,
        fs::read(cases_dir().join("clean/everything/apps/pets.json")).expect("read")
    );
}

#[test]
fn a_comment_after_a_policy_is_a_warning_and_stays_out_of_the_policies_map() {
    let case = cases_dir().join("trailing-content/comment-after-policy");
    let tree = Tree::from_dir(&case, 1 << 20).expect("tree");
    let (bundle, report) = check(tree, &Options::default(), &mut Cache::default());
    assert!(!report.has_errors(), "{report:#?}");
    let files = bundle.revision_files("/r");
    let get = |p: &str| {
        let f = files.iter().find(|f| f.path == p).expect(p);
        if let Some(blob) = f.blob {
            assert_eq!(blob, tyk_gitops::tree::blob_id(&f.bytes), "{p}");
        }
        serde_json::from_slice::<Value>(&f.bytes).unwrap_or_else(|e| panic!("{p}: {e}"))
    };
    // Both files parse strictly: the gateway reads either layout.
    assert_eq!(
        get("policies.json")["gold"]["access_rights"]["shop"]["api_id"],
        "shop"
    );
    assert_eq!(get("policies/gold.json")["id"], "gold");
}

#[test]
fn keys_spelled_in_another_case_load_and_their_middleware_ships() {
    let api = br#"{
  "API_ID": "a",
  "Org_ID": "default",
  "Use_Keyless": true,
  "Version_Data": {"Not_Versioned": true, "Versions": {"Default": {"Name": "Default"}}},
  "Proxy": {"Listen_Path": "/a/", "Target_URL": "http://upstream:8080/"},
  "Custom_Middleware": {"Driver": "otto", "Pre": [{"Name": "stamp", "Path": "middleware/stamp.js"}]}
}"#;
    let tree = Tree::from_entries(vec![
        file("apps/a.json", api),
        file("middleware/stamp.js", b"var stamp = 1;\n"),
    ]);
    let (bundle, report) = check(tree, &Options::default(), &mut Cache::default());
    assert!(
        report.errors.is_empty() && report.warnings.is_empty(),
        "{report:#?}"
    );
    assert_eq!(bundle.api_ids(), BTreeSet::from(["a".to_string()]));
    let files = bundle.revision_files("/r");
    let app = files.iter().find(|f| f.path == "apps/a.json").expect("app");
    let app: Value = serde_json::from_slice(&app.bytes).expect("json");
    assert_eq!(
        app["custom_middleware"]["pre"][0]["path"],
        "/r/middleware/stamp.js"
    );
    assert!(files.iter().any(|f| f.path == "middleware/stamp.js"));

    // A missing script is found under either spelling, at its line.
    let tree = Tree::from_entries(vec![file("apps/a.json", api)]);
    let (_, report) = check(tree, &Options::default(), &mut Cache::default());
    let f = &report.errors[0];
    assert_eq!(f.rule, "missing-middleware-file");
    assert_eq!(f.line, 7);
}

/// `TYK_GITOPS_CORPUS` points at the shared corpus (set by `.ci/run`);
/// without it the test says so and passes, so a plain clone builds.
fn corpus() -> Option<PathBuf> {
    match std::env::var_os("TYK_GITOPS_CORPUS") {
        Some(dir) => Some(PathBuf::from(dir).join("tyk")),
        None => {
            eprintln!("note: TYK_GITOPS_CORPUS is not set; skipping the real-definitions corpus");
            None
        }
    }
}

#[test]
fn real_tyk_definitions_pass_their_schemas_and_real_defects_are_reported() {
    let Some(root) = corpus() else { return };
    let mut roots = vec![root.join("samples"), root.join("metrics")];
    let mut regressions: Vec<_> = fs::read_dir(root.join("regression"))
        .expect("regression")
        .map(|e| e.expect("entry").path())
        .collect();
    regressions.sort();
    roots.extend(regressions);
    for dir in roots {
        let tree = Tree::from_dir(&dir, 4 << 20).expect("tree");
        let (_, report) = check(tree, &Options::default(), &mut Cache::default());
        let per_file = [
            "json-syntax",
            "schema",
            "too-deep",
            "not-utf8",
            "invalid-listen-path",
            "invalid-target-url",
        ];
        let bad: Vec<_> = report
            .errors
            .iter()
            .filter(|f| per_file.contains(&f.rule))
            .collect();
        assert!(bad.is_empty(), "{}: {bad:#?}", dir.display());
        let got = findings(&report);
        let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        let expected: BTreeSet<(String, String)> = match name {
            // Two sample APIs really share api_id "4", and the sample policy
            // names an API the samples do not have.
            "samples" => [
                (
                    "duplicate-api-id",
                    "apps/coprocess_app_sample_protected.json",
                ),
                ("duplicate-api-id", "apps/jq.json"),
                ("policy-unknown-api", "policies/policies.json"),
                ("policies-map-in-policy-dir", "policies/policies.json"),
            ]
            .iter()
            .map(|(r, f)| (r.to_string(), f.to_string()))
            .collect(),
            "issue-10104" => BTreeSet::from([(
                "missing-middleware-file".into(),
                "apps/issue-10104-apidef.json".into(),
            )]),
            _ => BTreeSet::new(),
        };
        assert_eq!(got, expected, "{}: {report:#?}", dir.display());
    }
}

#[test]
fn ci_gets_exit_codes_and_three_formats() {
    let repo = ConfigRepo::new();
    repo.api("a").policy("p", &["a"]);
    let dir = repo.path().to_str().expect("utf8");
    Tg::validate(dir)
        .run()
        .ok()
        .stdout_has("0 errors, 0 warnings");

    // A warning alone passes, unless --strict.
    repo.json("apps/a.json", &{
        let mut a = support::repo::api_json("a");
        a["active"] = json!(false);
        a
    });
    Tg::validate(dir).run().ok();
    Tg::validate(dir).arg("--strict").run().code(1);

    repo.file("apps/b.json", "{\n  \"api_id\": \"b\",\n}\n");
    let out = Tg::validate(dir).run().code(1).stdout;
    assert!(
        out.contains("apps/b.json") && out.contains("3:1") && out.contains("json-syntax"),
        "{out}"
    );
    assert!(
        !out.contains('\u{1b}'),
        "no colour when stdout is not a terminal"
    );

    let v = Tg::validate(dir)
        .args(["--format", "json"])
        .run()
        .code(1)
        .json();
    assert_eq!(v["errors"][0]["rule"], "json-syntax");
    assert_eq!(v["errors"][0]["file"], "apps/b.json");
    assert_eq!(v["errors"][0]["line"], 3);
    assert_eq!(v["warnings"][0]["rule"], "inactive-api");

    let out = Tg::validate(dir)
        .args(["--format", "github"])
        .run()
        .code(1)
        .stdout;
    assert!(
        out.lines()
            .any(|l| l.starts_with("::error file=apps/b.json,line=3,col=1,title=json-syntax::")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("::warning file=apps/a.json,line=")),
        "{out}"
    );
}

#[test]
fn path_picks_an_environment_and_env_vars_work() {
    let repo = ConfigRepo::new();
    repo.json("envs/prod/apps/a.json", &support::repo::api_json("a"))
        .file("envs/staging/apps/a.json", "not json");
    let dir = repo.path().to_str().expect("utf8");
    Tg::validate(dir).args(["--path", "envs/prod"]).run().ok();
    Tg::validate(dir)
        .args(["--path", "envs/staging", "--format", "github"])
        .run()
        .code(1)
        .stdout_has("file=envs/staging/apps/a.json");
    Tg::new(["validate"])
        .env("TYK_GITOPS_DIR", dir)
        .env("TYK_GITOPS_PATH", "envs/staging")
        .env("TYK_GITOPS_FORMAT", "json")
        .run()
        .code(1)
        .stdout_has("\"json-syntax\"");
}

#[test]
fn usage_errors_exit_2() {
    Tg::validate("/nonexistent/tyk-gitops-config").run().code(2);
    Tg::validate(".").args(["--format", "xml"]).run().code(2);
    Tg::validate(".")
        .args(["--path", "../elsewhere"])
        .run()
        .code(2);
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        ".{0,12}".prop_map(Value::String),
        prop_oneof![
            Just("api_id"),
            Just("/a/"),
            Just("http://u/"),
            Just("../x.js"),
            Just("file")
        ]
        .prop_map(|s| json!(s)),
    ];
    leaf.prop_recursive(6, 64, 6, |inner| {
        let keys = prop_oneof![
            Just("api_id".to_string()),
            Just("proxy".to_string()),
            Just("listen_path".to_string()),
            Just("target_url".to_string()),
            Just("is_oas".to_string()),
            Just("custom_middleware".to_string()),
            Just("pre".to_string()),
            Just("path".to_string()),
            Just("access_rights".to_string()),
            Just("id".to_string()),
            Just("openapi".to_string()),
            Just("x-tyk-api-gateway".to_string()),
            Just("files".to_string()),
            Just("file".to_string()),
            "[a-z~/]{0,6}",
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((keys, inner), 0..5)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

const PLACES: [&str; 7] = [
    "apps/a.json",
    "apps/a-oas.json",
    "policies/p.json",
    "policies.json",
    ".tyk.json",
    "tyk.conf",
    "apps/b-mcp.json",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_json_never_panics(docs in prop::collection::vec(arb_json(), PLACES.len())) {
        let entries = PLACES.iter().zip(&docs).map(|(p, d)| file(p, &serde_json::to_vec(d).expect("json"))).collect();
        let (bundle, _) = check(Tree::from_entries(entries), &Options::default(), &mut Cache::default());
        for f in bundle.revision_files("/r") {
            prop_assert!(!f.path.starts_with('/') && !f.path.split('/').any(|s| s == ".." || s.is_empty()));
            // A blob id carried to the apply stage names the bytes written.
            if let Some(blob) = f.blob {
                prop_assert_eq!(blob, tyk_gitops::tree::blob_id(&f.bytes));
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(blobs in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), PLACES.len())) {
        let entries = PLACES.iter().zip(&blobs).map(|(p, b)| file(p, b)).collect();
        let _ = check(Tree::from_entries(entries), &Options::default(), &mut Cache::default());
    }
}

/// In-process throughput of `check` on 10,000 generated definitions, cold
/// and after a one-file change (the cache at work). A benchmark, not a test:
/// `cargo test --release --test it validate::check_throughput -- --ignored --nocapture`
#[test]
#[ignore]
fn check_throughput() {
    let n = 10_000;
    let mut entries: Vec<TreeEntry> = (0..n)
        .map(|i| {
            let mut api = support::repo::api_json(&format!("svc-{i:05}"));
            api["tags"] = json!(["bench", format!("team-{}", i % 17)]);
            api["config_data"] = json!({"owner": format!("team-{}", i % 17), "tier": "standard"});
            api["CORS"] = json!({"enable": false, "allowed_origins": ["*"], "allowed_methods": ["GET", "POST"]});
            file(&format!("apps/svc-{i:05}.json"), &serde_json::to_vec_pretty(&api).expect("json"))
        })
        .collect();
    let bytes: usize = entries
        .iter()
        .map(|e| match &e.content {
            Content::Loaded(b) => b.len(),
            _ => 0,
        })
        .sum();
    let mut cache = Cache::default();
    let start = std::time::Instant::now();
    let (_, report) = check(
        Tree::from_entries(entries.clone()),
        &Options::default(),
        &mut cache,
    );
    let cold = start.elapsed();
    assert!(!report.has_errors(), "{report:#?}");
    let mut changed = support::repo::api_json("svc-00000");
    changed["name"] = json!("changed");
    entries[0] = file(
        "apps/svc-00000.json",
        &serde_json::to_vec_pretty(&changed).expect("json"),
    );
    let start = std::time::Instant::now();
    let (_, report) = check(Tree::from_entries(entries), &Options::default(), &mut cache);
    let warm = start.elapsed();
    assert!(!report.has_errors());
    println!(
        "check: {n} definitions ({} KB avg {} B) cold {:.1} ms = {:.0} definitions/s; one file changed {:.1} ms",
        bytes / 1024,
        bytes / n,
        cold.as_secs_f64() * 1e3,
        n as f64 / cold.as_secs_f64(),
        warm.as_secs_f64() * 1e3,
    );
}

/// Copies a bad-input case (without its `expect.txt`) over the repo's files.
fn load_case(repo: &ConfigRepo, case: &Path) {
    for entry in fs::read_dir(repo.path()).expect("repo") {
        let path = entry.expect("entry").path();
        if path.file_name().is_some_and(|n| n != ".git") {
            if path.is_dir() {
                fs::remove_dir_all(&path).expect("rm -r");
            } else {
                fs::remove_file(&path).expect("rm");
            }
        }
    }
    let mut stack = vec![case.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).expect("case") {
            let path = entry.expect("entry").path();
            let rel = path.strip_prefix(case).expect("inside case");
            if path.is_dir() {
                stack.push(path);
            } else if rel != Path::new("expect.txt") {
                repo.file(rel.to_str().expect("utf8"), fs::read(&path).expect("read"));
            }
        }
    }
}

/// A cold sync writes the files while validation runs (`apply::Early`):
/// refused, nothing of it stays, and nothing is published.
#[test]
fn a_cold_sync_of_a_commit_with_errors_leaves_nothing_under_the_root() {
    let repo = ConfigRepo::new();
    load_case(&repo, &cases_dir().join("duplicate-api-id/two-files"));
    for i in 0..200 {
        repo.api(&format!("extra-{i:03}"));
    }
    repo.commit("bad");
    let root = tempfile::tempdir().expect("root");
    let out = Tg::sync(&repo.url(), root.path()).run();
    assert_eq!(out.code, 1, "{}", out.output());
    assert!(
        out.output().contains("duplicate-api-id"),
        "{}",
        out.output()
    );
    assert!(!root.path().join("current").exists());
    let left: Vec<_> = fs::read_dir(root.path().join("revisions"))
        .expect("revisions")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn sync_of_a_commit_with_errors_changes_nothing() {
    let repo = ConfigRepo::new();
    load_case(&repo, &cases_dir().join("clean/everything"));
    repo.commit("good");
    let root = tempfile::tempdir().expect("root");
    let sync = || Tg::sync(&repo.url(), root.path()).run();
    sync().ok();
    let current = fs::read_link(root.path().join("current")).expect("current");
    let snapshot = |dir: &Path| -> BTreeSet<PathBuf> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![dir.join("revisions")];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).expect("dir") {
                let p = e.expect("entry").path();
                // The spare (links of current's files, made ready for the
                // next write while Git fetches) is no revision.
                if p.file_name().is_some_and(|n| n == ".spare") {
                    continue;
                }
                if p.is_dir() {
                    stack.push(p.clone());
                }
                seen.insert(p);
            }
        }
        seen
    };
    let before = snapshot(root.path());
    for case in [
        "json-syntax/trailing-comma",
        "duplicate-api-id/two-files",
        "missing-middleware-file/pre",
        "bare-oas/orphan-companion",
    ] {
        load_case(&repo, &cases_dir().join(case));
        repo.commit(case);
        let out = sync();
        let text = out.output();
        assert_eq!(out.code, 1, "{case}: {text}");
        let rule = case.split('/').next().expect("rule");
        assert!(
            text.contains(rule),
            "{case}: the rejection names the rule: {text}"
        );
        assert_eq!(
            fs::read_link(root.path().join("current")).expect("current"),
            current,
            "{case}"
        );
        assert_eq!(snapshot(root.path()), before, "{case}: no revision written");
    }
}
