//! `tyk-gitops plan`: what applying a commit would change, before it is
//! applied. Two sides, each a map of API ids and policy ids to their
//! definitions plus the plain files (middleware, templates, tyk.conf); the
//! plan lists what was added, removed and changed, naming the changed fields
//! as dotted paths, and carries the new side's validation findings.
//!
//! The base side is another checkout or commit (an exact comparison), or
//! what a gateway runs now. A gateway fills in defaults for every field a
//! definition leaves out, so against a gateway only the fields the commit
//! sets are compared (`Compare::Committed`).

pub mod command;

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;
use serde_json::Value;

use crate::bundle::{self, Bundle};
use crate::validate::{Finding, Report};

/// One API or policy of a side.
#[derive(Debug, Clone)]
pub struct Item {
    /// Where it is defined, relative to the config root (empty for what a
    /// gateway runs: it has no file).
    pub file: String,
    pub doc: Value,
    /// Companion documents of a Tyk OAS or MCP API, by the prefix their
    /// fields get in the plan (`oas`, `mcp`).
    pub companions: BTreeMap<&'static str, Value>,
}

/// Everything one side would make the gateway run.
#[derive(Debug, Clone, Default)]
pub struct Side {
    pub apis: BTreeMap<String, Item>,
    pub policies: BTreeMap<String, Item>,
    /// Middleware, templates and tyk.conf: path → content digest. `None`
    /// when the side cannot tell (a gateway does not serve its files).
    pub files: Option<BTreeMap<String, String>>,
}

impl Side {
    /// The side a validated bundle describes. Files that do not parse are
    /// left out of the maps: the new side's findings report them.
    pub fn from_bundle(bundle: &Bundle) -> Side {
        let mut side = Side::default();
        let mut companions: Vec<(&'static str, String, Value)> = Vec::new();
        for app in &bundle.apps {
            let Ok(doc) = serde_json::from_slice::<Value>(&app.bytes) else {
                continue;
            };
            match &app.api_id {
                Some(id) => {
                    side.apis.insert(
                        id.clone(),
                        Item {
                            file: app.source.clone(),
                            doc,
                            companions: BTreeMap::new(),
                        },
                    );
                }
                None => {
                    for (suffix, prefix) in
                        [(bundle::OAS_SUFFIX, "oas"), (bundle::MCP_SUFFIX, "mcp")]
                    {
                        if let Some(stem) = app.name.strip_suffix(suffix) {
                            companions.push((prefix, format!("{stem}.json"), doc));
                            break;
                        }
                    }
                }
            }
        }
        for (prefix, name, doc) in companions {
            let owner = bundle
                .apps
                .iter()
                .find(|a| a.name == name)
                .and_then(|a| a.api_id.as_ref());
            if let Some(item) = owner.and_then(|id| side.apis.get_mut(id)) {
                item.companions.insert(prefix, doc);
            }
        }
        for policy in &bundle.policies {
            if let Ok(doc) = serde_json::from_slice::<Value>(&policy.bytes) {
                side.policies.insert(
                    policy.id.clone(),
                    Item {
                        file: policy.source.clone(),
                        doc,
                        companions: BTreeMap::new(),
                    },
                );
            }
        }
        let plain = bundle
            .middleware
            .iter()
            .chain(&bundle.templates)
            .chain(&bundle.tyk_conf);
        side.files = Some(
            plain
                .map(|f| (f.path.clone(), crate::tree::blob_id(&f.bytes).to_string()))
                .collect(),
        );
        side
    }

    /// What a gateway reports it runs: `GET /tyk/apis` and `/tyk/policies`.
    pub fn from_gateway(apis: Vec<Value>, policies: Vec<Value>) -> Side {
        let item = |doc: Value| Item {
            file: String::new(),
            doc,
            companions: BTreeMap::new(),
        };
        let mut side = Side::default();
        for api in apis {
            if let Some(id) = api.get("api_id").and_then(Value::as_str) {
                side.apis.insert(id.to_string(), item(api));
            }
        }
        for policy in policies {
            let id = match policy.get("id").and_then(Value::as_str) {
                Some(id) if !id.is_empty() => id.to_string(),
                _ => match policy.get("_id").and_then(Value::as_str) {
                    Some(mid) => mid.to_string(),
                    None => continue,
                },
            };
            side.policies.insert(id, item(policy));
        }
        side
    }
}

/// How two definitions of one id are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compare {
    /// Every field of both sides (two commits or checkouts).
    Exact,
    /// Only the fields the new side sets: the base is a gateway, which
    /// fills in a default for every field a definition leaves out.
    Committed,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Changed {
    pub id: String,
    /// The new side's file (the base's for a gateway without files).
    pub file: String,
    /// Dotted paths of the fields that differ, companions prefixed with
    /// `oas:` or `mcp:`.
    pub fields: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Changes {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub changed: Vec<Changed>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FileChanges {
    /// Added, removed or modified middleware, templates and tyk.conf.
    pub changed: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub apis: Changes,
    pub policies: Changes,
    pub files: FileChanges,
    pub findings: Report,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.apis.is_empty() && self.policies.is_empty() && self.files.changed.is_empty()
    }
}

/// What going from `base` to `new` changes. `findings` is the new side's
/// validation report.
pub fn diff(base: &Side, new: &Side, compare: Compare, findings: Report) -> Plan {
    let files = match (&base.files, &new.files) {
        (Some(old), Some(now)) => {
            let mut changed: Vec<String> = now
                .iter()
                .filter(|(path, digest)| old.get(*path) != Some(*digest))
                .map(|(path, _)| path.clone())
                .chain(old.keys().filter(|p| !now.contains_key(*p)).cloned())
                .collect();
            changed.sort();
            changed
        }
        _ => Vec::new(),
    };
    Plan {
        apis: changes(&base.apis, &new.apis, compare),
        policies: changes(&base.policies, &new.policies, compare),
        files: FileChanges { changed: files },
        findings,
    }
}

fn changes(
    base: &BTreeMap<String, Item>,
    new: &BTreeMap<String, Item>,
    compare: Compare,
) -> Changes {
    let mut out = Changes {
        added: new
            .keys()
            .filter(|id| !base.contains_key(*id))
            .cloned()
            .collect(),
        removed: base
            .keys()
            .filter(|id| !new.contains_key(*id))
            .cloned()
            .collect(),
        changed: Vec::new(),
    };
    for (id, now) in new {
        let Some(old) = base.get(id) else { continue };
        let mut fields = Vec::new();
        field_diff(&old.doc, &now.doc, &mut String::new(), compare, &mut fields);
        if compare == Compare::Exact {
            for prefix in old.companions.keys().chain(now.companions.keys()) {
                let (a, b) = (old.companions.get(prefix), now.companions.get(prefix));
                let mut path = format!("{prefix}:");
                match (a, b) {
                    (Some(a), Some(b)) => field_diff(a, b, &mut path, compare, &mut fields),
                    _ => fields.push(path),
                }
            }
            fields.dedup();
        }
        if !fields.is_empty() {
            let file = if now.file.is_empty() {
                old.file.clone()
            } else {
                now.file.clone()
            };
            out.changed.push(Changed {
                id: id.clone(),
                file,
                fields,
            });
        }
    }
    out
}

/// Appends the dotted path of every field that differs between `old` and
/// `new`. Objects are walked key by key; arrays and scalars are compared
/// whole (a changed list is one field: `extended_paths.white_list`).
fn field_diff(
    old: &Value,
    new: &Value,
    path: &mut String,
    compare: Compare,
    out: &mut Vec<String>,
) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let removed = a.keys().filter(|k| !b.contains_key(*k));
            let keys: Vec<&String> = match compare {
                Compare::Exact => b.keys().chain(removed).collect(),
                Compare::Committed => b.keys().collect(),
            };
            for key in keys {
                let len = path.len();
                if !path.is_empty() && !path.ends_with(':') {
                    path.push('.');
                }
                path.push_str(key);
                match (a.get(key), b.get(key)) {
                    (Some(x), Some(y)) => field_diff(x, y, path, compare, out),
                    _ => out.push(path.clone()),
                }
                path.truncate(len);
            }
        }
        (a, b) if a == b => {}
        _ => out.push(if path.is_empty() {
            "(whole document)".to_string()
        } else {
            path.clone()
        }),
    }
}

/// How a plan is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum PlanFormat {
    /// Grouped by kind, for people.
    #[default]
    Human,
    /// One JSON object, for programs.
    Json,
    /// A summary line, a table and the findings: a pull-request comment.
    Markdown,
}

/// How many changed fields a line of human or Markdown output names.
const FIELDS_SHOWN: usize = 8;

pub fn render(plan: &Plan, format: PlanFormat) -> String {
    match format {
        PlanFormat::Human => human(plan),
        // Serialising strings and numbers cannot fail.
        PlanFormat::Json => serde_json::to_string_pretty(plan).unwrap_or_default() + "\n",
        PlanFormat::Markdown => markdown(plan),
    }
}

fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn summary(plan: &Plan) -> String {
    let kind = |c: &Changes, one: &str, many: &str| {
        format!(
            "{} ({} added, {} removed, {} changed)",
            count(c.added.len() + c.removed.len() + c.changed.len(), one, many),
            c.added.len(),
            c.removed.len(),
            c.changed.len()
        )
    };
    if plan.is_empty() {
        return format!(
            "No changes. {}, {}.",
            count(plan.findings.errors.len(), "error", "errors"),
            count(plan.findings.warnings.len(), "warning", "warnings")
        );
    }
    format!(
        "{}; {}; {} changed. {}, {}.",
        kind(&plan.apis, "API", "APIs"),
        kind(&plan.policies, "policy", "policies"),
        count(plan.files.changed.len(), "file", "files"),
        count(plan.findings.errors.len(), "error", "errors"),
        count(plan.findings.warnings.len(), "warning", "warnings")
    )
}

fn shown_fields(fields: &[String]) -> String {
    let mut text = fields
        .iter()
        .take(FIELDS_SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if fields.len() > FIELDS_SHOWN {
        let _ = write!(text, " and {} more", fields.len() - FIELDS_SHOWN);
    }
    text
}

fn human(plan: &Plan) -> String {
    let mut out = summary(plan) + "\n";
    for (title, c) in [("APIs", &plan.apis), ("Policies", &plan.policies)] {
        if c.is_empty() {
            continue;
        }
        let _ = writeln!(out, "\n{title}:");
        for id in &c.added {
            let _ = writeln!(out, "  + {id}");
        }
        for id in &c.removed {
            let _ = writeln!(out, "  - {id}");
        }
        for ch in &c.changed {
            let _ = writeln!(
                out,
                "  ~ {} ({}): {}",
                ch.id,
                ch.file,
                shown_fields(&ch.fields)
            );
        }
    }
    if !plan.files.changed.is_empty() {
        let _ = writeln!(out, "\nFiles:");
        for path in &plan.files.changed {
            let _ = writeln!(out, "  ~ {path}");
        }
    }
    if !plan.findings.errors.is_empty() || !plan.findings.warnings.is_empty() {
        let _ = writeln!(out, "\nFindings:");
        for f in findings(plan) {
            let _ = writeln!(out, "  {}", finding_line(f));
        }
    }
    out
}

fn findings(plan: &Plan) -> impl Iterator<Item = &Finding> {
    plan.findings.errors.iter().chain(&plan.findings.warnings)
}

fn finding_line(f: &Finding) -> String {
    let severity = match f.severity {
        crate::validate::Severity::Error => "error",
        crate::validate::Severity::Warning => "warning",
    };
    let place = if f.line == 0 {
        f.file.clone()
    } else {
        format!("{}:{}:{}", f.file, f.line, f.column)
    };
    format!("{severity} {place} [{}] {}", f.rule, f.message)
}

/// Markdown table cells cannot hold `|` or line breaks.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace(['\n', '\r'], " ")
}

fn markdown(plan: &Plan) -> String {
    let mut out = format!("### tyk-gitops plan\n\n{}\n", summary(plan));
    if !plan.is_empty() {
        out.push_str("\n| kind | id | change | file | fields |\n|---|---|---|---|---|\n");
        for (kind, c) in [("API", &plan.apis), ("policy", &plan.policies)] {
            for id in &c.added {
                let _ = writeln!(out, "| {kind} | `{}` | added | | |", cell(id));
            }
            for id in &c.removed {
                let _ = writeln!(out, "| {kind} | `{}` | removed | | |", cell(id));
            }
            for ch in &c.changed {
                let _ = writeln!(
                    out,
                    "| {kind} | `{}` | changed | {} | {} |",
                    cell(&ch.id),
                    cell(&ch.file),
                    cell(&shown_fields(&ch.fields))
                );
            }
        }
        for path in &plan.files.changed {
            let _ = writeln!(out, "| file | `{}` | changed | | |", cell(path));
        }
    }
    if !plan.findings.errors.is_empty() || !plan.findings.warnings.is_empty() {
        out.push_str("\n**Findings**\n\n");
        for f in findings(plan) {
            let _ = writeln!(out, "- {}", finding_line(f).replace('\n', " "));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn side(apis: &[(&str, Value)], policies: &[(&str, Value)]) -> Side {
        let item = |id: &str, doc: &Value| {
            (
                id.to_string(),
                Item {
                    file: format!("x/{id}.json"),
                    doc: doc.clone(),
                    companions: BTreeMap::new(),
                },
            )
        };
        Side {
            apis: apis.iter().map(|(id, d)| item(id, d)).collect(),
            policies: policies.iter().map(|(id, d)| item(id, d)).collect(),
            files: Some(BTreeMap::new()),
        }
    }

    #[test]
    fn names_added_removed_and_the_changed_fields() {
        let base = side(
            &[
                (
                    "a",
                    json!({"proxy": {"listen_path": "/a/", "target_url": "http://x"}}),
                ),
                ("gone", json!({})),
            ],
            &[("p", json!({"rate": 10, "per": 60}))],
        );
        let new = side(
            &[
                (
                    "a",
                    json!({"proxy": {"listen_path": "/a2/", "target_url": "http://x"}, "use_keyless": true}),
                ),
                ("b", json!({})),
            ],
            &[("p", json!({"rate": 20, "per": 60}))],
        );
        let plan = diff(&base, &new, Compare::Exact, Report::default());
        assert_eq!(plan.apis.added, ["b"]);
        assert_eq!(plan.apis.removed, ["gone"]);
        assert_eq!(
            plan.apis.changed[0].fields,
            ["proxy.listen_path", "use_keyless"]
        );
        assert_eq!(plan.policies.changed[0].fields, ["rate"]);
    }

    #[test]
    fn against_a_gateway_only_committed_fields_count() {
        let gateway = side(
            &[(
                "a",
                json!({"proxy": {"listen_path": "/a/", "preserve_host_header": false}, "id": "65f"}),
            )],
            &[],
        );
        let same = side(&[("a", json!({"proxy": {"listen_path": "/a/"}}))], &[]);
        assert!(diff(&gateway, &same, Compare::Committed, Report::default()).is_empty());
        assert!(!diff(&gateway, &same, Compare::Exact, Report::default()).is_empty());
    }

    #[test]
    fn a_list_is_one_field_and_an_empty_plan_says_so() {
        let base = side(&[("a", json!({"tags": ["x"]}))], &[]);
        let new = side(&[("a", json!({"tags": ["x", "y"]}))], &[]);
        let plan = diff(&base, &new, Compare::Exact, Report::default());
        assert_eq!(plan.apis.changed[0].fields, ["tags"]);
        let none = diff(&base, &base, Compare::Exact, Report::default());
        assert!(render(&none, PlanFormat::Human).starts_with("No changes."));
    }
}
