//! A fetched commit's tree → `Tree`, straight from the object database (no
//! checkout). Sizes come from object headers, so an oversized blob is never
//! read into memory; symlinks and submodules are recorded, not followed.

use std::collections::HashMap;
use std::sync::Arc;

use git2::{ObjectType, Oid, Repository};

use super::SourceError;
use super::sizes::PackSizes;
use crate::tree::{BlobKey, BlobReader, Cached, Content, EntryKind, Tree, TreeEntry, key};

/// Files in one commit's config root. A config repo of 100,000 files
/// applies in seconds (RELIABILITY.md); far more is abuse, and every file
/// costs memory here and a file on disk per revision.
pub const MAX_COMMIT_FILES: usize = 200_000;
/// Bytes of all files of one commit's config root, from object headers,
/// before any blob is read: a small pack can expand to gigabytes (one
/// compressible blob named by hundreds of entries), and each entry is
/// held in memory and written to disk.
pub const MAX_COMMIT_BYTES: u64 = 256 * 1024 * 1024;
/// Linux's NAME_MAX: a longer entry name cannot be written, so it is
/// refused with the commit rather than failing every apply.
const MAX_NAME_BYTES: usize = 255;
/// A path longer than this, plus the revision directory it is written
/// under, could pass PATH_MAX (4,096).
const MAX_PATH_BYTES: usize = 3072;

const MODE_TREE: i32 = 0o040000;
const MODE_SYMLINK: i32 = 0o120000;
const MODE_GITLINK: i32 = 0o160000;
/// How deep `dirs` looks for `apps/` folders to suggest (`envs/eu/prod/apps`).
pub const CONFIG_ROOT_DEPTH: usize = 5;

/// Takes each file read whole from Git as it is read: path, blob id,
/// bytes (see `Source::read_tree_feeding`).
pub type EachFile<'a> = &'a (dyn Fn(&str, Oid, &Arc<Vec<u8>>) + Sync);

pub fn read_tree(
    repo: &Repository,
    sha: &str,
    subpath: Option<&str>,
    max_file_size: u64,
    cached: &dyn Fn(Oid) -> Cached,
    folders: &mut Folders,
    each: Option<EachFile<'_>>,
) -> Result<Tree, SourceError> {
    read_without_rehashing();
    let read_error = |err: git2::Error| SourceError::Read {
        sha: sha.to_string(),
        message: err.message().to_string(),
    };
    if folders.limit != max_file_size {
        *folders = Folders {
            limit: max_file_size,
            ..Folders::default()
        };
    }
    let start = config_root_tree(repo, sha, subpath)?;
    // The walk only lists; the blobs are read afterwards.
    let Walked {
        mut entries,
        blobs,
        folders: walked,
        reused,
        reused_bytes,
    } = walk(repo, sha, start, folders)?;
    let too_large = |total: u64| SourceError::TooLarge {
        sha: sha.to_string(),
        message: format!(
            "its files add up to more than {} MiB ({} MiB or more)",
            MAX_COMMIT_BYTES / (1024 * 1024),
            total / (1024 * 1024)
        ),
    };
    if reused_bytes > MAX_COMMIT_BYTES {
        return Err(too_large(reused_bytes));
    }
    let reading = Reading {
        max_file_size,
        cached,
        counted: reused_bytes,
        each,
    };
    entries.extend(read_blobs(repo, blobs, reading, read_error, too_large)?);
    let mut tree = Tree::from_entries(entries);
    folders.remember(&tree, walked, |blob| {
        reused.contains(&key(blob)) || cached(blob) == Cached::Known
    });
    if tree.unread() > 0 {
        tree.reader = Some(blob_reader(repo.path().to_path_buf()));
    }
    Ok(tree)
}

/// What the last read found in the folders of the config root, by tree
/// id: a folder with the same id holds the same files, so a sidecar that
/// reads commit after commit reads again only the folders on the path of
/// what changed. Only folders whose every file was read whole are kept
/// (a file left unread, or too large, depends on what the validation cache
/// knew at the time), up to `FOLDERS_MAX_BYTES` in all. With 1,000
/// policies, whose bytes `policies.json` needs, their 1,000 blobs were
/// inflated on every pass. Only files the validation cache knows (and
/// needs read) count: after a cold read, which knows nothing, nothing is
/// kept (a one-shot sync would only hold every file for nothing).
#[derive(Debug, Default)]
pub struct Folders {
    /// The `max_file_size` the files were read under.
    limit: u64,
    /// Tree id → every entry beneath it, paths relative to the folder.
    by_tree: HashMap<Oid, Vec<TreeEntry>>,
}

/// The most file bytes `Folders` keeps.
const FOLDERS_MAX_BYTES: u64 = 16 * 1024 * 1024;

impl Folders {
    /// Keeps the folders of this read (`walked`: tree id and path, with a
    /// trailing `/`) whose entries in `tree` were all read whole, of blobs
    /// `kept_blob` says to keep.
    fn remember(
        &mut self,
        tree: &Tree,
        walked: Vec<(Oid, String)>,
        kept_blob: impl Fn(Oid) -> bool,
    ) {
        let mut kept = HashMap::new();
        let mut bytes = 0u64;
        for (id, prefix) in walked {
            if kept.contains_key(&id) {
                continue;
            }
            let from = tree.entries.partition_point(|e| e.path < prefix);
            let beneath = || {
                tree.entries[from..]
                    .iter()
                    .take_while(|e| e.path.starts_with(&prefix))
            };
            // Judged before anything is kept: a cold sync reads every
            // folder whole, most of them past the limit.
            let mut size = 0u64;
            let whole = beneath().all(|e| match &e.content {
                Content::Loaded(data) if kept_blob(e.blob) => {
                    size += data.len() as u64;
                    bytes + size <= FOLDERS_MAX_BYTES
                }
                Content::Absent => true,
                Content::Loaded(_) | Content::TooLarge { .. } | Content::Unread { .. } => false,
            });
            if whole && beneath().next().is_some() {
                bytes += size;
                let files = beneath()
                    .map(|e| e.moved(&e.path[prefix.len()..]))
                    .collect();
                kept.insert(id, files);
            }
        }
        self.by_tree = kept;
    }
}

/// Reads blobs of the cache at `path` on demand, opening it on first use
/// (a libgit2 repository is used by one thread at a time: the lock).
fn blob_reader(path: std::path::PathBuf) -> BlobReader {
    let opened: std::sync::Mutex<Option<Repository>> = std::sync::Mutex::new(None);
    BlobReader::new(move |blob| {
        let mut repo = opened.lock().unwrap_or_else(|p| p.into_inner());
        if repo.is_none() {
            *repo = Some(Repository::open_bare(&path).ok()?);
        }
        let odb = repo.as_ref()?.odb().ok()?;
        odb.read(blob).ok().map(|object| object.data().to_vec())
    })
}

/// The tree of `sha` at `subpath` (the whole tree without one).
fn config_root_tree<'r>(
    repo: &'r Repository,
    sha: &str,
    subpath: Option<&str>,
) -> Result<git2::Tree<'r>, SourceError> {
    let read_error = |err: git2::Error| SourceError::Read {
        sha: sha.to_string(),
        message: err.message().to_string(),
    };
    let not_fetched = || SourceError::NotFetched {
        sha: sha.to_string(),
    };
    let oid = Oid::from_str(sha).map_err(|_| not_fetched())?;
    let commit = repo
        .find_object(oid, None)
        .and_then(|object| object.peel_to_commit())
        .map_err(|_| not_fetched())?;
    let root = commit.tree().map_err(read_error)?;
    let subpath = subpath
        .map(|p| p.trim_matches('/'))
        .filter(|p| !p.is_empty() && *p != ".");
    Ok(match subpath {
        None => root,
        Some(path) => {
            let missing = || SourceError::MissingPath {
                sha: sha.to_string(),
                subpath: path.to_string(),
                config_roots: crate::bundle::config_roots(
                    dirs(repo, sha, CONFIG_ROOT_DEPTH)
                        .iter()
                        .map(String::as_str),
                ),
            };
            let entry = root
                .get_path(std::path::Path::new(path))
                .map_err(|_| missing())?;
            if entry.kind() != Some(ObjectType::Tree) {
                return Err(SourceError::NotADirectory {
                    sha: sha.to_string(),
                    subpath: path.to_string(),
                });
            }
            repo.find_tree(entry.id()).map_err(read_error)?
        }
    })
}

/// What `walk` lists: entries without content to read (symlinks,
/// submodules) and those of folders read before, the blobs to read, every
/// folder met (tree id, path with a trailing `/`), and the blobs and bytes
/// of the entries taken from `Folders`.
struct Walked {
    entries: Vec<TreeEntry>,
    blobs: Vec<(String, Oid)>,
    folders: Vec<(Oid, String)>,
    reused: foldhash::HashSet<BlobKey>,
    reused_bytes: u64,
}

fn walk(
    repo: &Repository,
    sha: &str,
    start: git2::Tree<'_>,
    known: &Folders,
) -> Result<Walked, SourceError> {
    let read_error = |err: git2::Error| SourceError::Read {
        sha: sha.to_string(),
        message: err.message().to_string(),
    };
    let mut out = Walked {
        entries: Vec::new(),
        blobs: Vec::new(),
        folders: Vec::new(),
        reused: foldhash::HashSet::default(),
        reused_bytes: 0,
    };
    let mut stack = vec![(start, String::new())];
    while let Some((tree, prefix)) = stack.pop() {
        for item in tree.iter() {
            let name = item.name().map_err(|_| SourceError::BadPath {
                sha: sha.to_string(),
                path: format!("{prefix}{}", String::from_utf8_lossy(item.name_bytes())),
            })?;
            if name.is_empty()
                || name == "."
                || name == ".."
                || name.contains('/')
                || name.len() > MAX_NAME_BYTES
                || prefix.len() + name.len() > MAX_PATH_BYTES
            {
                return Err(SourceError::BadPath {
                    sha: sha.to_string(),
                    path: crate::sha::printable(&format!("{prefix}{name}"))
                        .chars()
                        .take(300)
                        .collect(),
                });
            }
            let path = format!("{prefix}{name}");
            match item.filemode() {
                MODE_TREE => {
                    let folder = format!("{path}/");
                    // Paths were checked when the folder was first read,
                    // under a prefix of the same length or not: check the
                    // length again.
                    match known.by_tree.get(&item.id()) {
                        Some(files)
                            if files
                                .iter()
                                .all(|f| folder.len() + f.path.len() <= MAX_PATH_BYTES) =>
                        {
                            for f in files {
                                if let Content::Loaded(data) = &f.content {
                                    out.reused_bytes += data.len() as u64;
                                    out.reused.insert(key(f.blob));
                                }
                                out.entries.push(f.moved(&format!("{folder}{}", f.path)));
                            }
                        }
                        _ => {
                            let subtree = repo.find_tree(item.id()).map_err(read_error)?;
                            stack.push((subtree, folder.clone()));
                        }
                    }
                    out.folders.push((item.id(), folder));
                }
                MODE_SYMLINK => out.entries.push(no_content(path, EntryKind::Symlink)),
                MODE_GITLINK => out.entries.push(no_content(path, EntryKind::Submodule)),
                _ => out.blobs.push((path, item.id())),
            }
            if out.entries.len() + out.blobs.len() > MAX_COMMIT_FILES {
                return Err(SourceError::TooLarge {
                    sha: sha.to_string(),
                    message: format!("more than {MAX_COMMIT_FILES} files"),
                });
            }
        }
    }
    Ok(out)
}

pub fn dirs(repo: &Repository, sha: &str, max_depth: usize) -> Vec<String> {
    let Some(root) = Oid::from_str(sha)
        .ok()
        .and_then(|oid| repo.find_commit(oid).ok())
        .and_then(|commit| commit.tree().ok())
    else {
        return Vec::new();
    };
    let mut found = Vec::new();
    let mut stack = vec![(root, String::new(), 0)];
    while let Some((tree, prefix, depth)) = stack.pop() {
        for item in tree.iter() {
            let (Ok(name), MODE_TREE) = (item.name(), item.filemode()) else {
                continue;
            };
            let path = format!("{prefix}{name}");
            if depth + 1 < max_depth
                && let Ok(subtree) = repo.find_tree(item.id())
            {
                stack.push((subtree, format!("{path}/"), depth + 1));
            }
            found.push(path);
        }
    }
    found
}

/// What `read_blobs` learnt of a blob before reading any.
#[derive(Debug, Clone, Copy)]
enum Learnt {
    /// Never analysed: its size, from its object header.
    Header(u64),
    /// Analysed before: read without the header, its size counted once read.
    Known,
    /// Analysed before, bytes not needed: its size, from the cache.
    Unread(u64),
}

/// How `read_blobs` reads.
struct Reading<'a> {
    max_file_size: u64,
    cached: &'a dyn Fn(Oid) -> Cached,
    /// File bytes already counted toward `MAX_COMMIT_BYTES`.
    counted: u64,
    each: Option<EachFile<'a>>,
}

/// Sizes come from object headers, so an oversized blob is never read;
/// except for blobs the cache knows (analysed before, so under an earlier
/// limit): reading a deltified object's header costs more than reading the
/// object, and a config repo is mostly such blobs. Blobs whose bytes no
/// later stage needs (`Cached::Unneeded`) are not read at all: their size
/// comes from the cache. The commit's total (`MAX_COMMIT_BYTES`) is checked
/// from the headers and cached sizes before anything is read (starting
/// from the `counted` bytes of entries taken from `Folders`), and again
/// with the known blobs once read, before any entry holds one. A blob
/// named by several entries is inflated once, and shared by them; each
/// file read whole goes to `each` as soon as it is read.
fn read_blobs(
    repo: &Repository,
    blobs: Vec<(String, Oid)>,
    reading: Reading<'_>,
    read_error: impl Fn(git2::Error) -> SourceError + Sync,
    too_large: impl Fn(u64) -> SourceError,
) -> Result<Vec<TreeEntry>, SourceError> {
    let Reading {
        max_file_size,
        cached,
        counted,
        each,
    } = reading;
    // Sizes are read on this thread, from the packs (`PackSizes`) or else
    // libgit2's headers: libgit2 serialises pack access, and reading its
    // headers on two threads made a cold read slower (59 -> 87 ms).
    let odb = repo.odb().map_err(&read_error)?;
    let mut learnt: foldhash::HashMap<BlobKey, Learnt> = foldhash::HashMap::default();
    let mut total: u64 = counted;
    let mut packs = None;
    for (_, id) in &blobs {
        let this = match learnt.get(&key(*id)) {
            Some(this) => *this,
            None => {
                let this = match cached(*id) {
                    Cached::Known => Learnt::Known,
                    Cached::Unneeded { size } => Learnt::Unread(size),
                    Cached::Unknown => {
                        Learnt::Header(size_of(repo, &odb, &mut packs, *id).map_err(&read_error)?)
                    }
                };
                learnt.insert(key(*id), this);
                this
            }
        };
        let (Learnt::Header(size) | Learnt::Unread(size)) = this else {
            continue;
        };
        // Each entry is held and written on its own, shared blob or not.
        total = total.saturating_add(size.min(max_file_size.saturating_add(1)));
        if total > MAX_COMMIT_BYTES {
            return Err(too_large(total));
        }
    }
    let wanted = wanted(&blobs, &learnt, max_file_size);
    // Who takes each blob as it is read, by path (only for a feed).
    let paths_of = match each {
        Some(_) => paths_of(&blobs),
        None => foldhash::HashMap::default(),
    };
    let fed = |id: Oid, data: &Arc<Vec<u8>>| {
        if let Some(each) = each.filter(|_| data.len() as u64 <= max_file_size) {
            for path in paths_of.get(&key(id)).into_iter().flatten() {
                each(path, id, data);
            }
        }
    };
    // Each blob within the limit is inflated once, on a few threads (a
    // revision of 10,000 files spends most of its read here): each opens
    // the cache on its own, as a libgit2 repository is not shared across
    // threads.
    let read = read_objects(repo, &wanted, &read_error, &fed)?;
    // Known blobs had no header read: their sizes count now, once per
    // entry, before any entry holds them.
    for (_, id) in &blobs {
        if let Some(Learnt::Known) = learnt.get(&key(*id))
            && let Some(data) = read.get(id)
        {
            total = total.saturating_add(data.len() as u64);
            if total > MAX_COMMIT_BYTES {
                return Err(too_large(total));
            }
        }
    }
    // A blob at several paths is shared by their entries.
    let mut out = Vec::with_capacity(blobs.len());
    for (path, id) in blobs {
        let data = read.get(&id).cloned();
        let content = match (data, learnt.get(&key(id))) {
            (None, Some(&Learnt::Unread(size))) => Content::Unread { size },
            (Some(data), _) if data.len() as u64 > max_file_size => Content::TooLarge {
                size: data.len() as u64,
            },
            (Some(data), _) => Content::Loaded(data),
            (None, Some(&Learnt::Header(size))) => Content::TooLarge { size },
            // Every id within the limit was read above.
            (None, _) => Content::TooLarge { size: 0 },
        };
        out.push(TreeEntry {
            path,
            kind: EntryKind::File,
            content,
            blob: id,
        });
    }
    Ok(out)
}

/// A blob's size from the packs (`PackSizes`, opened at the first ask), or
/// else from libgit2's header.
fn size_of(
    repo: &Repository,
    odb: &git2::Odb<'_>,
    packs: &mut Option<PackSizes>,
    id: Oid,
) -> Result<u64, git2::Error> {
    let packs = packs.get_or_insert_with(|| PackSizes::open(repo.path()));
    match packs.size(id) {
        Some(size) => Ok(size),
        None => Ok(odb.read_header(id)?.0 as u64),
    }
}

/// The blobs to read whole, in the order of their paths, each once: a cold
/// sync's early write creates the files in the order they are read, and a
/// later write that links them by path then finds their inodes side by
/// side.
fn wanted(
    blobs: &[(String, Oid)],
    learnt: &foldhash::HashMap<BlobKey, Learnt>,
    max_file_size: u64,
) -> Vec<Oid> {
    let mut once = foldhash::HashSet::default();
    blobs
        .iter()
        .map(|(_, id)| *id)
        .filter(|id| match learnt.get(&key(*id)) {
            Some(Learnt::Header(size)) => *size <= max_file_size,
            Some(Learnt::Unread(_)) => false,
            _ => true,
        })
        .filter(|id| once.insert(key(*id)))
        .collect()
}

/// The paths of each blob.
fn paths_of(blobs: &[(String, Oid)]) -> foldhash::HashMap<BlobKey, Vec<&str>> {
    let mut paths: foldhash::HashMap<BlobKey, Vec<&str>> = foldhash::HashMap::default();
    for (path, id) in blobs {
        paths.entry(key(*id)).or_default().push(path);
    }
    paths
}

/// The bytes of `ids`, read on `par::threads()` threads past a few hundred;
/// each is handed to `fed` as soon as it is read.
fn read_objects(
    repo: &Repository,
    ids: &[Oid],
    read_error: &(impl Fn(git2::Error) -> SourceError + Sync),
    fed: &(impl Fn(Oid, &Arc<Vec<u8>>) + Sync),
) -> Result<HashMap<Oid, Arc<Vec<u8>>>, SourceError> {
    const PARALLEL_FROM: usize = 512;
    type Read = Vec<(Oid, Arc<Vec<u8>>)>;
    let read_all = |odb: &git2::Odb<'_>, part: &[Oid]| -> Result<Read, SourceError> {
        part.iter()
            .map(|id| {
                let object = odb.read(*id).map_err(read_error)?;
                let data = Arc::new(object.data().to_vec());
                fed(*id, &data);
                Ok((*id, data))
            })
            .collect()
    };
    if ids.len() < PARALLEL_FROM || crate::par::threads() == 1 {
        let odb = repo.odb().map_err(read_error)?;
        return Ok(read_all(&odb, ids)?.into_iter().collect());
    }
    let path = repo.path().to_path_buf();
    let mut read = HashMap::with_capacity(ids.len());
    for part in crate::par::chunks(ids, |part| {
        let repo = Repository::open_bare(&path).map_err(read_error)?;
        let odb = repo.odb().map_err(read_error)?;
        read_all(&odb, part)
    }) {
        read.extend(part?);
    }
    Ok(read)
}

fn no_content(path: String, kind: EntryKind) -> TreeEntry {
    TreeEntry {
        path,
        kind,
        content: Content::Absent,
        blob: Oid::ZERO_SHA1,
    }
}

/// Every object's id was computed from its bytes when the fetch indexed its
/// pack (and the pack's own checksum verified); libgit2 by default hashes
/// each blob again on every read, which was a third of the cost of reading
/// a tree of 10,000 files. zlib's checksum still catches a pack corrupted on
/// disk since. `git` itself does not re-hash on read either.
fn read_without_rehashing() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| git2::opts::strict_hash_verification(false));
}
