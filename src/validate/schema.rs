//! Our JSON Schemas (`schemas/*.json`), embedded in the binary and compiled
//! on first use. They constrain what the gateway relies on and leave
//! unknown fields alone; the known top-level fields double as the list
//! `--strict` checks unknown fields against. Compiled and parsed they take
//! ~1 MiB: a sidecar that syncs once and idles drops them (`release`) and
//! compiles them again for its next sync (a few ms).

use std::collections::HashSet;
use std::sync::{Arc, LazyLock, PoisonError, RwLock};

use jsonschema::{Retrieve, Uri, Validator};
use serde_json::Value;

use crate::json::Lookup;

/// Which schema a document is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    ApiDefinition,
    Oas,
    Mcp,
    Policy,
    PoliciesMap,
    TykIndex,
}

const BASE: &str = "https://tyk-gitops.dev/schemas/";

/// (file name, source); the `$id` of each is `BASE` + file name.
const SOURCES: [(&str, &str); 6] = [
    (
        "api-definition.json",
        include_str!("../../schemas/api-definition.json"),
    ),
    ("oas.json", include_str!("../../schemas/oas.json")),
    ("mcp.json", include_str!("../../schemas/mcp.json")),
    ("policy.json", include_str!("../../schemas/policy.json")),
    (
        "policies-map.json",
        include_str!("../../schemas/policies-map.json"),
    ),
    (
        "tyk-index.json",
        include_str!("../../schemas/tyk-index.json"),
    ),
];

/// SHA-256 over every embedded schema: part of the on-disk analysis cache's
/// format tag, so a build with other schemas never trusts older results.
pub fn fingerprint() -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for (name, source) in SOURCES {
        hasher.update(name.as_bytes());
        hasher.update([0]);
        hasher.update(source.as_bytes());
        hasher.update([0]);
    }
    hex::encode(hasher.finalize())
}

impl Kind {
    fn file(self) -> &'static str {
        match self {
            Kind::ApiDefinition => "api-definition.json",
            Kind::Oas => "oas.json",
            Kind::Mcp => "mcp.json",
            Kind::Policy => "policy.json",
            Kind::PoliciesMap => "policies-map.json",
            Kind::TykIndex => "tyk-index.json",
        }
    }
}

fn source(file: &str) -> Option<Value> {
    SOURCES
        .iter()
        .find(|(name, _)| *name == file)
        .and_then(|(_, text)| serde_json::from_str(text).ok())
}

/// Serves our own schemas to `$ref`s between them; nothing is fetched.
struct Embedded;

impl Retrieve for Embedded {
    fn retrieve(
        &self,
        uri: &Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        let name = uri.as_str().strip_prefix(BASE).unwrap_or_default();
        source(name).ok_or_else(|| format!("no embedded schema {uri}").into())
    }
}

struct Compiled {
    validator: Option<Validator>,
    known: HashSet<String>,
}

fn compile(kind: Kind) -> Compiled {
    let Some(schema) = source(kind.file()) else {
        return Compiled {
            validator: None,
            known: HashSet::new(),
        };
    };
    // The policy schema keeps its fields under $defs/policy, shared with
    // the policies map; the others list theirs at the top.
    let props = if kind == Kind::Policy {
        schema.lookup("/$defs/policy/properties")
    } else {
        schema.get("properties")
    };
    let known = props
        .and_then(Value::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    let validator = jsonschema::options()
        .with_retriever(Embedded)
        .should_validate_formats(false)
        .build(&schema)
        .ok();
    Compiled { validator, known }
}

/// Every schema, compiled (for validating) and parsed (for walking:
/// `canonical_keys`).
struct Schemas {
    compiled: [Compiled; 6],
    roots: Vec<(&'static str, Value)>,
    /// The schemas' shapes, for `canonical_keys`.
    shapes: Shapes,
}

impl Schemas {
    fn build() -> Schemas {
        let mut schemas = Schemas {
            compiled: [
                compile(Kind::ApiDefinition),
                compile(Kind::Oas),
                compile(Kind::Mcp),
                compile(Kind::Policy),
                compile(Kind::PoliciesMap),
                compile(Kind::TykIndex),
            ],
            roots: SOURCES
                .iter()
                .filter_map(|(name, text)| Some((*name, serde_json::from_str(text).ok()?)))
                .collect(),
            shapes: Shapes::default(),
        };
        schemas.shapes = Shapes::build(&schemas);
        schemas
    }

    fn compiled(&self, kind: Kind) -> &Compiled {
        let i = match kind {
            Kind::ApiDefinition => 0,
            Kind::Oas => 1,
            Kind::Mcp => 2,
            Kind::Policy => 3,
            Kind::PoliciesMap => 4,
            Kind::TykIndex => 5,
        };
        &self.compiled[i]
    }

    fn root(&self, file: &str) -> Option<Node<'_>> {
        self.roots
            .iter()
            .find(|(n, _)| *n == file)
            .map(|(n, root)| (*n, root))
    }
}

/// Built by the first check after start or after `release`.
static LOADED: RwLock<Option<Arc<Schemas>>> = RwLock::new(None);

fn schemas() -> Arc<Schemas> {
    if let Some(loaded) = LOADED
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .as_ref()
    {
        return loaded.clone();
    }
    let mut slot = LOADED.write().unwrap_or_else(PoisonError::into_inner);
    slot.get_or_insert_with(|| Arc::new(Schemas::build()))
        .clone()
}

/// Compiles the schemas now rather than at the first check: a new process
/// does it while Git fetches.
pub fn prepare() {
    schemas();
}

/// Drops the compiled schemas once the checks under way are done with
/// them; the next check compiles them again.
pub fn release() {
    *LOADED.write().unwrap_or_else(PoisonError::into_inner) = None;
}

/// Whether Go's encoding/json would decode JSON key `key` into the struct
/// field named `field`: case-insensitively, with the two non-ASCII letters
/// that fold to ASCII ones (the Kelvin sign and the long s).
pub fn go_fold_eq(key: &str, field: &str) -> bool {
    // Both ASCII (every field, nearly every key): no letter folds across.
    // The same length first: most keys are compared with fields they are
    // not.
    if key.len() == field.len() && key.eq_ignore_ascii_case(field) {
        return true;
    }
    if key.is_ascii() && field.is_ascii() {
        return false;
    }
    let fold = |c: char| match c {
        '\u{212A}' => 'k',
        '\u{17F}' => 's',
        c => c.to_ascii_lowercase(),
    };
    key.chars().map(fold).eq(field.chars().map(fold))
}

/// A schema file's name and a node in it.
type Node<'a> = (&'static str, &'a Value);

/// Follows `$ref`s (within a schema and between ours).
fn deref<'a>(schemas: &'a Schemas, (mut file, mut node): Node<'a>) -> Option<Node<'a>> {
    for _ in 0..8 {
        let Some(target) = node.get("$ref").and_then(Value::as_str) else {
            return Some((file, node));
        };
        let (name, pointer) = target.split_once('#').unwrap_or((target, ""));
        let name = if name.is_empty() {
            file
        } else {
            name.strip_prefix(BASE)?
        };
        let (found, root) = schemas.root(name)?;
        file = found;
        node = root.lookup(pointer)?;
    }
    None
}

/// The schema nodes that apply to one value: the node and its `allOf`s.
fn branches<'a>(schemas: &'a Schemas, node: Node<'a>, out: &mut Vec<Node<'a>>) {
    if let Some((file, node)) = deref(schemas, node) {
        out.push((file, node));
        for sub in node
            .get("allOf")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            branches(schemas, (file, sub), out);
        }
    }
}

/// Two keys of one object that Go decodes into the same field.
#[derive(Debug, PartialEq, Eq)]
pub struct Clash {
    /// The field's pointer, with Go's spelling.
    pub pointer: String,
    pub first: String,
    pub second: String,
}

/// What `canonical_keys` did.
#[derive(Debug, Default)]
pub struct Renamed {
    /// Some key was spelled otherwise than its field.
    pub any: bool,
    pub clashes: Vec<Clash>,
}

/// Renames keys of `doc` to the field names Go's decoder would match them
/// to (`"Proxy"` → `"proxy"`, `"cors"` → `"CORS"`) wherever the schema
/// describes a struct (lists `properties`); map keys stay as they are. Of
/// two keys for one field the later wins, as in Go (which would merge two
/// objects; the clash is reported, so that difference never ships).
pub fn canonical_keys(kind: Kind, doc: &mut Value) -> Renamed {
    let mut out = Renamed::default();
    let schemas = schemas();
    let shapes = &schemas.shapes;
    if let Some(&(_, root)) = shapes.roots.iter().find(|(f, _)| *f == kind.file()) {
        canonical(shapes, root, doc, &At::Root, &mut out);
    }
    out
}

/// Where `canonical` is in the document, spelled out as a JSON pointer
/// only for a clash (it walks every object of every definition read).
enum At<'a> {
    Root,
    Member(&'a At<'a>, &'a str),
    Element(&'a At<'a>, usize),
}

impl At<'_> {
    fn pointer(&self) -> String {
        match self {
            At::Root => String::new(),
            At::Member(parent, key) => {
                format!("{}/{}", parent.pointer(), crate::bundle::escape_token(key))
            }
            At::Element(parent, index) => format!("{}/{index}", parent.pointer()),
        }
    }
}

/// What `canonical` needs of the schema nodes a value meets, worked out
/// once when the schemas are built (a cold sync walks every object of
/// 11,000 definitions, and following `$ref`s and `allOf`s and hashing
/// field names with the schema's own maps at each one was 6% of its time).
#[derive(Default)]
struct Shapes {
    all: Vec<Shape>,
    /// Each schema file's root shape.
    roots: Vec<(&'static str, ShapeId)>,
}

/// An index into `Shapes::all`.
type ShapeId = usize;

/// The branches that apply to a value at one schema node: the node and
/// its `allOf`s, `$ref`s followed.
#[derive(Default)]
struct Shape {
    /// The field names of the branches that list `properties`, in their
    /// order: what a key spelled otherwise is folded against.
    names: Vec<String>,
    /// The same, to find a key spelled as its field.
    exact: foldhash::HashSet<String>,
    branches: Vec<Branch>,
}

struct Branch {
    /// The shape of each field (`properties`).
    fields: foldhash::HashMap<String, ShapeId>,
    /// The shape of the other members (`additionalProperties`, an object).
    others: Option<ShapeId>,
    items: Option<ShapeId>,
}

impl Shapes {
    fn build(schemas: &Schemas) -> Shapes {
        let mut shapes = Shapes::default();
        let mut seen = foldhash::HashMap::default();
        for (file, root) in &schemas.roots {
            let id = shapes.shape_of(schemas, (file, root), &mut seen);
            shapes.roots.push((file, id));
        }
        shapes
    }

    /// The shape at `node`, built once per node (`seen`, by address: the
    /// schemas are not moved while this runs); a `$ref` back up meets the
    /// id given before its branches were read.
    fn shape_of(
        &mut self,
        schemas: &Schemas,
        node: Node<'_>,
        seen: &mut foldhash::HashMap<*const Value, ShapeId>,
    ) -> ShapeId {
        if let Some(&id) = seen.get(&std::ptr::from_ref(node.1)) {
            return id;
        }
        let id = self.all.len();
        self.all.push(Shape::default());
        seen.insert(std::ptr::from_ref(node.1), id);
        let mut nodes = Vec::new();
        branches(schemas, node, &mut nodes);
        let mut shape = Shape::default();
        for (file, n) in nodes {
            let mut fields = foldhash::HashMap::default();
            for (name, sub) in n
                .get("properties")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
            {
                shape.names.push(name.clone());
                shape.exact.insert(name.clone());
                fields.insert(name.clone(), self.shape_of(schemas, (file, sub), seen));
            }
            let others = n.get("additionalProperties").filter(|a| a.is_object());
            let branch = Branch {
                fields,
                others: others.map(|a| self.shape_of(schemas, (file, a), seen)),
                items: n
                    .get("items")
                    .map(|i| self.shape_of(schemas, (file, i), seen)),
            };
            shape.branches.push(branch);
        }
        self.all[id] = shape;
        id
    }
}

fn canonical(shapes: &Shapes, id: ShapeId, doc: &mut Value, at: &At<'_>, out: &mut Renamed) {
    let shape = &shapes.all[id];
    match doc {
        Value::Object(map) => {
            // A key spelled as its field is looked up, not compared with
            // each field (the common case, every key of every object).
            let field_of = |key: &str| {
                if shape.exact.contains(key) {
                    None
                } else {
                    shape
                        .names
                        .iter()
                        .find(|f| go_fold_eq(key, f))
                        .map(String::as_str)
                }
            };
            if !shape.names.is_empty() && map.keys().any(|k| field_of(k).is_some()) {
                let mut spelled: Vec<(String, String)> = Vec::new();
                for (key, value) in std::mem::take(map) {
                    let field = field_of(&key).map_or_else(|| key.clone(), str::to_string);
                    if let Some((_, first)) = spelled.iter().find(|(f, _)| *f == field) {
                        out.clashes.push(Clash {
                            pointer: At::Member(at, &field).pointer(),
                            first: first.clone(),
                            second: key.clone(),
                        });
                    }
                    spelled.push((field.clone(), key));
                    map.insert(field, value);
                }
                out.any = true;
            }
            for (key, value) in map.iter_mut() {
                // Only objects (and arrays of them) have keys to match.
                if !(value.is_object() || value.is_array()) {
                    continue;
                }
                let here = At::Member(at, key);
                for branch in &shape.branches {
                    let sub = branch.fields.get(key.as_str()).copied().or(branch.others);
                    if let Some(sub) = sub {
                        canonical(shapes, sub, value, &here, out);
                    }
                }
            }
        }
        Value::Array(items) => {
            for sub in shape.branches.iter().filter_map(|b| b.items) {
                let nested = items.iter_mut().enumerate();
                for (i, item) in nested.filter(|(_, v)| v.is_object() || v.is_array()) {
                    canonical(shapes, sub, item, &At::Element(at, i), out);
                }
            }
        }
        _ => {}
    }
}

/// Whether Go would decode top-level key `key` into a field the schema for
/// `kind` knows.
pub fn is_known_field(kind: Kind, key: &str) -> bool {
    let schemas = schemas();
    let known = &schemas.compiled(kind).known;
    known.contains(key) || known.iter().any(|f| go_fold_eq(key, f))
}

/// Whether Go would decode `key`, inside an `access_rights` entry, into a
/// field of the grant (`api_id`, `versions`, ...).
pub fn is_grant_field(key: &str) -> bool {
    // A few short names, asked for every member of every grant: kept apart
    // from the schemas (which an idle sidecar drops) and read once.
    static FIELDS: LazyLock<Vec<String>> = LazyLock::new(|| {
        source(Kind::Policy.file())
            .as_ref()
            .and_then(|root| {
                root.lookup(
                    "/$defs/policy/properties/access_rights/additionalProperties/properties",
                )
            })
            .and_then(Value::as_object)
            .map(|f| f.keys().cloned().collect())
            .unwrap_or_default()
    });
    FIELDS.iter().any(|name| go_fold_eq(key, name))
}

/// One schema violation: where (JSON pointer) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub pointer: String,
    pub message: String,
}

/// Checks `doc` against its schema. The fast `is_valid` path runs first;
/// errors are collected only for invalid documents.
pub fn violations(kind: Kind, doc: &Value) -> Vec<Violation> {
    let schemas = schemas();
    let Some(validator) = &schemas.compiled(kind).validator else {
        // Unreachable with the schemas we ship (a unit test compiles each);
        // say so rather than pass everything silently.
        return vec![Violation {
            pointer: String::new(),
            message: format!("internal: schema {} does not compile", kind.file()),
        }];
    };
    if validator.is_valid(doc) {
        return Vec::new();
    }
    validator
        .iter_errors(doc)
        .map(|e| Violation {
            pointer: e.instance_path().as_str().to_string(),
            message: without_values(&e.to_string(), e.instance()),
        })
        .collect()
}

/// A violation's message without the values it quotes. The validator's
/// messages start with the offending value (`"s3cr3t" is not of type
/// "object"`), and a rejected definition's values may be secrets (a JWT
/// HMAC secret, upstream credentials) that must not reach the log,
/// `/status` or `state.json`. The finding's file, line and pointer say
/// where the value is; the message says what is wrong with it.
fn without_values(message: &str, instance: &Value) -> String {
    let what = match instance {
        Value::Null => "null",
        Value::Bool(_) => "the boolean",
        Value::Number(_) => "the number",
        Value::String(_) => "the string",
        Value::Array(_) => "the array",
        Value::Object(_) => "the object",
    };
    let shown = instance.to_string();
    let mut message = match message.strip_prefix(&shown) {
        Some(rest) => format!("{what}{rest}"),
        None => message.replace(&shown, what),
    };
    // Whatever else of the value is quoted (items of an array, say).
    let mut strings = Vec::new();
    collect_strings(instance, &mut strings);
    for s in strings {
        let quoted = Value::String(s.to_string()).to_string();
        message = message.replace(&quoted, "\"***\"");
    }
    message
}

fn collect_strings<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::String(s) if !s.is_empty() => out.push(s),
        Value::Array(items) => items.iter().for_each(|v| collect_strings(v, out)),
        Value::Object(map) => map.values().for_each(|v| collect_strings(v, out)),
        _ => {}
    }
}

/// Top-level fields of `doc` that the schema for `kind` does not know.
pub fn unknown_fields(kind: Kind, doc: &Value) -> Vec<String> {
    let schemas = schemas();
    let known = &schemas.compiled(kind).known;
    doc.as_object()
        .map(|m| {
            m.keys()
                .filter(|k| !known.contains(k.as_str()))
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_schema_compiles() {
        for kind in [
            Kind::ApiDefinition,
            Kind::Oas,
            Kind::Mcp,
            Kind::Policy,
            Kind::PoliciesMap,
            Kind::TykIndex,
        ] {
            assert!(schemas().compiled(kind).validator.is_some(), "{kind:?}");
            // The map's fields are policy ids, not known names.
            let has_fields = kind != Kind::PoliciesMap;
            assert_eq!(
                !schemas().compiled(kind).known.is_empty(),
                has_fields,
                "{kind:?}"
            );
        }
    }

    #[test]
    fn released_schemas_are_compiled_again_and_check_the_same() {
        let bad = json!({"api_id": 7, "proxy": {"listen_path": "/a/"}});
        let before = violations(Kind::ApiDefinition, &bad);
        assert!(!before.is_empty());
        let held = schemas();
        release();
        // A check under way keeps what it holds; the next one compiles
        // (other tests of this process may have compiled them already).
        assert!(held.compiled(Kind::ApiDefinition).validator.is_some());
        assert_eq!(violations(Kind::ApiDefinition, &bad), before);
        assert!(is_known_field(Kind::ApiDefinition, "Proxy"));
    }

    #[test]
    fn map_values_use_the_policy_definition() {
        let bad = json!({"p": {"rate": "fast"}});
        let v = violations(Kind::PoliciesMap, &bad);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].pointer, "/p/rate");
        assert!(violations(Kind::PoliciesMap, &json!({"p": {"rate": 1}})).is_empty());
    }

    #[test]
    fn keys_are_matched_as_go_matches_them() {
        assert!(go_fold_eq("Proxy", "proxy"));
        assert!(go_fold_eq("cors", "CORS"));
        assert!(go_fold_eq("\u{212A}ey", "key"));
        assert!(!go_fold_eq("proxy_", "proxy"));
        let mut doc = json!({
            "API_ID": "a",
            "Proxy": {"Listen_Path": "/a/", "target_url": "http://u/"},
            "version_data": {"versions": {"Default": {"Name": "Default"}}},
            "cors": {"enable": true},
            "config_data": {"Keep": "as is"}
        });
        assert!(canonical_keys(Kind::ApiDefinition, &mut doc).any);
        assert_eq!(doc["api_id"], "a");
        assert_eq!(doc["proxy"]["listen_path"], "/a/");
        // Map keys (version names) stay; the struct inside is matched.
        assert_eq!(
            doc["version_data"]["versions"]["Default"]["name"],
            "Default"
        );
        assert!(doc.get("CORS").is_some());
        assert_eq!(doc["config_data"]["Keep"], "as is");
        assert!(violations(Kind::ApiDefinition, &doc).is_empty());

        // Structs in arrays, and behind `$ref`s to arrays of them.
        let mut doc = json!({
            "openid_options": {"Providers": [{"Issuer": "i"}, {"issuer": "j"}]},
            "custom_middleware": {"Pre": [{"Name": "a", "Path": "a.js"}], "auth_check": {"NAME": "c"}}
        });
        assert!(canonical_keys(Kind::ApiDefinition, &mut doc).any);
        assert_eq!(doc["openid_options"]["providers"][0]["issuer"], "i");
        assert_eq!(doc["openid_options"]["providers"][1]["issuer"], "j");
        assert_eq!(doc["custom_middleware"]["pre"][0]["name"], "a");
        assert_eq!(doc["custom_middleware"]["pre"][0]["path"], "a.js");
        assert_eq!(doc["custom_middleware"]["auth_check"]["name"], "c");

        // Policies: the map's keys are ids; the policies inside are structs.
        let mut map = json!({"Gold": {"Rate": 1, "Access_Rights": {"A": {"API_ID": "A"}}}});
        assert!(canonical_keys(Kind::PoliciesMap, &mut map).any);
        assert_eq!(map["Gold"]["access_rights"]["A"]["api_id"], "A");
        let mut same = json!({"id": "x", "rate": 1});
        assert!(!canonical_keys(Kind::Policy, &mut same).any);

        // Two spellings of one field: Go keeps the later, and it is said.
        let mut twice = json!({"proxy": {"listen_path": "/a/", "Listen_Path": "/b/"}});
        let renamed = canonical_keys(Kind::ApiDefinition, &mut twice);
        assert_eq!(twice["proxy"]["listen_path"], "/b/");
        assert_eq!(
            renamed.clashes,
            [Clash {
                pointer: "/proxy/listen_path".into(),
                first: "listen_path".into(),
                second: "Listen_Path".into()
            }]
        );
    }

    #[test]
    fn messages_never_quote_the_offending_value() {
        let doc = json!({
            "api_id": "a", "name": "A", "org_id": "o",
            "proxy": {"listen_path": "/a/", "target_url": "http://x"}, "version_data": {},
            "jwt_source": {"secret": "hmac-s3cr3t-7f2a"},
            "upstream_auth": ["basic:pa55w0rd-91c"],
        });
        let v = violations(Kind::ApiDefinition, &doc);
        assert_eq!(v.len(), 2, "{v:?}");
        for violation in &v {
            assert!(!violation.message.contains("s3cr3t"), "{violation:?}");
            assert!(!violation.message.contains("pa55w0rd"), "{violation:?}");
            assert!(
                violation.message.contains("is not of type"),
                "{violation:?}"
            );
        }
        assert_eq!(
            without_values(r#""x" is not one of ["a","b"]"#, &json!("x")),
            r#"the string is not one of ["a","b"]"#
        );
    }

    #[test]
    fn missing_api_id_is_reported_at_the_root() {
        let doc =
            json!({"proxy": {"listen_path": "/a/", "target_url": "http://x"}, "version_data": {}});
        let v = violations(Kind::ApiDefinition, &doc);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].pointer, "");
        assert!(v[0].message.contains("api_id"));
    }
}
