//! The apply stage: a bundle's files → a complete revision directory on disk,
//! published by renaming one symlink (`<root>/current`) over the old one.
//!
//! Invariants: a revision directory is only ever seen under its final name
//! once every file in it is written and flushed; `current` always resolves to
//! one whole revision (or does not exist yet); temporary names never end in
//! `.json`, because the gateway loads every `*.json`, dotfiles included.

use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Component, Path, PathBuf};

use git2::Oid;
use serde::{Deserialize, Serialize};

use crate::bundle::OutFile;
use crate::tree::blob_id;

/// Metadata written into each revision (not `.json`: the gateway never reads
/// the revision root, but the name keeps it clear of any glob).
const MANIFEST: &str = ".revision";
const STAGING_PREFIX: &str = ".staging-";
/// A revision being removed is first renamed to this prefix, so a crash in
/// the middle of `remove_dir_all` never leaves a half-emptied directory
/// under a revision name that `write` would later reuse as complete.
const TRASH_PREFIX: &str = ".trash-";
const CURRENT: &str = "current";
const CURRENT_TMP_PREFIX: &str = ".current-";

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("refusing to write {path:?}: not a plain relative path")]
    UnsafePath { path: String },
    #[error("revision manifest {path} is unreadable: {message}")]
    Manifest { path: PathBuf, message: String },
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> ApplyError + use<> {
    let path = path.to_path_buf();
    move |source| ApplyError::Io {
        action,
        path,
        source,
    }
}

/// What a revision holds and what the gateway must report once it loads it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub sha: String,
    pub api_ids: BTreeSet<String>,
    pub policy_ids: BTreeSet<String>,
    /// `(path, blob id)` of every file, sorted by path.
    pub files: Vec<(String, String)>,
}

/// The revisions under one root.
#[derive(Debug, Clone)]
pub struct Revisions {
    root: PathBuf,
}

impl Revisions {
    /// Opens (creating if needed) `<root>/revisions` and removes what an
    /// interrupted run left behind: staging directories and half-made links.
    /// Neither is visible to the gateway, which only follows `current`.
    pub fn open(root: &Path) -> Result<Revisions, ApplyError> {
        let revs = Revisions {
            root: root.to_path_buf(),
        };
        let dir = revs.dir();
        fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        for entry in fs::read_dir(&dir).map_err(io_err("list", &dir))? {
            let entry = entry.map_err(io_err("list", &dir))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(STAGING_PREFIX) || name.starts_with(TRASH_PREFIX) {
                let path = entry.path();
                // A write probe is a file; staging and trash are directories.
                let removed = if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    fs::remove_dir_all(&path)
                } else {
                    fs::remove_file(&path)
                };
                removed.map_err(io_err("remove", &path))?;
            }
        }
        for entry in fs::read_dir(root).map_err(io_err("list", root))? {
            let entry = entry.map_err(io_err("list", root))?;
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(CURRENT_TMP_PREFIX)
            {
                let path = entry.path();
                fs::remove_file(&path).map_err(io_err("remove", &path))?;
            }
        }
        Ok(revs)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn dir(&self) -> PathBuf {
        self.root.join("revisions")
    }

    pub fn path_of(&self, name: &str) -> PathBuf {
        self.dir().join(name)
    }

    /// Fails with the OS's reason (read-only file system, no space left)
    /// when a file cannot be created under the root, so such a root is
    /// reported as a disk problem before Git is blamed for it.
    pub fn check_writable(&self) -> Result<(), ApplyError> {
        let probe = self
            .dir()
            .join(format!("{STAGING_PREFIX}probe-{}", std::process::id()));
        File::create(&probe).map_err(io_err("create", &probe))?;
        fs::remove_file(&probe).map_err(io_err("remove", &probe))
    }

    /// The revision `current` points at, if any.
    pub fn current(&self) -> Result<Option<String>, ApplyError> {
        let link = self.root.join(CURRENT);
        match fs::read_link(&link) {
            Ok(target) => Ok(target.file_name().map(|n| n.to_string_lossy().into_owned())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("read link", &link)(e)),
        }
    }

    pub fn manifest(&self, name: &str) -> Result<Manifest, ApplyError> {
        let path = self.path_of(name).join(MANIFEST);
        let bytes = fs::read(&path).map_err(io_err("read", &path))?;
        serde_json::from_slice(&bytes).map_err(|e| ApplyError::Manifest {
            path,
            message: e.to_string(),
        })
    }

    /// Picks the directory name for a new revision of `sha`: the sha itself,
    /// unless `current` already has that name with other content (same
    /// commit, other `--path` or flags), then the first free `<sha>.<n>`.
    pub fn name_for(&self, sha: &str) -> Result<String, ApplyError> {
        let current = self.current()?;
        if current.as_deref() != Some(sha) {
            return Ok(sha.to_string());
        }
        let mut n = 1;
        loop {
            let name = format!("{sha}.{n}");
            if current.as_deref() != Some(name.as_str()) {
                return Ok(name);
            }
            n += 1;
        }
    }

    /// Writes a complete revision named `name` and flushes it to disk. Files
    /// equal to one in `current` are hard-linked from it, so an incremental
    /// apply costs O(changed files). When a revision of that name already
    /// holds exactly these files, it is reused as is.
    pub fn write(
        &self,
        name: &str,
        manifest_base: Manifest,
        files: &[OutFile<'_>],
    ) -> Result<Manifest, ApplyError> {
        let mut oids = Vec::with_capacity(files.len());
        for f in files {
            check_relative(&f.path)?;
            oids.push(f.blob.unwrap_or_else(|| blob_id(&f.bytes)));
        }
        let mut listed: Vec<(String, String)> = files
            .iter()
            .zip(&oids)
            .map(|(f, oid)| (f.path.clone(), oid.to_string()))
            .collect();
        listed.sort();
        let manifest = Manifest {
            files: listed,
            ..manifest_base
        };

        let final_dir = self.path_of(name);
        if final_dir.exists() {
            if self.manifest(name).ok().as_ref() == Some(&manifest) {
                return Ok(manifest);
            }
            // Never remove what the gateway is pointed at; name_for avoids it.
            if self.current()?.as_deref() == Some(name) {
                return Err(ApplyError::UnsafePath {
                    path: name.to_string(),
                });
            }
            self.remove_revision(name)?;
        }

        let previous = self.previous_files()?;
        let staging = self
            .dir()
            .join(format!("{STAGING_PREFIX}{name}-{}", std::process::id()));
        fs::create_dir_all(&staging).map_err(io_err("create", &staging))?;
        let dirs: BTreeSet<&Path> = files
            .iter()
            .filter_map(|f| Path::new(&f.path).parent())
            .collect();
        for dir in dirs {
            let dir = staging.join(dir);
            fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        }
        // Unchanged files are hard-linked, in one thread: links into one
        // directory serialise on its lock, and more threads only spin on
        // it. A link can fail (another filesystem, a link limit): the file
        // is then written like a changed one.
        let mut work: Vec<&OutFile<'_>> = Vec::new();
        for (f, oid) in files.iter().zip(oids) {
            let linked = previous
                .get(&(f.path.clone(), oid))
                .is_some_and(|src| fs::hard_link(src, staging.join(&f.path)).is_ok());
            if !linked {
                work.push(f);
            }
        }
        // File creation dominates a cold apply (one inode and its data
        // each); a few threads overlap the kernel work.
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
            .clamp(1, 4);
        let chunk = work.len().div_ceil(threads).max(1);
        std::thread::scope(|scope| {
            let handles: Vec<_> = work
                .chunks(chunk)
                .map(|part| scope.spawn(|| write_files(&staging, part)))
                .collect();
            handles
                .into_iter()
                .try_for_each(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
        })?;
        // Crash-test hooks (feature `failpoints`, nothing otherwise).
        #[cfg(feature = "failpoints")]
        fail::fail_point!("apply-after-write");
        let manifest_path = staging.join(MANIFEST);
        let encoded = serde_json::to_vec(&manifest).map_err(|e| ApplyError::Manifest {
            path: manifest_path.clone(),
            message: e.to_string(),
        })?;
        fs::write(&manifest_path, encoded).map_err(io_err("write", &manifest_path))?;
        #[cfg(feature = "failpoints")]
        fail::fail_point!("apply-before-sync");
        // One syncfs flushes every file and directory we wrote, far cheaper
        // than an fsync per file for thousands of definitions.
        sync_filesystem(&staging)?;
        #[cfg(feature = "failpoints")]
        fail::fail_point!("apply-before-rename");
        fs::rename(&staging, &final_dir).map_err(io_err("rename", &staging))?;
        fsync_dir(&self.dir())?;
        Ok(manifest)
    }

    /// Points `current` at revision `name` with one `rename(2)` of a new
    /// symlink over the old one. The link is relative, so the root may be
    /// mounted at another path in the gateway's container.
    pub fn publish(&self, name: &str) -> Result<(), ApplyError> {
        let target = Path::new("revisions").join(name);
        let tmp = self.root.join(format!(
            "{CURRENT_TMP_PREFIX}{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::os::unix::fs::symlink(&target, &tmp).map_err(io_err("create link", &tmp))?;
        let current = self.root.join(CURRENT);
        #[cfg(feature = "failpoints")]
        fail::fail_point!("publish-before-rename");
        fs::rename(&tmp, &current).map_err(io_err("rename", &tmp))?;
        #[cfg(feature = "failpoints")]
        fail::fail_point!("publish-after-rename");
        fsync_dir(&self.root)
    }

    /// Removes revisions beyond the `keep` most recent, never the one
    /// `current` points at, nor any named in `protect`.
    pub fn prune(&self, keep: usize, protect: &[&str]) -> Result<Vec<String>, ApplyError> {
        let current = self.current()?;
        let dir = self.dir();
        let mut revs = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err("list", &dir))? {
            let entry = entry.map_err(io_err("list", &dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let modified = entry
                .metadata()
                .and_then(|m| m.modified())
                .map_err(io_err("stat", &entry.path()))?;
            revs.push((modified, name));
        }
        revs.sort_by(|a, b| b.cmp(a));
        let mut removed = Vec::new();
        for (_, name) in revs.into_iter().skip(keep) {
            if current.as_deref() == Some(name.as_str()) || protect.contains(&name.as_str()) {
                continue;
            }
            self.remove_revision(&name)?;
            removed.push(name);
        }
        Ok(removed)
    }

    /// Removes revision `name`: renamed out of the revision namespace first
    /// (one atomic step), then deleted. A crash between the two leaves a
    /// `.trash-` directory that `open` deletes, never a partial revision
    /// whose manifest still claims every file.
    fn remove_revision(&self, name: &str) -> Result<(), ApplyError> {
        let path = self.path_of(name);
        let trash = self.dir().join(format!(
            "{TRASH_PREFIX}{name}-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        fs::rename(&path, &trash).map_err(io_err("rename", &path))?;
        #[cfg(feature = "failpoints")]
        fail::fail_point!("prune-before-remove");
        fs::remove_dir_all(&trash).map_err(io_err("remove", &trash))
    }

    /// `(path, blob id)` → file in the current revision, for hard links.
    fn previous_files(&self) -> Result<HashMap<(String, Oid), PathBuf>, ApplyError> {
        let Some(name) = self.current()? else {
            return Ok(HashMap::new());
        };
        let Ok(manifest) = self.manifest(&name) else {
            return Ok(HashMap::new());
        };
        let base = self.path_of(&name);
        Ok(manifest
            .files
            .into_iter()
            .filter_map(|(path, oid)| {
                let oid = Oid::from_str(&oid).ok()?;
                let full = base.join(&path);
                Some(((path, oid), full))
            })
            .collect())
    }
}

/// Writes (or hard-links from the previous revision) one share of a
/// revision's files into `staging`, whose directories already exist.
fn write_files(staging: &Path, part: &[&OutFile<'_>]) -> Result<(), ApplyError> {
    for f in part {
        let dest = staging.join(&f.path);
        let mut out = File::create(&dest).map_err(io_err("create", &dest))?;
        out.write_all(&f.bytes).map_err(io_err("write", &dest))?;
    }
    Ok(())
}

/// Only plain relative paths may be written: no `..`, no absolute paths,
/// nothing that could escape the revision directory.
fn check_relative(path: &str) -> Result<(), ApplyError> {
    let p = Path::new(path);
    let plain = !path.is_empty()
        && p.components().all(|c| matches!(c, Component::Normal(_)))
        && !path.ends_with('/');
    if plain {
        Ok(())
    } else {
        Err(ApplyError::UnsafePath {
            path: path.to_string(),
        })
    }
}

fn sync_filesystem(path: &Path) -> Result<(), ApplyError> {
    let dir = File::open(path).map_err(io_err("open", path))?;
    // SAFETY: syncfs only reads the descriptor, which `dir` keeps open.
    let rc = unsafe { libc::syncfs(dir.as_raw_fd()) };
    if rc != 0 {
        return Err(io_err("sync", path)(io::Error::last_os_error()));
    }
    Ok(())
}

fn fsync_dir(path: &Path) -> Result<(), ApplyError> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(io_err("sync", path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;
    use std::os::unix::fs::MetadataExt;

    fn file<'a>(path: &str, bytes: &'a [u8]) -> OutFile<'a> {
        OutFile {
            path: path.to_string(),
            bytes: Cow::Borrowed(bytes),
            blob: None,
        }
    }

    fn base(sha: &str) -> Manifest {
        Manifest {
            sha: sha.to_string(),
            ..Manifest::default()
        }
    }

    #[test]
    fn write_then_publish_makes_current_resolve_to_the_revision() {
        let root = tempfile::tempdir().unwrap();
        let revs = Revisions::open(root.path()).unwrap();
        assert_eq!(revs.current().unwrap(), None);
        revs.write("aaa", base("aaa"), &[file("apps/a.json", b"{}")])
            .unwrap();
        revs.publish("aaa").unwrap();
        assert_eq!(revs.current().unwrap().as_deref(), Some("aaa"));
        let read = fs::read(root.path().join("current/apps/a.json")).unwrap();
        assert_eq!(read, b"{}");
        // The link is relative, so the root can be mounted elsewhere.
        let target = fs::read_link(root.path().join("current")).unwrap();
        assert!(target.is_relative());
    }

    #[test]
    fn unchanged_files_are_hard_linked_from_current() {
        let root = tempfile::tempdir().unwrap();
        let revs = Revisions::open(root.path()).unwrap();
        revs.write(
            "one",
            base("one"),
            &[file("apps/a.json", b"A"), file("apps/b.json", b"B")],
        )
        .unwrap();
        revs.publish("one").unwrap();
        revs.write(
            "two",
            base("two"),
            &[file("apps/a.json", b"A"), file("apps/b.json", b"B2")],
        )
        .unwrap();
        let ino = |rev: &str, f: &str| fs::metadata(revs.path_of(rev).join(f)).unwrap().ino();
        assert_eq!(ino("one", "apps/a.json"), ino("two", "apps/a.json"));
        assert_ne!(ino("one", "apps/b.json"), ino("two", "apps/b.json"));
    }

    #[test]
    fn unsafe_paths_are_refused_and_nothing_is_published() {
        let root = tempfile::tempdir().unwrap();
        let revs = Revisions::open(root.path()).unwrap();
        for bad in ["../x.json", "/etc/x.json", "apps/../../x", ""] {
            let err = revs.write("r", base("r"), &[file(bad, b"x")]).unwrap_err();
            assert!(matches!(err, ApplyError::UnsafePath { .. }), "{bad}");
        }
        assert_eq!(revs.current().unwrap(), None);
    }

    #[test]
    fn leftovers_of_an_interrupted_run_are_cleaned_on_open() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir_all(root.path().join("revisions")).unwrap();
        fs::write(root.path().join("revisions/.staging-probe-7"), "").unwrap();
        fs::create_dir_all(root.path().join("revisions/.staging-x-1/apps")).unwrap();
        std::os::unix::fs::symlink("revisions/x", root.path().join(".current-1-2")).unwrap();
        Revisions::open(root.path()).unwrap();
        assert!(!root.path().join("revisions/.staging-x-1").exists());
        assert!(!root.path().join("revisions/.staging-probe-7").exists());
        assert!(fs::symlink_metadata(root.path().join(".current-1-2")).is_err());
    }

    #[test]
    fn prune_keeps_current_and_the_newest() {
        let root = tempfile::tempdir().unwrap();
        let revs = Revisions::open(root.path()).unwrap();
        for name in ["r1", "r2", "r3", "r4", "r5"] {
            revs.write(name, base(name), &[file("apps/a.json", name.as_bytes())])
                .unwrap();
            // Distinct mtimes order the revisions.
            std::thread::sleep(std::time::Duration::from_millis(15));
        }
        revs.publish("r1").unwrap();
        let mut removed = revs.prune(3, &[]).unwrap();
        removed.sort();
        assert_eq!(removed, ["r2"]);
        assert!(revs.path_of("r1").exists());
    }

    #[test]
    fn same_sha_with_other_content_gets_a_new_name() {
        let root = tempfile::tempdir().unwrap();
        let revs = Revisions::open(root.path()).unwrap();
        assert_eq!(revs.name_for("abc").unwrap(), "abc");
        revs.write("abc", base("abc"), &[file("apps/a.json", b"1")])
            .unwrap();
        revs.publish("abc").unwrap();
        assert_eq!(revs.name_for("abc").unwrap(), "abc.1");
    }
}
