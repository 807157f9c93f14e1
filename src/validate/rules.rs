//! The rules that look across files (their ids, a public contract, live in
//! `ids.rs` and are re-exported here). Every cross-file rule groups facts in hash
//! maps keyed by what must be unique, so the cost is linear in the number of
//! files, never pairwise.

use std::collections::BTreeSet;

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};

use super::analyse::{Analysis, Facts, MAX_FINDINGS_PER_RULE, OasFacts, PolicyFacts, Role};
use super::locate::{line_col, locate};
use super::report::{Finding, Report, Severity};
use crate::bundle::{self, MCP_SUFFIX, MIDDLEWARE_DIR, MiddlewareRef, OAS_SUFFIX, TEMPLATES_DIR};
use crate::gateway::GatewayVersion;
use crate::tree::{Content, EntryKind, Tree};

pub use super::ids::*;

/// One analysed file of the bundle, as the cross-file rules see it.
pub struct Item<'a> {
    /// Relative to the config root.
    pub path: &'a str,
    /// Its name in the revision's `apps/` (API files only).
    pub name: &'a str,
    pub role: Role,
    pub bytes: &'a [u8],
    pub analysis: &'a Analysis,
}

/// Adds findings, capped per file and rule so that hostile input (a policy
/// naming a million unknown APIs) stays linear.
struct Emitter<'r, 'a> {
    items: &'r [Item<'a>],
    /// Where an item left unread (empty `bytes`) is read to place a finding.
    tree: &'r Tree,
    report: &'r mut Report,
    counts: HashMap<(usize, &'static str), usize>,
}

impl Emitter<'_, '_> {
    fn emit(
        &mut self,
        at: usize,
        rule: &'static str,
        severity: Severity,
        pointer: &str,
        message: String,
        hint: Option<String>,
    ) {
        let count = self.counts.entry((at, rule)).or_insert(0);
        *count += 1;
        if *count > MAX_FINDINGS_PER_RULE {
            return;
        }
        let item = &self.items[at];
        let unread = match (item.bytes.is_empty(), self.tree.index_of(item.path)) {
            (true, Some(i)) => self.tree.bytes_of(i),
            _ => std::borrow::Cow::Borrowed(item.bytes),
        };
        let (line, column) = line_col(&unread, locate(&unread, pointer));
        self.report.push(Finding {
            rule,
            severity,
            file: item.path.to_string(),
            line,
            column,
            pointer: Some(pointer.to_string()),
            message,
            hint,
        });
    }
}

/// The gateway the bundle is checked for, as far as the rules care.
#[derive(Debug, Clone, Copy, Default)]
pub struct Target {
    /// `enable_custom_domains`: routing matches `domain` too.
    pub custom_domains: bool,
    pub version: Option<GatewayVersion>,
}

/// Runs every cross-file rule. Returns the files outside `middleware/` and
/// `templates/` that definitions reference and the tree holds: they ship
/// with the revision too.
pub fn cross_file(
    items: &[Item<'_>],
    tree: &Tree,
    target: Target,
    report: &mut Report,
) -> BTreeSet<String> {
    let mut out = Emitter {
        items,
        tree,
        report,
        counts: HashMap::new(),
    };
    apis(items, target, &mut out);
    companions(items, &mut out);
    policies(items, &mut out);
    middleware(items, tree, &mut out)
}

/// Items grouped by a key, where only a key two or more items share gets
/// a list: a config of 10,000 distinct listen paths makes no allocation
/// per path. Items keep their order within a group.
struct Shared<K>(HashMap<K, Group>);

enum Group {
    One(usize),
    Many(Vec<usize>),
}

impl<K: std::hash::Hash + Eq> Shared<K> {
    fn with_capacity(capacity: usize) -> Shared<K> {
        Shared(HashMap::with_capacity(capacity))
    }

    fn add(&mut self, key: K, item: usize) {
        use std::collections::hash_map::Entry;
        match self.0.entry(key) {
            Entry::Vacant(v) => {
                v.insert(Group::One(item));
            }
            Entry::Occupied(mut o) => match o.get_mut() {
                Group::One(first) => {
                    let first = *first;
                    o.insert(Group::Many(vec![first, item]));
                }
                Group::Many(all) => all.push(item),
            },
        }
    }

    /// The keys two or more items share, with those items.
    fn shared(&self) -> impl Iterator<Item = (&K, &Vec<usize>)> {
        self.0.iter().filter_map(|(k, g)| match g {
            Group::Many(all) => Some((k, all)),
            Group::One(_) => None,
        })
    }
}

fn apis(items: &[Item<'_>], target: Target, out: &mut Emitter<'_, '_>) {
    let mut by_id: Shared<&str> = Shared::with_capacity(items.len());
    let mut by_route: Shared<(&str, &str)> = Shared::with_capacity(items.len());
    // Listen paths whatever the domain (see `shadowed`).
    let mut by_path: Shared<&str> = Shared::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let Facts::Api(api) = &item.analysis.facts else {
            continue;
        };
        if let Some(version) = target.version.filter(|v| api.is_mcp && !v.knows_mcp()) {
            out.emit(
                i,
                NEEDS_NEWER_GATEWAY,
                Severity::Error,
                "/application_protocol",
                format!(
                    "an MCP API needs Tyk {} or newer; the gateway is {version}, which does not load it at all",
                    GatewayVersion::MCP
                ),
                Some("upgrade the gateway, or keep MCP APIs out of this config".into()),
            );
        }
        if let Some(id) = api.api_id.as_deref().filter(|id| !id.is_empty()) {
            by_id.add(id, i);
        }
        if let Some(lp) = api
            .listen_path
            .as_deref()
            .filter(|lp| !lp.trim().is_empty())
        {
            by_route.add((api.domain.as_str(), lp), i);
            by_path.add(lp, i);
        }
    }
    for (id, files) in by_id.shared() {
        for &i in files {
            let others = other_paths(items, files, i);
            out.emit(
                i,
                DUPLICATE_API_ID,
                Severity::Error,
                "/api_id",
                format!("api_id {id:?} is also used by {others}"),
                Some("the gateway keys APIs by api_id: one definition would silently replace the other".into()),
            );
        }
    }
    for ((domain, lp), files) in by_route.shared() {
        let on = if domain.is_empty() {
            "any domain".to_string()
        } else {
            format!("domain {domain:?}")
        };
        for &i in files {
            let others = other_paths(items, files, i);
            let renamed = match &items[i].analysis.facts {
                Facts::Api(api) => format!("{lp}-{}", api.api_id.as_deref().unwrap_or_default()),
                _ => format!("{lp}-<api_id>"),
            };
            out.emit(
                i,
                DUPLICATE_LISTEN_PATH,
                Severity::Error,
                "/proxy/listen_path",
                format!("listen path {lp:?} on {on} is also used by {others}"),
                Some(format!(
                    "on a fresh load the gateway renames every API on this path to <path>-<api_id> without a word (this one to {renamed:?}; an API already loaded on the path keeps it): give each API its own listen path"
                )),
            );
        }
    }
    if !target.custom_domains {
        shadowed(items, &by_path, out);
    }
}

/// With custom domains off, routing ignores `domain` while the gateway's
/// collision check does not: APIs on one path with different domains are
/// not renamed, and one silently takes every request of the other.
fn shadowed(items: &[Item<'_>], by_path: &Shared<&str>, out: &mut Emitter<'_, '_>) {
    let domain_of = |i: usize| match &items[i].analysis.facts {
        Facts::Api(api) => api.domain.as_str(),
        _ => "",
    };
    for (lp, indexes) in by_path.shared() {
        let domains: BTreeSet<&str> = indexes.iter().map(|&i| domain_of(i)).collect();
        if domains.len() < 2 {
            continue;
        }
        for &i in indexes {
            let domain = domain_of(i);
            let others = other_paths(items, indexes, i);
            let on = if domain.is_empty() {
                "no domain".to_string()
            } else {
                format!("domain {domain:?}")
            };
            out.emit(
                i,
                SHADOWED_LISTEN_PATH,
                Severity::Error,
                "/proxy/listen_path",
                format!("listen path {lp:?} ({on}) is also used by {others} with another domain, and custom domains are off: one API silently takes the other's requests"),
                Some("give each API its own listen path, or set enable_custom_domains in tyk.conf (or --custom-domains)".into()),
            );
        }
    }
}

/// The gateway parses `templates/error*` once, at start, and panics when
/// no file matches or one does not parse. Only checked when the repo ships
/// `templates/` (otherwise the gateway keeps its own).
pub fn templates(tree: &Tree, report: &mut Report) {
    let prefix = format!("{TEMPLATES_DIR}/");
    let mut shipped = false;
    let mut found = false;
    for entry in &tree.entries {
        let Some(rest) = entry.path.strip_prefix(&prefix) else {
            continue;
        };
        shipped = true;
        if rest.contains('/') || !rest.starts_with("error") || entry.kind != EntryKind::File {
            continue;
        }
        found = true;
        let Content::Loaded(bytes) = &entry.content else {
            continue;
        };
        if let Some((at, message)) = go_template_error(bytes) {
            let (line, column) = line_col(bytes, at);
            report.push(Finding {
                rule: MISSING_ERROR_TEMPLATE,
                severity: Severity::Error,
                file: entry.path.clone(),
                line,
                column,
                pointer: None,
                message: format!("this error template does not parse ({message}): the gateway would panic at start"),
                hint: Some("error templates are Go text/template files: close every {{ with }} and every {{if}}/{{range}}/{{with}} with {{end}}".into()),
            });
        }
    }
    if shipped && !found {
        report.push(Finding {
            rule: MISSING_ERROR_TEMPLATE,
            severity: Severity::Error,
            file: prefix,
            line: 0,
            column: 0,
            pointer: None,
            message: "templates/ has no error* template: a gateway pointed at it panics at start".into(),
            hint: Some("add templates/error.json (e.g. {\"error\": \"{{.Message}}\"}), or drop templates/ and keep the gateway's own".into()),
        });
    }
}

/// Where and why Go's text/template parser would refuse `bytes`, as far as
/// its structure goes: an action without `}}`, an empty action, a comment
/// that does not close, `{{end}}`/`{{else}}` without a block, a block
/// without `{{end}}`. Function names and pipelines are not checked.
pub fn go_template_error(bytes: &[u8]) -> Option<(usize, String)> {
    let mut open: Vec<(usize, String)> = Vec::new();
    let mut i = 0;
    while let Some(found) = find(bytes, b"{{", i) {
        let start = found;
        let mut j = start + 2;
        // A comment runs to `*/`, which must be followed by `}}`.
        let body = bytes[j..].strip_prefix(b"- ").unwrap_or(&bytes[j..]);
        if body.starts_with(b"/*") {
            let from = start + 2 + (bytes.len() - start - 2 - body.len()) + 2;
            let Some(end) = find(bytes, b"*/", from) else {
                return Some((start, "a comment is never closed with */".into()));
            };
            let after = &bytes[end + 2..];
            let after = after.strip_prefix(b" -").unwrap_or(after);
            if !after.starts_with(b"}}") {
                return Some((
                    start,
                    "a comment is not closed with */ right before }}".into(),
                ));
            }
            i = bytes.len() - after.len() + 2;
            continue;
        }
        // The closing `}}`, outside quoted strings, raw strings and chars.
        let close = loop {
            match bytes.get(j) {
                None => return Some((start, "an action opened with {{ is never closed".into())),
                Some(b'}') if bytes.get(j + 1) == Some(&b'}') => break j,
                // Go's lexer knows no lone `}` inside an action.
                Some(b'}') => {
                    return Some((
                        j,
                        "a lone } inside an action (actions close with }})".into(),
                    ));
                }
                Some(&quote @ (b'"' | b'\'' | b'`')) => {
                    j += 1;
                    loop {
                        match bytes.get(j) {
                            None => {
                                return Some((
                                    start,
                                    "a quoted string in an action is never closed".into(),
                                ));
                            }
                            Some(b'\\') if quote != b'`' => j += 2,
                            Some(&c) if c == quote => break,
                            Some(b'\n') if quote != b'`' => {
                                return Some((
                                    start,
                                    "a quoted string in an action is never closed".into(),
                                ));
                            }
                            _ => j += 1,
                        }
                    }
                    j += 1;
                }
                _ => j += 1,
            }
        };
        let inner = String::from_utf8_lossy(&bytes[start + 2..close]);
        let inner = inner.strip_prefix("- ").unwrap_or(&inner);
        let inner = inner.strip_suffix(" -").unwrap_or(inner).trim();
        i = close + 2;
        if inner.is_empty() {
            return Some((start, "an empty action {{}}".into()));
        }
        let word: String = inner
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        match word.as_str() {
            "if" | "range" | "with" | "define" | "block" => open.push((start, word)),
            // The guard pops: a matched {{end}} falls through to `_`.
            "end" if open.pop().is_none() => {
                return Some((start, "{{end}} without an open block".into()));
            }
            "else" if open.is_empty() => {
                return Some((start, "{{else}} outside a block".into()));
            }
            _ => {}
        }
    }
    open.pop().map(|(at, word)| {
        (
            at,
            format!("{{{{{word}}}}} is never closed with {{{{end}}}}"),
        )
    })
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

fn other_paths(items: &[Item<'_>], files: &[usize], me: usize) -> String {
    let others: Vec<&str> = files
        .iter()
        .filter(|&&j| j != me)
        .map(|&j| items[j].path)
        .collect();
    others.join(", ")
}

/// `is_oas` definitions need their `-oas.json` (`-mcp.json`) document;
/// OpenAPI documents need a classic definition to be loaded at all.
fn companions(items: &[Item<'_>], out: &mut Emitter<'_, '_>) {
    let by_name: HashMap<&str, usize> = items
        .iter()
        .enumerate()
        .filter(|(_, it)| matches!(it.role, Role::Api(_)))
        .map(|(i, it)| (it.name, i))
        .collect();
    for (i, item) in items.iter().enumerate() {
        match &item.analysis.facts {
            Facts::Api(api) if api.is_oas => {
                let stem = item.name.strip_suffix(".json").unwrap_or(item.name);
                let suffix = if api.is_mcp { MCP_SUFFIX } else { OAS_SUFFIX };
                let companion = format!("{stem}{suffix}");
                let ok = by_name.get(companion.as_str()).is_some_and(
                    |&j| matches!(&items[j].analysis.facts, Facts::Openapi(o) if o.has_extension),
                );
                if !ok {
                    out.emit(
                        i,
                        OAS_COMPANION_MISSING,
                        Severity::Error,
                        "/is_oas",
                        format!("\"is_oas\": true, but no {companion} with an x-tyk-api-gateway extension next to it"),
                        Some(format!("add {companion} (the OpenAPI document with x-tyk-api-gateway), or remove is_oas")),
                    );
                }
            }
            Facts::Openapi(oas) => {
                // The classic file it pairs with, and whether that must be
                // an MCP API (`-mcp.json`) or not (`-oas.json`).
                let classic =
                    [(OAS_SUFFIX, false), (MCP_SUFFIX, true)]
                        .iter()
                        .find_map(|(s, mcp)| {
                            item.name
                                .strip_suffix(s)
                                .map(|stem| (format!("{stem}.json"), *mcp))
                        });
                let paired = classic.as_ref().is_some_and(|(name, mcp)| {
                    by_name.get(name.as_str()).is_some_and(|&j| {
                        matches!(&items[j].analysis.facts, Facts::Api(a) if a.is_oas && a.is_mcp == *mcp)
                    })
                });
                if paired {
                    continue;
                }
                let stem = item
                    .name
                    .strip_suffix(OAS_SUFFIX)
                    .or_else(|| item.name.strip_suffix(MCP_SUFFIX))
                    .or_else(|| item.name.strip_suffix(".json"))
                    .unwrap_or(item.name);
                let taken = by_name.contains_key(format!("{stem}{OAS_SUFFIX}").as_str());
                let (pointer, message, hint) = bare_oas(stem, oas, classic.is_some(), taken);
                out.emit(i, BARE_OAS, Severity::Error, pointer, message, Some(hint));
            }
            _ => {}
        }
    }
}

/// What a bare OpenAPI document lacks, and what to add: the extension,
/// its `info.id`, a free name for the pair, or (named as the `-oas.json`
/// half already) its classic definition. `named_as_half`: the file is
/// named `<stem>-oas.json` or `<stem>-mcp.json`; `taken`: the commit has
/// `<stem>-oas.json` besides this file.
fn bare_oas(
    stem: &str,
    oas: &OasFacts,
    named_as_half: bool,
    taken: bool,
) -> (&'static str, String, String) {
    let id = oas.api_id.clone().filter(|id| !id.is_empty());
    let companion = format!("{stem}{OAS_SUFFIX}");
    if !oas.has_extension {
        (
            "",
            "an OpenAPI document without the x-tyk-api-gateway extension: the gateway would load nothing from it".to_string(),
            format!(
                "add \"x-tyk-api-gateway\": {{\"info\": {{\"id\": {stem:?}, \"name\": {stem:?}, \"state\": {{\"active\": true}}}}, \"upstream\": {{\"url\": \"http://upstream:8080/\"}}, \"server\": {{\"listenPath\": {{\"value\": \"/{stem}/\", \"strip\": true}}}}}}; tyk-gitops then derives the classic definition the gateway routes on"
            ),
        )
    } else if id.is_none() {
        (
            "/x-tyk-api-gateway/info",
            "x-tyk-api-gateway.info.id is missing: on import the gateway makes up a random id, which a sync cannot do (it would change on every sync, and keys and policies name the API by its id)".to_string(),
            format!(
                "add \"id\": {stem:?} (or the id your keys and policies already use) to x-tyk-api-gateway.info; tyk-gitops then derives the classic definition"
            ),
        )
    } else if !named_as_half && taken {
        (
            "",
            format!(
                "this Tyk OAS document would become the pair {stem}.json + {companion}, but the commit already has {companion}"
            ),
            format!(
                "keep one of the two: this document alone (delete {companion}), or a pair ({companion} with a classic {stem}.json)"
            ),
        )
    } else {
        let api_id = id.unwrap_or_else(|| stem.to_string());
        let lp = oas
            .listen_path
            .clone()
            .unwrap_or_else(|| format!("/{stem}/"));
        let rename = if !named_as_half {
            format!("rename it to {stem}{OAS_SUFFIX} and add")
        } else {
            "add".to_string()
        };
        (
            "",
            "an OpenAPI document without its classic definition: the gateway would load nothing from it".to_string(),
            format!(
                "{rename} {stem}.json: {{\"api_id\": {api_id:?}, \"is_oas\": true, \"proxy\": {{\"listen_path\": {lp:?}, \"target_url\": \"...\"}}, \"version_data\": {{\"not_versioned\": true, \"versions\": {{\"Default\": {{\"name\": \"Default\"}}}}}}}}"
            ),
        )
    }
}

fn policies(items: &[Item<'_>], out: &mut Emitter<'_, '_>) {
    let api_orgs: HashMap<&str, Option<&str>> = items
        .iter()
        .filter_map(|it| match &it.analysis.facts {
            Facts::Api(a) => Some((a.api_id.as_deref()?, a.org_id.as_deref())),
            _ => None,
        })
        .collect();
    // (policy id, item, pointer prefix, facts)
    let mut all: Vec<(&str, usize, String, &PolicyFacts)> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match &item.analysis.facts {
            Facts::Policy(p) => {
                if let Some(id) = p.id.as_deref().filter(|id| !id.is_empty()) {
                    all.push((id, i, "/id".into(), p));
                }
            }
            Facts::PolicyMap(entries) => {
                for e in entries {
                    all.push((
                        &e.key,
                        i,
                        format!("/{}", bundle::escape_token(&e.key)),
                        &e.facts,
                    ));
                }
            }
            _ => {}
        }
    }
    api_policy_refs(items, &all, out);
    let mut by_id: HashMap<&str, Vec<usize>> = HashMap::new();
    for (n, (id, ..)) in all.iter().enumerate() {
        by_id.entry(id).or_default().push(n);
    }
    for (id, group) in by_id.iter().filter(|(_, g)| g.len() > 1) {
        for &n in group {
            let (_, i, pointer, _) = &all[n];
            let others: BTreeSet<&str> = group
                .iter()
                .filter(|&&m| m != n)
                .map(|&m| items[all[m].1].path)
                .collect();
            let others: Vec<&str> = others.into_iter().collect();
            out.emit(
                *i,
                DUPLICATE_POLICY_ID,
                Severity::Error,
                pointer,
                format!("policy id {id:?} is also defined in {}", others.join(", ")),
                Some("the gateway keeps one of them, which one depends on load order".into()),
            );
        }
    }
    for (id, i, _, facts) in &all {
        for (api, pointer) in &facts.rights {
            match api_orgs.get(api.as_str()) {
                None => out.emit(
                    *i,
                    POLICY_UNKNOWN_API,
                    Severity::Error,
                    pointer,
                    format!(
                        "policy {id:?} grants access to API {api:?}, which is not in the bundle"
                    ),
                    Some("fix the api_id, add the API, or remove the access right".into()),
                ),
                Some(Some(api_org)) => {
                    if let Some(org) = facts
                        .org_id
                        .as_deref()
                        .filter(|o| !o.is_empty() && o != api_org)
                    {
                        out.emit(
                            *i,
                            ORG_ID_MISMATCH,
                            Severity::Warning,
                            pointer,
                            format!("policy {id:?} has org_id {org:?} but API {api:?} has org_id {api_org:?}"),
                            Some("keys created from this policy will not work with that API".into()),
                        );
                    }
                }
                Some(None) => {}
            }
        }
    }
}

/// Definitions naming a policy the bundle does not have: the auth method
/// that needs it refuses the requests it should let in.
fn api_policy_refs(
    items: &[Item<'_>],
    policies: &[(&str, usize, String, &PolicyFacts)],
    out: &mut Emitter<'_, '_>,
) {
    let ids: HashSet<&str> = policies.iter().map(|(id, ..)| *id).collect();
    for (i, item) in items.iter().enumerate() {
        let Facts::Api(api) = &item.analysis.facts else {
            continue;
        };
        for r in api
            .policy_refs
            .iter()
            .filter(|r| !ids.contains(r.id.as_str()))
        {
            out.emit(
                i,
                API_UNKNOWN_POLICY,
                Severity::Error,
                &r.pointer,
                format!(
                    "{} names policy {:?}, which is not in the bundle: the gateway cannot apply it, and the requests that need it are refused",
                    r.setting, r.id
                ),
                Some("fix the policy id, or add the policy (policies/<id>.json)".into()),
            );
        }
    }
}

fn refs_of(analysis: &Analysis) -> &[MiddlewareRef] {
    match &analysis.facts {
        Facts::Api(a) => &a.refs,
        Facts::Openapi(o) => &o.refs,
        _ => &[],
    }
}

fn middleware(items: &[Item<'_>], tree: &Tree, out: &mut Emitter<'_, '_>) -> BTreeSet<String> {
    let mut extra = BTreeSet::new();
    let shipped = |p: &str| {
        p.starts_with(&format!("{MIDDLEWARE_DIR}/")) || p.starts_with(&format!("{TEMPLATES_DIR}/"))
    };
    let mut seen: HashSet<String> = HashSet::new();
    for (i, item) in items.iter().enumerate() {
        for r in refs_of(item.analysis) {
            match bundle::resolve_reference(&r.path) {
                Err(()) => out.emit(
                    i,
                    MISSING_MIDDLEWARE_FILE,
                    Severity::Error,
                    &r.pointer,
                    format!("middleware path {:?} points outside the config root", r.path),
                    Some("reference files inside the repo, e.g. \"middleware/my.js\"".into()),
                ),
                Ok(None) => out.emit(
                    i,
                    ABSOLUTE_MIDDLEWARE_PATH,
                    Severity::Warning,
                    &r.pointer,
                    format!("middleware path {:?} is absolute: it is not part of the commit", r.path),
                    Some("commit the file (e.g. under middleware/) and reference it relative to the config root".into()),
                ),
                Ok(Some(rel)) => {
                    let present = tree.get(&rel).is_some_and(|e| e.kind == EntryKind::File);
                    if present && r.required && REVISION_FOLDERS.contains(&rel.as_str()) {
                        out.emit(
                            i,
                            MISSING_MIDDLEWARE_FILE,
                            Severity::Error,
                            &r.pointer,
                            format!("middleware file {:?} cannot ship: the revision uses that name for a folder", r.path),
                            Some("move the file under middleware/ and reference it there".into()),
                        );
                    } else if present {
                        if !shipped(&rel) && ships_as_plain(&rel) && seen.insert(rel.clone()) {
                            extra.insert(rel);
                        }
                    } else if r.required {
                        out.emit(
                            i,
                            MISSING_MIDDLEWARE_FILE,
                            Severity::Error,
                            &r.pointer,
                            format!("middleware file {:?} is not in the bundle", r.path),
                            Some("paths are relative to the config root; commit the file (e.g. under middleware/) or fix the path".into()),
                        );
                    }
                }
            }
        }
    }
    extra
}

/// Folders every revision has: a file shipped at one of these paths would
/// collide with them and fail the apply (found by the fuzz targets' checks).
const REVISION_FOLDERS: [&str; 2] = [bundle::APPS_DIR, bundle::POLICIES_DIR];

/// A referenced file outside `middleware/` ships at its own path, unless
/// that path is one the revision uses for something else.
fn ships_as_plain(rel: &str) -> bool {
    let reserved = [bundle::POLICIES_MAP, bundle::TYK_CONF, bundle::TYK_INDEX];
    bundle::is_safe_relative_path(rel)
        && !reserved.contains(&rel)
        && !REVISION_FOLDERS.contains(&rel)
        && !((rel.starts_with("apps/") || rel.starts_with("policies/")) && rel.ends_with(".json"))
        && !rel.split('/').any(|s| s.starts_with('.'))
}

#[cfg(test)]
mod tests {
    use super::go_template_error;

    fn verdict(text: &str) -> Option<String> {
        go_template_error(text.as_bytes()).map(|(_, why)| why)
    }

    #[test]
    fn go_templates_that_parse() {
        for ok in [
            "{\"error\": \"{{.Message}}\"}\n",
            "<error>{{- if .Message -}}{{.Message}}{{else}}none{{end}}</error>",
            "{{/* a comment with }} inside */}}text",
            "{{printf \"%s}}\" .Message}} and {{`raw }}`}}",
            "{\"x\": {{.Code}}}",
            "no actions at all, a stray }} too",
        ] {
            assert_eq!(verdict(ok), None, "{ok}");
        }
    }

    #[test]
    fn go_templates_that_do_not_parse() {
        for (bad, why) in [
            ("{\"error\": \"{{.Message}\"}", "lone }"),
            ("{{.Message", "never closed"),
            ("{{if .Message}}x", "{{if}} is never closed"),
            ("x{{end}}", "{{end}} without"),
            ("{{else}}", "outside a block"),
            ("a {{ }} b", "empty action"),
            ("{{/* open comment }}", "comment"),
            ("{{printf \"unclosed}}", "quoted string"),
        ] {
            let got = verdict(bad).unwrap_or_default();
            assert!(got.contains(why), "{bad}: {got}");
        }
    }
}
