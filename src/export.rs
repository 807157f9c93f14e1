//! `tyk-gitops export`: what a running gateway serves, written as a config
//! repo that `validate` accepts and `sync` applies (`apps/` with classic
//! files and OAS/MCP pairs, `policies/` one per file, optionally
//! `middleware/`). The first step from hand-made gateways to Git.
//!
//! Output is deterministic: file names come from API names (or ids) and
//! policy ids, sorted by id; JSON is pretty-printed with sorted keys. So an
//! unchanged gateway exports byte-identical files, and `git diff` after a
//! re-export shows only what changed on the gateway.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::json::Lookup;

use crate::bundle::{self, MCP_SUFFIX, OAS_SUFFIX};
use crate::exit::Exit;
use crate::gateway::{Gateway, GatewayError};
use crate::secret::{GATEWAY_SECRET_ENV, SecretSource};
use crate::source::redact_url;

const README: &str = "README.md";
/// Folders `export` owns in DIR: emptied and written again with `--force`.
const OWNED: [&str; 3] = [
    bundle::APPS_DIR,
    bundle::POLICIES_DIR,
    bundle::MIDDLEWARE_DIR,
];

/// Flags of `tyk-gitops export`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The gateway to export from (its control API), e.g. http://localhost:8080.
    #[arg(long, env = "TYK_GITOPS_GATEWAY")]
    pub gateway: String,

    /// File holding the gateway's `secret` (or set TYK_GITOPS_GATEWAY_SECRET).
    #[arg(long, env = "TYK_GITOPS_GATEWAY_SECRET_FILE")]
    pub gateway_secret_file: Option<PathBuf>,

    /// Where to write the config repo; must be empty unless --force.
    #[arg(long, value_name = "DIR", env = "TYK_GITOPS_OUT")]
    pub out: PathBuf,

    /// Write into a non-empty DIR: apps/, policies/ (and middleware/ with --middleware-from) are replaced, other files kept.
    #[arg(long, env = "TYK_GITOPS_FORCE")]
    pub force: bool,

    /// Copy the scripts definitions reference from this folder (the gateway's middleware folder) into middleware/, and point the definitions at them.
    #[arg(long, value_name = "DIR", env = "TYK_GITOPS_MIDDLEWARE_FROM")]
    pub middleware_from: Option<PathBuf>,

    /// Bound on each request to the gateway.
    #[arg(long, default_value = "30s", value_parser = crate::flags::parse_duration, env = "TYK_GITOPS_TIMEOUT")]
    pub timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
enum ExportError {
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Gateway(#[from] GatewayError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl ExportError {
    fn exit(&self) -> Exit {
        match self {
            ExportError::Usage(_) => Exit::Usage,
            ExportError::Gateway(_) => Exit::Gateway,
            ExportError::Io { .. } => Exit::Local,
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ExportError + '_ {
    move |source| ExportError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What the gateway runs, as read from its control API.
pub struct Served {
    pub apis: Vec<Value>,
    /// Companion documents by api id (OAS or MCP half).
    pub companions: BTreeMap<String, Value>,
    pub policies: Vec<Value>,
}

/// The config repo to write: relative path → bytes, plus what the user
/// should know (scripts not found, companions missing).
#[derive(Debug, Default)]
pub struct Layout {
    pub files: BTreeMap<String, Vec<u8>>,
    pub findings: Vec<String>,
    pub apis: usize,
    pub policies: usize,
}

/// Runs the command; returns the process exit code (0 written, 2 usage,
/// 4 gateway, 5 local disk).
pub fn run(args: &Args) -> Exit {
    match export(args) {
        Ok(layout) => {
            for finding in &layout.findings {
                eprintln!("warning: {finding}");
            }
            println!(
                "exported {} APIs and {} policies from {} to {}; check with `tyk-gitops validate {}`, then commit",
                layout.apis,
                layout.policies,
                redact_url(&args.gateway),
                args.out.display(),
                args.out.display()
            );
            Exit::Ok
        }
        Err(err) => {
            eprintln!("error: {err}");
            err.exit()
        }
    }
}

fn export(args: &Args) -> Result<Layout, ExportError> {
    let existing = existing_entries(&args.out)?;
    if !existing.is_empty() && !args.force {
        return Err(ExportError::Usage(format!(
            "{} is not empty ({}); choose an empty folder, or --force to replace its apps/, policies/ and middleware/",
            args.out.display(),
            existing.into_iter().take(3).collect::<Vec<_>>().join(", ")
        )));
    }
    let env = std::env::var(GATEWAY_SECRET_ENV).ok();
    let secret = SecretSource::choose(args.gateway_secret_file.as_deref(), env).ok_or_else(|| {
        ExportError::Usage(format!(
            "export needs the gateway's secret: --gateway-secret-file FILE or {GATEWAY_SECRET_ENV}"
        ))
    })?;
    let secret = secret
        .read()
        .map_err(|e| ExportError::Usage(e.to_string()))?;
    let gateway = Gateway::new(&args.gateway, secret.expose().to_string(), args.timeout)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(io(Path::new("tokio runtime")))?;
    let served = runtime.block_on(read_gateway(&gateway))?;
    let layout = layout(&served, args.middleware_from.as_deref());
    write(
        &args.out,
        &layout,
        &readme(&args.gateway, &layout),
        args.middleware_from.is_some(),
    )?;
    Ok(layout)
}

async fn read_gateway(gateway: &Gateway) -> Result<Served, GatewayError> {
    let (apis, policies) = gateway.definitions().await?;
    let mut companions = BTreeMap::new();
    for api in &apis {
        if api.get("is_oas").and_then(Value::as_bool) != Some(true) {
            continue;
        }
        let Some(id) = api.get("api_id").and_then(Value::as_str) else {
            continue;
        };
        if let Some(doc) = gateway.companion(id, is_mcp(api)).await? {
            companions.insert(id.to_string(), doc);
        }
    }
    Ok(Served {
        apis,
        companions,
        policies,
    })
}

fn is_mcp(api: &Value) -> bool {
    api.get("application_protocol").and_then(Value::as_str) == Some("mcp")
}

/// Entries of DIR, `None`-safe: a missing DIR is empty.
fn existing_entries(dir: &Path) -> Result<Vec<String>, ExportError> {
    match std::fs::read_dir(dir) {
        Ok(entries) => {
            let mut names: Vec<String> = entries
                .filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            Ok(names)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io(dir)(e)),
    }
}

/// A file-name stem from free text: lowercase ASCII letters and digits,
/// runs of anything else as one `-`, at most 64 characters.
fn slug(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
        if out.len() >= 64 {
            break;
        }
    }
    out.trim_matches('-').to_string()
}

/// Pretty JSON with keys sorted at every level, and a final newline.
pub fn stable_json(value: &Value) -> Vec<u8> {
    fn sorted(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                Value::Object(
                    keys.into_iter()
                        .map(|k| (k.clone(), sorted(&map[k])))
                        .collect(),
                )
            }
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    // Serialising a Value cannot fail.
    let mut bytes = serde_json::to_vec_pretty(&sorted(value)).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// The config repo for what the gateway serves.
pub fn layout(served: &Served, middleware_from: Option<&Path>) -> Layout {
    let mut out = Layout::default();
    let mut apis: Vec<&Value> = served.apis.iter().collect();
    apis.sort_by_key(|a| a.get("api_id").and_then(Value::as_str).unwrap_or(""));
    let mut stems = BTreeSet::new();
    let mut scripts = BTreeMap::new();
    for api in apis {
        let id = api.get("api_id").and_then(Value::as_str).unwrap_or("");
        let name = api.get("name").and_then(Value::as_str).unwrap_or("");
        let stem = unique_stem(&mut stems, name, id);
        let file = format!("{}/{stem}.json", bundle::APPS_DIR);
        let mut doc = api.clone();
        relink(
            &mut doc,
            &file,
            middleware_from,
            &mut scripts,
            &mut out.findings,
        );
        out.files.insert(file.clone(), stable_json(&doc));
        out.apis += 1;
        if api.get("is_oas").and_then(Value::as_bool) == Some(true) {
            let suffix = if is_mcp(api) { MCP_SUFFIX } else { OAS_SUFFIX };
            let companion = format!("{}/{stem}{suffix}", bundle::APPS_DIR);
            match served.companions.get(id) {
                Some(oas) => {
                    let mut oas = oas.clone();
                    relink(&mut oas, &companion, middleware_from, &mut scripts, &mut out.findings);
                    out.files.insert(companion, stable_json(&oas));
                }
                None => out.findings.push(format!(
                    "{file}: API {id:?} is a Tyk OAS API but the gateway returned no OpenAPI document for it; {companion} is missing"
                )),
            }
        }
    }
    for (dest, bytes) in scripts {
        out.files.insert(dest, bytes);
    }
    let mut policies: Vec<(String, &Value)> = served
        .policies
        .iter()
        .filter_map(|p| {
            let id = p
                .get("id")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty());
            let id = id.or_else(|| p.get("_id").and_then(Value::as_str))?;
            Some((id.to_string(), p))
        })
        .collect();
    policies.sort_by(|a, b| a.0.cmp(&b.0));
    for (id, policy) in policies {
        let mut policy = policy.clone();
        if let Some(map) = policy.as_object_mut() {
            map.insert("id".into(), Value::String(id.clone()));
            // The database id a file-mode gateway always lists empty.
            if map.get("_id").and_then(Value::as_str) == Some("") {
                map.remove("_id");
            }
        }
        let file = format!(
            "{}/{}.json",
            bundle::POLICIES_DIR,
            bundle::policy_file_stem(&id)
        );
        out.files.insert(file, stable_json(&policy));
        out.policies += 1;
    }
    out
}

/// A stem no other API has taken, never one that reads as a companion
/// document (`-oas`, `-mcp`).
fn unique_stem(taken: &mut BTreeSet<String>, name: &str, id: &str) -> String {
    let base = Some(slug(name))
        .filter(|s| !s.is_empty())
        .or_else(|| Some(slug(id)).filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "api".to_string());
    let base = if base.ends_with("-oas") || base.ends_with("-mcp") {
        format!("{base}-api")
    } else {
        base
    };
    let mut stem = base.clone();
    if taken.contains(&stem) {
        stem = format!("{base}-{}", slug(id));
    }
    let mut n = 2;
    while taken.contains(&stem) {
        stem = format!("{base}-{n}");
        n += 1;
    }
    taken.insert(stem.clone());
    stem
}

/// With `--middleware-from`, copies every script `doc` references into
/// `middleware/` and points the reference at the copy; a script that cannot
/// be found is a finding and its reference is kept.
fn relink(
    doc: &mut Value,
    file: &str,
    from: Option<&Path>,
    scripts: &mut BTreeMap<String, Vec<u8>>,
    findings: &mut Vec<String>,
) {
    let refs = bundle::middleware_refs(doc);
    let Some(from) = from else {
        for r in refs.iter().filter(|r| r.required) {
            findings.push(format!(
                "{file}: {} names {} (kept as is; --middleware-from DIR copies scripts into the repo)",
                r.pointer, r.path
            ));
        }
        return;
    };
    for r in refs {
        match find_script(from, &r.path) {
            Some((dest, bytes)) => {
                if let Some(slot) = doc.lookup_mut(&r.pointer) {
                    *slot = Value::String(dest.clone());
                }
                scripts.insert(dest, bytes);
            }
            None => findings.push(format!(
                "{file}: {} names {}, which is not under {}; reference kept",
                r.pointer,
                r.path,
                from.display()
            )),
        }
    }
}

/// The longest tail of `path` that names a file under `from`, and where it
/// goes in the repo (`middleware/<tail>`, a leading `middleware/` of the tail
/// not repeated).
fn find_script(from: &Path, path: &str) -> Option<(String, Vec<u8>)> {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    if parts.contains(&"..") {
        return None;
    }
    (0..parts.len()).find_map(|i| {
        let tail = &parts[i..];
        let bytes = std::fs::read(from.join(tail.join("/"))).ok()?;
        let inside = match tail.first() {
            Some(&first) if first == bundle::MIDDLEWARE_DIR && tail.len() > 1 => &tail[1..],
            _ => tail,
        };
        Some((
            format!("{}/{}", bundle::MIDDLEWARE_DIR, inside.join("/")),
            bytes,
        ))
    })
}

fn readme(gateway: &str, layout: &Layout) -> Vec<u8> {
    format!(
        "# Tyk config exported from a gateway\n\n\
         Written by `tyk-gitops export` from {} on {}: {} APIs, {} policies.\n\n\
         - `apps/`: one classic API definition per file (named after the API);\n  \
         Tyk OAS APIs as `<name>.json` plus `<name>-oas.json`, MCP APIs with `-mcp.json`.\n\
         - `policies/`: one policy per file (named after its id).\n\
         - `middleware/`: the scripts definitions reference, when exported with `--middleware-from`.\n\n\
         Definitions are as the gateway listed them, keys sorted, so fields the\n\
         gateway fills in itself (defaults for every field a definition leaves\n\
         out, the policies' empty database id `_id`, which is dropped) appear too;\n\
         they load the same. Exporting again from an unchanged gateway rewrites\n\
         nothing, so `git diff` shows only changes made on the gateway.\n\n\
         Next: `tyk-gitops validate .`, commit, and point `tyk-gitops sync --repo …` at\n\
         this repository.\n",
        redact_url(gateway),
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        layout.apis,
        layout.policies,
    )
    .into_bytes()
}

/// Writes the layout into `dir`. With files already there, the folders it
/// owns are replaced and the rest kept; the README is rewritten only when
/// the export differs, so an unchanged gateway leaves no diff at all.
fn write(
    dir: &Path,
    layout: &Layout,
    readme: &[u8],
    owns_middleware: bool,
) -> Result<(), ExportError> {
    let owned: Vec<&str> = OWNED
        .into_iter()
        .filter(|d| owns_middleware || *d != bundle::MIDDLEWARE_DIR)
        .collect();
    let before = read_owned(dir, &owned)?;
    let unchanged = before == layout.files && dir.join(README).is_file();
    if unchanged {
        return Ok(());
    }
    for d in &owned {
        let path = dir.join(d);
        match std::fs::remove_dir_all(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&path)(e)),
        }
    }
    for (rel, bytes) in &layout.files {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::fs::write(&path, bytes).map_err(io(&path))?;
    }
    let path = dir.join(README);
    std::fs::write(&path, readme).map_err(io(&path))
}

/// Every file under the owned folders, relative to `dir`.
fn read_owned(dir: &Path, owned: &[&str]) -> Result<BTreeMap<String, Vec<u8>>, ExportError> {
    fn walk(dir: &Path, rel: &str, out: &mut BTreeMap<String, Vec<u8>>) -> Result<(), ExportError> {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io(dir)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io(dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            let rel = format!("{rel}/{name}");
            if path.is_dir() {
                walk(&path, &rel, out)?;
            } else {
                out.insert(rel, std::fs::read(&path).map_err(io(&path))?);
            }
        }
        Ok(())
    }
    let mut out = BTreeMap::new();
    for d in owned {
        walk(&dir.join(d), d, &mut out)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_are_readable_unique_and_never_look_like_companions() {
        let mut taken = BTreeSet::new();
        assert_eq!(
            unique_stem(&mut taken, "Orders API (v2)", "a1"),
            "orders-api-v2"
        );
        assert_eq!(
            unique_stem(&mut taken, "Orders API v2", "b2"),
            "orders-api-v2-b2"
        );
        assert_eq!(unique_stem(&mut taken, "", "Ünïcode/ID"), "n-code-id");
        assert_eq!(
            unique_stem(&mut taken, "Petstore OAS", "p"),
            "petstore-oas-api"
        );
        assert_eq!(unique_stem(&mut taken, "..", ""), "api");
    }

    #[test]
    fn json_is_pretty_with_sorted_keys_at_every_level() {
        let text = String::from_utf8(stable_json(
            &json!({"b": {"z": 1, "a": [{"y": 1, "x": 2}]}, "a": 0}),
        ))
        .expect("utf-8");
        assert_eq!(
            text,
            "{\n  \"a\": 0,\n  \"b\": {\n    \"a\": [\n      {\n        \"x\": 2,\n        \"y\": 1\n      }\n    ],\n    \"z\": 1\n  }\n}\n"
        );
    }

    #[test]
    fn scripts_are_found_by_the_longest_tail_and_land_under_middleware() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("middleware/auth")).expect("mkdir");
        std::fs::write(dir.path().join("middleware/auth/check.js"), "x").expect("write");
        let found = find_script(dir.path(), "/opt/tyk-gateway/middleware/auth/check.js");
        assert_eq!(
            found,
            Some(("middleware/auth/check.js".to_string(), b"x".to_vec()))
        );
        assert_eq!(find_script(dir.path(), "/opt/other.js"), None);
        assert_eq!(find_script(dir.path(), "../middleware/auth/check.js"), None);
    }
}
