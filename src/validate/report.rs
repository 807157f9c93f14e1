//! Findings and the report that carries them out of the validate stage.
//! A finding names the file (relative to the config root), the place in it
//! and the rule, so a user can fix it without guessing.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    Error,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Stable rule id, e.g. `json-syntax`, `duplicate-api-id`.
    pub rule: &'static str,
    #[serde(skip)]
    pub severity: Severity,
    /// Relative to the config root.
    pub file: String,
    /// 1-based; 0 when the finding is about the whole file.
    pub line: u32,
    pub column: u32,
    /// JSON pointer into the document, where it applies.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pointer: Option<String>,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

/// What the validate stage found. A commit is applied only when `errors` is
/// empty (and, with `--strict`, `warnings` too).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub errors: Vec<Finding>,
    pub warnings: Vec<Finding>,
}

impl Report {
    pub fn push(&mut self, finding: Finding) {
        match finding.severity {
            Severity::Error => self.errors.push(finding),
            Severity::Warning => self.warnings.push(finding),
        }
    }

    pub fn has_errors(&self) -> bool {
        !self.errors.is_empty()
    }

    /// Sorts findings by file, line, column and rule, so output is stable.
    pub fn sort(&mut self) {
        let key = |f: &Finding| (f.file.clone(), f.line, f.column, f.rule);
        self.errors.sort_by_key(key);
        self.warnings.sort_by_key(key);
    }
}
