//! One file, on its own: encoding, depth, syntax, schema and the rules that
//! need nothing but the file. The parsed document is dropped here; what the
//! cross-file rules need is kept as `Facts`. The result depends only on the
//! bytes and the file's role, so it is cached by blob id.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ids;
use super::locate::{duplicate_keys, line_col, locate, members, structure};
use super::report::{Finding, Severity};
use super::schema::{self, Kind};
use super::target::{self, Verdict};
use crate::bundle::{self, MCP_SUFFIX, MiddlewareRef, OAS_SUFFIX};
use crate::json::Lookup;

/// Deepest nesting serde_json accepts: its recursion limit of 128 fails a
/// document on its 128th nested array or object.
pub const MAX_DEPTH: usize = 127;
/// JSON values in one file (see `locate::structure`). The largest
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
    /// Some keys differ from the field names in case only (`"Proxy"`): the
    /// gateway reads them, but the revision writer looks for exact names.
    pub renamed: bool,
    /// Policy ids the definition names (JWT defaults and scope mappings,
    /// OpenID Connect clients), with the pointer to cite, for the auth
    /// methods it has switched on.
    pub policy_refs: Vec<PolicyRef>,
    /// The file's size when nothing before the analysis could change it,
    /// wherever it sits: no `$` (variables), no export or policy markers,
    /// no Tyk OAS extension. With no `refs` and not `renamed` either, the
    /// revision takes it byte for byte, so a later commit holding the same
    /// blob need not read it (`Cache::reading`).
    #[serde(default)]
    pub standalone: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PolicyRef {
    pub id: String,
    pub pointer: String,
    /// The setting, as a user would name it.
    pub setting: String,
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
    /// Where the policy's JSON value ends when something follows it (that
    /// rest is never read by the gateway, and must not reach the revision's
    /// policies.json, where it would break the map).
    pub value_end: Option<usize>,
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

    fn warn_at_offset(&mut self, rule: &'static str, offset: usize, message: String, hint: &str) {
        let (line, column) = line_col(self.bytes, offset);
        self.findings.push(Finding {
            rule,
            severity: Severity::Warning,
            file: String::new(),
            line,
            column,
            pointer: None,
            message,
            hint: Some(hint.into()),
        });
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
    let (parsed, value_end) = match role {
        Role::Policy | Role::PoliciesMap => parse_first_value(&mut sink),
        _ => (parse(&mut sink), None),
    };
    let Some(mut doc) = parsed else {
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
                let renamed = canonical_keys(&mut sink, Kind::ApiDefinition, &mut doc);
                schema_findings(&mut sink, Kind::ApiDefinition, &doc);
                unknown_findings(&mut sink, Kind::ApiDefinition, &doc, "");
                misplaced_findings(&mut sink, &doc);
                Facts::Api(ApiFacts {
                    renamed,
                    standalone: standalone(bytes),
                    ..api_facts(&mut sink, &doc)
                })
            }
        }
        Role::Policy if looks_like_map(&doc) => {
            let f = sink.at(
                ids::POLICIES_MAP_IN_POLICY_DIR,
                Severity::Warning,
                "",
                "this file holds a map of policies, not one policy: read as a policies map".into(),
            );
            Sink::hint(
                f,
                "under policy_path the gateway reads each file as ONE policy; move the map to policies.json at the config root, or split it into one file per policy",
            );
            map_facts(&mut sink, doc)
        }
        Role::Policy => {
            canonical_keys(&mut sink, Kind::Policy, &mut doc);
            schema_findings(&mut sink, Kind::Policy, &doc);
            unknown_findings(&mut sink, Kind::Policy, &doc, "");
            Facts::Policy(PolicyFacts {
                value_end,
                ..policy_facts(&mut sink, &doc, "")
            })
        }
        Role::PoliciesMap => map_facts(&mut sink, doc),
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

/// Policy files (both `policy_path` files and the `policy_record_name` map)
/// are read with Go's streaming decoder: the first JSON value counts and
/// whatever follows it is never read. That rest is a warning, not a syntax
/// error; the first value gets every check `parse` makes.
/// Returns the value and, when something follows it, where it ends.
fn parse_first_value(sink: &mut Sink<'_>) -> (Option<Value>, Option<usize>) {
    let bytes = sink.bytes;
    // Only where the first value ends: skimmed, not built (the strict
    // parse below builds it, and reports any error in it).
    let mut stream =
        serde_json::Deserializer::from_slice(bytes).into_iter::<serde::de::IgnoredAny>();
    let end = match stream.next() {
        Some(Ok(_)) => stream.byte_offset(),
        // An error in the first value: the strict parse reports it.
        _ => return (parse(sink), None),
    };
    let Some(rest) = bytes[end..].iter().position(|b| !b" \t\r\n".contains(b)) else {
        return (parse(sink), None);
    };
    let mut first = Sink {
        bytes: &bytes[..end],
        findings: Vec::new(),
    };
    let doc = parse(&mut first);
    sink.findings.append(&mut first.findings);
    sink.warn_at_offset(
        ids::TRAILING_CONTENT,
        end + rest,
        "the gateway reads a policy file up to the end of its first JSON value and ignores everything from here on".into(),
        "delete the rest, or, if it is another policy, give it its own file under policies/ (or an entry in the policies.json map)",
    );
    (doc, Some(end))
}

/// Encoding, depth and syntax, in that order: each later check assumes the
/// earlier ones passed.
fn parse(sink: &mut Sink<'_>) -> Option<Value> {
    let bytes = sink.bytes;
    if let Err(e) = std::str::from_utf8(bytes) {
        let (line, column) = line_col(bytes, e.valid_up_to());
        sink.whole(
            ids::NOT_UTF8,
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
            ids::JSON_SYNTAX,
            1,
            1,
            "the file starts with a byte order mark".into(),
            Some("the gateway's JSON decoder rejects a BOM; save without it".into()),
        );
        return None;
    }
    let shape = structure(bytes, MAX_DEPTH, MAX_VALUES);
    if let Some(offset) = shape.too_deep {
        let (line, column) = line_col(bytes, offset);
        sink.whole(
            ids::TOO_DEEP,
            line,
            column,
            format!("JSON nested more than {MAX_DEPTH} levels deep"),
            None,
        );
        return None;
    }
    if let Some(offset) = shape.too_many {
        let (line, column) = line_col(bytes, offset);
        sink.whole(
            ids::FILE_TOO_LARGE,
            line,
            column,
            format!("more than {MAX_VALUES} JSON values in one file"),
            Some("no API definition or policy needs that many; split the file".into()),
        );
        return None;
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(doc) => {
            // Every member the source spells out is in the tree: no name
            // repeats in any object, and the byte scan for one is spared.
            if members(&doc) != shape.members {
                duplicate_key_findings(sink);
            }
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
                ids::JSON_SYNTAX,
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
            rule: ids::DUPLICATE_KEY,
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
            ids::DUPLICATE_KEY,
            1,
            1,
            "more duplicate keys not shown".into(),
            None,
        );
    }
}

/// Keys spelled as Go's field names (`schema::canonical_keys`); two keys
/// for one field are a duplicate, as two same-named keys are. Returns
/// whether any key was renamed.
fn canonical_keys(sink: &mut Sink<'_>, kind: Kind, doc: &mut Value) -> bool {
    let renamed = schema::canonical_keys(kind, doc);
    for clash in renamed.clashes.iter().take(MAX_FINDINGS_PER_RULE) {
        let f = sink.at(
            ids::DUPLICATE_KEY,
            Severity::Error,
            &clash.pointer,
            format!(
                "keys \"{}\" and \"{}\" set the same field (Go matches keys case-insensitively)",
                clash.first, clash.second
            ),
        );
        Sink::hint(
            f,
            "the gateway keeps the last value without a word; remove the one you did not mean",
        );
    }
    renamed.any
}

fn schema_findings(sink: &mut Sink<'_>, kind: Kind, doc: &Value) {
    let violations = schema::violations(kind, doc);
    let total = violations.len();
    for v in violations.into_iter().take(MAX_FINDINGS_PER_RULE) {
        sink.at(ids::SCHEMA, Severity::Error, &v.pointer, v.message);
    }
    if total > MAX_FINDINGS_PER_RULE {
        sink.at(
            ids::SCHEMA,
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
    let unknown = schema::unknown_fields(kind, doc)
        .into_iter()
        .filter(|f| kind != Kind::ApiDefinition || home_of(f).is_none());
    for field in unknown.take(MAX_FINDINGS_PER_RULE) {
        let pointer = format!("{prefix}/{}", bundle::escape_token(&field));
        sink.at(
            ids::UNKNOWN_FIELD,
            Severity::Warning,
            &pointer,
            format!("unknown field \"{field}\""),
        );
    }
}

fn string(doc: &Value, pointer: &str) -> Option<String> {
    doc.lookup(pointer)
        .and_then(Value::as_str)
        .map(String::from)
}

fn flag(doc: &Value, pointer: &str) -> Option<bool> {
    doc.lookup(pointer).and_then(Value::as_bool)
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
    // Without a proxy object at all, the schema says so.
    if let Some(problem) = listen_path_problem(doc)
        && doc.get("proxy").is_some_and(Value::is_object)
    {
        let lp = listen_path.as_deref().unwrap_or_default();
        let at = if doc.lookup("/proxy/listen_path").is_some() {
            "/proxy/listen_path"
        } else {
            "/proxy"
        };
        let f = sink.at(
            ids::INVALID_LISTEN_PATH,
            Severity::Error,
            at,
            format!("listen path {lp:?} {problem}"),
        );
        Sink::hint(
            f,
            "the gateway skips such an API (\"Spec not valid, skipped!\"); use a path like \"/my-api/\"",
        );
    }
    target_findings(sink, doc);
    if flag(doc, "/active") == Some(false) {
        let f = sink.at(
            ids::INACTIVE_API,
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
        policy_refs: policy_refs(doc),
        renamed: false,
        standalone: None,
    }
}

/// See `ApiFacts::standalone`.
fn standalone(bytes: &[u8]) -> Option<u64> {
    super::markers::untouched(bytes).then_some(bytes.len() as u64)
}

/// `proxy.target_url` as the gateway treats it (see `target.rs`): what
/// Go's `url.Parse` rejects skips the API (an error); a target it loads but
/// cannot send a request to is a warning, and only when the API's requests
/// go to it at all.
fn target_findings(sink: &mut Sink<'_>, doc: &Value) {
    const POINTER: &str = "/proxy/target_url";
    let value = doc.lookup(POINTER);
    let target = value.and_then(Value::as_str).unwrap_or_default();
    if is_secret_reference(target) {
        return;
    }
    // Where a target is absent, cite the proxy object (or the root).
    let at = if value.is_some() {
        POINTER
    } else if doc.get("proxy").is_some() {
        "/proxy"
    } else {
        ""
    };
    // Quoted with any credentials masked: a target URL may carry them, in
    // its user info or its query.
    let mut shown = crate::redact::redact_url(target);
    if let Some(q) = shown.find('?') {
        shown.replace_range(q + 1.., "***");
    }
    let reason = match target::judge(target) {
        Verdict::Fine => return,
        Verdict::Skipped(why) => {
            let hint = if why.starts_with("first path segment") {
                format!("add the scheme: \"http://{shown}\"")
            } else if why.contains("in host name") && target.contains('{') {
                "replace the {placeholder} with the real host before committing".into()
            } else {
                "write an absolute URL such as \"http://upstream:8080/\"".into()
            };
            let f = sink.at(
                ids::INVALID_TARGET_URL,
                Severity::Error,
                at,
                format!(
                    "target URL {shown:?} does not parse ({why}): the gateway skips this API (\"couldn't parse target URL\", \"Spec not valid, skipped!\")"
                ),
            );
            Sink::hint(f, hint);
            return;
        }
        Verdict::Unusable(reason) => reason,
    };
    let http = is_http(doc);
    let graphql_engine = flag(doc, "/graphql/enabled") == Some(true)
        && matches!(
            doc.lookup("/graphql/execution_mode")
                .and_then(Value::as_str),
            Some("executionEngine" | "supergraph")
        );
    let balanced = flag(doc, "/proxy/enable_load_balancing") == Some(true)
        && doc
            .lookup("/proxy/target_list")
            .and_then(Value::as_array)
            .is_some_and(|l| !l.is_empty());
    let discovered = flag(doc, "/proxy/service_discovery/use_discovery_service") == Some(true);
    let versioned = flag(doc, "/version_data/not_versioned") != Some(true)
        && doc
            .lookup("/version_data/versions")
            .and_then(Value::as_object)
            .is_some_and(|v| {
                v.values().any(|v| {
                    v.get("override_target")
                        .and_then(Value::as_str)
                        .is_some_and(|t| !t.is_empty())
                })
            });
    // A Tyk OAS API may take its upstream from the OpenAPI document.
    let oas = flag(doc, "/is_oas") == Some(true) && target.is_empty();
    // Without a usable listen path the API is skipped anyway (said apart).
    let routed = listen_path_problem(doc).is_none();
    if !http || !routed || graphql_engine || balanced || discovered || versioned || oas {
        return;
    }
    let f = sink.at(
        ids::UNUSABLE_TARGET_URL,
        Severity::Warning,
        at,
        format!("target URL {shown:?} {reason}"),
    );
    Sink::hint(
        f,
        "set proxy.target_url to the upstream's absolute URL, such as \"http://upstream:8080/\"",
    );
}

/// HTTP APIs (the default protocol); TCP and TLS APIs have no listen path
/// and their own kind of target.
fn is_http(doc: &Value) -> bool {
    matches!(
        doc.get("protocol")
            .and_then(Value::as_str)
            .unwrap_or_default(),
        "" | "http" | "https"
    )
}

/// Why the gateway would skip an HTTP API for its listen path: it checks
/// for an empty path and for a space, nothing else.
fn listen_path_problem(doc: &Value) -> Option<&'static str> {
    if !is_http(doc) {
        return None;
    }
    match doc.lookup("/proxy/listen_path").and_then(Value::as_str) {
        None | Some("") => Some("is empty"),
        Some(lp) if lp.contains(' ') => Some("contains a space"),
        Some(_) => None,
    }
}

/// Policy ids the definition names for an auth method it has switched on
/// (a reference an unused method keeps does no harm).
fn policy_refs(doc: &Value) -> Vec<PolicyRef> {
    let mut out = Vec::new();
    let mut add = |id: &Value, pointer: String, setting: &str| {
        if let Some(id) = id.as_str().filter(|id| !id.is_empty()) {
            out.push(PolicyRef {
                id: id.to_string(),
                pointer,
                setting: setting.to_string(),
            });
        }
    };
    let map_values = |pointer: &str| -> Vec<(String, &Value)> {
        doc.lookup(pointer)
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .map(|(k, v)| (format!("{pointer}/{}", bundle::escape_token(k)), v))
            .collect()
    };
    // A keyless API runs no auth middleware at all.
    let keyless = flag(doc, "/use_keyless") == Some(true);
    if !keyless && flag(doc, "/enable_jwt") == Some(true) {
        let defaults = doc.get("jwt_default_policies").and_then(Value::as_array);
        for (i, id) in defaults.into_iter().flatten().enumerate() {
            add(
                id,
                format!("/jwt_default_policies/{i}"),
                "jwt_default_policies",
            );
        }
        for (pointer, id) in map_values("/jwt_scope_to_policy_mapping") {
            add(id, pointer, "jwt_scope_to_policy_mapping");
        }
        for (pointer, id) in map_values("/scopes/jwt/scope_to_policy") {
            add(id, pointer, "scopes.jwt.scope_to_policy");
        }
    }
    if !keyless && flag(doc, "/use_openid") == Some(true) {
        let providers = doc
            .lookup("/openid_options/providers")
            .and_then(Value::as_array);
        for (i, _) in providers.into_iter().flatten().enumerate() {
            for (pointer, id) in map_values(&format!("/openid_options/providers/{i}/client_ids")) {
                add(id, pointer, "openid_options.providers[].client_ids");
            }
        }
        for (pointer, id) in map_values("/scopes/oidc/scope_to_policy") {
            add(id, pointer, "scopes.oidc.scope_to_policy");
        }
    }
    out
}

/// Where a field found at the top level of a definition (or directly in
/// `version_data`) really belongs; Go's decoder drops it where it is.
fn home_of(key: &str) -> Option<&'static str> {
    const HOMES: [(&str, &str); 22] = [
        ("listen_path", "proxy"),
        ("target_url", "proxy"),
        ("strip_listen_path", "proxy"),
        ("disable_strip_slash", "proxy"),
        ("preserve_host_header", "proxy"),
        ("enable_load_balancing", "proxy"),
        ("target_list", "proxy"),
        ("service_discovery", "proxy"),
        ("check_host_against_uptime_tests", "proxy"),
        ("extended_paths", VERSION),
        ("use_extended_paths", VERSION),
        ("global_headers", VERSION),
        ("global_headers_remove", VERSION),
        ("global_response_headers", VERSION),
        ("global_size_limit", VERSION),
        ("override_target", VERSION),
        ("not_versioned", "version_data"),
        ("default_version", "version_data"),
        ("driver", "custom_middleware"),
        ("post_key_auth", "custom_middleware"),
        ("auth_check", "custom_middleware"),
        ("id_extractor", "custom_middleware"),
    ];
    // Asked of every top-level key of every definition: an ASCII key
    // (nearly all) is compared as ASCII, its length first.
    let ascii = key.is_ascii();
    HOMES
        .iter()
        .find(|(field, _)| match ascii {
            true => key.eq_ignore_ascii_case(field),
            false => schema::go_fold_eq(key, field),
        })
        .map(|(_, home)| *home)
}

const VERSION: &str = "version_data.versions.<version>";

/// Known fields in the wrong place: the gateway loads the definition
/// without them, silently.
fn misplaced_findings(sink: &mut Sink<'_>, doc: &Value) {
    let versions: Vec<&String> = doc
        .lookup("/version_data/versions")
        .and_then(Value::as_object)
        .map(|v| v.keys().collect())
        .unwrap_or_default();
    let version_path = match versions.as_slice() {
        [one] => format!("version_data.versions.{one}"),
        _ => VERSION.to_string(),
    };
    let places = [
        ("", doc),
        (
            "/version_data",
            doc.lookup("/version_data").unwrap_or(&Value::Null),
        ),
    ];
    let mut count = 0;
    for (prefix, object) in places {
        let Some(object) = object.as_object() else {
            continue;
        };
        for key in object.keys() {
            let Some(home) = home_of(key) else { continue };
            // Directly in version_data only the per-version fields are lost.
            if !prefix.is_empty() && home != VERSION {
                continue;
            }
            let home = if home == VERSION {
                version_path.as_str()
            } else {
                home
            };
            count += 1;
            if count > MAX_FINDINGS_PER_RULE {
                return;
            }
            let place = if prefix.is_empty() {
                "the top level"
            } else {
                "version_data"
            };
            let f = sink.at(
                ids::MISPLACED_FIELD,
                Severity::Warning,
                &format!("{prefix}/{}", bundle::escape_token(key)),
                format!("\"{key}\" at {place} is ignored by the gateway: it belongs under {home}"),
            );
            Sink::hint(f, format!("move \"{key}\" into {home}"));
        }
    }
}

/// A definition with its keys spelled as the gateway's field names, for
/// the revision (whose middleware paths are rewritten by exact name). `None`
/// when the bytes do not parse (they were analysed, so they do).
pub fn canonical_definition(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut doc: Value = serde_json::from_slice(bytes).ok()?;
    // Clashes were reported (as duplicate-key errors) by the analysis.
    let _ = schema::canonical_keys(Kind::ApiDefinition, &mut doc);
    serde_json::to_vec_pretty(&doc).ok()
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
        && !map.keys().any(|k| schema::is_known_field(Kind::Policy, k))
}

/// Whether an object has any field Go would decode into a policy.
fn has_policy_fields(value: &Value) -> bool {
    value
        .as_object()
        .is_some_and(|m| m.keys().any(|k| schema::is_known_field(Kind::Policy, k)))
}

fn policy_facts(sink: &mut Sink<'_>, doc: &Value, prefix: &str) -> PolicyFacts {
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
        nested_grant_findings(sink, doc, key, right, &at);
    }
    PolicyFacts {
        id: string(doc, "/id"),
        org_id: string(doc, "/org_id"),
        rights,
        value_end: None,
    }
}

/// A brace closed too late puts grants inside another grant: Go's decoder
/// drops the unknown members, so the inner APIs are never granted.
fn nested_grant_findings(sink: &mut Sink<'_>, policy: &Value, key: &str, right: &Value, at: &str) {
    let Some(members) = right.as_object() else {
        return;
    };
    let id = policy.get("id").and_then(Value::as_str).unwrap_or_default();
    for (inner_key, inner) in members {
        let grant = !schema::is_grant_field(inner_key)
            && inner
                .as_object()
                .is_some_and(|m| m.keys().any(|k| schema::is_grant_field(k)));
        if !grant {
            continue;
        }
        let api = inner
            .get("api_id")
            .and_then(Value::as_str)
            .filter(|a| !a.is_empty())
            .unwrap_or(inner_key);
        let policy = if id.is_empty() {
            String::new()
        } else {
            format!("policy {id:?} ")
        };
        let f = sink.at(
            ids::NESTED_ACCESS_RIGHTS,
            Severity::Error,
            &format!("{at}/{}", bundle::escape_token(inner_key)),
            format!(
                "the grant for API {api:?} sits inside the grant for {key:?} (a misplaced brace?): the gateway ignores it, so {policy}does not grant {api:?}"
            ),
        );
        Sink::hint(
            f,
            format!(
                "close the {key:?} entry before {inner_key:?}: grants sit side by side directly under access_rights"
            ),
        );
    }
}

fn map_facts(sink: &mut Sink<'_>, mut doc: Value) -> Facts {
    if doc.is_object() && is_one_policy(&doc) {
        return one_policy_as_map(sink, doc);
    }
    canonical_keys(sink, Kind::PoliciesMap, &mut doc);
    schema_findings(sink, Kind::PoliciesMap, &doc);
    let Some(map) = doc.as_object() else {
        return Facts::None;
    };
    let mut out = Vec::with_capacity(map.len());
    for (key, policy) in map {
        let prefix = format!("/{}", bundle::escape_token(key));
        if wrapped_policies_finding(sink, key, policy, &prefix) {
            // Loaded as an empty policy named `key`; its contents are lost.
            out.push(MapPolicy {
                key: key.clone(),
                facts: PolicyFacts {
                    id: Some(key.clone()),
                    ..PolicyFacts::default()
                },
                json: serde_json::json!({ "id": key }).to_string(),
            });
            continue;
        }
        unknown_findings(sink, Kind::Policy, policy, &prefix);
        let mut facts = policy_facts(sink, policy, &prefix);
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

/// `{"policies": {"a": {policy}, "b": {policy}}}`: the map's value is not a
/// policy but a map of them. Go decodes it as one empty policy named
/// `policies` and every real one is lost.
fn wrapped_policies_finding(sink: &mut Sink<'_>, key: &str, value: &Value, at: &str) -> bool {
    let Some(inner) = value.as_object() else {
        return false;
    };
    let wrapped = !inner.is_empty()
        && !has_policy_fields(value)
        && inner.values().all(Value::is_object)
        && inner.values().any(has_policy_fields);
    if !wrapped {
        return false;
    }
    let names: Vec<String> = inner.keys().take(5).map(|k| format!("{k:?}")).collect();
    let more = if inner.len() > names.len() {
        ", ..."
    } else {
        ""
    };
    let f = sink.at(
        ids::WRAPPED_POLICIES_MAP,
        Severity::Error,
        at,
        format!(
            "{key:?} holds {} instead of being one: the gateway loads a single empty policy named {key:?} and none of {}{more}",
            match inner.len() {
                1 => "a policy".to_string(),
                n => format!("{n} policies"),
            },
            names.join(", ")
        ),
    );
    Sink::hint(
        f,
        format!(
            "remove the {key:?} wrapper: the file itself must be the map {{\"<policy id>\": {{policy}}, ...}}"
        ),
    );
    true
}

/// A `policies.json` that is one policy (`{"id": ..., "access_rights": ...}`)
/// rather than a map of them: a policy field at the top with a value that
/// cannot be a policy, or `access_rights` (whose value would become a
/// policy named "access_rights").
fn is_one_policy(doc: &Value) -> bool {
    let Some(map) = doc.as_object() else {
        return false;
    };
    let fields: Vec<(&String, &Value)> = map
        .iter()
        .filter(|(k, _)| schema::is_known_field(Kind::Policy, k))
        .collect();
    fields
        .iter()
        .any(|(k, _)| schema::go_fold_eq(k, "access_rights"))
        || (fields.len() >= 2 && fields.iter().any(|(_, v)| !v.is_object() && !v.is_null()))
}

/// Said once (instead of one schema error per field), with the fix; the
/// facts are those of the policy the user meant, so that other rules judge
/// the rest of the bundle as if it were fixed.
fn one_policy_as_map(sink: &mut Sink<'_>, mut doc: Value) -> Facts {
    canonical_keys(sink, Kind::Policy, &mut doc);
    let id = string(&doc, "/id").filter(|id| !id.is_empty());
    let aborts = doc
        .as_object()
        .is_some_and(|m| m.values().any(|v| !v.is_object() && !v.is_null()));
    let effect = if aborts {
        "decoding it as a map fails, and the gateway aborts the whole reload (APIs included)"
    } else {
        "the gateway loads each of its fields as a policy named after the field, and this policy not at all"
    };
    let f = sink.at(
        ids::POLICIES_MAP_IS_A_POLICY,
        Severity::Error,
        "",
        format!("this file is one policy, but the gateway reads it as a map {{\"<policy id>\": {{policy}}, ...}}: {effect}"),
    );
    let name = id.clone().unwrap_or_else(|| "<id>".into());
    Sink::hint(
        f,
        format!(
            "move it to policies/{name}.json (one policy per file), or wrap it: {{\"{name}\": {{ ...this policy... }}}}"
        ),
    );
    let mut facts = policy_facts(sink, &doc, "");
    facts.id = id.clone();
    match id {
        Some(key) => Facts::PolicyMap(vec![MapPolicy {
            key,
            facts,
            json: serde_json::to_string_pretty(&doc).unwrap_or_default(),
        }]),
        None => Facts::None,
    }
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
