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
    /// `null` when the finding is about the whole file (the key is always
    /// present, so consumers see one shape).
    pub pointer: Option<String>,
    pub message: String,
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

impl Report {
    /// Whether a commit with this report must not be applied: any error,
    /// or, with `strict`, any warning.
    pub fn rejects(&self, strict: bool) -> bool {
        self.has_errors() || (strict && !self.warnings.is_empty())
    }
}

/// How findings are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// Grouped by file, for people.
    #[default]
    Human,
    /// `{"errors": [...], "warnings": [...]}`, for programs.
    Json,
    /// `::error file=…,line=…,col=…::message` workflow commands, so GitHub
    /// Actions annotates the pull request.
    Github,
}

/// Renders a report; `sync` and `run` print a rejected commit's findings
/// with this too. `color` only affects `Format::Human`.
pub fn render(report: &Report, format: Format, color: bool) -> String {
    match format {
        Format::Human => human(report, color),
        // Serialising plain strings and numbers cannot fail.
        Format::Json => serde_json::to_string_pretty(report).unwrap_or_default() + "\n",
        Format::Github => github(report),
    }
}

fn human(report: &Report, color: bool) -> String {
    use owo_colors::OwoColorize;
    use std::fmt::Write;

    let paint =
        |text: &str, style: fn(&str) -> String| if color { style(text) } else { text.to_string() };
    let mut all: Vec<&Finding> = report.errors.iter().chain(&report.warnings).collect();
    all.sort_by(|a, b| {
        (&a.file, a.line, a.column, b.severity).cmp(&(&b.file, b.line, b.column, a.severity))
    });
    let mut out = String::new();
    let mut current: Option<&str> = None;
    let mut files = 0;
    for f in all {
        if current != Some(f.file.as_str()) {
            if current.is_some() {
                out.push('\n');
            }
            files += 1;
            current = Some(&f.file);
            let _ = writeln!(out, "{}", paint(&f.file, |s| s.bold().to_string()));
        }
        let place = if f.line == 0 {
            "-".to_string()
        } else {
            format!("{}:{}", f.line, f.column)
        };
        let severity = match f.severity {
            Severity::Error => paint("error", |s| s.red().bold().to_string()),
            Severity::Warning => paint("warning", |s| s.yellow().bold().to_string()),
        };
        let pad = if f.severity == Severity::Error {
            "  "
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "  {place:>7}  {severity}{pad}  {}  {}",
            f.message,
            paint(f.rule, |s| s.dimmed().to_string())
        );
        if let Some(hint) = &f.hint {
            let _ = writeln!(
                out,
                "  {:>7}  {} {hint}",
                "",
                paint("hint:", |s| s.cyan().to_string())
            );
        }
    }
    if files > 0 {
        out.push('\n');
    }
    let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
    let mut summary = format!(
        "{}, {}",
        plural(report.errors.len(), "error"),
        plural(report.warnings.len(), "warning"),
    );
    // "in 0 files" would read as if nothing had been checked.
    if files > 0 {
        summary.push_str(&format!(" in {}", plural(files, "file")));
    }
    let summary = if report.has_errors() {
        paint(&summary, |s| s.red().bold().to_string())
    } else {
        paint(&summary, |s| s.green().to_string())
    };
    let _ = writeln!(out, "{summary}");
    out
}

/// GitHub workflow command escaping: data escapes `%`, CR and LF;
/// properties also `:` and `,`.
fn escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

fn github(report: &Report) -> String {
    let mut out = String::new();
    for f in report.errors.iter().chain(&report.warnings) {
        let level = match f.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let mut props = format!("file={}", escape_property(&f.file));
        if f.line > 0 {
            props.push_str(&format!(",line={},col={}", f.line, f.column));
        }
        props.push_str(&format!(",title={}", escape_property(f.rule)));
        let mut message = f.message.clone();
        if let Some(hint) = &f.hint {
            message.push_str(&format!("\n{hint}"));
        }
        out.push_str(&format!("::{level} {props}::{}\n", escape_data(&message)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(rule: &'static str, severity: Severity, file: &str, line: u32) -> Finding {
        Finding {
            rule,
            severity,
            file: file.into(),
            line,
            column: 3,
            pointer: Some("/api_id".into()),
            message: "bad, really: 100%".into(),
            hint: Some("fix it".into()),
        }
    }

    fn sample() -> Report {
        let mut r = Report::default();
        r.push(finding("schema", Severity::Error, "apps/a,b.json", 2));
        r.push(finding("inactive-api", Severity::Warning, "apps/c.json", 0));
        r
    }

    #[test]
    fn github_annotations_escape_and_omit_unknown_lines() {
        let out = render(&sample(), Format::Github, false);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            "::error file=apps/a%2Cb.json,line=2,col=3,title=schema::bad, really: 100%25%0Afix it"
        );
        assert_eq!(
            lines[1],
            "::warning file=apps/c.json,title=inactive-api::bad, really: 100%25%0Afix it"
        );
    }

    #[test]
    fn json_has_the_documented_shape() {
        let v: serde_json::Value =
            serde_json::from_str(&render(&sample(), Format::Json, false)).unwrap();
        let e = &v["errors"][0];
        for key in [
            "rule", "file", "line", "column", "pointer", "message", "hint",
        ] {
            assert!(e.get(key).is_some(), "{key}");
        }
        assert!(e.get("severity").is_none());
        assert_eq!(v["warnings"][0]["rule"], "inactive-api");
    }

    #[test]
    fn human_groups_by_file_and_summarises() {
        let out = render(&sample(), Format::Human, false);
        assert!(out.starts_with("apps/a,b.json\n"), "{out}");
        assert!(out.ends_with("1 error, 1 warning in 2 files\n"), "{out}");
        assert!(!out.contains('\u{1b}'));
        assert!(render(&sample(), Format::Human, true).contains('\u{1b}'));
    }
}
