//! Tyk JSON as people keep it in Git, turned into the gateway's file form
//! before anything else looks at it:
//!
//! - a Dashboard or tyk-sync API export, `{"api_definition": {…}}` (with
//!   `"oas": {…}` for a Tyk OAS API), becomes the classic definition, and
//!   its OpenAPI half the `<name>-oas.json` companion beside it;
//! - a Dashboard policy object, whose id is its database id `_id` (its `id`
//!   empty), gets that id as `id`, as the gateway keys policies by `id`.
//!
//! The revision on disk is then what the gateway reads; the user's file
//! keeps every position: the unwrapped value is cut out of the file as it
//! is and preceded by as many line breaks and spaces as stood before it, so
//! a finding's line and column are the ones in the file the user wrote.

use serde::Deserialize;
use serde_json::value::RawValue;

use super::locate::{line_col, locate};
use super::markers::{has_export_mark, has_policy_mark, json_file_where, may_unwrap};
use super::report::{Finding, Report, Severity};
use super::rules;
use crate::bundle::{
    APPS_DIR, MCP_SUFFIX, MIDDLEWARE_DIR, OAS_SUFFIX, POLICIES_DIR, POLICIES_MAP, TEMPLATES_DIR,
    TYK_INDEX,
};
use crate::tree::{Content, EntryKind, Tree, TreeEntry};

/// The parts of an API export that matter; `api_id` at the top means the
/// file is a definition already, whatever else it holds.
#[derive(Deserialize)]
struct ApiExport<'a> {
    #[serde(borrow)]
    api_definition: &'a RawValue,
    #[serde(borrow, default)]
    oas: Option<&'a RawValue>,
    #[serde(default)]
    api_id: Option<serde::de::IgnoredAny>,
}

/// A Dashboard policy's ids (and its grants, which tell it from an API).
#[derive(Deserialize)]
struct PolicyIds {
    #[serde(rename = "_id", default)]
    db_id: Option<String>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    access_rights: Option<serde::de::IgnoredAny>,
}

/// Unwraps every export in `tree`; findings for what cannot be unwrapped
/// go into `report`. Returns how many files were rewritten.
pub fn unwrap(tree: &mut Tree, report: &mut Report) -> usize {
    let mut added: Vec<TreeEntry> = Vec::new();
    let mut rewritten = 0;
    // Most commits hold no export at all: one look at the bytes, before
    // the list of names below.
    if !tree.entries.iter().any(|e| json_file_where(e, may_unwrap)) {
        return 0;
    }
    let taken: std::collections::HashSet<String> =
        tree.entries.iter().map(|e| e.path.clone()).collect();
    for entry in &mut tree.entries {
        if entry.kind != EntryKind::File || !entry.path.ends_with(".json") {
            continue;
        }
        let Content::Loaded(bytes) = &entry.content else {
            continue;
        };
        let path = entry.path.as_str();
        // Policies live under policies/, or anywhere a .tyk.json names.
        if !in_dir(path, APPS_DIR)
            && let Some(fixed) = policy_with_id(bytes)
        {
            *entry = TreeEntry::file(path.to_string(), fixed);
            rewritten += 1;
            continue;
        }
        if in_dir(path, POLICIES_DIR)
            || in_dir(path, TEMPLATES_DIR)
            || in_dir(path, MIDDLEWARE_DIR)
            || path.ends_with(OAS_SUFFIX)
            || path.ends_with(MCP_SUFFIX)
            || [POLICIES_MAP, TYK_INDEX].contains(&path)
        {
            continue;
        }
        let Some((definition, oas)) = api_export(bytes) else {
            continue;
        };
        if let Some(oas) = oas {
            let stem = path.trim_end_matches(".json");
            let companion = format!("{stem}{OAS_SUFFIX}");
            if taken.contains(&companion) {
                let (line, column) = line_col(bytes, locate(bytes, "/oas"));
                report.push(Finding {
                    rule: rules::TYK_INDEX,
                    severity: Severity::Error,
                    file: path.to_string(),
                    line,
                    column,
                    pointer: Some("/oas".into()),
                    message: format!(
                        "this export's OpenAPI document would become {companion}, which the commit already has"
                    ),
                    hint: Some(format!(
                        "keep one of the two: the export (and delete {companion}), or the pair"
                    )),
                });
                continue;
            }
            added.push(TreeEntry::file(companion, oas));
        }
        *entry = TreeEntry::file(path.to_string(), definition);
        rewritten += 1;
    }
    rewritten += added.len();
    tree.entries.extend(added);
    tree.entries.sort_by(|a, b| a.path.cmp(&b.path));
    rewritten
}

fn in_dir(path: &str, dir: &str) -> bool {
    path.strip_prefix(dir).is_some_and(|r| r.starts_with('/'))
}

/// The value `raw` (a slice of `bytes`) on its own, at the line and column
/// it has in `bytes`.
fn in_place(bytes: &[u8], raw: &RawValue) -> Vec<u8> {
    let text = raw.get().as_bytes();
    let offset = (text.as_ptr() as usize).saturating_sub(bytes.as_ptr() as usize);
    let (line, column) = line_col(bytes, offset);
    let mut out = Vec::with_capacity(line as usize + column as usize + text.len());
    out.resize(line.saturating_sub(1) as usize, b'\n');
    out.resize(out.len() + column.saturating_sub(1) as usize, b' ');
    out.extend_from_slice(text);
    out.push(b'\n');
    out
}

/// The classic definition and OpenAPI document of an API export, each at
/// its place; `None` when `bytes` is not one.
fn api_export(bytes: &[u8]) -> Option<(Vec<u8>, Option<Vec<u8>>)> {
    // Cheap refusal first: most files are definitions.
    if !has_export_mark(bytes) {
        return None;
    }
    let export: ApiExport = serde_json::from_slice(bytes).ok()?;
    if export.api_id.is_some() || !export.api_definition.get().starts_with('{') {
        return None;
    }
    let oas = export
        .oas
        .filter(|o| o.get().starts_with('{'))
        .map(|o| in_place(bytes, o));
    Some((in_place(bytes, export.api_definition), oas))
}

/// A Dashboard policy (`_id` set, `id` empty or absent) with `_id` as its
/// `id`: the empty `""` is replaced where it stands, or `"id"` is added
/// first in the object.
fn policy_with_id(bytes: &[u8]) -> Option<Vec<u8>> {
    if !has_policy_mark(bytes) {
        return None;
    }
    let ids: PolicyIds = serde_json::from_slice(bytes).ok()?;
    ids.access_rights?;
    let db_id = ids.db_id.filter(|i| !i.is_empty())?;
    let quoted = serde_json::to_string(&db_id).ok()?;
    match ids.id.as_deref() {
        Some("") => {
            let at = locate(bytes, "/id");
            (bytes.get(at..at + 2) == Some(b"\"\"")).then(|| {
                let mut out = bytes[..at].to_vec();
                out.extend_from_slice(quoted.as_bytes());
                out.extend_from_slice(&bytes[at + 2..]);
                out
            })
        }
        None => {
            let at = bytes.iter().position(|&b| b == b'{')?;
            let mut out = bytes[..=at].to_vec();
            out.extend_from_slice(format!("\"id\": {quoted}, ").as_bytes());
            out.extend_from_slice(&bytes[at + 1..]);
            Some(out)
        }
        Some(_) => None,
    }
}

/// Runs on every JSON file of every sync: a vectorised search, not a
/// window-by-window compare.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_api_export_keeps_every_position() {
        let file = b"{\n  \"api_model\": {},\n  \"api_definition\": {\"api_id\": \"a\",\n    \"name\": \"A\"},\n  \"oas\": {\"openapi\": \"3.0.3\"}\n}\n";
        let (def, oas) = api_export(file).expect("an export");
        let def = String::from_utf8(def).expect("utf-8");
        assert_eq!(
            def,
            "\n\n                    {\"api_id\": \"a\",\n    \"name\": \"A\"}\n"
        );
        let value: serde_json::Value = serde_json::from_str(&def).expect("json");
        assert_eq!(value["api_id"], "a");
        // "name" is on line 4, column 5 in both.
        let name = locate(def.as_bytes(), "/name");
        assert_eq!(
            line_col(def.as_bytes(), name),
            line_col(file, locate(file, "/api_definition/name"))
        );
        let oas = String::from_utf8(oas.expect("oas")).expect("utf-8");
        assert!(oas.starts_with("\n\n\n\n         {\"openapi\""), "{oas:?}");
        assert!(api_export(b"{\"api_id\": \"x\", \"api_definition\": {}}").is_none());
        assert!(api_export(b"{\"api_id\": \"x\"}").is_none());
    }

    #[test]
    fn a_dashboard_policy_gets_its_database_id() {
        let policy = |text: &str| policy_with_id(text.as_bytes());
        let fixed = policy(r#"{"_id": "5f1", "id": "", "access_rights": {}}"#).expect("fixed");
        assert_eq!(
            fixed,
            br#"{"_id": "5f1", "id": "5f1", "access_rights": {}}"#
        );
        let added = policy(r#"{"_id": "5f1", "access_rights": {}}"#).expect("added");
        let v: serde_json::Value = serde_json::from_slice(&added).expect("json");
        assert_eq!(v["id"], "5f1");
        assert!(policy(r#"{"_id": "5f1", "id": "gold", "access_rights": {}}"#).is_none());
        assert!(policy(r#"{"_id": "", "id": "", "access_rights": {}}"#).is_none());
        assert!(
            policy(r#"{"_id": "5f1", "id": ""}"#).is_none(),
            "not a policy"
        );
    }
}
