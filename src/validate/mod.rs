//! The validate stage: `Tree` → (`Bundle`, `Report`).
//!
//! It reads the config repo layout (folders, or a tyk-sync `.tyk.json`
//! index), analyses each file once (cached by blob id across syncs), then
//! runs the cross-file rules on the extracted facts. It never fails: every
//! problem is a finding, and the bundle is applied only when the report has
//! no errors (and, with `strict`, no warnings).

mod analyse;
pub mod command;
pub mod empty;
mod exports;
mod ids;
mod locate;
mod markers;
mod oas;
mod persist;
pub mod report;
pub mod rules;
mod schema;
mod target;
pub mod vars;

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
use std::sync::Arc;

use git2::Oid;

use crate::bundle::{
    self, APPS_DIR, ApiFile, Bundle, MCP_SUFFIX, MIDDLEWARE_DIR, OAS_SUFFIX, POLICIES_DIR,
    POLICIES_MAP, PlainFile, PolicyEntry, TEMPLATES_DIR, TYK_CONF, TYK_INDEX,
};
use crate::gateway::GatewayVersion;
use crate::tree::{BlobKey, Cached, Content, EntryKind, Tree, key};
use analyse::{Analysis, Companion, Facts, Role};
pub use report::{Finding, Format, Report, Severity, render};
/// Drops the compiled schemas (a sidecar between syncs); the next check
/// compiles them again.
pub use schema::{prepare as prepare_schemas, release as release_schemas};

pub const DEFAULT_MAX_FILE_SIZE: u64 = 4 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct Options {
    /// Unknown fields become warnings; warnings fail the check.
    pub strict: bool,
    pub max_file_size: u64,
    /// The gateway runs with `enable_custom_domains` (the repo's tyk.conf
    /// can say so too): one listen path on two domains is then no shadow.
    pub custom_domains: bool,
    /// The gateway the bundle is meant for, when known: definitions it
    /// cannot load are errors.
    pub gateway_version: Option<GatewayVersion>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            strict: false,
            max_file_size: DEFAULT_MAX_FILE_SIZE,
            custom_domains: false,
            gateway_version: None,
        }
    }
}

/// Per-file results keyed by Git blob id (and the file's role: one blob can
/// be an API in one place and a policy in another), so a commit that changes
/// one file re-validates only that file. Lives as long as the process, and
/// across processes through `load` and `save` (`persist.rs`); each `check`
/// keeps only the entries its tree used, so it never outgrows one commit.
#[derive(Debug, Default)]
pub struct Cache {
    entries: HashMap<(BlobKey, Role), Arc<Analysis>>,
    /// Changed since loaded or saved.
    dirty: bool,
    /// Analyses made since loaded or saved.
    unsaved: usize,
    /// Loaded from, or handed out to be saved to, the root's file.
    on_disk: bool,
    /// Files the last `check` analysed afresh (not found in the cache).
    analysed: usize,
}

impl Cache {
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    /// Files the last `check` had to analyse (the rest came from the cache).
    pub fn analysed(&self) -> usize {
        self.analysed
    }
    /// What the cache knows of each blob it holds, for the reader: a blob
    /// whose every analysis is a `standalone` API definition need not be
    /// read (`Cached::Unneeded`); the others are `Known`.
    pub fn reading(&self) -> HashMap<BlobKey, Cached> {
        let mut out: HashMap<BlobKey, Cached> = HashMap::with_capacity(self.entries.len());
        for ((blob, role), analysis) in &self.entries {
            let this = match standalone(*role, analysis) {
                Some(size) => Cached::Unneeded { size },
                None => Cached::Known,
            };
            out.entry(*blob)
                .and_modify(|seen| {
                    if *seen != this {
                        *seen = Cached::Known;
                    }
                })
                .or_insert(this);
        }
        out
    }

    /// Whether the analysis of `blob` as `role` is enough without its bytes.
    fn answers_unread(&self, blob: Oid, role: Role) -> bool {
        self.entries
            .get(&(key(blob), role))
            .is_some_and(|a| standalone(role, a).is_some())
    }

    /// Analyses the jobs the cache does not hold yet, in a few threads
    /// (each file is independent; a cold sync of 10,000 definitions spends
    /// most of its CPU here). Below `PARALLEL_FROM` misses, `analyse` does
    /// them one by one.
    fn prepare(&mut self, jobs: &[(Oid, Role, &[u8])]) {
        const PARALLEL_FROM: usize = 256;
        let mut seen = HashSet::new();
        let misses: Vec<&(Oid, Role, &[u8])> = jobs
            .iter()
            .filter(|(blob, role, _)| {
                !blob.is_zero()
                    && !self.entries.contains_key(&(key(*blob), *role))
                    && seen.insert((key(*blob), *role))
            })
            .collect();
        if crate::par::threads() == 1 || misses.len() < PARALLEL_FROM {
            return;
        }
        // Taken 32 at a time: a cold sync writes its files meanwhile on a
        // thread of its own, so the analysing threads do not get equal
        // shares of the cores. And below that writer: finished first, its
        // last flush overlaps the analysis instead of following it (fresh
        // ext4, 9 rounds: cold sync 338 -> 316 ms).
        let analysed = crate::par::map(
            &misses,
            32,
            crate::par::Priority::Lower,
            |(blob, role, bytes)| ((key(*blob), *role), analyse::analyse(*role, bytes)),
        );
        for (key, analysis) in analysed {
            self.entries.insert(key, Arc::new(analysis));
            self.dirty = true;
            self.analysed += 1;
            self.unsaved += 1;
        }
    }

    fn analyse(
        &mut self,
        blob: Oid,
        role: Role,
        bytes: &[u8],
        used: &mut HashSet<(BlobKey, Role)>,
    ) -> Arc<Analysis> {
        // A zero id means "unknown" (entries built by hand): never share it.
        if blob.is_zero() {
            self.analysed += 1;
            return Arc::new(analyse::analyse(role, bytes));
        }
        used.insert((key(blob), role));
        let (dirty, analysed, unsaved) = (&mut self.dirty, &mut self.analysed, &mut self.unsaved);
        self.entries
            .entry((key(blob), role))
            .or_insert_with(|| {
                *dirty = true;
                *analysed += 1;
                *unsaved += 1;
                Arc::new(analyse::analyse(role, bytes))
            })
            .clone()
    }
}

/// The size of an API definition the revision takes byte for byte and no
/// stage before the analysis changes (see `ApiFacts::standalone`): such a
/// file's bytes are needed again only to place a finding.
fn standalone(role: Role, analysis: &Analysis) -> Option<u64> {
    match (role, &analysis.facts) {
        (Role::Api(Companion::None), Facts::Api(api)) if api.refs.is_empty() && !api.renamed => {
            api.standalone
        }
        _ => None,
    }
}

/// Where a tree entry goes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Place {
    /// Analysed: an API file (with its name in `apps/`), a policy, ...
    Analysed(Role, String),
    Middleware,
    Template,
    Ignored,
}

/// Reads the layout and validates it. The bundle is only meant to be applied
/// when `report.has_errors()` is false (and, with `strict`, no warnings:
/// see `Report::rejects`).
pub fn check(mut tree: Tree, opts: &Options, cache: &mut Cache) -> (Bundle, Report) {
    let mut report = Report::default();
    let mut used = HashSet::new();
    cache.analysed = 0;
    // Files left unread are standalone API definitions (no export, OAS or
    // variable markers): unwrap and pair leave them alone. The two files
    // that say where the others go are read first, in case.
    for path in [TYK_INDEX, TYK_CONF] {
        if let Some(i) = tree.index_of(path) {
            tree.load(i);
        }
    }
    // Dashboard and tyk-sync exports become the gateway's form first, then
    // Tyk OAS documents kept alone become pairs.
    exports::unwrap(&mut tree, &mut report);
    let pairs = oas::pair(&mut tree, &mut report);
    let derived_from = oas::Mark::of(&report);

    let index = read_index(&tree, opts, cache, &mut used, &mut report);

    let (pending, plain) = place_entries(&tree, index.as_ref(), opts, &mut report);
    load_needed(&mut tree, &pending, &plain, cache);
    let mut work: Vec<(usize, Role, String, Arc<Analysis>)> = Vec::new();
    // Files new to the cache are analysed on every core first; the rest,
    // and the order of `work`, come from the cache.
    let jobs: Vec<(Oid, Role, &[u8])> = pending
        .iter()
        .map(|(i, role, _)| {
            let entry = &tree.entries[*i];
            (entry.blob, *role, loaded(&entry.content))
        })
        .collect();
    cache.prepare(&jobs);
    for (i, role, name) in pending {
        let entry = &tree.entries[i];
        let analysis = cache.analyse(entry.blob, role, loaded(&entry.content), &mut used);
        work.push((i, role, name, analysis));
    }

    report_analyses(&tree, &work, opts.strict, &mut report);
    if let Some(ix) = &index {
        ix.check_ids(&tree, &work, &mut report);
    }

    let extra = {
        let items: Vec<rules::Item<'_>> = work
            .iter()
            .map(|(i, role, name, analysis)| {
                let entry = &tree.entries[*i];
                rules::Item {
                    path: &entry.path,
                    name,
                    role: *role,
                    bytes: loaded(&entry.content),
                    analysis,
                }
            })
            .collect();
        let target = rules::Target {
            custom_domains: opts.custom_domains || custom_domains_in(&tree),
            version: opts.gateway_version,
        };
        rules::cross_file(&items, &tree, target, &mut report)
    };
    rules::templates(&tree, &mut report);

    let before = cache.entries.len();
    cache.entries.retain(|k, _| used.contains(k));
    cache.dirty |= cache.entries.len() != before;
    pairs.remap(&mut report, derived_from);
    report.sort();
    let bundle = build_bundle(&mut tree, work, plain, &extra);
    (bundle, report)
}

/// An entry to analyse: its index in the tree, its role, its name in the
/// revision.
type ToAnalyse = (usize, Role, String);

/// Reads the entries left unread whose bytes this commit needs after all:
/// those placed where their cached analysis does not answer (another role
/// than the one analysed), and every file taken as it is.
fn load_needed(tree: &mut Tree, pending: &[ToAnalyse], plain: &[(usize, Place)], cache: &Cache) {
    for (i, role, _) in pending {
        if !cache.answers_unread(tree.entries[*i].blob, *role) {
            tree.load(*i);
        }
    }
    for (i, _) in plain {
        tree.load(*i);
    }
}

/// Where each entry of `tree` goes: analysed (entry, role, name in the
/// revision) or taken as it is (entry, place). Entries refused (unsafe
/// paths, links, submodules, files over the size limit, two API files of
/// one name) are reported and left out.
fn place_entries(
    tree: &Tree,
    index: Option<&Index>,
    opts: &Options,
    report: &mut Report,
) -> (Vec<ToAnalyse>, Vec<(usize, Place)>) {
    let mut pending: Vec<(usize, Role, String)> = Vec::new();
    let mut plain: Vec<(usize, Place)> = Vec::new();
    for (i, entry) in tree.entries.iter().enumerate() {
        let path = entry.path.as_str();
        if !bundle::is_safe_relative_path(path) {
            report.push(whole_file(rules::INVALID_PATH, Severity::Error, path,
                format!("refusing a path with empty, '.' or '..' segments or control characters: {path:?}"), None));
            continue;
        }
        // Refused wherever they are: a linked `apps` folder would
        // otherwise empty the bundle without a word.
        match entry.kind {
            EntryKind::Symlink => {
                report.push(whole_file(
                    rules::SYMLINK,
                    Severity::Error,
                    path,
                    "symbolic links are refused: their target could be anywhere".into(),
                    Some("commit the file itself instead of a link".into()),
                ));
                continue;
            }
            EntryKind::Submodule => {
                report.push(whole_file(
                    rules::SUBMODULE,
                    Severity::Error,
                    path,
                    "submodules are refused: their content is not part of this commit".into(),
                    None,
                ));
                continue;
            }
            EntryKind::File => {}
        }
        let place = match index {
            Some(ix) => ix
                .place(path)
                .unwrap_or_else(|| place_in_folders(path, true, report)),
            None => place_in_folders(path, false, report),
        };
        if place == Place::Ignored {
            continue;
        }
        // Only files within the size limit go on (their bytes are read
        // from the entry again where needed).
        match &entry.content {
            Content::Loaded(b) if (b.len() as u64) <= opts.max_file_size => {}
            Content::Loaded(b) => {
                report.push(too_large(path, b.len() as u64, opts.max_file_size));
                continue;
            }
            Content::Unread { size } if *size <= opts.max_file_size => {}
            Content::TooLarge { size } | Content::Unread { size } => {
                report.push(too_large(path, *size, opts.max_file_size));
                continue;
            }
            Content::Absent => continue,
        }
        match place {
            Place::Analysed(role, name) => pending.push((i, role, name)),
            other => plain.push((i, other)),
        }
    }
    // Two API files of one name in the flat apps/: the later ones are
    // refused, each naming the one before it.
    let mut names: HashMap<&str, &str> = HashMap::with_capacity(pending.len());
    let mut refused = vec![false; pending.len()];
    for (k, (i, role, name)) in pending.iter().enumerate() {
        let path = tree.entries[*i].path.as_str();
        if let Role::Api(_) = role
            && let Some(first) = names.insert(name, path)
        {
            report.push(whole_file(
                rules::TYK_INDEX,
                Severity::Error,
                path,
                format!("two API files would both be apps/{name} (the other is {first})"),
                Some("the revision's apps/ folder is flat: give the files distinct names".into()),
            ));
            refused[k] = true;
        }
    }
    let mut refused = refused.into_iter();
    pending.retain(|_| !refused.next().unwrap_or(false));
    (pending, plain)
}

/// The findings of each file's own analysis, under its path (unknown
/// fields only with `--strict`).
fn report_analyses(
    tree: &Tree,
    work: &[(usize, Role, String, Arc<Analysis>)],
    strict: bool,
    report: &mut Report,
) {
    for (i, _, _, analysis) in work {
        let file = &tree.entries[*i].path;
        for f in &analysis.findings {
            if f.rule == rules::UNKNOWN_FIELD && !strict {
                continue;
            }
            let mut f = f.clone();
            f.file.clone_from(file);
            report.push(f);
        }
    }
}

/// `enable_custom_domains: true` in the repo's tyk.conf (its syntax is
/// checked with the other files).
fn custom_domains_in(tree: &Tree) -> bool {
    tree.get(TYK_CONF)
        .and_then(|entry| serde_json::from_slice::<serde_json::Value>(loaded(&entry.content)).ok())
        .and_then(|conf| conf.get("enable_custom_domains")?.as_bool())
        .unwrap_or(false)
}

fn loaded(content: &Content) -> &[u8] {
    match content {
        Content::Loaded(b) => b,
        _ => &[],
    }
}

fn whole_file(
    rule: &'static str,
    severity: Severity,
    path: &str,
    message: String,
    hint: Option<String>,
) -> Finding {
    Finding {
        rule,
        severity,
        file: path.to_string(),
        line: 0,
        column: 0,
        pointer: None,
        message,
        hint,
    }
}

fn too_large(path: &str, size: u64, max: u64) -> Finding {
    whole_file(
        rules::FILE_TOO_LARGE,
        Severity::Error,
        path,
        format!("{size} bytes is over the limit of {max} bytes"),
        Some("raise --max-file-size if the file is meant to be this big".into()),
    )
}

/// The folder layout: `apps/*.json`, `policies/*.json`, `policies.json`,
/// `middleware/**`, `templates/**`, `tyk.conf`. With an index, API and
/// policy files come from it and JSON files left in `apps/` or `policies/`
/// are reported as ignored.
fn place_in_folders(path: &str, indexed: bool, report: &mut Report) -> Place {
    let under = |dir: &str| path.strip_prefix(dir).is_some_and(|r| r.starts_with('/'));
    if under(MIDDLEWARE_DIR) {
        return Place::Middleware;
    }
    if under(TEMPLATES_DIR) {
        return Place::Template;
    }
    match path {
        POLICIES_MAP => return Place::Analysed(Role::PoliciesMap, String::new()),
        TYK_CONF => return Place::Analysed(Role::TykConf, String::new()),
        _ => {}
    }
    for dir in [APPS_DIR, POLICIES_DIR] {
        let Some(rest) = path.strip_prefix(dir).and_then(|r| r.strip_prefix('/')) else {
            continue;
        };
        if !rest.ends_with(".json") {
            return Place::Ignored;
        }
        let (rule, message) = if rest.contains('/') {
            (
                rules::IGNORED_FILE,
                format!("the gateway does not read sub-folders of {dir}/: this file is not loaded"),
            )
        } else if rest.starts_with('.') {
            (
                rules::DOTFILE,
                format!(
                    "the gateway would load this hidden file from {dir}/ by accident; tyk-gitops leaves it out"
                ),
            )
        } else if indexed {
            (
                rules::IGNORED_FILE,
                format!("{TYK_INDEX} is present and does not name this file: it is not loaded"),
            )
        } else if dir == APPS_DIR {
            return Place::Analysed(Role::Api(Companion::of(rest)), rest.to_string());
        } else {
            return Place::Analysed(Role::Policy, String::new());
        };
        report.push(whole_file(rule, Severity::Warning, path, message, None));
        return Place::Ignored;
    }
    Place::Ignored
}

/// A tyk-sync `.tyk.json` index, once read: which paths it names.
struct Index {
    bytes: Vec<u8>,
    /// path → (role, name in apps/, id the index states, pointer)
    named: HashMap<String, (Role, String, Option<String>, String)>,
}

fn read_index(
    tree: &Tree,
    opts: &Options,
    cache: &mut Cache,
    used: &mut HashSet<(BlobKey, Role)>,
    report: &mut Report,
) -> Option<Index> {
    let entry = tree.get(TYK_INDEX)?;
    let Content::Loaded(bytes) = &entry.content else {
        if entry.kind == EntryKind::File
            && let Content::TooLarge { size } = entry.content
        {
            report.push(too_large(TYK_INDEX, size, opts.max_file_size));
        }
        return None;
    };
    if entry.kind != EntryKind::File {
        return None;
    }
    let analysis = cache.analyse(entry.blob, Role::Index, bytes, used);
    for f in &analysis.findings {
        let mut f = f.clone();
        f.file = TYK_INDEX.to_string();
        report.push(f);
    }
    let Facts::Index(facts) = &analysis.facts else {
        // Unreadable index: fall back to the folders, so the user still
        // sees everything else that is wrong.
        return None;
    };
    let mut named = HashMap::new();
    let lists = [(&facts.files, true), (&facts.policies, false)];
    for (list, is_api) in lists {
        for item in list {
            let at = |message: String| {
                let (line, column) = locate::line_col(bytes, locate::locate(bytes, &item.pointer));
                Finding {
                    rule: rules::TYK_INDEX,
                    severity: Severity::Error,
                    file: TYK_INDEX.to_string(),
                    line,
                    column,
                    pointer: Some(item.pointer.clone()),
                    message,
                    hint: None,
                }
            };
            let path = match bundle::resolve_reference(&item.file) {
                Ok(Some(p)) if bundle::is_safe_relative_path(&p) => p,
                _ => {
                    report.push(at(format!("{:?} is outside the config root", item.file)));
                    continue;
                }
            };
            if tree.get(&path).is_none() {
                report.push(at(format!(
                    "{:?} is named here but is not in the tree",
                    item.file
                )));
                continue;
            }
            let name = path.rsplit('/').next().unwrap_or(&path).to_string();
            let role = if is_api {
                Role::Api(Companion::of(&name))
            } else {
                Role::Policy
            };
            if is_api && !bundle::is_safe_flat_name(&name) {
                report.push(at(format!(
                    "{:?} has a hidden or unusable file name",
                    item.file
                )));
                continue;
            }
            named.insert(path, (role, name, item.id.clone(), item.pointer.clone()));
        }
    }
    Some(Index {
        bytes: bytes.to_vec(),
        named,
    })
}

impl Index {
    fn place(&self, path: &str) -> Option<Place> {
        if path == TYK_INDEX {
            return Some(Place::Ignored);
        }
        if let Some((role, name, ..)) = self.named.get(path) {
            return Some(Place::Analysed(*role, name.clone()));
        }
        // The OpenAPI half beside an API the index names (an unwrapped
        // export's, or a pair's) goes with it.
        let stem = path
            .strip_suffix(OAS_SUFFIX)
            .or_else(|| path.strip_suffix(MCP_SUFFIX))?;
        let (role, name, ..) = self.named.get(&format!("{stem}.json"))?;
        matches!(role, Role::Api(_)).then(|| {
            let owner = name.strip_suffix(".json").unwrap_or(name);
            let companion = format!("{owner}{}", &path[stem.len()..]);
            Place::Analysed(Role::Api(Companion::of(&companion)), companion)
        })
    }

    /// The ids the index states must be the ones the files hold.
    fn check_ids(
        &self,
        tree: &Tree,
        work: &[(usize, Role, String, Arc<Analysis>)],
        report: &mut Report,
    ) {
        for (i, _, _, analysis) in work {
            let path = &tree.entries[*i].path;
            let Some((_, _, Some(stated), pointer)) = self.named.get(path) else {
                continue;
            };
            let actual = match &analysis.facts {
                Facts::Api(a) => a.api_id.as_deref(),
                Facts::Policy(p) => p.id.as_deref(),
                _ => continue,
            };
            if actual.is_some_and(|a| a != stated) {
                let (line, column) =
                    locate::line_col(&self.bytes, locate::locate(&self.bytes, pointer));
                report.push(Finding {
                    rule: rules::TYK_INDEX,
                    severity: Severity::Error,
                    file: TYK_INDEX.to_string(),
                    line,
                    column,
                    pointer: Some(pointer.clone()),
                    message: format!(
                        "the index says {path} has id {stated:?}, the file says {:?}",
                        actual.unwrap_or_default()
                    ),
                    hint: None,
                });
            }
        }
    }
}

/// The entry's blob id, when it has a real one (the bytes' Git id).
fn blob_of(tree: &Tree, i: usize) -> Option<Oid> {
    Some(tree.entries[i].blob).filter(|b| !b.is_zero())
}

/// `Some(size)` for an entry left unread.
fn unread_size(tree: &Tree, i: usize) -> Option<u64> {
    match tree.entries[i].content {
        Content::Unread { size } => Some(size),
        _ => None,
    }
}

/// The bytes of entry `i`, taken from the tree (still shared with
/// whatever holds them too: a cold sync's early write).
fn take_bytes(tree: &mut Tree, i: usize) -> Arc<Vec<u8>> {
    match &mut tree.entries[i].content {
        Content::Loaded(b) => std::mem::take(b),
        _ => Arc::default(),
    }
}

fn build_bundle(
    tree: &mut Tree,
    work: Vec<(usize, Role, String, Arc<Analysis>)>,
    plain: Vec<(usize, Place)>,
    extra: &std::collections::BTreeSet<String>,
) -> Bundle {
    let mut bundle = Bundle::default();
    plain_files(tree, plain, extra, &mut bundle);
    for (i, role, name, analysis) in work {
        // The tree goes with the bundle built: its paths move.
        let source = std::mem::take(&mut tree.entries[i].path);
        match (&analysis.facts, role) {
            (Facts::Api(api), _) => {
                let unread = unread_size(tree, i);
                let mut bytes = take_bytes(tree, i);
                let mut blob = blob_of(tree, i);
                // Middleware paths are rewritten by exact key: spell the
                // keys as Go matches them first (the same definition to it).
                if api.renamed
                    && !api.refs.is_empty()
                    && let Some(canonical) = analyse::canonical_definition(&bytes)
                {
                    bytes = Arc::new(canonical);
                    blob = None;
                }
                bundle.apps.push(ApiFile {
                    name,
                    source,
                    api_id: api.api_id.clone(),
                    names_files: !api.refs.is_empty(),
                    bytes,
                    blob,
                    unread,
                })
            }
            (facts, Role::Api(_)) => bundle.apps.push(ApiFile {
                unread: unread_size(tree, i),
                name,
                source,
                api_id: None,
                names_files: match facts {
                    Facts::Openapi(oas) => !oas.refs.is_empty(),
                    _ => true,
                },
                bytes: take_bytes(tree, i),
                blob: blob_of(tree, i),
            }),
            (Facts::Policy(p), _) => {
                if let Some(id) = p.id.clone().filter(|id| !id.is_empty()) {
                    let mut bytes = take_bytes(tree, i);
                    let mut blob = blob_of(tree, i);
                    // Only the policy itself: what follows it is never read
                    // by the gateway, and would break the policies map.
                    if let Some(end) = p.value_end {
                        bytes = Arc::new(bytes[..end.min(bytes.len())].to_vec());
                        blob = None;
                    }
                    bundle.policies.push(PolicyEntry {
                        id,
                        source,
                        bytes,
                        blob,
                    });
                }
            }
            (Facts::PolicyMap(entries), _) => {
                for e in entries {
                    bundle.policies.push(PolicyEntry {
                        id: e.key.clone(),
                        source: source.clone(),
                        bytes: Arc::new(e.json.clone().into_bytes()),
                        blob: None,
                    });
                }
            }
            (_, Role::TykConf) => {
                bundle.tyk_conf = Some(PlainFile {
                    path: source,
                    bytes: take_bytes(tree, i),
                    blob: blob_of(tree, i),
                });
            }
            _ => {}
        }
    }
    bundle.apps.sort_by(|a, b| a.name.cmp(&b.name));
    bundle.policies.sort_by(|a, b| a.id.cmp(&b.id));
    bundle
}

/// Middleware and templates, taken as they are: the files under their
/// folders (`plain`) and the files definitions name elsewhere (`extra`).
fn plain_files(
    tree: &mut Tree,
    plain: Vec<(usize, Place)>,
    extra: &std::collections::BTreeSet<String>,
    bundle: &mut Bundle,
) {
    let extra_idx: Vec<usize> = extra
        .iter()
        .filter_map(|p| {
            tree.entries
                .binary_search_by(|e| e.path.as_str().cmp(p))
                .ok()
        })
        .collect();
    for (i, place) in plain {
        let path = tree.entries[i].path.clone();
        let file = PlainFile {
            path,
            bytes: take_bytes(tree, i),
            blob: blob_of(tree, i),
        };
        match place {
            Place::Template => bundle.templates.push(file),
            _ => bundle.middleware.push(file),
        }
    }
    for i in extra_idx {
        tree.load(i);
        let path = tree.entries[i].path.clone();
        // A file both referenced and under middleware/ was taken above.
        if let Content::Loaded(_) = tree.entries[i].content {
            bundle.middleware.push(PlainFile {
                path,
                bytes: take_bytes(tree, i),
                blob: blob_of(tree, i),
            });
        }
    }
    bundle.middleware.sort_by(|a, b| a.path.cmp(&b.path));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::{BlobReader, TreeEntry};
    use std::collections::BTreeMap;

    fn api(id: &str, listen_path: &str) -> Vec<u8> {
        serde_json::to_vec_pretty(&serde_json::json!({
            "name": id, "api_id": id, "org_id": "o", "active": true, "use_keyless": true,
            "proxy": {"listen_path": listen_path, "target_url": "http://up:80/", "strip_listen_path": true},
            "version_data": {"not_versioned": true, "versions": {"Default": {"name": "Default"}}}
        }))
        .unwrap()
    }

    fn tree(files: &[(&str, Vec<u8>)]) -> Tree {
        Tree::from_entries(
            files
                .iter()
                .map(|(path, bytes)| TreeEntry::file(*path, bytes.clone()))
                .collect(),
        )
    }

    #[test]
    fn api_files_an_index_gives_one_name_are_refused_after_the_first() {
        let index = br#"{"type":"apidef","files":[{"file":"a/x.json"},{"file":"b/x.json"},{"file":"c/x.json"},{"file":"d/y.json"}]}"#;
        let (bundle, report) = check(
            tree(&[
                (".tyk.json", index.to_vec()),
                ("a/x.json", api("a", "/a/")),
                ("b/x.json", api("b", "/b/")),
                ("c/x.json", api("c", "/c/")),
                ("d/y.json", api("d", "/d/")),
            ]),
            &Options::default(),
            &mut Cache::default(),
        );
        let refused: Vec<(&str, &str)> = report
            .errors
            .iter()
            .filter(|f| f.rule == rules::TYK_INDEX)
            .map(|f| (f.file.as_str(), f.message.as_str()))
            .collect();
        assert_eq!(
            refused,
            [
                (
                    "b/x.json",
                    "two API files would both be apps/x.json (the other is a/x.json)"
                ),
                (
                    "c/x.json",
                    "two API files would both be apps/x.json (the other is b/x.json)"
                ),
            ]
        );
        let sources: Vec<&str> = bundle.apps.iter().map(|a| a.source.as_str()).collect();
        assert_eq!(sources, ["a/x.json", "d/y.json"]);
    }

    /// `files` as the Git reader gives them to a pass after `cache`:
    /// blobs the cache says are not needed are left unread, with a reader.
    fn as_read_after(cache: &Cache, files: &[(&str, Vec<u8>)]) -> (Tree, usize) {
        let reading = cache.reading();
        let mut tree = tree(files);
        let blobs: HashMap<Oid, Vec<u8>> = files
            .iter()
            .map(|(_, b)| (crate::tree::blob_id(b), b.clone()))
            .collect();
        let mut unread = 0;
        for entry in &mut tree.entries {
            if let Some(Cached::Unneeded { size }) = reading.get(&key(entry.blob)) {
                entry.content = Content::Unread { size: *size };
                unread += 1;
            }
        }
        tree.reader = Some(BlobReader::new(move |blob| blobs.get(&blob).cloned()));
        (tree, unread)
    }

    /// Every file of the revision, with the bytes it would have.
    fn written(bundle: &Bundle, files: &[(&str, Vec<u8>)]) -> BTreeMap<String, Vec<u8>> {
        let blobs: HashMap<Oid, &Vec<u8>> = files
            .iter()
            .map(|(_, b)| (crate::tree::blob_id(b), b))
            .collect();
        bundle
            .revision_files("/rev")
            .into_iter()
            .map(|f| {
                let bytes = match f.unread {
                    Some(size) => {
                        let bytes = blobs[&f.blob.unwrap()].clone();
                        assert_eq!(bytes.len() as u64, size, "{}", f.path);
                        bytes
                    }
                    None => f.bytes.to_vec(),
                };
                (f.path, bytes)
            })
            .collect()
    }

    /// A pass that left files unread says and writes exactly what a pass
    /// that read every file says and writes.
    fn same_as_full_read(before: &[(&str, Vec<u8>)], after: &[(&str, Vec<u8>)]) -> usize {
        let opts = Options::default();
        let mut cache = Cache::default();
        let _ = check(tree(before), &opts, &mut cache);
        let (partial, unread) = as_read_after(&cache, after);
        let (bundle, report) = check(partial, &opts, &mut cache);
        let (full_bundle, full_report) = check(tree(after), &opts, &mut Cache::default());
        assert_eq!(report, full_report);
        assert_eq!(written(&bundle, after), written(&full_bundle, after));
        unread
    }

    #[test]
    fn unchanged_definitions_are_not_read_and_the_verdict_is_the_same() {
        let before = [
            ("apps/a.json", api("a", "/a/")),
            ("apps/b.json", api("b", "/b/")),
            ("policies/p.json", br#"{"id": "p", "rate": 1, "per": 1, "access_rights": {"a": {"api_id": "a", "versions": ["Default"]}}}"#.to_vec()),
        ];
        let mut after = before.clone();
        after[1].1 = api("b", "/b2/");
        assert_eq!(
            same_as_full_read(&before, &after),
            1,
            "a.json is left unread"
        );
    }

    #[test]
    fn a_finding_on_a_file_left_unread_has_its_line() {
        let before = [
            ("apps/a.json", api("a", "/a/")),
            ("apps/b.json", api("b", "/b/")),
        ];
        // b now takes a's listen path: the finding names a.json too.
        let after = [
            ("apps/a.json", api("a", "/a/")),
            ("apps/b.json", api("b", "/a/")),
        ];
        assert_eq!(same_as_full_read(&before, &after), 1);
        let mut cache = Cache::default();
        let _ = check(tree(&before), &Options::default(), &mut cache);
        let (partial, _) = as_read_after(&cache, &after);
        let (_, report) = check(partial, &Options::default(), &mut cache);
        let on_a: Vec<&Finding> = report
            .errors
            .iter()
            .chain(&report.warnings)
            .filter(|f| f.file == "apps/a.json")
            .collect();
        assert!(!on_a.is_empty(), "{report:?}");
        assert!(on_a.iter().all(|f| f.line > 1), "{on_a:?}");
    }

    #[test]
    fn a_definition_placed_elsewhere_is_read_after_all() {
        let a = api("a", "/a/");
        let before = [("apps/a.json", a.clone()), ("apps/b.json", api("b", "/b/"))];
        // The same bytes, now as a policy, as middleware and named by an
        // index: none of them can be answered without the bytes.
        let after = [
            ("apps/b.json", api("b", "/b/")),
            ("middleware/a.json", a.clone()),
            ("policies/a.json", a.clone()),
        ];
        same_as_full_read(&before, &after);
        let indexed = [
            (
                ".tyk.json",
                br#"{"type": "apidef", "files": [{"file": "defs/a.json"}]}"#.to_vec(),
            ),
            ("apps/b.json", api("b", "/b/")),
            ("defs/a.json", a),
        ];
        same_as_full_read(&before, &indexed);
    }

    #[test]
    fn only_definitions_no_stage_rewrites_are_left_unread() {
        let with_var = br#"{"name": "v", "api_id": "v", "proxy": {"listen_path": "/v/", "target_url": "${UP}"}}"#.to_vec();
        let export = serde_json::to_vec(&serde_json::json!({"api_definition": serde_json::from_slice::<serde_json::Value>(&api("e", "/e/")).unwrap()})).unwrap();
        let files = [
            ("apps/v.json", with_var),
            ("apps/e.json", export),
            ("apps/a.json", api("a", "/a/")),
        ];
        assert_eq!(same_as_full_read(&files, &files), 1, "only a.json");
    }
}
