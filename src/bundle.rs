//! Config repo layout → `Bundle`: which files are API definitions, policies,
//! middleware, templates; also tyk-sync `.tyk.json` indexes. The validate
//! stage reads the layout (it needs the same walk to report findings); this
//! module owns the layout's vocabulary and turns a bundle into the exact
//! file list of an on-disk revision.
//!
//! Invariant of `revision_files`: every path is relative, has no `..` or
//! empty segment, and nothing under `apps/` or `policies/` starts with a dot
//! (the gateway's `*.json` glob loads dotfiles too).

use std::borrow::Cow;
use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use git2::Oid;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::json::Lookup;
use sha2::{Digest, Sha256};

/// One file that goes into the revision's `apps/` folder.
#[derive(Debug, Clone)]
pub struct ApiFile {
    /// File name inside `apps/` (unique in the bundle), e.g. `petstore.json`.
    pub name: String,
    /// Where it came from, relative to the config root.
    pub source: String,
    /// Shared with the tree it was read into (see `tree::Content`).
    pub bytes: Arc<Vec<u8>>,
    /// The `api_id` the gateway will load it under; `None` for OAS/MCP
    /// companion documents (`*-oas.json`, `*-mcp.json`), which it does not
    /// load as APIs.
    pub api_id: Option<String>,
    /// The definition may name middleware files (its analysis found some,
    /// or there was none): only such files are parsed again to rewrite
    /// the paths.
    pub names_files: bool,
    /// Git blob id of `bytes` when known (read from Git), so the apply
    /// stage need not hash them again.
    pub blob: Option<Oid>,
    /// `Some(size)` when the bytes were not read (`Content::Unread`):
    /// `bytes` is empty and `blob` names them.
    pub unread: Option<u64>,
}

/// One policy, as one JSON object whose `id` field equals `id`.
#[derive(Debug, Clone)]
pub struct PolicyEntry {
    pub id: String,
    /// Where it came from, relative to the config root.
    pub source: String,
    pub bytes: Arc<Vec<u8>>,
    /// Git blob id of `bytes` when known (read from Git), so the apply
    /// stage need not hash them again.
    pub blob: Option<Oid>,
}

/// A file copied byte for byte (middleware, templates, tyk.conf).
#[derive(Debug, Clone)]
pub struct PlainFile {
    /// Relative to the config root, and to the revision directory.
    pub path: String,
    pub bytes: Arc<Vec<u8>>,
    /// Git blob id of `bytes` when known (read from Git), so the apply
    /// stage need not hash them again.
    pub blob: Option<Oid>,
}

/// One file of a revision, relative to the revision directory.
#[derive(Debug, Clone)]
pub struct OutFile<'a> {
    pub path: String,
    pub bytes: Cow<'a, [u8]>,
    /// Git blob id of `bytes` when known; `None` for generated files.
    pub blob: Option<Oid>,
    /// `Some(size)` when the bytes were not read: `bytes` is empty, and the
    /// apply stage keeps or links the file from an older revision, or reads
    /// blob `blob` (always known then) to write it.
    pub unread: Option<u64>,
}

impl OutFile<'_> {
    /// The file's size, read or not.
    pub fn size(&self) -> u64 {
        self.unread.unwrap_or(self.bytes.len() as u64)
    }
}

#[derive(Debug, Clone, Default)]
pub struct Bundle {
    pub apps: Vec<ApiFile>,
    pub policies: Vec<PolicyEntry>,
    pub middleware: Vec<PlainFile>,
    pub templates: Vec<PlainFile>,
    pub tyk_conf: Option<PlainFile>,
}

/// Folder and file names of the config repo layout (DESIGN.md).
pub const APPS_DIR: &str = "apps";
pub const POLICIES_DIR: &str = "policies";
pub const MIDDLEWARE_DIR: &str = "middleware";
pub const TEMPLATES_DIR: &str = "templates";
pub const POLICIES_MAP: &str = "policies.json";
pub const TYK_CONF: &str = "tyk.conf";
pub const TYK_INDEX: &str = ".tyk.json";
/// Suffixes of the companion documents of Tyk OAS and MCP APIs.
pub const OAS_SUFFIX: &str = "-oas.json";
pub const MCP_SUFFIX: &str = "-mcp.json";

impl Bundle {
    /// The api ids the gateway must report after loading this bundle.
    pub fn api_ids(&self) -> BTreeSet<String> {
        self.apps.iter().filter_map(|a| a.api_id.clone()).collect()
    }

    /// The policy ids the gateway must report after loading this bundle.
    pub fn policy_ids(&self) -> BTreeSet<String> {
        self.policies.iter().map(|p| p.id.clone()).collect()
    }

    /// Every file of the on-disk revision, paths relative to the revision
    /// directory. `middleware_base` is the absolute path under which the
    /// gateway sees this revision's own directory (e.g.
    /// `/var/lib/tyk-gitops/revisions/<name>`, never `current`, so a
    /// definition keeps naming its own revision's scripts after a switch):
    /// middleware references in definitions that resolve to a file of the
    /// bundle are rewritten to `{middleware_base}/{path}`, because the
    /// gateway opens them relative to its own working directory. Only
    /// rewritten definitions are re-serialised; the rest keep their bytes.
    ///
    /// Entries with unsafe names are left out; the validator reports them as
    /// errors, so such a bundle is never applied.
    pub fn revision_files(&self, middleware_base: &str) -> Vec<OutFile<'_>> {
        let base = middleware_base.trim_end_matches('/');
        let plain: HashSet<&str> = self
            .middleware
            .iter()
            .chain(&self.templates)
            .map(|f| f.path.as_str())
            .collect();
        let mut out =
            Vec::with_capacity(self.apps.len() + 2 * self.policies.len() + plain.len() + 2);
        for app in &self.apps {
            if !is_safe_flat_name(&app.name) {
                continue;
            }
            let rewritten = app
                .names_files
                .then(|| rewrite_middleware(&app.bytes, &plain, base))
                .flatten();
            let (bytes, blob) = match rewritten {
                Some(rewritten) => (Cow::Owned(rewritten), None),
                None => (Cow::Borrowed(app.bytes.as_slice()), app.blob),
            };
            out.push(OutFile {
                path: format!("{APPS_DIR}/{}", app.name),
                bytes,
                blob,
                unread: app.unread,
            });
        }
        let mut taken = HashSet::new();
        for policy in &self.policies {
            let mut name = policy_file_stem(&policy.id);
            if !taken.insert(name.clone()) {
                // Two ids sanitised to one name: fall back to the full hash.
                name = format!("p-{}", hex::encode(Sha256::digest(policy.id.as_bytes())));
                taken.insert(name.clone());
            }
            out.push(OutFile {
                path: format!("{POLICIES_DIR}/{name}.json"),
                bytes: Cow::Borrowed(policy.bytes.as_slice()),
                blob: policy.blob,
                unread: None,
            });
        }
        out.push(OutFile {
            path: POLICIES_MAP.to_string(),
            bytes: Cow::Owned(policies_map(&self.policies)),
            blob: None,
            unread: None,
        });
        for file in self.middleware.iter().chain(&self.templates) {
            if is_safe_relative_path(&file.path) {
                out.push(OutFile {
                    path: file.path.clone(),
                    bytes: Cow::Borrowed(file.bytes.as_slice()),
                    blob: file.blob,
                    unread: None,
                });
            }
        }
        if let Some(conf) = &self.tyk_conf {
            out.push(OutFile {
                path: TYK_CONF.to_string(),
                bytes: Cow::Borrowed(conf.bytes.as_slice()),
                blob: conf.blob,
                unread: None,
            });
        }
        out
    }
}

/// `{"<id>": <policy bytes>, ...}` built from the validated bytes without
/// re-parsing them (the policies were parsed once, by the validator).
fn policies_map(policies: &[PolicyEntry]) -> Vec<u8> {
    let mut map = Vec::with_capacity(policies.iter().map(|p| p.bytes.len() + 8).sum::<usize>() + 4);
    map.push(b'{');
    for (i, policy) in policies.iter().enumerate() {
        if i > 0 {
            map.push(b',');
        }
        map.push(b'\n');
        // Serialising a &str cannot fail.
        map.extend_from_slice(&serde_json::to_vec(&policy.id).unwrap_or_default());
        map.extend_from_slice(b": ");
        map.extend_from_slice(policy.bytes.trim_ascii());
    }
    if !policies.is_empty() {
        map.push(b'\n');
    }
    map.extend_from_slice(b"}\n");
    map
}

/// The folders among `dirs` (`/`-separated, relative) that have an `apps`
/// folder, as `--path` values ("." for the top): sorted, shallowest first.
pub fn config_roots<'a>(dirs: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut roots: Vec<String> = dirs
        .into_iter()
        .filter_map(|d| {
            if d == APPS_DIR {
                Some(".".to_string())
            } else {
                d.strip_suffix(&format!("/{APPS_DIR}")).map(str::to_string)
            }
        })
        .collect();
    roots.sort_by(|a, b| (a.matches('/').count(), a).cmp(&(b.matches('/').count(), b)));
    roots.dedup();
    roots
}

/// The file name (without `.json`) for a policy id: the id itself when it
/// is a plain name, else a sanitised form plus a short hash of the id.
pub fn policy_file_stem(id: &str) -> String {
    let plain = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if plain {
        return id.to_string();
    }
    let sanitised: String = id
        .chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let hash = hex::encode(Sha256::digest(id.as_bytes()));
    format!("{sanitised}-{}", &hash[..10])
}

/// A name that can sit directly in `apps/` or `policies/`: one segment, not
/// hidden (the gateway loads dotfiles), no control characters.
pub fn is_safe_flat_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && !name.contains('/')
        && !name.contains('\\')
        && !name.chars().any(char::is_control)
}

/// A relative path without `..`, `.` or empty segments and no control
/// characters.
pub fn is_safe_relative_path(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && !path.chars().any(char::is_control)
        && path
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != "..")
}

/// A middleware path as written in a definition, resolved against the
/// config root: `Ok(Some(relpath))`, `Ok(None)` for an absolute path (left
/// alone), `Err(())` for one that escapes the root.
#[allow(clippy::result_unit_err)]
pub fn resolve_reference(path: &str) -> Result<Option<String>, ()> {
    if path.starts_with('/') {
        return Ok(None);
    }
    let mut parts: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => return Err(()),
            s => parts.push(s),
        }
    }
    if parts.is_empty() {
        return Err(());
    }
    Ok(Some(parts.join("/")))
}

/// A file a definition asks the gateway to open (JavaScript middleware, a
/// Go plugin, a virtual endpoint's source).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MiddlewareRef {
    /// JSON pointer to the string holding the path.
    pub pointer: String,
    pub path: String,
    /// The gateway would open this file (enabled, file-based driver), so a
    /// missing file is an error; otherwise it is only rewritten.
    pub required: bool,
}

/// Drivers whose `path` names a file the gateway opens itself; the
/// coprocess drivers (python, lua, grpc) load bundles or call out instead.
fn file_based_driver(driver: &str) -> bool {
    matches!(driver, "" | "otto" | "goja" | "goplugin")
}

fn str_at<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

fn push_ref(refs: &mut Vec<MiddlewareRef>, pointer: String, path: Option<&str>, required: bool) {
    if let Some(path) = path.filter(|p| !p.trim().is_empty()) {
        refs.push(MiddlewareRef {
            pointer,
            path: path.to_string(),
            required,
        });
    }
}

/// Every middleware file reference in a classic definition or a Tyk OAS
/// document (`x-tyk-api-gateway`).
pub fn middleware_refs(doc: &Value) -> Vec<MiddlewareRef> {
    let mut refs = Vec::new();
    if let Some(cm) = doc.get("custom_middleware") {
        let file_based = file_based_driver(str_at(cm, "driver").unwrap_or(""));
        for list in ["pre", "post", "post_key_auth", "response"] {
            let items = cm.get(list).and_then(Value::as_array);
            for (i, m) in items.into_iter().flatten().enumerate() {
                let disabled = m.get("disabled").and_then(Value::as_bool) == Some(true);
                push_ref(
                    &mut refs,
                    format!("/custom_middleware/{list}/{i}/path"),
                    str_at(m, "path"),
                    file_based && !disabled,
                );
            }
        }
        if let Some(auth) = cm.get("auth_check") {
            let disabled = auth.get("disabled").and_then(Value::as_bool) == Some(true);
            push_ref(
                &mut refs,
                "/custom_middleware/auth_check/path".to_string(),
                str_at(auth, "path"),
                file_based && !disabled,
            );
        }
    }
    let versions = doc
        .lookup("/version_data/versions")
        .and_then(Value::as_object);
    for (name, version) in versions.into_iter().flatten() {
        let virtuals = version
            .lookup("/extended_paths/virtual")
            .and_then(Value::as_array);
        for (i, v) in virtuals.into_iter().flatten().enumerate() {
            if str_at(v, "function_source_type") != Some("file") {
                continue;
            }
            let disabled = v.get("disabled").and_then(Value::as_bool) == Some(true);
            push_ref(
                &mut refs,
                format!(
                    "/version_data/versions/{}/extended_paths/virtual/{i}/function_source_uri",
                    escape_token(name)
                ),
                str_at(v, "function_source_uri"),
                !disabled,
            );
        }
    }
    if let Some(ext) = doc.get("x-tyk-api-gateway") {
        oas_refs(ext, &mut refs);
    }
    refs
}

fn oas_refs(ext: &Value, refs: &mut Vec<MiddlewareRef>) {
    const X: &str = "/x-tyk-api-gateway";
    let enabled = |v: &Value| v.get("enabled").and_then(Value::as_bool) == Some(true);
    let global = ext.lookup("/middleware/global");
    let driver = global
        .and_then(|g| g.lookup("/pluginConfig/driver"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let file_based = file_based_driver(driver);
    let plugin_list = |list: Option<&Value>, at: String, refs: &mut Vec<MiddlewareRef>| {
        for (i, p) in list
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            push_ref(
                refs,
                format!("{at}/{i}/path"),
                str_at(p, "path"),
                file_based && enabled(p),
            );
        }
    };
    if let Some(global) = global {
        for list in [
            "prePlugins",
            "postAuthenticationPlugins",
            "postPlugins",
            "responsePlugins",
        ] {
            plugin_list(
                global.get(list),
                format!("{X}/middleware/global/{list}"),
                refs,
            );
        }
        // The older singular forms wrap the list in {"plugins": [...]}.
        for single in [
            "prePlugin",
            "postAuthenticationPlugin",
            "postPlugin",
            "responsePlugin",
        ] {
            plugin_list(
                global.lookup(&format!("/{single}/plugins")),
                format!("{X}/middleware/global/{single}/plugins"),
                refs,
            );
        }
    }
    if let Some(config) = ext.lookup("/server/authentication/custom/config") {
        push_ref(
            refs,
            format!("{X}/server/authentication/custom/config/path"),
            str_at(config, "path"),
            file_based && enabled(config),
        );
    }
    let operations = ext
        .lookup("/middleware/operations")
        .and_then(Value::as_object);
    for (op, settings) in operations.into_iter().flatten() {
        let op_at = format!("{X}/middleware/operations/{}", escape_token(op));
        if let Some(ve) = settings.get("virtualEndpoint") {
            push_ref(
                refs,
                format!("{op_at}/virtualEndpoint/path"),
                str_at(ve, "path"),
                enabled(ve),
            );
        }
        plugin_list(
            settings.get("postPlugins"),
            format!("{op_at}/postPlugins"),
            refs,
        );
    }
}

/// Escapes one JSON pointer reference token.
pub fn escape_token(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// Rewrites the middleware references of a definition that resolve to
/// files of the bundle; `None` when nothing changed (keep the bytes).
fn rewrite_middleware(bytes: &[u8], plain: &HashSet<&str>, base: &str) -> Option<Vec<u8>> {
    // Cheap pre-check: most definitions reference no file at all, and
    // parsing them again would cost more than everything else here.
    let mentions = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    if !mentions(b"\"path\"") && !mentions(b"function_source_uri") {
        return None;
    }
    let mut doc: Value = serde_json::from_slice(bytes).ok()?;
    let mut changed = false;
    for r in middleware_refs(&doc) {
        let Ok(Some(rel)) = resolve_reference(&r.path) else {
            continue;
        };
        if !plain.contains(rel.as_str()) {
            continue;
        }
        if let Some(slot) = doc.lookup_mut(&r.pointer) {
            *slot = Value::String(format!("{base}/{rel}"));
            changed = true;
        }
    }
    if !changed {
        return None;
    }
    serde_json::to_vec_pretty(&doc).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn api(name: &str, doc: &Value) -> ApiFile {
        ApiFile {
            name: name.to_string(),
            source: format!("apps/{name}"),
            bytes: Arc::new(serde_json::to_vec(doc).unwrap()),
            api_id: doc.get("api_id").and_then(Value::as_str).map(String::from),
            names_files: true,
            blob: Some(crate::tree::blob_id(&serde_json::to_vec(doc).unwrap())),
            unread: None,
        }
    }

    #[test]
    fn policy_names_are_safe_and_distinct() {
        assert_eq!(policy_file_stem("basic-1_x"), "basic-1_x");
        let odd = policy_file_stem("../etc/passwd");
        assert!(odd.starts_with("___etc_passwd-"), "{odd}");
        assert!(is_safe_flat_name(&format!("{odd}.json")));
        assert_ne!(policy_file_stem("a.b"), policy_file_stem("a/b"));
        assert!(!policy_file_stem(".hidden").starts_with('.'));
        assert!(!policy_file_stem("").is_empty());
    }

    #[test]
    fn revision_has_policies_both_ways_and_rewrites_only_referencing_apis() {
        let with_mw = json!({"api_id": "a", "custom_middleware": {"pre": [{"name": "x", "path": "./middleware/x.js"}], "driver": "otto"}});
        let plain = json!({"api_id": "b", "proxy": {"listen_path": "/b/"}});
        let bundle = Bundle {
            apps: vec![api("a.json", &with_mw), api("b.json", &plain)],
            policies: vec![PolicyEntry {
                id: "p 1".into(),
                source: "policies.json".into(),
                bytes: Arc::new(br#"{"id": "p 1", "rate": 1}"#.to_vec()),
                blob: None,
            }],
            middleware: vec![PlainFile {
                path: "middleware/x.js".into(),
                bytes: Arc::new(b"var x;".to_vec()),
                blob: None,
            }],
            templates: vec![],
            tyk_conf: None,
        };
        let files = bundle.revision_files("/srv/current/");
        // A known blob id always names the bytes written: rewritten files
        // lose theirs, untouched ones keep it.
        for f in &files {
            if let Some(blob) = f.blob {
                assert_eq!(blob, crate::tree::blob_id(&f.bytes), "{}", f.path);
            }
        }
        let blob_of = |path: &str| files.iter().find(|f| f.path == path).unwrap().blob;
        assert!(blob_of("apps/a.json").is_none());
        assert!(blob_of("apps/b.json").is_some());
        let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths.len(), 5, "{paths:?}");
        assert!(paths.contains(&"middleware/x.js"));
        let a: Value = serde_json::from_slice(&files[0].bytes).unwrap();
        assert_eq!(
            a.pointer("/custom_middleware/pre/0/path").unwrap(),
            "/srv/current/middleware/x.js"
        );
        assert!(matches!(files[1].bytes, Cow::Borrowed(_)));
        let map: Value = serde_json::from_slice(&files[3].bytes).unwrap();
        assert_eq!(map["p 1"]["rate"], 1);
        assert!(files[2].path.starts_with("policies/p_1-"));
    }

    #[test]
    fn empty_bundle_still_has_an_empty_policies_map() {
        let bundle = Bundle::default();
        let files = bundle.revision_files("/x");
        assert_eq!(files.len(), 1);
        assert_eq!(files[0].path, "policies.json");
        let map: Value = serde_json::from_slice(&files[0].bytes).unwrap();
        assert_eq!(map, json!({}));
    }

    #[test]
    fn references_are_resolved_inside_the_root_only() {
        assert_eq!(resolve_reference("./a//b.js"), Ok(Some("a/b.js".into())));
        assert_eq!(resolve_reference("/opt/x.js"), Ok(None));
        assert_eq!(resolve_reference("../x.js"), Err(()));
    }

    #[test]
    fn oas_plugins_and_virtual_endpoints_are_found() {
        let doc = json!({"x-tyk-api-gateway": {"middleware": {
            "global": {"pluginConfig": {"driver": "otto"}, "prePlugins": [{"enabled": true, "functionName": "f", "path": "m/pre.js"}]},
            "operations": {"op/1": {"virtualEndpoint": {"enabled": true, "functionName": "g", "path": "m/ve.js"}}}
        }}});
        let refs = middleware_refs(&doc);
        assert_eq!(refs.len(), 2);
        assert_eq!(
            refs[0].pointer,
            "/x-tyk-api-gateway/middleware/global/prePlugins/0/path"
        );
        assert_eq!(
            refs[1].pointer,
            "/x-tyk-api-gateway/middleware/operations/op~11/virtualEndpoint/path"
        );
        assert!(refs.iter().all(|r| r.required));
    }
}
