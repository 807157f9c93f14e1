//! A Tyk OAS document kept alone (an OpenAPI 3 document with the
//! `x-tyk-api-gateway` extension, what `POST /tyk/apis/oas` imports) becomes
//! the pair file mode needs, before anything else looks at the tree:
//! `<stem>.json`, a classic definition with `"is_oas": true` derived from the
//! extension (the gateway routes and authenticates on it), and
//! `<stem>-oas.json`, the document as written.
//!
//! A document named `<stem>.json` moves to `<stem>-oas.json`; one already
//! named `<stem>-oas.json` in `apps/` stays and gets its classic half beside
//! it. Nothing is derived when a name is taken, when the extension has no
//! `info.id`, or for a document without the extension: `bare-oas` (in
//! `rules.rs`) says what to add. Findings on the derived classic half are
//! moved back into the user's document (`Pairs::remap`): to the value the
//! field came from, else to the `x-tyk-api-gateway` key.
//!
//! # Fields derived, as the gateway derives them on import
//! Read in TykTechnologies/tyk (the newest versions the code search holds,
//! 2026; not the v5.8.15/v5.14.0 tags): `gateway/api.go`
//! `handleAddApi` (OAS endpoint) calls `(*OAS).ExtractTo`, which runs
//! `(*XTykAPIGateway).ExtractTo` (`apidef/oas/root.go`) and then
//! `(*OAS).extractSecurityTo` (`security.go`). A field Go would leave at its
//! zero value is left out: Go decodes a missing field as its zero value, so
//! the gateway reads the same definition.
//!
//! | classic field | from `x-tyk-api-gateway` | Go |
//! |---|---|---|
//! | `api_id` | `info.id` (required here, see below) | `Info.ExtractTo` |
//! | `name`, `org_id`, `expiration` | `info.name`, `info.orgId`, `info.expiration` | `Info.ExtractTo` |
//! | `active`, `internal` | `info.state.active`, `info.state.internal` | `State.ExtractTo` |
//! | `version_definition.*` | `info.versioning.*` (`versions` list → map) | `Versioning.ExtractTo` |
//! | `version_data` = not versioned, one version `""` with `use_extended_paths` | (fixed) | `Info.ExtractTo`, `OAS.ExtractTo` |
//! | `proxy.target_url` | `upstream.url` | `Upstream.ExtractTo` |
//! | `proxy.preserve_host_header` | `upstream.preserveHostHeader.enabled` | `PreserveHostHeader.ExtractTo` |
//! | `proxy.disable_strip_slash` | `upstream.preserveTrailingSlash.enabled` | `PreserveTrailingSlash.ExtractTo` |
//! | `protocol`, `listen_port` | `server.protocol`, `server.port` | `Server.ExtractTo` |
//! | `proxy.listen_path`, `proxy.strip_listen_path` | `server.listenPath.value`, `.strip` | `ListenPath.ExtractTo` |
//! | `use_mutual_tls_auth`, `client_certificates` | `server.clientCertificates.enabled`, `.allowlist` | `ClientCertificates.ExtractTo` |
//! | `tags_disabled` (true without the section), `tags` | `server.gatewayTags.enabled` (negated), `.tags` | `GatewayTags.ExtractTo` |
//! | `domain_disabled` (true without the section), `domain`, `certificates` | `server.customDomain.enabled` (negated), `.name`, `.certificates` | `Domain.ExtractTo` |
//! | `enable_detailed_recording`, `detailed_tracing` | `server.detailedActivityLogs.enabled`, `server.detailedTracing.enabled` | `DetailedActivityLogs`/`DetailedTracing.ExtractTo` |
//! | `ip_access_control_disabled` (true without the section), `allowed_ips`, `blacklisted_ips` | `server.ipAccessControl.enabled` (negated), `.allow`, `.block` | `IPAccessControl.ExtractTo` |
//! | `enable_batch_request_support` | `server.batchProcessing.enabled` | `BatchProcessing.ExtractTo` |
//! | `use_keyless` (true without the section), `strip_auth_data`, `base_identity_provided_by` | `server.authentication.enabled` (negated), `.stripAuthorizationData`, `.baseIdentityProvider` | `Authentication.ExtractTo` |
//! | `enable_signature_checking`, `auth_configs.hmac`, `hmac_allowed_algorithms`, `hmac_allowed_clock_skew` | `server.authentication.hmac` | `HMAC.ExtractTo` |
//! | `use_standard_auth`, `auth_configs.authToken` | an `apiKey` scheme of the first `security` requirement, its `securitySchemes` entry and `components.securitySchemes` `in`/`name` | `extractTokenTo`, `extractAPIKeySchemeTo` |
//! | `enable_jwt`, `jwt_source`, `jwt_signing_method`, `jwt_identity_base_field`, `jwt_skip_kid`, `jwt_policy_field_name`, `jwt_client_base_field`, `jwt_default_policies`, `scopes.jwt`, the three `jwt_*_validation_skew`, `auth_configs.jwt` | an `http`/`bearer`/`JWT` scheme, likewise | `extractJWTTo` |
//! | `use_basic_auth`, `auth_configs.basic`, `basic_auth.disable_caching`, `basic_auth.cache_ttl` | an `http`/`basic` scheme, likewise | `extractBasicTo` |
//! | `is_oas: true` | (fixed) | `handleAddApi` |
//! | `enable_context_vars` (true unless set false) | `middleware.global.contextVariables.enabled` | `handleAddApi` sets it when absent, `Global.ExtractTo` |
//!
//! Schemes are read as the default ("legacy") security processing mode
//! does: the first requirement only, and only when authentication is
//! enabled or the extension has security schemes. Of several `apiKey`
//! schemes the enabled one wins, else the first in the document (Go takes
//! the first of a map iteration, which has no order).
//!
//! # Not derived, and why
//! - `api_id` when `info.id` is missing: the gateway makes up a random id on
//!   import; a sync cannot (a new id on every sync would orphan every key
//!   and policy naming the API), and an id made from the file name would
//!   change silently with a rename. `bare-oas` asks for `info.id`.
//! - `id` (`info.dbId`): a Dashboard database id; file mode has none.
//! - `middleware.*` (plugins, CORS, caching, transforms, per-operation
//!   middleware into `extended_paths`), `upstream` sections other than the
//!   three above (service discovery, uptime tests, mutual TLS, certificate
//!   pinning, rate limit, upstream authentication, load balancing, TLS
//!   transport, proxy), `server.eventHandlers`, `server.authentication`
//!   `custom`, `oidc`, `customKeyLifetime`, OAuth, external OAuth and
//!   certificate schemes, a token's `signatureValidation`, JWKS URIs, and
//!   the "compliant" security processing mode: each is a translation of its
//!   own, not checked here against a gateway. Where a document uses one,
//!   `oas-not-derived` warns (the gateway reads most of them from the
//!   classic half, so they would not apply); keep the pair by hand then.
//!   An auth method left out never opens an API: `use_keyless` follows
//!   `authentication.enabled`, and a gateway with no method switched on
//!   asks for an auth token.
//! - `servers` entries the gateway adds to the document on import
//!   (`AddServers`): the document stays as written.

use foldhash::{HashMap, HashMapExt, HashSet};

use serde_json::{Map, Value, json};

use super::ids;
use super::locate::{line_col, locate};
use super::report::{Finding, Report, Severity};
use crate::bundle::{
    APPS_DIR, MCP_SUFFIX, MIDDLEWARE_DIR, OAS_SUFFIX, POLICIES_DIR, POLICIES_MAP, TEMPLATES_DIR,
    TYK_INDEX, escape_token,
};
use crate::json::Lookup;
use crate::tree::{Content, EntryKind, Tree, TreeEntry};

const EXTENSION: &str = super::markers::OAS_EXTENSION;

/// Warnings of one kind kept per document.
const MAX_WARNINGS: usize = 20;

/// One pair made from a document.
#[derive(Debug)]
struct Derived {
    /// Where the classic half sits in the tree.
    classic: String,
    /// Where the document sits in the tree now.
    document: String,
    /// The file the user wrote.
    source: String,
    /// Its bytes, to place findings in.
    bytes: Vec<u8>,
    /// Classic pointer → pointer into the user's document.
    sources: Vec<(String, String)>,
}

/// The pairs made from documents, to move findings back into them.
#[derive(Debug, Default)]
pub struct Pairs {
    derived: Vec<Derived>,
}

/// Where in the report the findings of the rest of `check` start: those
/// are the ones `remap` moves (the pre-passes name the user's files).
#[derive(Debug, Clone, Copy)]
pub struct Mark {
    errors: usize,
    warnings: usize,
}

impl Mark {
    pub fn of(report: &Report) -> Mark {
        Mark {
            errors: report.errors.len(),
            warnings: report.warnings.len(),
        }
    }
}

impl Pairs {
    /// Findings on a derived classic half move to the user's document, at
    /// the value the field came from (the pointer is then the document's);
    /// findings on a moved document get the user's file name back.
    pub fn remap(&self, report: &mut Report, from: Mark) {
        if self.derived.is_empty() {
            return;
        }
        let mut by_classic: HashMap<&str, &Derived> = HashMap::new();
        let mut by_document: HashMap<&str, &Derived> = HashMap::new();
        let mut renames: HashMap<&str, &str> = HashMap::new();
        for d in &self.derived {
            by_classic.insert(&d.classic, d);
            if d.document != d.source {
                by_document.insert(&d.document, d);
                renames.insert(&d.document, &d.source);
            }
            if d.classic != d.source {
                renames.insert(&d.classic, &d.source);
            }
        }
        let findings = report.errors[from.errors..]
            .iter_mut()
            .chain(report.warnings[from.warnings..].iter_mut());
        for f in findings {
            if let Some(d) = by_classic.get(f.file.as_str()) {
                d.place(f);
            } else if let Some(d) = by_document.get(f.file.as_str()) {
                f.file.clone_from(&d.source);
            }
            // Cross-file messages name the other files: the user's names.
            let named: Vec<(&str, &str)> = f
                .message
                .split([' ', ','])
                .map(|word| word.trim_matches(|c| matches!(c, '(' | ')' | ':')))
                .filter_map(|word| renames.get_key_value(word).map(|(k, v)| (*k, *v)))
                .collect();
            for (from, to) in named {
                f.message = rename_path(&f.message, from, to);
            }
        }
    }
}

/// `text` with each whole mention of the path `from` (between the start,
/// a blank or a comma and the end, a blank, a comma or a bracket) as `to`.
fn rename_path(text: &str, from: &str, to: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (at, _) in text.match_indices(from) {
        let before = text[..at].chars().next_back();
        let after = text[at + from.len()..].chars().next();
        let starts = before.is_none_or(|c| c == ' ' || c == ',' || c == '(');
        let ends = after.is_none_or(|c| matches!(c, ' ' | ',' | ')' | ':'));
        if starts && ends && at >= last {
            out.push_str(&text[last..at]);
            out.push_str(to);
            last = at + from.len();
        }
    }
    out.push_str(&text[last..]);
    out
}

impl Derived {
    fn place(&self, f: &mut Finding) {
        let classic = f.pointer.clone().unwrap_or_default();
        let source = self
            .sources
            .iter()
            .filter(|(at, _)| {
                !at.is_empty()
                    && (classic == *at
                        || classic
                            .strip_prefix(at.as_str())
                            .is_some_and(|r| r.starts_with('/')))
            })
            .max_by_key(|(at, _)| at.len())
            .map(|(_, from)| from.as_str());
        let whole = format!("/{EXTENSION}");
        let (offset, pointer) = match source {
            Some(from) if from != whole => (locate(&self.bytes, from), from.to_string()),
            _ => (extension_key(&self.bytes), whole),
        };
        let (line, column) = line_col(&self.bytes, offset);
        let shown = if classic.is_empty() {
            "the classic definition".to_string()
        } else {
            format!(
                "classic {}",
                classic.trim_start_matches('/').replace('/', ".")
            )
        };
        f.message = format!(
            "{} ({shown}, derived from {})",
            f.message,
            pointer.trim_start_matches('/').replace('/', ".")
        );
        f.file.clone_from(&self.source);
        f.line = line;
        f.column = column;
        f.pointer = Some(pointer);
    }
}

/// Where the `"x-tyk-api-gateway"` key starts (its opening quote), or the
/// document's start.
fn extension_key(bytes: &[u8]) -> usize {
    let value = locate(bytes, &format!("/{EXTENSION}"));
    let before = &bytes[..value.min(bytes.len())];
    // Back over the blanks, the colon and the blanks to the key's closing
    // quote; its opening quote is the previous one (the key has no escapes).
    let mut i = before.len();
    let skip_blanks = |i: &mut usize| {
        while *i > 0 && before[*i - 1].is_ascii_whitespace() {
            *i -= 1;
        }
    };
    skip_blanks(&mut i);
    if i == 0 || before[i - 1] != b':' {
        return value;
    }
    i -= 1;
    skip_blanks(&mut i);
    if i == 0 || before[i - 1] != b'"' {
        return value;
    }
    let close = i - 1;
    before[..close]
        .iter()
        .rposition(|&b| b == b'"')
        .unwrap_or(value)
}

/// Makes the pair of every Tyk OAS document kept alone in `tree`; warnings
/// for what the derived half leaves out go into `report`.
pub fn pair(tree: &mut Tree, report: &mut Report) -> Pairs {
    // Most commits keep no document alone: one look at the bytes, before
    // the list of names below.
    if !tree
        .entries
        .iter()
        .any(|e| super::markers::json_file_where(e, super::markers::may_pair))
    {
        return Pairs::default();
    }
    let taken: HashSet<String> = tree.entries.iter().map(|e| e.path.clone()).collect();
    let indexed = taken.contains(TYK_INDEX);
    let mut added = Vec::new();
    let mut pairs = Pairs::default();
    for entry in &mut tree.entries {
        if entry.kind != EntryKind::File || !entry.path.ends_with(".json") {
            continue;
        }
        let Content::Loaded(bytes) = &entry.content else {
            continue;
        };
        let path = entry.path.clone();
        let in_apps = path
            .strip_prefix(APPS_DIR)
            .and_then(|r| r.strip_prefix('/'))
            .is_some_and(|r| !r.contains('/'));
        let elsewhere = indexed
            && ![POLICIES_DIR, TEMPLATES_DIR, MIDDLEWARE_DIR]
                .iter()
                .any(|d| path.starts_with(&format!("{d}/")))
            && ![POLICIES_MAP, TYK_INDEX].contains(&path.as_str());
        if !(in_apps || elsewhere) || path.ends_with(MCP_SUFFIX) {
            continue;
        }
        let (classic_path, document_path) = match path.strip_suffix(OAS_SUFFIX) {
            // Beside its own classic half it is a pair already.
            Some(stem) if in_apps => (format!("{stem}.json"), path.clone()),
            Some(_) => continue,
            None => {
                let stem = path.trim_end_matches(".json");
                (path.clone(), format!("{stem}{OAS_SUFFIX}"))
            }
        };
        let other = if classic_path == path {
            &document_path
        } else {
            &classic_path
        };
        // Cheap refusals first: most files are classic definitions or
        // halves of a pair, and this runs on every sync.
        if taken.contains(other) || !super::markers::may_pair(bytes) {
            continue;
        }
        let Ok(doc) = serde_json::from_slice::<Value>(bytes) else {
            continue;
        };
        let Some(classic) = derive(&doc) else {
            continue;
        };
        for (pointer, message) in classic.left_out.iter().take(MAX_WARNINGS) {
            let (line, column) = line_col(bytes, locate(bytes, pointer));
            report.push(Finding {
                rule: ids::OAS_NOT_DERIVED,
                severity: Severity::Warning,
                file: path.clone(),
                line,
                column,
                pointer: Some(pointer.clone()),
                message: message.clone(),
                hint: Some(format!(
                    "the gateway reads it from the classic definition, which tyk-gitops derives for routing and authentication only; to keep it, commit the pair yourself: {classic_path} (\"is_oas\": true, with this setting) beside the document as {document_path}"
                )),
            });
        }
        // Serialising a Value cannot fail (its keys are strings).
        let mut text = serde_json::to_vec_pretty(&classic.value).unwrap_or_default();
        text.push(b'\n');
        let user_bytes = bytes.to_vec();
        if document_path != path {
            added.push(TreeEntry::file(document_path.clone(), user_bytes.clone()));
            *entry = TreeEntry::file(path.clone(), text);
        } else {
            added.push(TreeEntry::file(classic_path.clone(), text));
        }
        pairs.derived.push(Derived {
            classic: classic_path,
            document: document_path,
            source: path,
            bytes: user_bytes,
            sources: classic.sources,
        });
    }
    tree.entries.extend(added);
    tree.entries.sort_by(|a, b| a.path.cmp(&b.path));
    pairs
}

/// A classic definition under construction, with where each field came
/// from.
struct Classic {
    value: Value,
    /// Classic pointer → pointer into the document.
    sources: Vec<(String, String)>,
    /// Settings of the document the classic half leaves out: pointer into
    /// the document, message.
    left_out: Vec<(String, String)>,
}

impl Classic {
    /// Sets the field at `at` (a pointer; an empty token is the key `""`)
    /// to `value`, which came from `from` in the extension.
    fn set(&mut self, at: &str, value: Value, from: &str) {
        let mut node = &mut self.value;
        let tokens: Vec<String> = at
            .split('/')
            .skip(1)
            .map(|t| t.replace("~1", "/").replace("~0", "~"))
            .collect();
        for (i, token) in tokens.iter().enumerate() {
            if !node.is_object() {
                *node = Value::Object(Map::new());
            }
            let Value::Object(map) = node else {
                return;
            };
            if i + 1 == tokens.len() {
                map.insert(token.clone(), value);
                break;
            }
            node = map
                .entry(token.clone())
                .or_insert_with(|| Value::Object(Map::new()));
        }
        self.sources
            .push((at.to_string(), format!("/{EXTENSION}{from}")));
    }

    /// Maps a classic pointer to a place outside the extension (such as
    /// `components.securitySchemes`).
    fn source(&mut self, at: &str, document_pointer: String) {
        self.sources.push((at.to_string(), document_pointer));
    }

    fn leave_out(&mut self, from: &str, what: &str) {
        self.left_out.push((
            format!("/{EXTENSION}{from}"),
            format!("{what} is not carried into the classic definition tyk-gitops derives: the gateway will not apply it"),
        ));
    }
}

/// How a field of the extension becomes a classic field, as the Go
/// `ExtractTo` functions read it (a missing field is Go's zero value, which
/// is left out unless the rule says it is always written).
#[derive(Clone, Copy)]
enum Take {
    /// Any JSON value, as it is (a listen path of the wrong type is then
    /// reported on the classic half, at the user's line).
    Value,
    /// Any string, the empty one too.
    Str,
    /// A non-empty string.
    Text,
    /// A port above zero.
    Port,
    /// A non-empty array.
    List,
    /// `true` when the flag is on; nothing otherwise.
    IfOn,
    /// Always written: the flag.
    Flag,
    /// Always written: the flag negated (the classic `*_disabled` fields).
    NotFlag,
}

/// `Info.ExtractTo` and `State.ExtractTo`: classic field, extension field.
const INFO: &[(&str, &str, Take)] = &[
    ("/api_id", "/info/id", Take::Str),
    ("/name", "/info/name", Take::Str),
    ("/org_id", "/info/orgId", Take::Text),
    ("/expiration", "/info/expiration", Take::Text),
    ("/active", "/info/state/active", Take::Flag),
    ("/internal", "/info/state/internal", Take::IfOn),
];

/// `Upstream.ExtractTo` (the fields it derives; the rest is left out).
const UPSTREAM: &[(&str, &str, Take)] = &[
    ("/proxy/target_url", "/upstream/url", Take::Str),
    (
        "/proxy/preserve_host_header",
        "/upstream/preserveHostHeader/enabled",
        Take::IfOn,
    ),
    (
        "/proxy/disable_strip_slash",
        "/upstream/preserveTrailingSlash/enabled",
        Take::IfOn,
    ),
];

/// `Server.ExtractTo` and the `ExtractTo` of its sections.
const SERVER: &[(&str, &str, Take)] = &[
    ("/protocol", "/server/protocol", Take::Text),
    ("/listen_port", "/server/port", Take::Port),
    (
        "/proxy/listen_path",
        "/server/listenPath/value",
        Take::Value,
    ),
    (
        "/proxy/strip_listen_path",
        "/server/listenPath/strip",
        Take::IfOn,
    ),
    (
        "/use_mutual_tls_auth",
        "/server/clientCertificates/enabled",
        Take::IfOn,
    ),
    (
        "/client_certificates",
        "/server/clientCertificates/allowlist",
        Take::List,
    ),
    (
        "/tags_disabled",
        "/server/gatewayTags/enabled",
        Take::NotFlag,
    ),
    ("/tags", "/server/gatewayTags/tags", Take::List),
    (
        "/domain_disabled",
        "/server/customDomain/enabled",
        Take::NotFlag,
    ),
    ("/domain", "/server/customDomain/name", Take::Text),
    (
        "/certificates",
        "/server/customDomain/certificates",
        Take::List,
    ),
    (
        "/enable_detailed_recording",
        "/server/detailedActivityLogs/enabled",
        Take::IfOn,
    ),
    (
        "/detailed_tracing",
        "/server/detailedTracing/enabled",
        Take::IfOn,
    ),
    (
        "/ip_access_control_disabled",
        "/server/ipAccessControl/enabled",
        Take::NotFlag,
    ),
    ("/allowed_ips", "/server/ipAccessControl/allow", Take::List),
    (
        "/blacklisted_ips",
        "/server/ipAccessControl/block",
        Take::List,
    ),
    (
        "/enable_batch_request_support",
        "/server/batchProcessing/enabled",
        Take::IfOn,
    ),
];

/// The keys of `server` that `SERVER` and `security` derive.
const SERVER_DERIVED: &[&str] = &[
    "listenPath",
    "authentication",
    "clientCertificates",
    "gatewayTags",
    "customDomain",
    "detailedActivityLogs",
    "detailedTracing",
    "ipAccessControl",
    "batchProcessing",
    "protocol",
    "port",
];

impl Classic {
    /// A Go map the extension keeps as a list of pairs (`[{"name": …,
    /// "id": …}]`): each pair with both strings becomes `at/<key>` = value.
    fn set_map(
        &mut self,
        list: Option<&Vec<Value>>,
        (key, value): (&str, &str),
        at: &str,
        from: &str,
    ) {
        for (i, pair) in list.into_iter().flatten().enumerate() {
            let (Some(k), Some(v)) = (
                pair.get(key).and_then(Value::as_str),
                pair.get(value).and_then(Value::as_str),
            ) else {
                continue;
            };
            self.set(
                &format!("{at}/{}", escape_token(k)),
                json!(v),
                &format!("{from}/{i}/{value}"),
            );
        }
    }

    /// Applies `rules` to the extension `ext`.
    fn take(&mut self, ext: &Value, rules: &[(&str, &str, Take)]) {
        for &(at, from, how) in rules {
            let found = ext.lookup(from);
            let on = found.and_then(Value::as_bool).unwrap_or(false);
            let value = match how {
                Take::Value => found.cloned(),
                Take::Str => found.filter(|v| v.is_string()).cloned(),
                Take::Text => found
                    .filter(|v| v.as_str().is_some_and(|s| !s.is_empty()))
                    .cloned(),
                Take::Port => found.filter(|v| v.as_u64().is_some_and(|p| p > 0)).cloned(),
                Take::List => found
                    .filter(|v| v.as_array().is_some_and(|a| !a.is_empty()))
                    .cloned(),
                Take::IfOn => on.then_some(Value::Bool(true)),
                Take::Flag => Some(Value::Bool(on)),
                Take::NotFlag => Some(Value::Bool(!on)),
            };
            if let Some(value) = value {
                self.set(at, value, from);
            }
        }
    }
}

/// The classic half of `doc`, or `None` when there is none to derive: not
/// an OpenAPI 3 document, no extension, or no `info.id`.
fn derive(doc: &Value) -> Option<Classic> {
    let openapi = doc.get("openapi").and_then(Value::as_str)?;
    if !openapi.starts_with('3') {
        return None;
    }
    let ext = doc.get(EXTENSION).filter(|e| e.is_object())?;
    ext.lookup("/info/id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())?;
    let mut c = Classic {
        value: Value::Object(Map::new()),
        sources: Vec::new(),
        left_out: Vec::new(),
    };
    c.take(ext, INFO);
    versioning(&mut c, ext);
    c.set("/is_oas", json!(true), "");
    c.take(ext, UPSTREAM);
    left_out_keys(
        &mut c,
        ext,
        "/upstream",
        &["url", "preserveHostHeader", "preserveTrailingSlash"],
    );
    c.take(ext, SERVER);
    left_out_keys(&mut c, ext, "/server", SERVER_DERIVED);
    security(&mut c, doc, ext);
    // handleAddApi switches context variables on unless the document says.
    let context = ext
        .lookup("/middleware/global/contextVariables/enabled")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    c.set(
        "/enable_context_vars",
        json!(context),
        "/middleware/global/contextVariables/enabled",
    );
    middleware_left_out(&mut c, ext);
    // Info.ExtractTo (every time), then OAS.ExtractTo on version "".
    c.set(
        "/version_data",
        json!({"not_versioned": true, "default_version": "",
            "versions": {"": {"use_extended_paths": true}}}),
        "",
    );
    Some(c)
}

/// `Versioning.ExtractTo`: `info.versioning` into `version_definition`.
fn versioning(c: &mut Classic, ext: &Value) {
    let Some(v) = ext.lookup("/info/versioning").and_then(Value::as_object) else {
        return;
    };
    let from = "/info/versioning";
    let fields = [
        ("enabled", "enabled"),
        ("name", "name"),
        ("default", "default"),
        ("location", "location"),
        ("key", "key"),
        ("stripVersioningData", "strip_versioning_data"),
        ("urlVersioningPattern", "url_versioning_pattern"),
        ("fallbackToDefault", "fallback_to_default"),
    ];
    for (field, classic) in fields {
        if let Some(value) = v.get(field).filter(|v| !v.is_null()) {
            c.set(
                &format!("/version_definition/{classic}"),
                value.clone(),
                &format!("{from}/{field}"),
            );
        }
    }
    let versions = v.get("versions").and_then(Value::as_array);
    c.set_map(
        versions,
        ("name", "id"),
        "/version_definition/versions",
        &format!("{from}/versions"),
    );
}

/// `(*OAS).extractSecurityTo` in the default ("legacy") mode.
fn security(c: &mut Classic, doc: &Value, ext: &Value) {
    let auth_at = "/server/authentication";
    let Some(auth) = ext.lookup(auth_at).filter(|a| a.is_object()) else {
        c.set("/use_keyless", json!(true), auth_at);
        return;
    };
    let enabled = on(auth, "/enabled");
    c.set(
        "/use_keyless",
        json!(!enabled),
        &format!("{auth_at}/enabled"),
    );
    if on(auth, "/stripAuthorizationData") {
        c.set(
            "/strip_auth_data",
            json!(true),
            &format!("{auth_at}/stripAuthorizationData"),
        );
    }
    if let Some(base) = auth
        .get("baseIdentityProvider")
        .and_then(Value::as_str)
        .filter(|b| !b.is_empty())
    {
        c.set(
            "/base_identity_provided_by",
            json!(base),
            &format!("{auth_at}/baseIdentityProvider"),
        );
    }
    if let Some(hmac) = auth.get("hmac").filter(|h| h.is_object()) {
        self::hmac(c, hmac, &format!("{auth_at}/hmac"));
    }
    for (key, what) in [
        ("custom", "custom plugin authentication"),
        ("oidc", "OpenID Connect authentication"),
        ("customKeyLifetime", "a custom key lifetime"),
        ("security", "the extension's own security requirements"),
    ] {
        if auth.get(key).is_some_and(|v| !v.is_null()) {
            c.leave_out(
                &format!("{auth_at}/{key}"),
                &format!("server.authentication.{key} ({what})"),
            );
        }
    }
    if auth.get("securityProcessingMode").and_then(Value::as_str) == Some("compliant") {
        c.leave_out(
            &format!("{auth_at}/securityProcessingMode"),
            "the \"compliant\" security processing mode (every requirement, not only the first)",
        );
    }

    first_requirement(c, doc, auth, enabled);
}

/// A boolean at `pointer` in `v`; missing or not a boolean is Go's `false`.
fn on(v: &Value, pointer: &str) -> bool {
    v.lookup(pointer).and_then(Value::as_bool).unwrap_or(false)
}

/// `HMAC.ExtractTo`.
fn hmac(c: &mut Classic, hmac: &Value, from: &str) {
    c.set(
        "/enable_signature_checking",
        json!(on(hmac, "/enabled")),
        &format!("{from}/enabled"),
    );
    auth_config(c, "/auth_configs/hmac", None, hmac, from);
    if let Some(algorithms) = hmac.get("allowedAlgorithms").filter(|a| a.is_array()) {
        c.set(
            "/hmac_allowed_algorithms",
            algorithms.clone(),
            &format!("{from}/allowedAlgorithms"),
        );
    }
    if let Some(skew) = hmac.get("allowedClockSkew").filter(|s| s.is_number()) {
        c.set(
            "/hmac_allowed_clock_skew",
            skew.clone(),
            &format!("{from}/allowedClockSkew"),
        );
    }
}

/// The first security requirement of the document, scheme by scheme, as
/// the legacy processing mode reads it: only when authentication is
/// enabled or has schemes.
fn first_requirement(c: &mut Classic, doc: &Value, auth: &Value, enabled: bool) {
    let auth_at = "/server/authentication";
    let schemes = auth.get("securitySchemes").and_then(Value::as_object);
    let has_schemes = schemes.is_some_and(|s| !s.is_empty());
    let Some(first) = doc.lookup("/security/0").and_then(Value::as_object) else {
        return;
    };
    if !(enabled || has_schemes) {
        return;
    }
    let components = doc
        .lookup("/components/securitySchemes")
        .and_then(Value::as_object);
    let mut token_done = false;
    // The enabled apiKey scheme first: only one token auth can be on.
    let mut names: Vec<&String> = first.keys().collect();
    names.sort_by_key(|name| {
        let enabled = schemes
            .and_then(|s| s.get(name.as_str()))
            .is_some_and(|s| on(s, "/enabled"));
        !enabled
    });
    for name in names {
        let Some(native) = components.and_then(|c| c.get(name.as_str())) else {
            continue;
        };
        let native_at = format!("/components/securitySchemes/{}", escape_token(name));
        let Some(tyk) = schemes.and_then(|s| s.get(name.as_str())) else {
            continue;
        };
        let from = format!("{auth_at}/securitySchemes/{}", escape_token(name));
        let kind = native
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let scheme = native
            .get("scheme")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let bearer = native
            .get("bearerFormat")
            .and_then(Value::as_str)
            .unwrap_or_default();
        match (kind, scheme) {
            ("apiKey", _) if !token_done => {
                token_done = true;
                api_key(c, name, tyk, native, &from, &native_at);
            }
            ("apiKey", _) => {}
            ("http", "bearer") if bearer == "JWT" => jwt(c, name, tyk, &from),
            ("http", "basic") => basic(c, name, tyk, &from),
            _ => c.leave_out(
                &from,
                &format!("security scheme {name:?} ({kind} {scheme})"),
            ),
        }
    }
}

/// The token auth of the first apiKey scheme of the first requirement
/// (`extractSecurityTo` → `Token.ExtractTo`).
fn api_key(c: &mut Classic, name: &str, tyk: &Value, native: &Value, from: &str, native_at: &str) {
    c.set(
        "/use_standard_auth",
        json!(on(tyk, "/enabled")),
        &format!("{from}/enabled"),
    );
    let at = "/auth_configs/authToken";
    auth_config(c, at, Some(name), tyk, from);
    if on(tyk, "/enableClientCertificate") {
        c.set(
            &format!("{at}/use_certificate"),
            json!(true),
            &format!("{from}/enableClientCertificate"),
        );
    }
    api_key_place(c, at, native, native_at);
    if tyk.get("signatureValidation").is_some_and(|s| !s.is_null()) {
        c.leave_out(
            &format!("{from}/signatureValidation"),
            "an auth token's signatureValidation",
        );
    }
}

/// `AuthSources.ExtractTo`: where the credential is read (a header unless
/// the scheme says otherwise).
fn auth_config(c: &mut Classic, at: &str, name: Option<&str>, scheme: &Value, from: &str) {
    let mut config = Map::new();
    if let Some(name) = name {
        config.insert("name".into(), json!(name));
    }
    let header = scheme.get("header").filter(|h| h.is_object());
    let enabled = |v: &Value| v.get("enabled").and_then(Value::as_bool).unwrap_or(false);
    let named = |v: &Value| {
        v.get("name")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    config.insert("disable_header".into(), json!(!header.is_some_and(enabled)));
    if let Some(header) = header {
        config.insert("auth_header_name".into(), json!(named(header)));
    }
    if let Some(query) = scheme.get("query").filter(|q| q.is_object()) {
        config.insert("use_param".into(), json!(enabled(query)));
        config.insert("param_name".into(), json!(named(query)));
    }
    if let Some(cookie) = scheme.get("cookie").filter(|q| q.is_object()) {
        config.insert("use_cookie".into(), json!(enabled(cookie)));
        config.insert("cookie_name".into(), json!(named(cookie)));
    }
    c.set(at, Value::Object(config), from);
}

/// `extractAPIKeySchemeTo`: the OpenAPI scheme's `in` and `name` win.
fn api_key_place(c: &mut Classic, at: &str, native: &Value, native_at: &str) {
    let name = native
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let (flag, field) = match native.get("in").and_then(Value::as_str) {
        Some("header") => (("disable_header", false), "auth_header_name"),
        Some("query") => (("use_param", true), "param_name"),
        Some("cookie") => (("use_cookie", true), "cookie_name"),
        _ => return,
    };
    let Some(Value::Object(config)) = c.value.lookup_mut(at) else {
        return;
    };
    config.insert(flag.0.into(), json!(flag.1));
    config.insert(field.into(), json!(name));
    c.source(&format!("{at}/{field}"), format!("{native_at}/name"));
    c.source(&format!("{at}/{}", flag.0), format!("{native_at}/in"));
}

/// `extractJWTTo`.
fn jwt(c: &mut Classic, name: &str, tyk: &Value, from: &str) {
    let on = |p: &str| tyk.get(p).and_then(Value::as_bool).unwrap_or(false);
    c.set(
        "/enable_jwt",
        json!(on("enabled")),
        &format!("{from}/enabled"),
    );
    auth_config(c, "/auth_configs/jwt", Some(name), tyk, from);
    let strings = [
        ("source", "/jwt_source"),
        ("signingMethod", "/jwt_signing_method"),
        ("identityBaseField", "/jwt_identity_base_field"),
        ("policyFieldName", "/jwt_policy_field_name"),
        ("clientBaseField", "/jwt_client_base_field"),
    ];
    for (field, at) in strings {
        if let Some(value) = tyk
            .get(field)
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
        {
            c.set(at, json!(value), &format!("{from}/{field}"));
        }
    }
    if on("skipKid") {
        c.set("/jwt_skip_kid", json!(true), &format!("{from}/skipKid"));
    }
    for (field, at) in [
        ("issuedAtValidationSkew", "/jwt_issued_at_validation_skew"),
        ("notBeforeValidationSkew", "/jwt_not_before_validation_skew"),
        ("expiresAtValidationSkew", "/jwt_expires_at_validation_skew"),
    ] {
        if let Some(skew) = tyk.get(field).filter(|v| v.as_u64().is_some_and(|v| v > 0)) {
            c.set(at, skew.clone(), &format!("{from}/{field}"));
        }
    }
    if let Some(defaults) = tyk.get("defaultPolicies").and_then(Value::as_array) {
        c.set(
            "/jwt_default_policies",
            Value::Array(defaults.clone()),
            &format!("{from}/defaultPolicies"),
        );
        for (i, _) in defaults.iter().enumerate() {
            c.source(
                &format!("/jwt_default_policies/{i}"),
                format!("/{EXTENSION}{from}/defaultPolicies/{i}"),
            );
        }
    }
    if let Some(scopes) = tyk.get("scopes").filter(|s| s.is_object()) {
        let scopes_at = format!("{from}/scopes");
        if let Some(claim) = scopes.get("claimName").and_then(Value::as_str) {
            c.set(
                "/scopes/jwt/scope_claim_name",
                json!(claim),
                &format!("{scopes_at}/claimName"),
            );
        }
        let mapping = scopes.get("scopeToPolicyMapping").and_then(Value::as_array);
        c.set(
            "/scopes/jwt/scope_to_policy",
            json!({}),
            &format!("{scopes_at}/scopeToPolicyMapping"),
        );
        c.set_map(
            mapping,
            ("scope", "policyId"),
            "/scopes/jwt/scope_to_policy",
            &format!("{scopes_at}/scopeToPolicyMapping"),
        );
    }
    if tyk.get("jwksURIs").is_some_and(|v| !v.is_null()) {
        c.leave_out(&format!("{from}/jwksURIs"), "a JWT scheme's jwksURIs");
    }
}

/// `extractBasicTo`.
fn basic(c: &mut Classic, name: &str, tyk: &Value, from: &str) {
    let on = |p: &str| tyk.get(p).and_then(Value::as_bool).unwrap_or(false);
    c.set(
        "/use_basic_auth",
        json!(on("enabled")),
        &format!("{from}/enabled"),
    );
    auth_config(c, "/auth_configs/basic", Some(name), tyk, from);
    if on("disableCaching") {
        c.set(
            "/basic_auth/disable_caching",
            json!(true),
            &format!("{from}/disableCaching"),
        );
    }
    if let Some(ttl) = tyk
        .get("cacheTTL")
        .filter(|t| t.as_i64().is_some_and(|t| t != 0))
    {
        c.set(
            "/basic_auth/cache_ttl",
            ttl.clone(),
            &format!("{from}/cacheTTL"),
        );
    }
    if tyk
        .get("extractCredentialsFromBody")
        .is_some_and(|v| !v.is_null())
    {
        c.leave_out(
            &format!("{from}/extractCredentialsFromBody"),
            "a basic auth scheme's extractCredentialsFromBody",
        );
    }
}

/// Sections of `ext` at `at` other than `derived`.
fn left_out_keys(c: &mut Classic, ext: &Value, at: &str, derived: &[&str]) {
    let Some(section) = ext.lookup(at).and_then(Value::as_object) else {
        return;
    };
    let keys: Vec<String> = section
        .iter()
        .filter(|(k, v)| !derived.contains(&k.as_str()) && !v.is_null())
        .map(|(k, _)| k.clone())
        .collect();
    for key in keys {
        let dotted = format!("{}.{key}", at.trim_start_matches('/'));
        c.leave_out(&format!("{at}/{}", escape_token(&key)), &dotted);
    }
}

/// Everything under `middleware` but context variables.
fn middleware_left_out(c: &mut Classic, ext: &Value) {
    let Some(middleware) = ext.get("middleware").and_then(Value::as_object) else {
        return;
    };
    for (key, value) in middleware {
        if value.is_null() {
            continue;
        }
        if key == "global"
            && let Some(global) = value.as_object()
        {
            for (inner, v) in global {
                if inner != "contextVariables" && !v.is_null() {
                    c.leave_out(
                        &format!("/middleware/global/{}", escape_token(inner)),
                        &format!("middleware.global.{inner}"),
                    );
                }
            }
            continue;
        }
        c.leave_out(
            &format!("/middleware/{}", escape_token(key)),
            &format!("middleware.{key}"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(ext: Value) -> Value {
        json!({"openapi": "3.0.3", "info": {"title": "T", "version": "1"}, "paths": {},
            "x-tyk-api-gateway": ext})
    }

    fn minimal() -> Value {
        json!({"info": {"id": "pets", "name": "Pets", "state": {"active": true}},
            "upstream": {"url": "http://up:8080/"},
            "server": {"listenPath": {"value": "/pets/", "strip": true}}})
    }

    fn classic(ext: Value) -> Value {
        derive(&doc(ext)).expect("derivable").value
    }

    #[test]
    fn info_fields_come_from_info_extract_to() {
        let mut ext = minimal();
        ext["info"]["orgId"] = json!("acme");
        ext["info"]["expiration"] = json!("2030-01-02 15:04");
        ext["info"]["state"]["internal"] = json!(true);
        let c = classic(ext);
        assert_eq!(c["api_id"], "pets");
        assert_eq!(c["name"], "Pets");
        assert_eq!(c["org_id"], "acme");
        assert_eq!(c["expiration"], "2030-01-02 15:04");
        assert_eq!(c["active"], true);
        assert_eq!(c["internal"], true);
        assert_eq!(c["is_oas"], true);
        assert_eq!(
            c["version_data"],
            json!({"not_versioned": true, "default_version": "",
                "versions": {"": {"use_extended_paths": true}}})
        );
        // Inactive unless the state says so (a Go bool's zero value).
        let mut ext = minimal();
        ext["info"]["state"] = json!({});
        assert_eq!(classic(ext)["active"], false);
    }

    #[test]
    fn without_info_id_nothing_is_derived() {
        let mut ext = minimal();
        ext["info"].as_object_mut().expect("object").remove("id");
        assert!(derive(&doc(ext.clone())).is_none());
        ext["info"]["id"] = json!("");
        assert!(derive(&doc(ext)).is_none());
        assert!(derive(&json!({"openapi": "3.0.3", "info": {}})).is_none());
        assert!(derive(&json!({"swagger": "2.0", "x-tyk-api-gateway": minimal()})).is_none());
    }

    #[test]
    fn versioning_becomes_version_definition() {
        let mut ext = minimal();
        ext["info"]["versioning"] = json!({"enabled": true, "name": "v1", "default": "self",
            "location": "header", "key": "x-api-version", "fallbackToDefault": true,
            "versions": [{"name": "v2", "id": "pets-v2"}]});
        let c = classic(ext);
        assert_eq!(
            c["version_definition"],
            json!({"enabled": true, "name": "v1", "default": "self", "location": "header",
                "key": "x-api-version", "fallback_to_default": true,
                "versions": {"v2": "pets-v2"}})
        );
    }

    #[test]
    fn upstream_and_listen_path_go_to_proxy() {
        let mut ext = minimal();
        ext["upstream"]["preserveHostHeader"] = json!({"enabled": true});
        ext["upstream"]["preserveTrailingSlash"] = json!({"enabled": true});
        let c = classic(ext);
        assert_eq!(
            c["proxy"],
            json!({"target_url": "http://up:8080/", "preserve_host_header": true,
                "disable_strip_slash": true, "listen_path": "/pets/", "strip_listen_path": true})
        );
        let mut ext = minimal();
        ext["server"]["listenPath"] = json!({"value": "/p/"});
        assert!(classic(ext)["proxy"].get("strip_listen_path").is_none());
    }

    #[test]
    fn server_sections_follow_their_extract_to() {
        let c = classic(minimal());
        // Absent sections extract as disabled.
        assert_eq!(c["tags_disabled"], true);
        assert_eq!(c["domain_disabled"], true);
        assert_eq!(c["ip_access_control_disabled"], true);
        assert!(c.get("domain").is_none());
        let mut ext = minimal();
        ext["server"]["customDomain"] = json!({"enabled": true, "name": "api.example.com",
            "certificates": ["cert-1"]});
        ext["server"]["gatewayTags"] = json!({"enabled": true, "tags": ["edge"]});
        ext["server"]["clientCertificates"] = json!({"enabled": true, "allowlist": ["c1"]});
        ext["server"]["ipAccessControl"] = json!({"enabled": true, "allow": ["10.0.0.0/8"]});
        ext["server"]["protocol"] = json!("h2c");
        ext["server"]["port"] = json!(9000);
        ext["server"]["detailedTracing"] = json!({"enabled": true});
        let c = classic(ext);
        assert_eq!(c["domain_disabled"], false);
        assert_eq!(c["domain"], "api.example.com");
        assert_eq!(c["certificates"], json!(["cert-1"]));
        assert_eq!(c["tags_disabled"], false);
        assert_eq!(c["tags"], json!(["edge"]));
        assert_eq!(c["use_mutual_tls_auth"], true);
        assert_eq!(c["client_certificates"], json!(["c1"]));
        assert_eq!(c["ip_access_control_disabled"], false);
        assert_eq!(c["allowed_ips"], json!(["10.0.0.0/8"]));
        assert_eq!(c["protocol"], "h2c");
        assert_eq!(c["listen_port"], 9000);
        assert_eq!(c["detailed_tracing"], true);
    }

    #[test]
    fn no_authentication_is_keyless_and_enabled_is_not() {
        assert_eq!(classic(minimal())["use_keyless"], true);
        let mut ext = minimal();
        ext["server"]["authentication"] = json!({"enabled": true, "stripAuthorizationData": true});
        let c = classic(ext);
        assert_eq!(c["use_keyless"], false);
        assert_eq!(c["strip_auth_data"], true);
        // No scheme: nothing else is switched on (the gateway then asks for
        // an auth token).
        assert!(c.get("use_standard_auth").is_none());
    }

    #[test]
    fn an_api_key_scheme_becomes_the_auth_token() {
        let mut d = doc(minimal());
        d["x-tyk-api-gateway"]["server"]["authentication"] = json!({"enabled": true,
            "securitySchemes": {"key": {"enabled": true}}});
        d["components"] = json!({"securitySchemes": {"key": {"type": "apiKey", "in": "header", "name": "X-Key"}}});
        d["security"] = json!([{"key": []}]);
        let c = derive(&d).expect("derived").value;
        assert_eq!(c["use_standard_auth"], true);
        assert_eq!(
            c["auth_configs"]["authToken"],
            json!({"name": "key", "disable_header": false, "auth_header_name": "X-Key"})
        );
        // Without a requirement naming it, the scheme is not used.
        d["security"] = json!([]);
        assert!(
            derive(&d)
                .expect("derived")
                .value
                .get("use_standard_auth")
                .is_none()
        );
    }

    #[test]
    fn jwt_and_basic_schemes_switch_their_method_on() {
        let mut d = doc(minimal());
        d["x-tyk-api-gateway"]["server"]["authentication"] = json!({"enabled": true,
            "securitySchemes": {
                "jwt": {"enabled": true, "source": "c2VjcmV0", "signingMethod": "hmac",
                    "identityBaseField": "sub", "defaultPolicies": ["gold"],
                    "scopes": {"claimName": "scope",
                        "scopeToPolicyMapping": [{"scope": "read", "policyId": "reader"}]},
                    "header": {"enabled": true, "name": "Authorization"}},
                "basic": {"enabled": true, "cacheTTL": 60}}});
        d["components"] = json!({"securitySchemes": {
            "jwt": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            "basic": {"type": "http", "scheme": "basic"}}});
        d["security"] = json!([{"jwt": [], "basic": []}]);
        let derived = derive(&d).expect("derived");
        let c = derived.value;
        assert_eq!(c["enable_jwt"], true);
        assert_eq!(c["jwt_source"], "c2VjcmV0");
        assert_eq!(c["jwt_signing_method"], "hmac");
        assert_eq!(c["jwt_identity_base_field"], "sub");
        assert_eq!(c["jwt_default_policies"], json!(["gold"]));
        assert_eq!(
            c["scopes"]["jwt"],
            json!({"scope_claim_name": "scope", "scope_to_policy": {"read": "reader"}})
        );
        assert_eq!(
            c["auth_configs"]["jwt"],
            json!({"name": "jwt", "disable_header": false, "auth_header_name": "Authorization"})
        );
        assert_eq!(c["use_basic_auth"], true);
        assert_eq!(c["basic_auth"]["cache_ttl"], 60);
        // Each default policy points at its own place in the document.
        assert!(derived.sources.iter().any(|(at, from)| at == "/jwt_default_policies/0"
            && from == "/x-tyk-api-gateway/server/authentication/securitySchemes/jwt/defaultPolicies/0"));
    }

    #[test]
    fn what_is_not_derived_is_said() {
        let mut ext = minimal();
        ext["middleware"] = json!({"global": {"contextVariables": {"enabled": false},
            "cors": {"enabled": true}}});
        ext["upstream"]["rateLimit"] = json!({"enabled": true, "rate": 1, "per": "1s"});
        let derived = derive(&doc(ext)).expect("derived");
        assert_eq!(derived.value["enable_context_vars"], false);
        let places: Vec<&str> = derived.left_out.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            places,
            [
                "/x-tyk-api-gateway/upstream/rateLimit",
                "/x-tyk-api-gateway/middleware/global/cors"
            ]
        );
        // Context variables are on unless the document says otherwise.
        assert_eq!(classic(minimal())["enable_context_vars"], true);
    }

    #[test]
    fn messages_name_the_files_the_user_has() {
        let text = "api_id \"a\" is also used by apps/a.json, apps/ba.json";
        assert_eq!(
            rename_path(text, "apps/a.json", "apps/a-oas.json"),
            "api_id \"a\" is also used by apps/a-oas.json, apps/ba.json"
        );
        assert_eq!(
            rename_path("x/apps/a.json", "apps/a.json", "b"),
            "x/apps/a.json"
        );
    }

    #[test]
    fn findings_move_to_the_value_they_came_from() {
        let user = b"{\n  \"openapi\": \"3.0.3\",\n  \"x-tyk-api-gateway\": {\n    \"info\": {\"id\": \"a\"},\n    \"server\": {\"listenPath\": {\"value\": \"/a b/\"}}\n  }\n}\n";
        let value: Value = serde_json::from_slice(user).expect("json");
        let classic = derive(&value).expect("derived");
        let d = Derived {
            classic: "apps/a.json".into(),
            document: "apps/a-oas.json".into(),
            source: "apps/a.json".into(),
            bytes: user.to_vec(),
            sources: classic.sources,
        };
        let finding = |pointer: Option<&str>| Finding {
            rule: ids::INVALID_LISTEN_PATH,
            severity: Severity::Error,
            file: "apps/a.json".into(),
            line: 40,
            column: 3,
            pointer: pointer.map(String::from),
            message: "m".into(),
            hint: None,
        };
        let mut f = finding(Some("/proxy/listen_path"));
        d.place(&mut f);
        assert_eq!((f.line, f.column), (5, 40));
        assert_eq!(
            f.pointer.as_deref(),
            Some("/x-tyk-api-gateway/server/listenPath/value")
        );
        // Nothing to point at: the extension's key, never a line past the
        // file's end.
        let mut f = finding(None);
        d.place(&mut f);
        assert_eq!((f.line, f.column), (3, 3));
        let mut f = finding(Some("/version_data/versions"));
        d.place(&mut f);
        assert_eq!(f.line, 3);
    }
}
