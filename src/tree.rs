//! The files of one config root, whatever they were read from (a Git commit's
//! tree or a folder on disk). Every later stage works on a `Tree`, so the
//! validator cannot tell, and need not care, where the bytes came from.
//!
//! Invariant: paths are relative to the config root, `/`-separated, never
//! contain `..` or empty segments, and entries are sorted by path.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use git2::Oid;

/// What a tree entry is. Symlinks and submodules are recorded, not followed,
/// so the validator can refuse them with a precise message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Symlink,
    Submodule,
}

/// A file's bytes, or why we did not read them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Content {
    /// Shared, not copied, by what reads them beside validation (a cold
    /// sync's early write, the folders a source keeps for its next read);
    /// validation takes them whole where nothing else holds them.
    Loaded(Arc<Vec<u8>>),
    /// Over the size limit: refused without reading it all.
    TooLarge { size: u64 },
    /// Symlinks and submodules have no content we would use.
    Absent,
    /// Not read: analysed before (same blob id) with a result that needs no
    /// bytes. `Tree::load` reads it when a later stage does need them.
    Unread { size: u64 },
}

#[derive(Debug, Clone)]
pub struct TreeEntry {
    /// Relative to the config root, `/`-separated.
    pub path: String,
    pub kind: EntryKind,
    pub content: Content,
    /// Git blob id of the content (computed for files read from disk), the
    /// key of the validation cache. Zero for entries without content.
    pub blob: Oid,
}

impl TreeEntry {
    /// A copy of this entry under another path (its path is not copied).
    pub fn moved(&self, path: &str) -> TreeEntry {
        TreeEntry {
            path: path.to_string(),
            kind: self.kind,
            content: self.content.clone(),
            blob: self.blob,
        }
    }

    /// A file whose bytes are loaded, with its Git blob id computed.
    pub fn file(path: impl Into<String>, bytes: Vec<u8>) -> TreeEntry {
        TreeEntry {
            path: path.into(),
            kind: EntryKind::File,
            blob: blob_id(&bytes),
            content: Content::Loaded(Arc::new(bytes)),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Tree {
    pub entries: Vec<TreeEntry>,
    /// Reads the bytes of `Content::Unread` entries (a tree read from Git
    /// with unread entries has one).
    pub reader: Option<BlobReader>,
}

/// What the validation cache knows of a blob, as the reader asks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cached {
    /// Never analysed: read it, size checked first.
    Unknown,
    /// Analysed before (so under an earlier size limit): read it without
    /// the size check, which costs more than the read.
    Known,
    /// Analysed before, and nothing later needs its bytes unless the commit
    /// places it differently: left unread (`Content::Unread`).
    Unneeded { size: u64 },
}

/// Reads a blob by id from where the tree was read. `None` when it cannot,
/// which the reader remembers (`failed`, shared by its clones): the entry
/// is treated as absent meanwhile, and the owner fails the pass.
#[derive(Clone)]
pub struct BlobReader {
    read: std::sync::Arc<dyn Fn(Oid) -> Option<Vec<u8>> + Send + Sync>,
    failed: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for BlobReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BlobReader")
    }
}

impl BlobReader {
    pub fn new(read: impl Fn(Oid) -> Option<Vec<u8>> + Send + Sync + 'static) -> BlobReader {
        BlobReader {
            read: std::sync::Arc::new(read),
            failed: Default::default(),
        }
    }

    pub fn read(&self, blob: Oid) -> Option<Vec<u8>> {
        let bytes = (self.read)(blob);
        if bytes.is_none() {
            self.failed
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        bytes
    }

    /// Whether a read failed, through this reader or a clone of it.
    pub fn failed(&self) -> bool {
        self.failed.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path} is not a directory")]
    NotADirectory { path: PathBuf },
    #[error("file name is not UTF-8: {path}")]
    NonUtf8Name { path: PathBuf },
}

impl Tree {
    /// Builds a tree from already-known entries; sorts them by path.
    pub fn from_entries(mut entries: Vec<TreeEntry>) -> Tree {
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        Tree {
            entries,
            reader: None,
        }
    }

    /// Reads entry `i` if it was left unread (nothing otherwise). An entry
    /// the reader cannot read becomes `Absent`.
    pub fn load(&mut self, i: usize) {
        let entry = &mut self.entries[i];
        if let Content::Unread { .. } = entry.content {
            entry.content = match self.reader.as_ref().and_then(|r| r.read(entry.blob)) {
                Some(bytes) => Content::Loaded(Arc::new(bytes)),
                None => Content::Absent,
            };
        }
    }

    /// The bytes of entry `i`, read now if it was left unread (empty when
    /// it has none).
    pub fn bytes_of(&self, i: usize) -> std::borrow::Cow<'_, [u8]> {
        let entry = &self.entries[i];
        match &entry.content {
            Content::Loaded(bytes) => std::borrow::Cow::Borrowed(bytes.as_slice()),
            Content::Unread { .. } => std::borrow::Cow::Owned(
                self.reader
                    .as_ref()
                    .and_then(|r| r.read(entry.blob))
                    .unwrap_or_default(),
            ),
            _ => std::borrow::Cow::Borrowed(&[]),
        }
    }

    /// Reads a folder (a checkout, for `tyk-gitops validate`). `.git` is
    /// skipped; symlinks are recorded, not followed; files over
    /// `max_file_size` are recorded with their size only.
    pub fn from_dir(root: &Path, max_file_size: u64) -> Result<Tree, TreeError> {
        let meta = fs::metadata(root).map_err(|source| TreeError::Io {
            path: root.to_path_buf(),
            source,
        })?;
        if !meta.is_dir() {
            return Err(TreeError::NotADirectory {
                path: root.to_path_buf(),
            });
        }
        let mut entries = Vec::new();
        let mut stack = vec![(root.to_path_buf(), String::new())];
        while let Some((dir, prefix)) = stack.pop() {
            let read = fs::read_dir(&dir).map_err(|source| TreeError::Io {
                path: dir.clone(),
                source,
            })?;
            for item in read {
                let item = item.map_err(|source| TreeError::Io {
                    path: dir.clone(),
                    source,
                })?;
                let full = item.path();
                let name = item
                    .file_name()
                    .into_string()
                    .map_err(|_| TreeError::NonUtf8Name { path: full.clone() })?;
                if prefix.is_empty() && name == ".git" {
                    continue;
                }
                let rel = if prefix.is_empty() {
                    name
                } else {
                    format!("{prefix}/{name}")
                };
                let ft = item.file_type().map_err(|source| TreeError::Io {
                    path: full.clone(),
                    source,
                })?;
                if ft.is_symlink() {
                    entries.push(TreeEntry {
                        path: rel,
                        kind: EntryKind::Symlink,
                        content: Content::Absent,
                        blob: Oid::ZERO_SHA1,
                    });
                } else if ft.is_dir() {
                    stack.push((full, rel));
                } else if ft.is_file() {
                    let entry = read_file(&full, rel, max_file_size)?;
                    entries.push(entry);
                }
            }
        }
        Ok(Tree::from_entries(entries))
    }

    pub fn get(&self, path: &str) -> Option<&TreeEntry> {
        self.index_of(path).map(|i| &self.entries[i])
    }

    pub fn index_of(&self, path: &str) -> Option<usize> {
        self.entries
            .binary_search_by(|e| e.path.as_str().cmp(path))
            .ok()
    }

    /// Entries left unread (`Content::Unread`).
    pub fn unread(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| matches!(e.content, Content::Unread { .. }))
            .count()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn read_file(full: &Path, rel: String, max_file_size: u64) -> Result<TreeEntry, TreeError> {
    let io_err = |source| TreeError::Io {
        path: full.to_path_buf(),
        source,
    };
    let size = fs::metadata(full).map_err(io_err)?.len();
    if size > max_file_size {
        return Ok(TreeEntry {
            path: rel,
            kind: EntryKind::File,
            content: Content::TooLarge { size },
            blob: Oid::ZERO_SHA1,
        });
    }
    let bytes = fs::read(full).map_err(io_err)?;
    Ok(TreeEntry::file(rel, bytes))
}

/// A blob id's bytes, as a map key: `Oid` compares through a call into
/// libgit2, which showed in lookups over 10,000 blobs.
pub type BlobKey = [u8; 20];

pub fn key(id: Oid) -> BlobKey {
    id.as_bytes().try_into().unwrap_or([0; 20])
}

/// The Git blob id of `bytes`, as `git hash-object` computes it. Plain
/// SHA-1 (with the CPU's SHA instructions where it has them): libgit2's
/// collision-detecting SHA-1 gives the same ids about four times slower,
/// and these are ids of bytes the validator already accepted, compared
/// with ids we wrote ourselves.
pub fn blob_id(bytes: &[u8]) -> Oid {
    use sha1::{Digest, Sha1};
    let mut hasher = Sha1::new();
    hasher.update(format!("blob {}\0", bytes.len()).as_bytes());
    hasher.update(bytes);
    // A SHA-1 digest is 20 bytes, the only length from_bytes refuses less.
    Oid::from_bytes(&hasher.finalize()).unwrap_or(Oid::ZERO_SHA1)
}

/// A blob id (`Oid::as_bytes`, a `BlobKey`) in lower-case hex, as Git
/// spells it. A table lookup per byte: the
/// manifest of every write spells out 11,000 of them, and the `hex`
/// crate's per-character iterator cost more than the rest of the listing.
pub fn hex_id(id: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(40);
    for &b in id {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_ids_are_git_s() {
        for bytes in [&b""[..], b"x", b"{\"api_id\":\"a\"}"] {
            let id = blob_id(bytes);
            assert_eq!(hex_id(id.as_bytes()), id.to_string());
            assert_eq!(hex_id(&key(id)), id.to_string());
        }
    }

    #[test]
    fn blob_ids_are_git_s() {
        for bytes in [&b""[..], b"x", &[7u8; 100_000]] {
            assert_eq!(
                blob_id(bytes),
                Oid::hash_object(git2::ObjectType::Blob, bytes).unwrap()
            );
        }
        assert_eq!(
            blob_id(b"hello\n").to_string(),
            "ce013625030ba8dba906f756967f9e9ca394464a"
        );
    }

    #[test]
    fn a_reader_remembers_a_failed_read_for_every_clone() {
        let known = blob_id(b"x");
        let reader = BlobReader::new(move |blob| (blob == known).then(|| b"x".to_vec()));
        let clone = reader.clone();
        assert_eq!(clone.read(known).as_deref(), Some(&b"x"[..]));
        assert!(!reader.failed());
        assert_eq!(clone.read(blob_id(b"y")), None);
        assert!(reader.failed(), "the owner sees its clone's failure");
    }

    #[test]
    fn blob_id_matches_git() {
        // `printf 'hello\n' | git hash-object --stdin`
        assert_eq!(
            blob_id(b"hello\n").to_string(),
            "ce013625030ba8dba906f756967f9e9ca394464a"
        );
    }

    #[test]
    fn from_dir_records_symlinks_and_large_files_without_following() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("apps")).unwrap();
        fs::create_dir_all(dir.path().join(".git")).unwrap();
        fs::write(dir.path().join(".git/config"), "x").unwrap();
        fs::write(dir.path().join("apps/a.json"), "{}").unwrap();
        fs::write(dir.path().join("apps/big.json"), vec![b' '; 100]).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", dir.path().join("apps/l.json")).unwrap();
        let tree = Tree::from_dir(dir.path(), 50).unwrap();
        let paths: Vec<_> = tree.entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["apps/a.json", "apps/big.json", "apps/l.json"]);
        assert_eq!(
            tree.get("apps/big.json").unwrap().content,
            Content::TooLarge { size: 100 }
        );
        assert_eq!(tree.get("apps/l.json").unwrap().kind, EntryKind::Symlink);
        assert_eq!(
            tree.get("apps/a.json").unwrap().content,
            Content::Loaded(Arc::new(b"{}".to_vec()))
        );
    }
}
