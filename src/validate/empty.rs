//! Two commits that break no file rule yet would leave a gateway serving
//! nothing: a config root that holds no config at all (a wrong `--path`, or
//! folders moved in the repo), and a commit that removes every API the
//! gateway serves. Both are refused unless the user says an empty gateway is
//! meant (`--allow-empty`, as Argo CD's `allowEmpty`). They run after
//! `check` because they depend on flags and on what the gateway serves, not
//! only on the files.

use super::report::{Finding, Report, Severity};
use super::rules;
use crate::bundle::{APPS_DIR, POLICIES_DIR, POLICIES_MAP, TYK_INDEX};
use crate::tree::Tree;

/// How many `--path` suggestions a message names at most.
const MAX_SUGGESTIONS: usize = 5;

/// The config root as the user named it, and what it holds.
#[derive(Debug, Clone)]
pub struct ConfigRoot {
    /// For messages: `--path envs/prod of commit 1a2b3c`, `./config`.
    pub label: String,
    /// `apps/`, `policies/`, `policies.json` or `.tyk.json` is there.
    pub holds_config: bool,
    /// Folders (relative to the repository, or to DIR) that have `apps/`:
    /// the `--path` values that would hold a config. Only looked up when
    /// `holds_config` is false.
    pub suggestions: Vec<String>,
}

/// Whether the tree holds anything the gateway reads API definitions or
/// policies from.
pub fn holds_config(tree: &Tree) -> bool {
    let apps = format!("{APPS_DIR}/");
    let policies = format!("{POLICIES_DIR}/");
    tree.entries.iter().any(|e| {
        let p = e.path.as_str();
        p == POLICIES_MAP || p == TYK_INDEX || p.starts_with(&apps) || p.starts_with(&policies)
    })
}

/// Pushes `empty-config-root` or `no-apis` into `report` unless
/// `allow_empty`. `apis` is the bundle's API count; `serving` how many APIs
/// the gateway serves now (`None` when unknown, as for `validate`: then any
/// commit without an API is reported, since a sync could wipe a gateway).
pub fn check(
    report: &mut Report,
    root: &ConfigRoot,
    apis: usize,
    serving: Option<usize>,
    allow_empty: bool,
) {
    if allow_empty {
        return;
    }
    if !root.holds_config {
        report.push(empty_config_root(root));
        return;
    }
    if apis > 0 {
        return;
    }
    let message = match serving {
        Some(0) => return,
        Some(n) => format!(
            "this commit defines no API and the gateway serves {n}: applying it would remove them all"
        ),
        None => "the config root defines no API: a sync would remove every API the gateway serves"
            .to_string(),
    };
    report.push(Finding {
        rule: rules::NO_APIS,
        severity: Severity::Error,
        file: ".".into(),
        line: 0,
        column: 0,
        pointer: None,
        message,
        hint: Some(
            "if an empty gateway is meant, pass --allow-empty (TYK_GITOPS_ALLOW_EMPTY=true)".into(),
        ),
    });
}

fn empty_config_root(root: &ConfigRoot) -> Finding {
    let hint = match root.suggestions.as_slice() {
        [] => "point --path at the folder that holds apps/ and policies/; \
               if an empty gateway is meant, pass --allow-empty"
            .to_string(),
        found => {
            let shown: Vec<String> = found
                .iter()
                .take(MAX_SUGGESTIONS)
                .map(|p| format!("--path {p}"))
                .collect();
            let more = found.len().saturating_sub(MAX_SUGGESTIONS);
            format!(
                "these folders have apps/: {}{}",
                shown.join(", "),
                if more > 0 {
                    format!(" (and {more} more)")
                } else {
                    String::new()
                }
            )
        }
    };
    Finding {
        rule: rules::EMPTY_CONFIG_ROOT,
        severity: Severity::Error,
        file: ".".into(),
        line: 0,
        column: 0,
        pointer: None,
        message: format!(
            "{} holds no config (no apps/, policies/, policies.json or .tyk.json): \
             publishing it would remove every API from the gateway",
            root.label
        ),
        hint: Some(hint),
    }
}

/// Whether every error of `report` is one of this module's: the commit is
/// only refused for being empty, which `--allow-empty` lifts.
pub fn only_empty(report: &Report) -> bool {
    report.has_errors()
        && report
            .errors
            .iter()
            .all(|f| f.rule == rules::EMPTY_CONFIG_ROOT || f.rule == rules::NO_APIS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::config_roots;
    use crate::tree::TreeEntry;

    fn root(holds: bool, suggestions: &[&str]) -> ConfigRoot {
        ConfigRoot {
            label: "--path envs/prd".into(),
            holds_config: holds,
            suggestions: suggestions.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn only_layout_markers_make_a_config_root() {
        let tree = |paths: &[&str]| {
            Tree::from_entries(
                paths
                    .iter()
                    .map(|p| TreeEntry::file(*p, b"{}".to_vec()))
                    .collect(),
            )
        };
        assert!(!holds_config(&tree(&[])));
        assert!(!holds_config(&tree(&[
            "README.md",
            "middleware/a.js",
            "tyk.conf"
        ])));
        assert!(!holds_config(&tree(&["appsx/a.json"])));
        assert!(holds_config(&tree(&["apps/a.json"])));
        assert!(holds_config(&tree(&["policies/p.json"])));
        assert!(holds_config(&tree(&["policies.json"])));
        assert!(holds_config(&tree(&[".tyk.json"])));
    }

    #[test]
    fn suggestions_are_the_parents_of_apps_folders() {
        let dirs = [
            "envs",
            "envs/prod/apps",
            "apps",
            "envs/staging/apps",
            "docs/apps-old",
        ];
        assert_eq!(config_roots(dirs), vec![".", "envs/prod", "envs/staging"]);
    }

    #[test]
    fn an_empty_root_names_itself_and_where_a_config_is() {
        let mut report = Report::default();
        check(&mut report, &root(false, &["envs/prod"]), 0, Some(3), false);
        let f = &report.errors[0];
        assert_eq!(f.rule, rules::EMPTY_CONFIG_ROOT);
        assert!(f.message.contains("--path envs/prd"), "{}", f.message);
        assert_eq!(
            f.hint.as_deref(),
            Some("these folders have apps/: --path envs/prod")
        );
        assert!(only_empty(&report));
    }

    #[test]
    fn no_apis_counts_only_when_the_gateway_would_lose_some() {
        let mut report = Report::default();
        check(&mut report, &root(true, &[]), 0, Some(0), false);
        assert!(!report.has_errors(), "nothing to lose");
        check(&mut report, &root(true, &[]), 1, Some(5), false);
        assert!(!report.has_errors(), "one API left");
        check(&mut report, &root(true, &[]), 0, Some(2), true);
        assert!(!report.has_errors(), "allowed");
        check(&mut report, &root(true, &[]), 0, Some(2), false);
        assert_eq!(report.errors[0].rule, rules::NO_APIS);
        assert!(report.errors[0].message.contains("serves 2"));
        let mut unknown = Report::default();
        check(&mut unknown, &root(true, &[]), 0, None, false);
        assert_eq!(unknown.errors[0].rule, rules::NO_APIS);
    }
}
