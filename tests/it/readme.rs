//! The README is the user guide: every flag and env var that `--help` shows
//! must be documented there, so the two cannot drift apart.

use crate::support::cli::Tg;

const COMMANDS: [&[&str]; 7] = [
    &["sync"],
    &["run"],
    &["validate"],
    &["fleet", "status"],
    &["fleet", "wait"],
    &["plan"],
    &["export"],
];

#[test]
fn readme_documents_every_flag_and_env_var_of_every_command() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let mut missing = Vec::new();
    for command in COMMANDS {
        let help = Tg::new(command).arg("--help").run().ok().stdout;
        for word in help.split(|c: char| c.is_whitespace() || c == '[' || c == ']' || c == ',') {
            let word = word.trim_matches(|c: char| "=.;:()`'\"".contains(c));
            let documented =
                |w: &str| readme.contains(&format!("`{w}`")) || readme.contains(&format!("`{w} "));
            if word.starts_with("--") && word.len() > 2 && word != "--help" && !documented(word) {
                missing.push(format!("{command:?}: flag {word}"));
            }
            if word.starts_with("TYK_GITOPS_") && !documented(word) {
                missing.push(format!("{command:?}: env {word}"));
            }
        }
    }
    missing.sort();
    missing.dedup();
    assert!(
        missing.is_empty(),
        "not in README.md:\n{}",
        missing.join("\n")
    );
}

#[test]
fn readme_rule_table_says_what_the_gateway_does_for_every_rule() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    for (rule, severity) in tyk_gitops::validate::rules::ALL {
        let row = readme
            .lines()
            .find(|l| {
                l.starts_with('|')
                    && l.split('|')
                        .nth(1)
                        .is_some_and(|first| first.contains(&format!("`{rule}`")))
            })
            .unwrap_or_else(|| panic!("no row for {rule} in the README's rule table"));
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        // | rule | what the gateway would do | severity |
        assert!(cells.len() >= 4 && !cells[2].is_empty(), "{row}");
        let severity = match severity {
            tyk_gitops::validate::Severity::Error => "error",
            tyk_gitops::validate::Severity::Warning => "warning",
        };
        // `error, unless --allow-empty` says when the error is lifted.
        assert!(
            cells[3] == severity || cells[3].starts_with(&format!("{severity}, ")),
            "{row}"
        );
    }
}
