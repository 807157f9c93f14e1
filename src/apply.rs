//! The apply stage: a bundle's files → a complete revision directory on disk,
//! published by renaming one symlink (`<root>/current`) over the old one.
//!
//! Invariants: a revision directory is only ever seen under its final name
//! once every file in it is written and flushed; `current` always resolves to
//! one whole revision (or does not exist yet); temporary names never end in
//! `.json`, because the gateway loads every `*.json`, dotfiles included.

use std::collections::BTreeSet;

use foldhash::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use git2::Oid;
use serde::{Deserialize, Serialize};

use crate::bundle::OutFile;
use crate::tree::{BlobReader, blob_id, hex_id};

mod early;
pub use early::{Early, EarlyFeed};

/// Metadata written into each revision (not `.json`: the gateway never reads
/// the revision root, but the name keeps it clear of any glob).
const MANIFEST: &str = ".revision";
const STAGING_PREFIX: &str = ".staging-";
/// A revision being removed is first renamed to this prefix, so a crash in
/// the middle of `remove_dir_all` never leaves a half-emptied directory
/// under a revision name that `write` would later reuse as complete.
const TRASH_PREFIX: &str = ".trash-";
/// A hard-linked copy of a revision, kept ready for the next write to
/// recycle while no revision is past `--keep-revisions` yet (the first
/// revisions after a cold sync): see `prepare`. Never a revision:
/// never published, never pruned as one, ignored by `open`.
const SPARE: &str = ".spare";
/// A spare being linked; only `prepare` removes leftovers, as a
/// spare may be in the making while the same process opens the root.
const SPARE_NEW_PREFIX: &str = ".spare-new-";
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
    #[error("cannot write {path}: its content (blob {blob}) was not read and cannot be read now")]
    Unread { path: String, blob: Oid },
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

/// The `files` of the manifest in `bytes` (its ids skipped unread): all
/// that recycling and linking need of it. `None` when it is no manifest.
fn manifest_files(bytes: &[u8]) -> Option<Vec<(String, String)>> {
    #[derive(Deserialize)]
    struct Files {
        files: Vec<(String, String)>,
    }
    serde_json::from_slice::<Files>(bytes).ok().map(|f| f.files)
}

/// What an old revision holds, read ahead of a write that recycles it
/// (`Revisions::inventory`, while Git fetches): the files its manifest
/// lists and what is really in its directory.
#[derive(Debug, Clone)]
pub struct Inventory {
    name: String,
    /// `(path, blob id)` as its manifest lists them, sorted by path.
    listed: Vec<(String, String)>,
    /// Paths of what is in the directory, sorted: regular files (`true`)
    /// and anything else that is not a folder (`false`).
    present: Vec<(String, bool)>,
    /// Its folders, by path.
    dirs: Vec<String>,
    /// Entries whose names are not UTF-8 (no manifest lists them).
    strays: Vec<PathBuf>,
}

impl Inventory {
    pub fn name(&self) -> &str {
        &self.name
    }
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
        remove_leftovers(&dir, &[STAGING_PREFIX, TRASH_PREFIX])?;
        remove_leftovers(root, &[CURRENT_TMP_PREFIX])?;
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

    /// Writes a complete revision named `name` and flushes it to disk. When
    /// a revision of that name already holds exactly these files, it is
    /// reused as is.
    ///
    /// `recycle` names a revision about to be pruned (see `surplus`): its
    /// directory leaves the revision namespace by one rename and becomes the
    /// new one, keeping every file it shares with it, so a one-file change
    /// costs a few file operations instead of a link per file (and, at
    /// prune time, an unlink per file). Other files equal to one in
    /// `current` are hard-linked from it; the rest are written.
    pub fn write(
        &self,
        name: &str,
        manifest_base: Manifest,
        files: &[OutFile<'_>],
        recycle: Option<&str>,
    ) -> Result<Manifest, ApplyError> {
        let recycle = match recycle {
            Some(old) => self.inventory(old)?,
            None => None,
        };
        self.write_with(name, manifest_base, files, recycle, None)
    }

    /// `write`, with the revision to recycle read ahead (`inventory`), and
    /// where files left unread (`OutFile::unread`) that can be neither kept
    /// nor linked are read by `reader`.
    pub fn write_with(
        &self,
        name: &str,
        manifest_base: Manifest,
        files: &[OutFile<'_>],
        recycle: Option<Inventory>,
        reader: Option<&BlobReader>,
    ) -> Result<Manifest, ApplyError> {
        let (manifest, oids, order) = listed(manifest_base, files)?;
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

        let staging = self
            .dir()
            .join(format!("{STAGING_PREFIX}{name}-{}", std::process::id()));
        let parents: HashSet<&str> = files
            .iter()
            .filter_map(|f| f.path.rsplit_once('/').map(|(parent, _)| parent))
            .collect();
        let needed_dirs: BTreeSet<&str> = parents.into_iter().flat_map(folder_and_above).collect();
        let recycle = recycle.filter(|old| old.name != name);
        let recycled = match &recycle {
            Some(old) => self.recycle(old, &staging, &manifest.files, &order, &needed_dirs)?,
            None => None,
        };
        let recycle_name = recycle.as_ref().map(|old| old.name.clone());
        // Freeing its 11,000 paths is no part of the write.
        if let Some(done) = recycle {
            let _ = std::thread::Builder::new().spawn(move || drop(done));
        }
        let recycle = recycle_name.as_deref();
        let kept = recycled.unwrap_or_default();
        fs::create_dir_all(&staging).map_err(io_err("create", &staging))?;
        for dir in &needed_dirs {
            let dir = staging.join(dir);
            fs::create_dir_all(&dir).map_err(io_err("create", &dir))?;
        }
        self.fill(&staging, files, oids, &kept, recycle, reader)?;
        // Crash-test hooks (feature `failpoints`, nothing otherwise).
        #[cfg(feature = "failpoints")]
        fail::fail_point!("apply-after-write");
        seal(&staging, &manifest)?;
        fs::rename(&staging, &final_dir).map_err(io_err("rename", &staging))?;
        fsync_dir(&self.dir())?;
        Ok(manifest)
    }

    /// Puts into `staging` every file of `files` not `kept` from a
    /// recycled revision: hard-linked from the previous revision when
    /// unchanged there, written otherwise.
    fn fill(
        &self,
        staging: &Path,
        files: &[OutFile<'_>],
        oids: Vec<Oid>,
        kept: &[bool],
        recycle: Option<&str>,
        reader: Option<&BlobReader>,
    ) -> Result<(), ApplyError> {
        // Unchanged files are hard-linked, in one thread: links into one
        // directory serialise on its lock, and more threads only spin on
        // it. A link can fail (another filesystem, a link limit): the file
        // is then written like a changed one.
        let unkept: Vec<(&OutFile<'_>, Oid)> = files
            .iter()
            .zip(oids)
            .enumerate()
            .filter(|(i, _)| kept.get(*i) != Some(&true))
            .map(|(_, file)| file)
            .collect();
        let previous = self.previous_files(unkept.len())?;
        let mut work: Vec<(&OutFile<'_>, Option<Vec<u8>>)> = Vec::new();
        let mut linked = 0usize;
        for (f, oid) in unkept {
            let link = previous
                .source(&f.path, oid, f.size())
                .is_some_and(|src| fs::hard_link(src, staging.join(&f.path)).is_ok());
            if link {
                linked += 1;
                continue;
            }
            // Left unread, and no older revision has it: read it now.
            let unread = |_| {
                reader
                    .and_then(|r| r.read(oid))
                    .ok_or_else(|| ApplyError::Unread {
                        path: f.path.clone(),
                        blob: oid,
                    })
            };
            work.push((f, f.unread.map(unread).transpose()?));
        }
        tracing::debug!(
            kept = kept.iter().filter(|k| **k).count(),
            linked,
            written = work.len(),
            recycled = recycle.unwrap_or(""),
            "revision files"
        );
        // File creation dominates a cold apply (one inode and its data
        // each); a few threads overlap the kernel work.
        crate::par::chunks(&work, |part| write_files(staging, part))
            .into_iter()
            .collect::<Result<(), _>>()?;
        Ok(())
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
        let removable = self.removable(keep, protect)?;
        for name in &removable {
            self.remove_revision(name)?;
        }
        Ok(removable)
    }

    /// The revision `prune(keep, protect)` would remove once one more
    /// revision is published (the oldest such), to be recycled by `write`.
    pub fn surplus(&self, keep: usize, protect: &[&str]) -> Result<Option<String>, ApplyError> {
        Ok(self
            .removable(keep.saturating_sub(1), protect)?
            .into_iter()
            .next_back())
    }

    /// Revisions beyond the `keep` most recent (newest first), without
    /// `current` and `protect`.
    fn removable(&self, keep: usize, protect: &[&str]) -> Result<Vec<String>, ApplyError> {
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
        Ok(revs
            .into_iter()
            .skip(keep)
            .map(|(_, name)| name)
            .filter(|name| current.as_deref() != Some(name) && !protect.contains(&name.as_str()))
            .collect())
    }

    /// Reads ahead what the next write recycles (see `inventory`): the
    /// revision past `keep` (see `surplus`), or else a spare, so that even
    /// the first revisions after a cold sync cost a few file operations
    /// instead of a hard link per file. Without a spare, one is made: every
    /// file of `current` hard-linked into it (its manifest last, then one
    /// rename). Once a revision is past `keep`, the spare is not needed and
    /// goes. Meant to run while Git fetches; a write waits for it (the
    /// caller holds one lock around both). `linking` is set while a spare
    /// is being made, the one part worth waiting for before an exit.
    pub fn prepare(
        &self,
        keep: usize,
        protect: &[&str],
        linking: &AtomicBool,
    ) -> Result<Option<Inventory>, ApplyError> {
        let spare = self.path_of(SPARE);
        if let Some(old) = self.surplus(keep, protect)? {
            if spare.exists() {
                self.remove_revision(SPARE)?;
            }
            return self.inventory(&old);
        }
        if let Some(ready) = self.inventory(SPARE)? {
            return Ok(Some(ready));
        }
        // Without a readable manifest it is of no use.
        if spare.exists() {
            self.remove_revision(SPARE)?;
        }
        let Some(current) = self.current()? else {
            return Ok(None);
        };
        let base = self.path_of(&current);
        let Ok(bytes) = fs::read(base.join(MANIFEST)) else {
            return Ok(None);
        };
        let Some(listed) = manifest_files(&bytes) else {
            return Ok(None);
        };
        let dir = self.dir();
        remove_leftovers(&dir, &[SPARE_NEW_PREFIX])?;
        let building = dir.join(format!(
            "{SPARE_NEW_PREFIX}{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        linking.store(true, Ordering::Relaxed);
        let linked = link_all(
            &base,
            &building,
            listed.iter().map(|(path, _)| path.as_str()),
        )
        .and_then(|dirs| {
            let manifest = building.join(MANIFEST);
            fs::write(&manifest, &bytes).map_err(io_err("write", &manifest))?;
            Ok(dirs)
        })
        .and_then(|dirs| {
            fs::rename(&building, &spare).map_err(io_err("rename", &building))?;
            Ok(dirs)
        });
        if linked.is_err() {
            let _ = fs::remove_dir_all(&building);
        }
        linking.store(false, Ordering::Relaxed);
        // Just made: what it holds is what was linked, no need to list it.
        let mut present: Vec<(String, bool)> = listed
            .iter()
            .map(|(path, _)| (path.clone(), true))
            .chain([(MANIFEST.to_string(), true)])
            .collect();
        present.sort_unstable();
        Ok(Some(Inventory {
            name: SPARE.to_string(),
            listed,
            present,
            dirs: linked?,
            strays: Vec::new(),
        }))
    }

    /// What a write of a new revision recycles: the revision past `keep`
    /// (see `surplus`), or else the spare, with its inventory; `ready` is
    /// the one `prepare` read ahead, taken when it names the same.
    pub fn recyclable(
        &self,
        keep: usize,
        protect: &[&str],
        ready: Option<Inventory>,
    ) -> Result<Option<Inventory>, ApplyError> {
        let old = self.surplus(keep, protect)?;
        let old = old.as_deref().unwrap_or(SPARE);
        match ready {
            Some(ready) if ready.name == old => Ok(Some(ready)),
            _ => self.inventory(old),
        }
    }

    /// Reads what revision (or spare) `name` holds, for a write to recycle
    /// it; `None` when it is gone or has no readable manifest. Only reads:
    /// the directory may be served until the write renames it.
    pub fn inventory(&self, name: &str) -> Result<Option<Inventory>, ApplyError> {
        let dir = self.path_of(name);
        let Ok(bytes) = fs::read(dir.join(MANIFEST)) else {
            return Ok(None);
        };
        let Some(listed) = manifest_files(&bytes) else {
            return Ok(None);
        };
        let mut inventory = Inventory {
            name: name.to_string(),
            listed,
            present: Vec::new(),
            dirs: Vec::new(),
            strays: Vec::new(),
        };
        let mut stack = vec![(dir, String::new())];
        while let Some((dir, prefix)) = stack.pop() {
            let list = match fs::read_dir(&dir) {
                Ok(list) => list,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(io_err("list", &dir)(e)),
            };
            for entry in list {
                let entry = entry.map_err(io_err("list", &dir))?;
                let file_type = entry.file_type().map_err(io_err("stat", &entry.path()))?;
                let Ok(name) = entry.file_name().into_string() else {
                    let stray = entry.path();
                    let base = self.path_of(&inventory.name);
                    inventory
                        .strays
                        .push(stray.strip_prefix(&base).unwrap_or(&stray).to_path_buf());
                    continue;
                };
                let rel = match prefix.is_empty() {
                    true => name,
                    false => format!("{prefix}/{name}"),
                };
                if file_type.is_dir() {
                    stack.push((entry.path(), rel.clone()));
                    inventory.dirs.push(rel);
                } else {
                    // The manifest too: it goes and a new one is created,
                    // which also dates the directory for `removable`.
                    inventory.present.push((rel, file_type.is_file()));
                }
            }
        }
        inventory.present.sort_unstable();
        Ok(Some(inventory))
    }

    /// Moves revision `old` to `staging` and strips it down to the files it
    /// shares with the new revision (same path, same blob id by its
    /// manifest; `new` is the new manifest's list, sorted by path):
    /// everything else is removed, including anything its manifest does not
    /// list. Returns which of the new files (by their index in `files`;
    /// `new[k]` is `files[order[k]]`) it kept, or `None` when `old` is gone
    /// or is `current` (then nothing was moved).
    /// Files are only ever unlinked here, never written: they may be hard
    /// links shared with `current`.
    fn recycle(
        &self,
        old: &Inventory,
        staging: &Path,
        new: &[(String, String)],
        order: &[usize],
        needed_dirs: &BTreeSet<&str>,
    ) -> Result<Option<Vec<bool>>, ApplyError> {
        if self.current()?.as_deref() == Some(old.name.as_str()) {
            return Ok(None);
        }
        // Both lists are sorted by path: one merge finds the files to keep.
        let mut matched = vec![false; new.len()];
        let (mut old_files, mut new_files) = (
            old.listed.iter().peekable(),
            new.iter().zip(matched.iter_mut()).peekable(),
        );
        while let (Some((old_path, old_oid)), Some(((new_path, new_oid), _))) =
            (old_files.peek(), new_files.peek())
        {
            match old_path.cmp(new_path) {
                std::cmp::Ordering::Less => {
                    old_files.next();
                }
                std::cmp::Ordering::Greater => {
                    new_files.next();
                }
                std::cmp::Ordering::Equal => {
                    let same = old_oid == new_oid;
                    old_files.next();
                    if let Some((_, matched)) = new_files.next() {
                        *matched = same;
                    }
                }
            }
        }
        let from = self.path_of(&old.name);
        match fs::rename(&from, staging) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("rename", &from)(e)),
        }
        #[cfg(feature = "failpoints")]
        fail::fail_point!("apply-after-recycle");
        let remove = |rel: &Path, dir: bool| {
            let path = staging.join(rel);
            let removed = match dir {
                true => fs::remove_dir_all(&path),
                false => fs::remove_file(&path),
            };
            gone(removed, &path)
        };
        for stray in &old.strays {
            remove(stray, staging.join(stray).is_dir())?;
        }
        // What was really there (sorted by path too): a matched file
        // missing from the directory is not kept (it is linked or written
        // like a changed one), and whatever is there unmatched goes.
        let mut kept = vec![false; order.len()];
        let mut k = 0;
        for (rel, is_file) in &old.present {
            while k < new.len() && new[k].0 < *rel {
                k += 1;
            }
            if *is_file && k < new.len() && new[k].0 == *rel && matched[k] {
                kept[order[k]] = true;
            } else {
                remove(Path::new(rel), false)?;
            }
        }
        // Folders no new file lives in hold nothing kept; deepest first.
        let mut dirs: Vec<&String> = old.dirs.iter().collect();
        dirs.sort_by_key(|d| std::cmp::Reverse(d.len()));
        for dir in dirs {
            if !needed_dirs.contains(dir.as_str()) {
                remove(Path::new(dir), true)?;
            }
        }
        Ok(Some(kept))
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

    /// Where to find files of `current` to hard-link. For a handful of
    /// files each is checked on its own (size, then blob id of its bytes),
    /// cheaper than reading a manifest of 10,000 entries; past that, the
    /// manifest.
    fn previous_files(&self, wanted: usize) -> Result<Previous, ApplyError> {
        const FEW: usize = 64;
        let Some(name) = self.current()? else {
            return Ok(Previous::None);
        };
        let base = self.path_of(&name);
        if wanted <= FEW {
            return Ok(Previous::Check(base));
        }
        let Ok(bytes) = fs::read(base.join(MANIFEST)) else {
            return Ok(Previous::None);
        };
        let Some(listed) = manifest_files(&bytes) else {
            return Ok(Previous::None);
        };
        let files = listed
            .into_iter()
            .filter_map(|(path, oid)| Some((path, Oid::from_str(&oid).ok()?)))
            .collect();
        Ok(Previous::Listed { base, files })
    }
}

/// Files of the current revision that a new one may hard-link.
enum Previous {
    None,
    /// Current's directory, and path → blob id from its manifest.
    Listed {
        base: PathBuf,
        files: HashMap<String, Oid>,
    },
    /// Current's directory; a file qualifies when its bytes have the id.
    Check(PathBuf),
}

impl Previous {
    fn source(&self, path: &str, oid: Oid, len: u64) -> Option<PathBuf> {
        match self {
            Previous::None => None,
            Previous::Listed { base, files } => {
                (files.get(path) == Some(&oid)).then(|| base.join(path))
            }
            Previous::Check(base) => {
                let full = base.join(path);
                let meta = fs::symlink_metadata(&full).ok()?;
                let same = meta.is_file()
                    && meta.len() == len
                    && fs::read(&full).is_ok_and(|bytes| blob_id(&bytes) == oid);
                same.then_some(full)
            }
        }
    }
}

/// Folder `dir` (relative, `/`-separated) and every folder above it.
fn folder_and_above(dir: &str) -> impl Iterator<Item = &str> {
    dir.match_indices('/')
        .map(|(at, _)| &dir[..at])
        .chain([dir])
}

/// Hard-links each of `paths` (relative, as a manifest lists them) from
/// `from` into the new directory `to`, creating folders as needed; returns
/// the folders made (relative). Each link names its file relative to its
/// folder's descriptors, opened once per folder, so the kernel resolves
/// one name instead of two whole paths.
fn link_all<'a>(
    from: &Path,
    to: &Path,
    paths: impl Iterator<Item = &'a str>,
) -> Result<Vec<String>, ApplyError> {
    fs::create_dir(to).map_err(io_err("create", to))?;
    let mut folders: HashMap<&'a str, (File, File)> = HashMap::default();
    let mut made: BTreeSet<&'a str> = BTreeSet::new();
    for path in paths {
        check_relative(path)?;
        let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
        let (source, target) = match folders.entry(parent) {
            std::collections::hash_map::Entry::Occupied(known) => known.into_mut(),
            std::collections::hash_map::Entry::Vacant(new) => {
                let target = to.join(parent);
                if !parent.is_empty() {
                    fs::create_dir_all(&target).map_err(io_err("create", &target))?;
                    made.extend(folder_and_above(parent));
                }
                let source = from.join(parent);
                new.insert((
                    File::open(&source).map_err(io_err("open", &source))?,
                    File::open(&target).map_err(io_err("open", &target))?,
                ))
            }
        };
        let unsafe_path = || ApplyError::UnsafePath {
            path: path.to_string(),
        };
        let name = std::ffi::CString::new(name).map_err(|_| unsafe_path())?;
        // SAFETY: both descriptors are open folders owned by `folders`, and
        // `name` is a NUL-terminated string that outlives the call.
        let rc = unsafe {
            libc::linkat(
                source.as_raw_fd(),
                name.as_ptr(),
                target.as_raw_fd(),
                name.as_ptr(),
                0,
            )
        };
        if rc != 0 {
            return Err(io_err("link", &to.join(path))(io::Error::last_os_error()));
        }
    }
    Ok(made.into_iter().map(str::to_string).collect())
}

/// The manifest of `files` (each path checked, listed with its blob id,
/// sorted), the blob ids in the order of `files`, and where each manifest
/// entry comes from (`manifest.files[k]` is `files[order[k]]`).
fn listed(
    manifest_base: Manifest,
    files: &[OutFile<'_>],
) -> Result<(Manifest, Vec<Oid>, Vec<usize>), ApplyError> {
    let mut oids = Vec::with_capacity(files.len());
    for f in files {
        check_relative(&f.path)?;
        oids.push(f.blob.unwrap_or_else(|| blob_id(&f.bytes)));
    }
    let mut order: Vec<usize> = (0..files.len()).collect();
    // By path, then blob id: the order of the hex ids as text.
    order.sort_unstable_by(|&a, &b| {
        (files[a].path.as_str(), oids[a].as_bytes())
            .cmp(&(files[b].path.as_str(), oids[b].as_bytes()))
    });
    let manifest = Manifest {
        files: order
            .iter()
            .map(|&i| (files[i].path.clone(), hex_id(oids[i].as_bytes())))
            .collect(),
        ..manifest_base
    };
    Ok((manifest, oids, order))
}

/// Writes the manifest last and makes everything in `staging` durable:
/// after this, renaming it into place publishes a whole revision.
fn seal(staging: &Path, manifest: &Manifest) -> Result<(), ApplyError> {
    let manifest_path = staging.join(MANIFEST);
    let encoded = serde_json::to_vec(manifest).map_err(|e| ApplyError::Manifest {
        path: manifest_path.clone(),
        message: e.to_string(),
    })?;
    fs::write(&manifest_path, encoded).map_err(io_err("write", &manifest_path))?;
    #[cfg(feature = "failpoints")]
    fail::fail_point!("apply-before-sync");
    // One syncfs flushes every file and directory we wrote, far cheaper
    // than an fsync per file for thousands of definitions.
    sync_filesystem(staging)?;
    #[cfg(feature = "failpoints")]
    fail::fail_point!("apply-before-rename");
    Ok(())
}

/// Writes one share of a revision's new files into `staging`, whose
/// directories already exist (files the revision shares with an older one
/// are linked or kept by the caller, not here).
fn write_files(staging: &Path, part: &[(&OutFile<'_>, Option<Vec<u8>>)]) -> Result<(), ApplyError> {
    for (f, read) in part {
        let dest = staging.join(&f.path);
        let mut out = File::create(&dest).map_err(io_err("create", &dest))?;
        let bytes = read.as_deref().unwrap_or(&f.bytes);
        out.write_all(bytes).map_err(io_err("write", &dest))?;
    }
    Ok(())
}

/// Only plain relative paths may be written: no `..`, no absolute paths,
/// nothing that could escape the revision directory. The same verdicts as
/// requiring every `Path::components` to be `Normal` (which skips empty and
/// inner `.` parts), from the bytes: it runs for every file of every write.
fn check_relative(path: &str) -> Result<(), ApplyError> {
    let plain = !path.is_empty()
        && !path.ends_with('/')
        && path
            .split('/')
            .enumerate()
            .all(|(i, part)| part != ".." && (i > 0 || (!part.is_empty() && part != ".")));
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
    sync_filesystem_of(&dir, path)
}

/// Flushes the filesystem that holds `dir` (opened at `path`). Each call
/// reports the write-back errors since the last call through the same
/// open directory, or since it was opened.
fn sync_filesystem_of(dir: &File, path: &Path) -> Result<(), ApplyError> {
    // SAFETY: syncfs only reads the descriptor, which `dir` keeps open.
    let rc = unsafe { libc::syncfs(dir.as_raw_fd()) };
    if rc != 0 {
        return Err(io_err("sync", path)(io::Error::last_os_error()));
    }
    Ok(())
}

/// Removes every entry of `dir` whose name starts with one of `prefixes`
/// (a folder with all it holds). One already gone counts as removed: the
/// read-ahead (`Revisions::prepare`) opens the root beside a pass, and may
/// be removing the same leftover.
fn remove_leftovers(dir: &Path, prefixes: &[&str]) -> Result<(), ApplyError> {
    for entry in fs::read_dir(dir).map_err(io_err("list", dir))? {
        let entry = entry.map_err(io_err("list", dir))?;
        let name = entry.file_name();
        if prefixes
            .iter()
            .any(|p| name.to_string_lossy().starts_with(p))
        {
            let path = entry.path();
            let removed = if entry.file_type().is_ok_and(|t| t.is_dir()) {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            gone(removed, &path)?;
        }
    }
    Ok(())
}

/// The result of removing `path`, where already gone counts as removed.
fn gone(removed: io::Result<()>, path: &Path) -> Result<(), ApplyError> {
    match removed {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("remove", path)(e)),
        _ => Ok(()),
    }
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
    use std::sync::Arc;

    fn file<'a>(path: &str, bytes: &'a [u8]) -> OutFile<'a> {
        OutFile {
            path: path.to_string(),
            bytes: Cow::Borrowed(bytes),
            blob: None,
            unread: None,
        }
    }

    fn base(sha: &str) -> Manifest {
        Manifest {
            sha: sha.to_string(),
            ..Manifest::default()
        }
    }

    /// A file left unread, as the validation hands it on.
    fn unread(path: &str, bytes: &[u8]) -> OutFile<'static> {
        OutFile {
            path: path.to_string(),
            bytes: Cow::Borrowed(&[]),
            blob: Some(blob_id(bytes)),
            unread: Some(bytes.len() as u64),
        }
    }

    #[test]
    fn a_file_left_unread_is_linked_from_current_or_read_to_be_written() {
        let root = tempfile::tempdir().unwrap();
        let revs = Revisions::open(root.path()).unwrap();
        revs.write("r1", base("r1"), &[file("apps/a.json", b"A1")], None)
            .unwrap();
        revs.publish("r1").unwrap();
        let reader = BlobReader::new(|blob| (blob == blob_id(b"B1")).then(|| b"B1".to_vec()));
        let files = [unread("apps/a.json", b"A1"), unread("apps/b.json", b"B1")];
        revs.write_with("r2", base("r2"), &files, None, Some(&reader))
            .unwrap();
        let r2 = root.path().join("revisions/r2");
        assert_eq!(fs::read(r2.join("apps/a.json")).unwrap(), b"A1");
        assert_eq!(fs::read(r2.join("apps/b.json")).unwrap(), b"B1");
        let ino = |p: &Path| fs::metadata(p).unwrap().ino();
        assert_eq!(
            ino(&r2.join("apps/a.json")),
            ino(&root.path().join("revisions/r1/apps/a.json")),
            "linked from current, not read"
        );
        // Nothing to read it with: refused, nothing under the name.
        let err = revs
            .write("r3", base("r3"), &[unread("apps/c.json", b"C1")], None)
            .unwrap_err();
        assert!(matches!(err, ApplyError::Unread { .. }), "{err}");
        assert!(!root.path().join("revisions/r3").exists());
    }

    #[test]
    fn write_then_publish_makes_current_resolve_to_the_revision() {
        let root = tempfile::tempdir().unwrap();
        let revs = Revisions::open(root.path()).unwrap();
        assert_eq!(revs.current().unwrap(), None);
        revs.write("aaa", base("aaa"), &[file("apps/a.json", b"{}")], None)
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
            None,
        )
        .unwrap();
        revs.publish("one").unwrap();
        revs.write(
            "two",
            base("two"),
            &[file("apps/a.json", b"A"), file("apps/b.json", b"B2")],
            None,
        )
        .unwrap();
        let ino = |rev: &str, f: &str| fs::metadata(revs.path_of(rev).join(f)).unwrap().ino();
        assert_eq!(ino("one", "apps/a.json"), ino("two", "apps/a.json"));
        assert_ne!(ino("one", "apps/b.json"), ino("two", "apps/b.json"));
    }

    /// Every file under a revision directory, with its bytes.
    fn contents(dir: &Path) -> BTreeSet<(String, Vec<u8>)> {
        let mut out = BTreeSet::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                    out.insert((rel, fs::read(&p).unwrap()));
                }
            }
        }
        out
    }

    #[test]
    fn a_surplus_revision_is_recycled_into_exactly_the_new_files() {
        let root = tempfile::tempdir().unwrap();
        let revs = Revisions::open(root.path()).unwrap();
        let old = [
            file("apps/a.json", b"A"),
            file("apps/b.json", b"B"),
            file("apps/gone.json", b"G"),
            file("middleware/deep/x.js", b"X"),
        ];
        revs.write("r1", base("r1"), &old, None).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(15));
        revs.write("r2", base("r2"), &old, None).unwrap();
        revs.publish("r2").unwrap();
        // Something the manifest does not list, and a listed file gone.
        fs::write(revs.path_of("r1").join("apps/stray.json"), b"{}").unwrap();
        fs::remove_file(revs.path_of("r1").join("apps/b.json")).unwrap();
        let a_inode = fs::metadata(revs.path_of("r1").join("apps/a.json"))
            .unwrap()
            .ino();

        assert_eq!(revs.surplus(2, &[]).unwrap().as_deref(), Some("r1"));
        assert_eq!(revs.surplus(3, &[]).unwrap(), None);
        assert_eq!(revs.surplus(2, &["r1"]).unwrap(), None);
        let new = [
            file("apps/a.json", b"A"),
            file("apps/b.json", b"B"),
            file("apps/c.json", b"C"),
            file("templates/t.json", b"T"),
        ];
        let manifest = revs.write("r3", base("r3"), &new, Some("r1")).unwrap();
        assert!(!revs.path_of("r1").exists());
        let mut want: BTreeSet<(String, Vec<u8>)> = new
            .iter()
            .map(|f| (f.path.clone(), f.bytes.to_vec()))
            .collect();
        want.insert((MANIFEST.into(), serde_json::to_vec(&manifest).unwrap()));
        assert_eq!(contents(&revs.path_of("r3")), want);
        assert!(!revs.path_of("r3").join("middleware").exists());
        // Kept, not rewritten; the missing file came from current.
        let ino = |rev: &str, f: &str| fs::metadata(revs.path_of(rev).join(f)).unwrap().ino();
        assert_eq!(ino("r3", "apps/a.json"), a_inode);
        assert_eq!(ino("r3", "apps/b.json"), ino("r2", "apps/b.json"));
        // current was never touched.
        assert_eq!(
            contents(&revs.path_of("r2")).len(),
            old.len() + 1,
            "current lost files"
        );
    }

    #[test]
    fn without_a_surplus_a_spare_of_current_is_prepared_and_recycled() {
        let root = tempfile::tempdir().unwrap();
        let revs = Revisions::open(root.path()).unwrap();
        let old = [file("apps/a.json", b"A"), file("middleware/m.js", b"M")];
        revs.write("r1", base("r1"), &old, None).unwrap();
        revs.publish("r1").unwrap();
        assert_eq!(revs.surplus(3, &[]).unwrap(), None);

        let ready = revs
            .prepare(3, &[], &AtomicBool::new(false))
            .unwrap()
            .expect("a spare");
        assert_eq!(ready.name(), SPARE);
        let ino = |dir: &Path, f: &str| fs::metadata(dir.join(f)).unwrap().ino();
        let (r1, spare) = (revs.path_of("r1"), revs.path_of(SPARE));
        assert_eq!(ino(&spare, "apps/a.json"), ino(&r1, "apps/a.json"));
        // Ready once: preparing again reads it, links nothing new.
        let again = revs
            .prepare(3, &[], &AtomicBool::new(false))
            .unwrap()
            .expect("the spare");
        assert_eq!(ino(&spare, "apps/a.json"), ino(&r1, "apps/a.json"));
        assert_eq!(again.listed, ready.listed);

        let new = [file("apps/a.json", b"A"), file("apps/b.json", b"B")];
        revs.write_with("r2", base("r2"), &new, Some(ready), None)
            .unwrap();
        assert!(!spare.exists(), "the spare became r2");
        let r2 = revs.path_of("r2");
        assert_eq!(ino(&r2, "apps/a.json"), ino(&r1, "apps/a.json"));
        assert_eq!(fs::read(r2.join("apps/b.json")).unwrap(), b"B");
        assert!(!r2.join("middleware").exists());
        assert_eq!(contents(&r1).len(), old.len() + 1, "current lost files");

        // No revision past keep 3 yet: a new spare. Past keep 1, r2 is
        // recycled and the spare goes.
        revs.prepare(3, &[], &AtomicBool::new(false)).unwrap();
        assert!(spare.exists());
        let surplus = revs.prepare(1, &[], &AtomicBool::new(false)).unwrap();
        assert!(surplus.is_some_and(|s| s.name() == "r2"));
        assert!(!spare.exists());
    }

    #[test]
    fn files_written_early_are_kept_by_the_write_and_the_rest_goes() {
        let root = tempfile::tempdir().unwrap();
        let revs = Revisions::open(root.path()).unwrap();
        let (early, feed) = revs.write_early();
        for (path, bytes) in [
            ("apps/b.json", &b"B"[..]),
            ("apps/a.json", b"A"),
            ("README.md", b"read me"),
            ("docs/deep/x.md", b"X"),
            ("../out.json", b"O"),
        ] {
            feed.send(path, blob_id(bytes), &Arc::new(bytes.to_vec()));
        }
        drop(feed);
        let written = early.finish().expect("written");
        let dir = revs.path_of(written.name());
        assert!(
            written.name().starts_with(STAGING_PREFIX),
            "{}",
            written.name()
        );
        assert!(!root.path().join("out.json").exists());
        let ino = |dir: &Path, f: &str| fs::metadata(dir.join(f)).unwrap().ino();
        let a = ino(&dir, "apps/a.json");

        // b's bytes changed in the bundle (a ${VAR}, say); policies.json is
        // made by it.
        let mut new = [
            file("apps/a.json", b"A"),
            file("apps/b.json", b"B2"),
            file("policies/policies.json", b"{}"),
        ];
        new[0].blob = Some(blob_id(b"A"));
        revs.write_with("r1", base("r1"), &new, Some(written), None)
            .unwrap();
        let r1 = revs.path_of("r1");
        assert_eq!(ino(&r1, "apps/a.json"), a, "kept, not written again");
        let want: BTreeSet<(String, Vec<u8>)> = [
            ("apps/a.json", &b"A"[..]),
            ("apps/b.json", b"B2"),
            ("policies/policies.json", b"{}"),
        ]
        .iter()
        .map(|(p, b)| (p.to_string(), b.to_vec()))
        .collect();
        let mut got = contents(&r1);
        got.retain(|(p, _)| p != MANIFEST);
        assert_eq!(got, want);
        assert!(!r1.join("docs").exists() && !r1.join("README.md").exists());
        let left: Vec<_> = fs::read_dir(revs.dir()).unwrap().collect();
        assert_eq!(left.len(), 1, "only r1 under revisions/");
    }

    #[test]
    fn an_early_write_dropped_unfinished_leaves_nothing() {
        let root = tempfile::tempdir().unwrap();
        let revs = Revisions::open(root.path()).unwrap();
        let (early, feed) = revs.write_early();
        let bytes = Arc::new(vec![b'x'; 100]);
        for i in 0..500 {
            feed.send(&format!("apps/{i}.json"), Oid::ZERO_SHA1, &bytes);
        }
        // The feed ends first, as in a pass that fails while reading.
        drop(feed);
        drop(early);
        assert_eq!(fs::read_dir(revs.dir()).unwrap().count(), 0);
    }

    #[test]
    fn a_recycled_revision_counts_as_the_newest() {
        let root = tempfile::tempdir().unwrap();
        let revs = Revisions::open(root.path()).unwrap();
        let pause = || std::thread::sleep(std::time::Duration::from_millis(15));
        for name in ["r1", "r2", "r3"] {
            revs.write(name, base(name), &[file("apps/a.json", b"A")], None)
                .unwrap();
            revs.publish(name).unwrap();
            pause();
        }
        assert_eq!(revs.surplus(3, &[]).unwrap().as_deref(), Some("r1"));
        revs.write("r4", base("r4"), &[file("apps/a.json", b"A")], Some("r1"))
            .unwrap();
        revs.publish("r4").unwrap();
        // r4 is r1's directory, dated by its new manifest: r2 goes next.
        assert_eq!(revs.surplus(3, &[]).unwrap().as_deref(), Some("r2"));
    }

    #[test]
    fn a_changed_file_in_a_recycled_revision_is_replaced_not_written_through() {
        // r1 and current share the inode of apps/a.json; recycling r1 into
        // a revision where a.json changed must not change current's copy.
        let root = tempfile::tempdir().unwrap();
        let revs = Revisions::open(root.path()).unwrap();
        revs.write("r1", base("r1"), &[file("apps/a.json", b"A")], None)
            .unwrap();
        revs.publish("r1").unwrap();
        std::thread::sleep(std::time::Duration::from_millis(15));
        revs.write("r2", base("r2"), &[file("apps/a.json", b"A")], None)
            .unwrap();
        revs.publish("r2").unwrap();
        let manifest = revs
            .write("r3", base("r3"), &[file("apps/a.json", b"A2")], Some("r1"))
            .unwrap();
        assert_eq!(manifest.files.len(), 1);
        assert_eq!(
            fs::read(revs.path_of("r3").join("apps/a.json")).unwrap(),
            b"A2"
        );
        assert_eq!(
            fs::read(root.path().join("current/apps/a.json")).unwrap(),
            b"A"
        );
        // Never the revision current points at.
        let again = revs
            .write("r4", base("r4"), &[file("apps/a.json", b"A4")], Some("r2"))
            .unwrap();
        assert_eq!(again.files.len(), 1);
        assert!(revs.path_of("r2").exists());
        assert_eq!(
            fs::read(root.path().join("current/apps/a.json")).unwrap(),
            b"A"
        );
    }

    #[test]
    fn many_unchanged_files_are_linked_by_the_manifest() {
        let root = tempfile::tempdir().unwrap();
        let revs = Revisions::open(root.path()).unwrap();
        let bodies: Vec<(String, Vec<u8>)> = (0..100)
            .map(|i| (format!("apps/a{i}.json"), format!("{i}").into_bytes()))
            .collect();
        let files: Vec<OutFile<'_>> = bodies.iter().map(|(p, b)| file(p, b)).collect();
        revs.write("one", base("one"), &files, None).unwrap();
        revs.publish("one").unwrap();
        let mut changed = files.clone();
        changed[7] = file("apps/a7.json", b"seven");
        revs.write("two", base("two"), &changed, None).unwrap();
        let ino = |rev: &str, f: &str| fs::metadata(revs.path_of(rev).join(f)).unwrap().ino();
        for (i, (path, _)) in bodies.iter().enumerate() {
            assert_eq!(ino("one", path) == ino("two", path), i != 7, "{path}");
        }
    }

    #[test]
    fn relative_paths_are_judged_as_by_their_components() {
        let by_components = |path: &str| {
            !path.is_empty()
                && Path::new(path)
                    .components()
                    .all(|c| matches!(c, std::path::Component::Normal(_)))
                && !path.ends_with('/')
        };
        for path in [
            "apps/a.json",
            "a",
            "a//b",
            "a/./b",
            "a/.",
            "a/..",
            "./a",
            ".",
            "..",
            "/a",
            "a/../b",
            "",
            "a/",
            "//a",
            ".a",
            "a/.b",
            "...",
            "a/.../b",
            "a\\..\\b",
        ] {
            assert_eq!(
                check_relative(path).is_ok(),
                by_components(path),
                "{path:?}"
            );
        }
    }

    #[test]
    fn unsafe_paths_are_refused_and_nothing_is_published() {
        let root = tempfile::tempdir().unwrap();
        let revs = Revisions::open(root.path()).unwrap();
        for bad in ["../x.json", "/etc/x.json", "apps/../../x", ""] {
            let err = revs
                .write("r", base("r"), &[file(bad, b"x")], None)
                .unwrap_err();
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
            revs.write(
                name,
                base(name),
                &[file("apps/a.json", name.as_bytes())],
                None,
            )
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
        revs.write("abc", base("abc"), &[file("apps/a.json", b"1")], None)
            .unwrap();
        revs.publish("abc").unwrap();
        assert_eq!(revs.name_for("abc").unwrap(), "abc.1");
    }
}
