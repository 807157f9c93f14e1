//! One file, on its own: encoding, depth, syntax, schema and the rules that
//! need nothing but the file. The parsed document is dropped here; what the
//! cross-file rules need is kept as `Facts`. The result depends only on the
//! bytes and the file's role, so it is cached by blob id.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::locate::{depth_exceeded, duplicate_keys, line_col, locate, values_exceeded};
use super::report::{Finding, Severity};
use super::rules;
use super::schema::{self, Kind};
use crate::bundle::{self, MCP_SUFFIX, MiddlewareRef, OAS_SUFFIX};

/// Deepest nesting serde_json accepts: its recursion limit of 128 fails a
/// document on its 128th nested array or object.
pub const MAX_DEPTH: usize = 127;
/// JSON values in one file (see `locate::values_exceeded`). The largest
/// real definitions hold a few thousand; parsed and analysed, a value
/// costs a few hundred bytes, so this bounds one file to tens of MiB.
pub const MAX_VALUES: usize = 200_000;

/// Findings of one kind kept per file: a hostile file with a million wrong
/// values must not cost a million scans of itself.
pub const MAX_FINDINGS_PER_RULE: usize = 20;

/// What a file is in the layout, as far as its analysis is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// A file in `apps/` (or named by `.tyk.json`); the companion suffix
    /// decides which schema applies.
    Api(Companion),
    /// One policy per file (`policies/*.json`).
    Policy,
    /// `{"<id>": {policy}}` (`policies.json` at the config root).
    PoliciesMap,
    /// `.tyk.json`
    Index,
    /// `tyk.conf`: only its syntax is checked.
    TykConf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Companion {
    None,
    Oas,
    Mcp,
}

impl Companion {
    pub fn of(name: &str) -> Companion {
        if name.ends_with(OAS_SUFFIX) {
            Companion::Oas
        } else if name.ends_with(MCP_SUFFIX) {
            Companion::Mcp
        } else {
            Companion::None
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Analysis {
    /// With an empty `file`: the caller fills in the path (one blob may sit
    /// at several paths).
    #[serde(with = "super::persist::findings")]
    pub findings: Vec<Finding>,
    pub facts: Facts,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub enum Facts {
    /// The file did not parse, or has nothing later rules use.
    #[default]
    None,
    Api(ApiFacts),
    Openapi(OasFacts),
    Policy(PolicyFacts),
    PolicyMap(Vec<MapPolicy>),
    Index(IndexFacts),
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ApiFacts {
    pub api_id: Option<String>,
    pub listen_path: Option<String>,
    pub domain: String,
    pub org_id: Option<String>,
    pub is_oas: bool,
    pub is_mcp: bool,
    pub refs: Vec<MiddlewareRef>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct OasFacts {
    pub has_extension: bool,
    /// `x-tyk-api-gateway.info.id` and the listen path, for the pairing hint.
    pub api_id: Option<String>,
    pub listen_path: Option<String>,
    pub refs: Vec<MiddlewareRef>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct PolicyFacts {
    pub id: Option<String>,
    pub org_id: Option<String>,
    /// Every API named in `access_rights` (the key and any differing
    /// `api_id` inside), with the pointer to cite.
    pub rights: Vec<(String, String)>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct MapPolicy {
    pub key: String,
    pub facts: PolicyFacts,
    /// The policy object with `id` set to the key (the key wins in Tyk),
    /// serialised.
    pub json: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct IndexFacts {
    pub files: Vec<IndexItem>,
    pub policies: Vec<IndexItem>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct IndexItem {
    pub file: String,
    /// `api_id` (files) or `id` (policies) as the index states it.
    pub id: Option<String>,
    pub pointer: String,
}

/// Collects findings for one file, with positions resolved from its bytes.
struct Sink<'a> {
    bytes: &'a [u8],
    findings: Vec<Finding>,
}

impl Sink<'_> {
    fn at(
        &mut self,
        rule: &'static str,
        severity: Severity,
        pointer: &str,
        message: String,
    ) -> &mut Finding {
        let (line, column) = line_col(self.bytes, locate(self.bytes, pointer));
        self.findings.push(Finding {
            rule,
            severity,
            file: String::new(),
            line,
            column,
            pointer: Some(pointer.to_string()),
            message,
            hint: None,
        });
        let last = self.findings.len() - 1;
        &mut self.findings[last]
    }

    fn hint(finding: &mut Finding, hint: impl Into<String>) {
        finding.hint = Some(hint.into());
    }

    fn whole(
        &mut self,
        rule: &'static str,
        line: u32,
        column: u32,
        message: String,
        hint: Option<String>,
    ) {
        self.findings.push(Finding {
            rule,
            severity: Severity::Error,
            file: String::new(),
            line,
            column,
            pointer: None,
            message,
            hint,
        });
    }
}

pub fn analyse(role: Role, bytes: &[u8]) -> Analysis {
    let mut sink = Sink {
        bytes,
        findings: Vec::new(),
    };
    let Some(doc) = parse(&mut sink) else {
        return Analysis {
            findings: sink.findings,
            facts: Facts::None,
        };
    };
    let facts = match role {
        Role::Api(companion) => {
            let openapi = doc.get("openapi").is_some() || doc.get("swagger").is_some();
            if openapi || companion != Companion::None {
                let kind = if companion == Companion::Mcp {
                    Kind::Mcp
                } else {
                    Kind::Oas
                };
                schema_findings(&mut sink, kind, &doc);
                Facts::Openapi(oas_facts(&doc))
            } else {
                schema_findings(&mut sink, Kind::ApiDefinition, &doc);
                unknown_findings(&mut sink, Kind::ApiDefinition, &doc, "");
                Facts::Api(api_facts(&mut sink, &doc))
            }
        }
        Role::Policy if looks_like_map(&doc) => {
            let f = sink.at(
                rules::POLICIES_MAP_IN_POLICY_DIR,
                Severity::Warning,
                "",
                "this file holds a map of policies, not one policy: read as a policies map".into(),
            );
            Sink::hint(
                f,
                "under policy_path the gateway reads each file as ONE policy; move the map to policies.json at the config root, or split it into one file per policy",
            );
            map_facts(&mut sink, &doc)
        }
        Role::Policy => {
            schema_findings(&mut sink, Kind::Policy, &doc);
            unknown_findings(&mut sink, Kind::Policy, &doc, "");
            Facts::Policy(policy_facts(&doc, ""))
        }
        Role::PoliciesMap => map_facts(&mut sink, &doc),
        Role::Index => {
            schema_findings(&mut sink, Kind::TykIndex, &doc);
            Facts::Index(index_facts(&doc))
        }
        Role::TykConf => Facts::None,
    };
    Analysis {
        findings: sink.findings,
        facts,
    }
}

/// Encoding, depth and syntax, in that order: each later check assumes the
/// earlier ones passed.
fn parse(sink: &mut Sink<'_>) -> Option<Value> {
    let bytes = sink.bytes;
    if let Err(e) = std::str::from_utf8(bytes) {
        let (line, column) = line_col(bytes, e.valid_up_to());
        sink.whole(
            rules::NOT_UTF8,
            line,
            column,
            format!(
                "not UTF-8: invalid byte sequence at byte {}",
                e.valid_up_to()
            ),
            Some("JSON files must be UTF-8; re-save the file as UTF-8".into()),
        );
        return None;
    }
    if bytes.starts_with(b"\xEF\xBB\xBF") {
        sink.whole(
            rules::JSON_SYNTAX,
            1,
            1,
            "the file starts with a byte order mark".into(),
            Some("the gateway's JSON decoder rejects a BOM; save without it".into()),
        );
        return None;
    }
    if let Some(offset) = depth_exceeded(bytes, MAX_DEPTH) {
        let (line, column) = line_col(bytes, offset);
        sink.whole(
            rules::TOO_DEEP,
            line,
            column,
            format!("JSON nested more than {MAX_DEPTH} levels deep"),
            None,
        );
        return None;
    }
    if let Some(offset) = values_exceeded(bytes, MAX_VALUES) {
        let (line, column) = line_col(bytes, offset);
        sink.whole(
            rules::FILE_TOO_LARGE,
            line,
            column,
            format!("more than {MAX_VALUES} JSON values in one file"),
            Some("no API definition or policy needs that many; split the file".into()),
        );
        return None;
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(doc) => {
            duplicate_key_findings(sink);
            Some(doc)
        }
        Err(e) => {
            let line = u32::try_from(e.line()).unwrap_or(u32::MAX);
            let column = u32::try_from(e.column()).unwrap_or(u32::MAX);
            // serde_json appends " at line L column C"; we report those apart.
            let text = e.to_string();
            let message = text
                .rsplit_once(" at line ")
                .map_or(text.as_str(), |(m, _)| m)
                .to_string();
            sink.whole(
                rules::JSON_SYNTAX,
                line,
                column,
                message,
                Some("the gateway skips a file that does not parse, silently".into()),
            );
            None
        }
    }
}

/// Repeated member names: the parse kept the last value, as the gateway
/// would, so the document is still analysed; the repeat is an error because
/// which value a reader meant is a guess.
fn duplicate_key_findings(sink: &mut Sink<'_>) {
    let bytes = sink.bytes;
    let found = duplicate_keys(bytes, MAX_FINDINGS_PER_RULE + 1);
    for dup in found.iter().take(MAX_FINDINGS_PER_RULE) {
        let (line, column) = line_col(bytes, dup.offset);
        let (first_line, first_column) = line_col(bytes, dup.first);
        sink.findings.push(Finding {
            rule: rules::DUPLICATE_KEY,
            severity: Severity::Error,
            file: String::new(),
            line,
            column,
            pointer: Some(dup.pointer.clone()),
            message: format!(
                "key \"{}\" appears twice in one object (first at line {first_line}, column {first_column})",
                dup.key
            ),
            hint: Some(
                "the gateway keeps the last value without a word; remove the one you did not mean"
                    .into(),
            ),
        });
    }
    if found.len() > MAX_FINDINGS_PER_RULE {
        sink.whole(
            rules::DUPLICATE_KEY,
            1,
            1,
            "more duplicate keys not shown".into(),
            None,
        );
    }
}

fn schema_findings(sink: &mut Sink<'_>, kind: Kind, doc: &Value) {
    let violations = schema::violations(kind, doc);
    let total = violations.len();
    for v in violations.into_iter().take(MAX_FINDINGS_PER_RULE) {
        sink.at(rules::SCHEMA, Severity::Error, &v.pointer, v.message);
    }
    if total > MAX_FINDINGS_PER_RULE {
        sink.at(
            rules::SCHEMA,
            Severity::Error,
            "",
            format!(
                "{} more schema violations not shown",
                total - MAX_FINDINGS_PER_RULE
            ),
        );
    }
}

fn unknown_findings(sink: &mut Sink<'_>, kind: Kind, doc: &Value, prefix: &str) {
    for field in schema::unknown_fields(kind, doc)
        .into_iter()
        .take(MAX_FINDINGS_PER_RULE)
    {
        let pointer = format!("{prefix}/{}", bundle::escape_token(&field));
        sink.at(
            rules::UNKNOWN_FIELD,
            Severity::Warning,
            &pointer,
            format!("unknown field \"{field}\""),
        );
    }
}

fn string(doc: &Value, pointer: &str) -> Option<String> {
    doc.pointer(pointer)
        .and_then(Value::as_str)
        .map(String::from)
}

fn flag(doc: &Value, pointer: &str) -> Option<bool> {
    doc.pointer(pointer).and_then(Value::as_bool)
}

/// Strings the gateway replaces before parsing (secret stores); their real
/// value is unknown here, so they are not judged.
fn is_secret_reference(s: &str) -> bool {
    ["env://", "secrets://", "vault://", "consul://", "$secret_"]
        .iter()
        .any(|p| s.starts_with(p))
}

fn api_facts(sink: &mut Sink<'_>, doc: &Value) -> ApiFacts {
    let listen_path = string(doc, "/proxy/listen_path");
    if let Some(lp) = &listen_path
        && (lp.trim().is_empty() || lp.chars().any(char::is_whitespace))
    {
        let problem = if lp.trim().is_empty() {
            "is empty"
        } else {
            "contains whitespace"
        };
        let f = sink.at(
            rules::INVALID_LISTEN_PATH,
            Severity::Error,
            "/proxy/listen_path",
            format!("listen path {lp:?} {problem}"),
        );
        Sink::hint(
            f,
            "the gateway skips such an API (\"Spec not valid, skipped!\"); use a path like \"/my-api/\"",
        );
    }
    let balanced = flag(doc, "/proxy/enable_load_balancing") == Some(true)
        && doc
            .pointer("/proxy/target_list")
            .and_then(Value::as_array)
            .is_some_and(|l| !l.is_empty());
    let discovered = flag(doc, "/proxy/service_discovery/use_discovery_service") == Some(true);
    if !balanced
        && !discovered
        && let Some(target) = string(doc, "/proxy/target_url")
        && let Err(why) = check_target(&target)
    {
        let f = sink.at(
            rules::INVALID_TARGET_URL,
            Severity::Error,
            "/proxy/target_url",
            // Not the value: a target URL may carry credentials.
            format!("target URL does not parse: {why}"),
        );
        Sink::hint(
            f,
            "use an absolute URL such as \"http://upstream:8080/\", or enable load balancing with a target_list",
        );
    }
    if flag(doc, "/active") == Some(false) {
        let f = sink.at(
            rules::INACTIVE_API,
            Severity::Warning,
            "/active",
            "\"active\": false does not disable an API loaded from files".into(),
        );
        Sink::hint(f, "to take the API down, delete its file");
    }
    ApiFacts {
        api_id: string(doc, "/api_id"),
        listen_path,
        domain: string(doc, "/domain").unwrap_or_default(),
        org_id: string(doc, "/org_id"),
        is_oas: flag(doc, "/is_oas") == Some(true),
        is_mcp: doc.get("application_protocol").and_then(Value::as_str) == Some("mcp"),
        refs: bundle::middleware_refs(doc),
    }
}

fn check_target(target: &str) -> Result<(), String> {
    if is_secret_reference(target) {
        return Ok(());
    }
    if target.trim().is_empty() {
        return Err("it is empty".into());
    }
    if target.trim() != target || target.chars().any(char::is_control) {
        return Err("it has leading/trailing whitespace or control characters".into());
    }
    let url = url::Url::parse(target).map_err(|e| e.to_string())?;
    if url.host_str().is_none_or(str::is_empty) {
        return Err("it has no host".into());
    }
    Ok(())
}

fn oas_facts(doc: &Value) -> OasFacts {
    let ext = doc.get("x-tyk-api-gateway");
    OasFacts {
        has_extension: ext.is_some_and(Value::is_object),
        api_id: ext.and_then(|e| string(e, "/info/id")),
        listen_path: ext.and_then(|e| string(e, "/server/listenPath/value")),
        refs: bundle::middleware_refs(doc),
    }
}

/// A `policies/*.json` holding `{"<id>": {policy}, ...}` instead of one
/// policy: no policy field at the top, and every value an object.
fn looks_like_map(doc: &Value) -> bool {
    let Some(map) = doc.as_object() else {
        return false;
    };
    !map.is_empty()
        && map.values().all(Value::is_object)
        && schema::unknown_fields(Kind::Policy, doc).len() == map.len()
}

fn policy_facts(doc: &Value, prefix: &str) -> PolicyFacts {
    let mut rights = Vec::new();
    let access = doc.get("access_rights").and_then(Value::as_object);
    for (key, right) in access.into_iter().flatten() {
        let at = format!("{prefix}/access_rights/{}", bundle::escape_token(key));
        rights.push((key.clone(), at.clone()));
        if let Some(inner) = right.get("api_id").and_then(Value::as_str)
            && !inner.is_empty()
            && inner != key
        {
            rights.push((inner.to_string(), format!("{at}/api_id")));
        }
    }
    PolicyFacts {
        id: string(doc, "/id"),
        org_id: string(doc, "/org_id"),
        rights,
    }
}

fn map_facts(sink: &mut Sink<'_>, doc: &Value) -> Facts {
    schema_findings(sink, Kind::PoliciesMap, doc);
    let Some(map) = doc.as_object() else {
        return Facts::None;
    };
    let mut out = Vec::with_capacity(map.len());
    for (key, policy) in map {
        let prefix = format!("/{}", bundle::escape_token(key));
        unknown_findings(sink, Kind::Policy, policy, &prefix);
        let mut facts = policy_facts(policy, &prefix);
        facts.id = Some(key.clone());
        let mut policy = policy.clone();
        if let Some(obj) = policy.as_object_mut() {
            obj.insert("id".into(), Value::String(key.clone()));
        }
        out.push(MapPolicy {
            key: key.clone(),
            facts,
            // Serialising a Value cannot fail (its keys are strings).
            json: serde_json::to_string_pretty(&policy).unwrap_or_default(),
        });
    }
    Facts::PolicyMap(out)
}

fn index_facts(doc: &Value) -> IndexFacts {
    let items = |list: &str, id_field: &str| -> Vec<IndexItem> {
        let entries = doc.get(list).and_then(Value::as_array);
        entries
            .into_iter()
            .flatten()
            .enumerate()
            .filter_map(|(i, e)| {
                Some(IndexItem {
                    file: e.get("file")?.as_str()?.to_string(),
                    id: string(e, &format!("/{id_field}")).filter(|s| !s.is_empty()),
                    pointer: format!("/{list}/{i}/file"),
                })
            })
            .collect()
    };
    IndexFacts {
        files: items("files", "api_id"),
        policies: items("policies", "id"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules_of(a: &Analysis) -> Vec<&'static str> {
        a.findings.iter().map(|f| f.rule).collect()
    }

    #[test]
    fn serde_json_recursion_limit_is_never_reached() {
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(serde_json::from_str::<Value>(&ok).is_ok());
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert!(serde_json::from_str::<Value>(&deep).is_err());
        assert_eq!(
            rules_of(&analyse(Role::Policy, deep.as_bytes())),
            ["too-deep"]
        );
    }

    #[test]
    fn syntax_error_has_line_and_column() {
        let a = analyse(Role::Api(Companion::None), b"{\n  \"api_id\": \"x\",\n}");
        assert_eq!(rules_of(&a), ["json-syntax"]);
        assert_eq!((a.findings[0].line, a.findings[0].column), (3, 1));
        assert!(!a.findings[0].message.contains(" at line "));
    }

    #[test]
    fn target_urls() {
        assert!(check_target("http://upstream:8080/").is_ok());
        assert!(check_target("tyk://self/x").is_ok());
        assert!(check_target("env://UPSTREAM").is_ok());
        assert!(check_target("httpbin.org").is_err());
        assert!(check_target("http://").is_err());
        assert!(check_target("http://a b/").is_err());
        assert!(check_target("").is_err());
    }

    #[test]
    fn policies_map_in_policy_dir_is_read_as_a_map() {
        let a = analyse(
            Role::Policy,
            br#"{"gold": {"rate": 1, "access_rights": {}}}"#,
        );
        assert_eq!(rules_of(&a), ["policies-map-in-policy-dir"]);
        let Facts::PolicyMap(entries) = a.facts else {
            panic!("not a map")
        };
        assert_eq!(entries[0].key, "gold");
        let v: Value = serde_json::from_str(&entries[0].json).unwrap();
        assert_eq!(v["id"], "gold");
    }
}
