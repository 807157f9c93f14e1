//! Small arbitrary trees: paths from an alphabet that hits every layout rule
//! (apps/, policies/, middleware/, templates/, .tyk.json, dots, odd names),
//! files, symlinks and submodules, and contents that are mostly plausible
//! JSON (API definitions, policies, maps, indexes naming other entries,
//! middleware references) with raw bytes mixed in. `check` must not panic
//! and the revision must be safe (see common.rs).
#![no_main]

use std::sync::Arc;

use arbitrary::{Arbitrary, Unstructured};
use git2::Oid;
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};
use tyk_gitops::tree::{Content, EntryKind, Tree, TreeEntry, blob_id};
use tyk_gitops::validate::{Cache, Options, check};

#[path = "common.rs"]
mod common;

const DIRS: [&str; 12] = [
    "apps/",
    "policies/",
    "middleware/",
    "templates/",
    "",
    "apps/sub/",
    "apps/./",
    "apps/../",
    "./",
    "/",
    "apps//",
    "other/",
];
const NAMES: [&str; 20] = [
    "a.json",
    "b.json",
    "a-oas.json",
    "a-mcp.json",
    "p.json",
    ".hidden.json",
    "..json",
    ".json",
    "policies.json",
    ".tyk.json",
    "tyk.conf",
    "m.js",
    "apps",
    "policies",
    "middleware",
    "x\n.json",
    "é.json",
    "a\\b.json",
    "..",
    ".",
];
/// Words that the generated JSON reuses, so ids, listen paths and
/// references collide between files.
const WORDS: [&str; 20] = [
    "a",
    "b",
    "p",
    "",
    "/a/",
    "middleware/m.js",
    "apps/a.json",
    "../x",
    "/etc/passwd",
    "policies",
    "apps",
    "a.json",
    "p-0",
    "./m.js",
    "apps/m.js",
    "other/m.js",
    "tyk.conf",
    "middleware//m.js",
    "policies.json",
    "apps/.hidden.json",
];

#[derive(Arbitrary, Debug)]
enum Kind {
    File,
    Symlink,
    Submodule,
}

#[derive(Arbitrary, Debug)]
enum Body {
    Raw(Vec<u8>),
    Json(Gen),
    TooLarge(u64),
}

#[derive(Arbitrary, Debug)]
struct Entry {
    dir: u8,
    name: u8,
    /// Replaces the name with arbitrary text when set.
    odd_name: Option<String>,
    kind: Kind,
    body: Body,
}

/// A recipe for a JSON document; `build` turns it into one.
#[derive(Arbitrary, Debug)]
enum Gen {
    Api {
        id: u8,
        lp: u8,
        domain: Option<u8>,
        oas: bool,
        mcp: bool,
        mw: Vec<u8>,
        extra: Vec<(String, Leaf)>,
    },
    Openapi {
        id: Option<u8>,
        lp: Option<u8>,
        mw: Vec<u8>,
    },
    Policy {
        id: Option<u8>,
        rights: Vec<u8>,
        org: Option<u8>,
    },
    Map(Vec<(u8, u8)>),
    Index {
        files: Vec<(u8, u8, Option<u8>)>,
        policies: Vec<(u8, u8, Option<u8>)>,
    },
    Any(Leaf),
}

#[derive(Arbitrary, Debug)]
enum Leaf {
    Null,
    Bool(bool),
    Num(f64),
    Int(i64),
    Str(String),
    Word(u8),
    Arr(Vec<Leaf>),
    Obj(Vec<(String, Leaf)>),
}

fn word(i: u8) -> &'static str {
    WORDS[i as usize % WORDS.len()]
}

fn path(dir: u8, name: u8) -> String {
    format!(
        "{}{}",
        DIRS[dir as usize % DIRS.len()],
        NAMES[name as usize % NAMES.len()]
    )
}

fn leaf(l: &Leaf, depth: usize) -> Value {
    if depth > 8 {
        return Value::Null;
    }
    match l {
        Leaf::Null => Value::Null,
        Leaf::Bool(b) => json!(b),
        Leaf::Num(n) => json!(n),
        Leaf::Int(n) => json!(n),
        Leaf::Str(s) => json!(s),
        Leaf::Word(w) => json!(word(*w)),
        Leaf::Arr(a) => Value::Array(a.iter().map(|x| leaf(x, depth + 1)).collect()),
        Leaf::Obj(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), leaf(v, depth + 1)))
                .collect::<Map<_, _>>(),
        ),
    }
}

fn middleware(mw: &[u8]) -> Value {
    let pre: Vec<Value> = mw
        .iter()
        .map(|w| json!({"name": "m", "path": word(*w), "require_session": false}))
        .collect();
    json!({"driver": "otto", "pre": pre, "post": [],
           "response": [], "post_key_auth": []})
}

fn build(g: &Gen) -> Value {
    match g {
        Gen::Api {
            id,
            lp,
            domain,
            oas,
            mcp,
            mw,
            extra,
        } => {
            let mut v = json!({
                "name": word(*id),
                "api_id": word(*id),
                "org_id": "o",
                "active": true,
                "is_oas": oas,
                "is_mcp": mcp,
                "use_keyless": true,
                "proxy": {"listen_path": word(*lp), "target_url": "http://u"},
                "version_data": {"not_versioned": true, "versions": {"Default": {"name": "Default"}}},
                "custom_middleware": middleware(mw),
            });
            if let Some(d) = domain {
                v["domain"] = json!(word(*d));
            }
            for (k, l) in extra {
                v[k.as_str()] = leaf(l, 0);
            }
            v
        }
        Gen::Openapi { id, lp, mw } => {
            let mut ext = json!({"info": {"name": "a", "state": {"active": true}},
                                 "server": {"listenPath": {"value": "/a/"}}});
            if let Some(i) = id {
                ext["info"]["id"] = json!(word(*i));
            }
            if let Some(l) = lp {
                ext["server"]["listenPath"]["value"] = json!(word(*l));
            }
            if !mw.is_empty() {
                let plugins: Vec<Value> = mw
                    .iter()
                    .map(|w| json!({"enabled": true, "functionName": "f", "path": word(*w)}))
                    .collect();
                ext["middleware"] = json!({"global": {"pluginConfig": {"driver": "otto"},
                                                      "prePlugins": plugins}});
            }
            json!({"openapi": "3.0.3", "info": {"title": "a", "version": "1"},
                   "paths": {}, "x-tyk-api-gateway": ext})
        }
        Gen::Policy { id, rights, org } => {
            let mut ar = Map::new();
            for r in rights {
                ar.insert(
                    word(*r).into(),
                    json!({"api_id": word(*r), "api_name": "a", "versions": ["Default"]}),
                );
            }
            let mut v = json!({"name": "p", "rate": 10, "per": 1, "quota_max": -1,
                               "access_rights": ar, "active": true});
            if let Some(i) = id {
                v["id"] = json!(word(*i));
            }
            if let Some(o) = org {
                v["org_id"] = json!(word(*o));
            }
            v
        }
        Gen::Map(entries) => {
            let mut m = Map::new();
            for (k, r) in entries {
                m.insert(
                    word(*k).into(),
                    json!({"id": word(*k), "rate": 1, "per": 1,
                    "access_rights": {word(*r): {"api_id": word(*r), "versions": ["Default"]}}}),
                );
            }
            Value::Object(m)
        }
        Gen::Index { files, policies } => {
            let item = |(d, n, id): &(u8, u8, Option<u8>)| {
                let mut v = json!({"file": path(*d, *n)});
                if let Some(i) = id {
                    v["api_id"] = json!(word(*i));
                    v["id"] = json!(word(*i));
                }
                v
            };
            json!({"type": "apidef",
                   "files": files.iter().map(item).collect::<Vec<_>>(),
                   "policies": policies.iter().map(item).collect::<Vec<_>>()})
        }
        Gen::Any(l) => leaf(l, 0),
    }
}

fn entry(e: &Entry) -> TreeEntry {
    let path = match &e.odd_name {
        Some(n) => format!("{}{n}", DIRS[e.dir as usize % DIRS.len()]),
        None => path(e.dir, e.name),
    };
    let (kind, content) = match e.kind {
        Kind::File => (
            EntryKind::File,
            match &e.body {
                Body::Raw(b) => Content::Loaded(Arc::new(b.clone())),
                Body::Json(g) => {
                    Content::Loaded(Arc::new(serde_json::to_vec_pretty(&build(g)).unwrap()))
                }
                Body::TooLarge(size) => Content::TooLarge { size: *size },
            },
        ),
        Kind::Symlink => (EntryKind::Symlink, Content::Absent),
        Kind::Submodule => (EntryKind::Submodule, Content::Absent),
    };
    let blob = match &content {
        Content::Loaded(b) => blob_id(b),
        _ => Oid::ZERO_SHA1,
    };
    TreeEntry {
        path,
        kind,
        content,
        blob,
    }
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(entries) = u
        .arbitrary_iter::<Entry>()
        .and_then(|it| it.take(12).collect::<Result<Vec<_>, _>>())
    else {
        return;
    };
    let mut tree: Vec<TreeEntry> = entries.iter().map(entry).collect();
    // A Git tree holds each path once.
    tree.sort_by(|a, b| a.path.cmp(&b.path));
    tree.dedup_by(|a, b| a.path == b.path);
    let strict = u.arbitrary::<bool>().unwrap_or(false);
    let opts = Options {
        strict,
        max_file_size: 1 << 16,
        ..Options::default()
    };
    let mut cache = Cache::default();
    let (bundle, report) = check(Tree::from_entries(tree), &opts, &mut cache);
    common::check_output(&bundle, &report);
});
