//! Our JSON Schemas (`schemas/*.json`), embedded in the binary and compiled
//! once per process. They constrain what the gateway relies on and leave
//! unknown fields alone; the known top-level fields double as the list
//! `--strict` checks unknown fields against.

use std::collections::HashSet;
use std::sync::LazyLock;

use jsonschema::{Retrieve, Uri, Validator};
use serde_json::Value;

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
        schema.pointer("/$defs/policy/properties")
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

static COMPILED: LazyLock<[Compiled; 6]> = LazyLock::new(|| {
    [
        compile(Kind::ApiDefinition),
        compile(Kind::Oas),
        compile(Kind::Mcp),
        compile(Kind::Policy),
        compile(Kind::PoliciesMap),
        compile(Kind::TykIndex),
    ]
});

fn compiled(kind: Kind) -> &'static Compiled {
    let i = match kind {
        Kind::ApiDefinition => 0,
        Kind::Oas => 1,
        Kind::Mcp => 2,
        Kind::Policy => 3,
        Kind::PoliciesMap => 4,
        Kind::TykIndex => 5,
    };
    &COMPILED[i]
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
    let Some(validator) = &compiled(kind).validator else {
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
    let known = &compiled(kind).known;
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
            assert!(compiled(kind).validator.is_some(), "{kind:?}");
            // The map's fields are policy ids, not known names.
            let has_fields = kind != Kind::PoliciesMap;
            assert_eq!(!compiled(kind).known.is_empty(), has_fields, "{kind:?}");
        }
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
