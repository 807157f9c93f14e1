//! `${VAR}` substitution in definitions and policies, at sync time, as
//! Flux's post-build substitution does: one config repo serves staging and
//! production with different upstreams, org ids and hosts.
//!
//! - `${VAR}`, `${VAR:=default}` (also `${VAR:-default}`); `$${VAR}` is a
//!   literal `${VAR}`. Anything else (`$tyk_context.x`, `env://…`,
//!   `secrets://…`, `{{.Go}}`) passes through untouched.
//! - Only `*.json` outside `templates/` and `middleware/`: error templates
//!   and scripts are copied byte for byte.
//! - Values come from `--vars-file` (`KEY=VALUE` lines, or a folder of one
//!   file per key, as a mounted Kubernetes Secret) and from
//!   `TYK_GITOPS_VAR_<KEY>`, read again on every sync. Substitution is on
//!   only when one of them is given, so a repo that never asked for it
//!   never has a `${…}` changed under it.
//! - Values may be secrets: a finding that would quote one shows `${KEY}`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::bundle::{MIDDLEWARE_DIR, TEMPLATES_DIR};
use crate::tree::{Content, Tree, TreeEntry};
use crate::validate::rules::UNSET_VARIABLE;
use crate::validate::{Finding, Report, Severity};

/// Environment variables that define a substitution variable each.
pub const ENV_PREFIX: &str = "TYK_GITOPS_VAR_";
/// Values shorter than this are not searched for in findings: "1" or "eu"
/// would mangle every message, and are not secrets.
const REDACT_MIN_LEN: usize = 4;

/// Where the variables come from; read on every use.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VarsConfig {
    pub file: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
#[error("--vars-file {path}: {message}")]
pub struct VarsError {
    pub path: PathBuf,
    pub message: String,
}

/// The variables of one sync. `Debug` shows the names only.
#[derive(Clone, Default)]
pub struct Vars {
    values: BTreeMap<String, String>,
}

impl std::fmt::Debug for Vars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.values.keys()).finish()
    }
}

impl VarsConfig {
    /// The variables now, or `None` when substitution is off (no file, no
    /// `TYK_GITOPS_VAR_*`). The file's values win over the environment's.
    pub fn load(&self) -> Result<Option<Vars>, VarsError> {
        let mut values: BTreeMap<String, String> = std::env::vars()
            .filter_map(|(k, v)| k.strip_prefix(ENV_PREFIX).map(|name| (name.to_string(), v)))
            .filter(|(name, _)| valid_name(name))
            .collect();
        let Some(path) = &self.file else {
            return Ok((!values.is_empty()).then_some(Vars { values }));
        };
        let error = |message: String| VarsError {
            path: path.clone(),
            message,
        };
        let meta = std::fs::metadata(path).map_err(|e| error(e.to_string()))?;
        if meta.is_dir() {
            values.extend(read_dir_vars(path).map_err(error)?);
        } else {
            let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
            values.extend(parse_lines(&text).map_err(error)?);
        }
        Ok(Some(Vars { values }))
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `KEY=VALUE` lines; `#` comments and blank lines skipped; a value may be
/// quoted with `"` or `'` (the quotes are dropped), `export ` is allowed.
fn parse_lines(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| format!("line {}: expected KEY=VALUE", n + 1))?;
        let key = key.trim();
        if !valid_name(key) {
            return Err(format!("line {}: {key:?} is not a variable name", n + 1));
        }
        let value = value.trim();
        let unquoted = ['"', '\'']
            .iter()
            .find_map(|q| value.strip_prefix(*q).and_then(|v| v.strip_suffix(*q)))
            .unwrap_or(value);
        out.insert(key.to_string(), unquoted.to_string());
    }
    Ok(out)
}

/// One variable per file, named after the file (a Secret's keys); a final
/// newline is dropped. Kubernetes' own `..data` entries are skipped.
fn read_dir_vars(dir: &Path) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir).map_err(|e| e.to_string())? {
        let entry = entry.map_err(|e| e.to_string())?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !valid_name(&name) || !entry.path().is_file() {
            continue;
        }
        let value = std::fs::read_to_string(entry.path()).map_err(|e| format!("{name}: {e}"))?;
        let value = value.strip_suffix('\n').unwrap_or(&value);
        out.insert(name, value.strip_suffix('\r').unwrap_or(value).to_string());
    }
    Ok(out)
}

impl Vars {
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Vars {
        Vars {
            values: pairs
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// Substitutes in every definition and policy of `tree`; returns an
    /// `unset-variable` error for each variable without a value or default.
    pub fn substitute(&self, tree: &mut Tree) -> Vec<Finding> {
        let mut findings = Vec::new();
        for entry in &mut tree.entries {
            if !substitutable(&entry.path) {
                continue;
            }
            let Content::Loaded(bytes) = &entry.content else {
                continue;
            };
            if !super::markers::may_substitute(bytes) {
                continue;
            }
            let Ok(text) = std::str::from_utf8(bytes) else {
                continue;
            };
            let (out, unset) = self.expand(text);
            for (name, line, column) in unset {
                findings.push(Finding {
                    rule: UNSET_VARIABLE,
                    severity: Severity::Error,
                    file: entry.path.clone(),
                    line,
                    column,
                    pointer: None,
                    message: format!("${{{name}}} has no value and no default"),
                    hint: Some(format!(
                        "set {name} in --vars-file or as {ENV_PREFIX}{name}, or give a default: ${{{name}:=value}}"
                    )),
                });
            }
            if out != text {
                *entry = TreeEntry::file(entry.path.clone(), out.into_bytes());
            }
        }
        findings
    }

    /// The text with every `${…}` replaced, and the unset names with their
    /// 1-based line and column.
    fn expand(&self, text: &str) -> (String, Vec<(String, u32, u32)>) {
        let mut out = String::with_capacity(text.len());
        let mut unset = Vec::new();
        let mut rest = text;
        while let Some(at) = rest.find('$') {
            out.push_str(&rest[..at]);
            let tail = &rest[at..];
            if let Some(after) = tail.strip_prefix("$${") {
                out.push_str("${");
                rest = after;
                continue;
            }
            match parse_reference(tail) {
                Some((name, default, len)) => {
                    match self.values.get(name).map(String::as_str).or(default) {
                        Some(value) => out.push_str(value),
                        None => {
                            let offset = text.len() - tail.len();
                            let (line, column) = position(text, offset);
                            unset.push((name.to_string(), line, column));
                            out.push_str(&tail[..len]);
                        }
                    }
                    rest = &tail[len..];
                }
                None => {
                    out.push('$');
                    rest = &tail[1..];
                }
            }
        }
        out.push_str(rest);
        (out, unset)
    }

    /// Replaces every value (of a useful length) quoted in a finding by the
    /// `${NAME}` it came from.
    pub fn redact(&self, report: &mut Report) {
        // A finding may quote a URL with its credentials already masked:
        // that form of a value is looked for too.
        let masked: Vec<(&String, String)> = self
            .values
            .iter()
            .map(|(k, v)| (k, crate::redact::redact_url(v)))
            .filter(|(k, m)| self.values.get(*k) != Some(m))
            .collect();
        let mut by_length: Vec<(&String, &String)> = self
            .values
            .iter()
            .chain(masked.iter().map(|(k, m)| (*k, m)))
            .filter(|(_, v)| v.len() >= REDACT_MIN_LEN)
            .collect();
        // Longest first, so a value that contains another is replaced whole.
        by_length.sort_by_key(|(_, v)| std::cmp::Reverse(v.len()));
        let scrub = |text: &mut String| {
            for (name, value) in &by_length {
                if text.contains(value.as_str()) {
                    *text = text.replace(value.as_str(), &format!("${{{name}}}"));
                }
            }
        };
        for f in report.errors.iter_mut().chain(report.warnings.iter_mut()) {
            scrub(&mut f.message);
            if let Some(hint) = &mut f.hint {
                scrub(hint);
            }
        }
    }
}

/// The validate stage on `tree` after substituting `vars` (when given):
/// unset variables join the report's errors, and no finding quotes a value.
pub fn check(
    mut tree: Tree,
    vars: Option<&Vars>,
    opts: &crate::validate::Options,
    cache: &mut crate::validate::Cache,
) -> (crate::bundle::Bundle, Report) {
    let unset = vars.map(|v| v.substitute(&mut tree)).unwrap_or_default();
    let (bundle, mut report) = crate::validate::check(tree, opts, cache);
    if let Some(vars) = vars {
        report.errors.extend(unset);
        vars.redact(&mut report);
        report.sort();
    }
    (bundle, report)
}

/// `${NAME}` or `${NAME:=default}` / `${NAME:-default}` at the start of
/// `text`: the name, the default, and the length of the reference.
fn parse_reference(text: &str) -> Option<(&str, Option<&str>, usize)> {
    let body = text.strip_prefix("${")?;
    let end = body.find('}')?;
    let inner = &body[..end];
    let (name, default) = match inner.find(":=").or_else(|| inner.find(":-")) {
        Some(i) => (&inner[..i], Some(&inner[i + 2..])),
        None => (inner, None),
    };
    valid_name(name).then_some((name, default, 2 + end + 1))
}

fn position(text: &str, offset: usize) -> (u32, u32) {
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (
        u32::try_from(line).unwrap_or(u32::MAX),
        u32::try_from(column).unwrap_or(u32::MAX),
    )
}

fn substitutable(path: &str) -> bool {
    path.ends_with(".json")
        && !path.starts_with(&format!("{TEMPLATES_DIR}/"))
        && !path.starts_with(&format!("{MIDDLEWARE_DIR}/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vars {
        Vars::from_pairs([("HOST", "orders.prod.internal"), ("ORG", "acme")])
    }

    #[test]
    fn references_defaults_escapes_and_what_is_left_alone() {
        let (out, unset) = vars().expand(
            r#"{"t": "http://${HOST}:${PORT:=8080}/", "o": "${ORG}", "r": "${REGION:-eu}", "lit": "$${HOST}", "ctx": "$tyk_context.x", "s": "env://SECRET", "g": "{{.Host}}", "odd": "${not valid}", "end": "$"}"#,
        );
        assert_eq!(
            out,
            r#"{"t": "http://orders.prod.internal:8080/", "o": "acme", "r": "eu", "lit": "${HOST}", "ctx": "$tyk_context.x", "s": "env://SECRET", "g": "{{.Host}}", "odd": "${not valid}", "end": "$"}"#
        );
        assert!(unset.is_empty());
    }

    #[test]
    fn an_unset_variable_is_named_with_its_line_and_column() {
        let (out, unset) = vars().expand("{\n  \"target_url\": \"${UPSTREAM}\"\n}");
        assert_eq!(unset, [("UPSTREAM".to_string(), 2, 18)]);
        assert!(out.contains("${UPSTREAM}"), "left as written");
    }

    #[test]
    fn files_are_key_value_lines_with_comments_and_quotes() {
        let parsed = parse_lines("# staging\nHOST=a.b\nexport ORG=\"acme inc\"\n\nQ='x=y'\n")
            .expect("parses");
        assert_eq!(parsed["HOST"], "a.b");
        assert_eq!(parsed["ORG"], "acme inc");
        assert_eq!(parsed["Q"], "x=y");
        assert!(parse_lines("no equals sign").is_err());
        assert!(parse_lines("1BAD=x").is_err());
    }

    #[test]
    fn findings_show_the_name_never_the_value() {
        let mut report = Report::default();
        report.push(Finding {
            rule: "schema",
            severity: Severity::Error,
            file: "apps/a.json".into(),
            line: 1,
            column: 1,
            pointer: None,
            message: "\"http://orders.prod.internal\" is bad".into(),
            hint: None,
        });
        vars().redact(&mut report);
        assert_eq!(report.errors[0].message, "\"http://${HOST}\" is bad");
    }

    #[test]
    fn templates_and_scripts_are_never_substituted() {
        let mut tree = Tree::from_entries(vec![
            TreeEntry::file("apps/a.json", b"{\"x\": \"${HOST}\"}".to_vec()),
            TreeEntry::file("templates/error.json", b"{\"x\": \"${HOST}\"}".to_vec()),
            TreeEntry::file("middleware/a.js", b"var x = \"${HOST}\";".to_vec()),
        ]);
        assert!(vars().substitute(&mut tree).is_empty());
        let text = |p: &str| match &tree.get(p).expect("entry").content {
            Content::Loaded(b) => String::from_utf8(b.to_vec()).expect("utf-8"),
            _ => String::new(),
        };
        assert_eq!(text("apps/a.json"), "{\"x\": \"orders.prod.internal\"}");
        assert_eq!(text("templates/error.json"), "{\"x\": \"${HOST}\"}");
        assert_eq!(text("middleware/a.js"), "var x = \"${HOST}\";");
        let entry = tree.get("apps/a.json").expect("entry");
        assert_eq!(
            entry.blob,
            crate::tree::blob_id(b"{\"x\": \"orders.prod.internal\"}")
        );
    }
}
