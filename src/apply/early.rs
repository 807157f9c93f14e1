//! A cold write begun early. With no revision to link from or recycle,
//! writing 11,000 files is most of a cold sync's write, and it only needs
//! the bytes as Git holds them. So each file is handed over as soon as it
//! is read from Git (`EarlyFeed`) and written while the rest is read and
//! validated, on a thread of its own, into a directory with a staging
//! name (`open` removes it after a crash), flushed once the feed ends. The
//! write then recycles that directory like an old revision: it keeps every
//! file whose path and blob id the new revision has, removes the rest and
//! writes what the bundle made or changed, or what the early write lacks.
//! Refused, the directory is removed.
//!
//! The flush is begun while the files are still coming: every
//! `FLUSH_EVERY` files a `syncfs` starts on a thread of its own (one at a
//! time), so the disk takes the first files while the rest are written,
//! and the last flush has only the tail left (a cold sync of 11,000 files
//! waited 60 ms less for it on a fresh ext4).

use std::ffi::CString;
use std::fs::{self, File};
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;

use foldhash::HashMap;
use git2::Oid;

use super::{
    ApplyError, Inventory, Revisions, STAGING_PREFIX, check_relative, folder_and_above, io_err,
    sync_filesystem_of,
};
use crate::tree::hex_id;

/// Files written between two flushes begun during an early write.
const FLUSH_EVERY: usize = 2048;

/// A file as Git holds it: path in the revision, blob id, bytes (shared
/// with validation, which takes them whole once this write dropped them).
type EarlyFile = (String, Oid, Arc<Vec<u8>>);

/// Hands files to an early write; dropping it ends the write's input.
pub struct EarlyFeed(Sender<EarlyFile>);

impl EarlyFeed {
    /// Queues a file for the early write (ignored once that write has
    /// failed). Called from the threads that read Git.
    pub fn send(&self, path: &str, id: Oid, bytes: &Arc<Vec<u8>>) {
        let _ = self.0.send((path.to_string(), id, bytes.clone()));
    }
}

/// Files being written ahead of validation; see the module.
pub struct Early {
    dir: PathBuf,
    writing: Option<JoinHandle<Result<Inventory, ApplyError>>>,
}

impl Revisions {
    /// Starts an early write into a new directory under `revisions/`, on
    /// a thread of its own (one: creates in one folder serialise on its
    /// lock, and a second thread only spins on it), of the files the feed
    /// hands it until it is dropped. Files with unsafe paths are left out;
    /// the write judges them.
    pub fn write_early(&self) -> (Early, EarlyFeed) {
        let (feed, files) = channel();
        let name = format!(
            "{STAGING_PREFIX}early-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        );
        let dir = self.path_of(&name);
        let into = dir.clone();
        let span = tracing::Span::current();
        let writing = std::thread::Builder::new()
            .name("early-write".into())
            .spawn(move || span.in_scope(|| write_all(&into, name, files)))
            .ok();
        (Early { dir, writing }, EarlyFeed(feed))
    }
}

impl Early {
    /// Waits for the files; what the directory holds, for `write_with` to
    /// recycle. `None` when the early write failed (its directory is gone;
    /// the write then writes every file itself and reports what fails).
    pub fn finish(mut self) -> Option<Inventory> {
        let done = self.writing.take()?.join();
        match done {
            Ok(Ok(inventory)) => Some(inventory),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "early write failed; the write does it all");
                remove(&self.dir);
                None
            }
            Err(_) => {
                remove(&self.dir);
                None
            }
        }
    }
}

impl Drop for Early {
    /// Unfinished (the commit was refused, or the pass failed): waits for
    /// the thread and removes what it wrote, so a refused commit leaves
    /// nothing behind. The feed must be gone by then: the thread writes
    /// until it ends.
    fn drop(&mut self) {
        if let Some(writing) = self.writing.take() {
            let _ = writing.join();
            remove(&self.dir);
        }
    }
}

fn remove(dir: &Path) {
    if let Err(e) = fs::remove_dir_all(dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %dir.display(), error = %e, "could not remove an early write; the next start removes it");
    }
}

/// Flushes begun in the background, one at a time, through one open
/// descriptor of the directory, so that each reports the write-back
/// errors since the one before.
struct Flushes<'a> {
    dir: &'a File,
    path: &'a Path,
    running: Option<JoinHandle<Result<(), ApplyError>>>,
}

impl Flushes<'_> {
    /// Starts a flush unless one is still running. A flush that failed
    /// fails the write.
    fn begin(&mut self) -> Result<(), ApplyError> {
        if self.running.as_ref().is_some_and(|r| !r.is_finished()) {
            return Ok(());
        }
        self.wait()?;
        let (Ok(dir), path) = (self.dir.try_clone(), self.path.to_path_buf()) else {
            return Ok(());
        };
        self.running = std::thread::Builder::new()
            .name("early-flush".into())
            .spawn(move || sync_filesystem_of(&dir, &path))
            .ok();
        Ok(())
    }

    /// Waits for the flush running, if any, and gives its outcome.
    fn wait(&mut self) -> Result<(), ApplyError> {
        match self.running.take().map(JoinHandle::join) {
            Some(Ok(flushed)) => flushed,
            _ => Ok(()),
        }
    }
}

/// Writes each file of `files` into the new directory `dir` as it comes,
/// named relative to its folder's descriptor, lets go of its bytes once
/// written, flushing in the background as it goes (see the module), and
/// at the end of the feed flushes the filesystem, so the write's own flush
/// finds little left to do.
fn write_all(
    dir: &Path,
    name: String,
    files: Receiver<EarlyFile>,
) -> Result<Inventory, ApplyError> {
    fs::create_dir(dir).map_err(io_err("create", dir))?;
    let root = File::open(dir).map_err(io_err("open", dir))?;
    let mut flushes = Flushes {
        dir: &root,
        path: dir,
        running: None,
    };
    let mut folders: HashMap<String, File> = HashMap::default();
    let mut dirs: Vec<String> = Vec::new();
    let mut listed = Vec::new();
    for (path, id, bytes) in files {
        if listed.len() % FLUSH_EVERY == FLUSH_EVERY - 1 {
            flushes.begin()?;
        }
        if check_relative(&path).is_err() {
            continue;
        }
        let (parent, file_name) = path.rsplit_once('/').unwrap_or(("", &path));
        if !folders.contains_key(parent) {
            let at = dir.join(parent);
            fs::create_dir_all(&at).map_err(io_err("create", &at))?;
            for above in folder_and_above(parent).filter(|d| !d.is_empty()) {
                if !dirs.iter().any(|d| d == above) {
                    dirs.push(above.to_string());
                }
            }
            let opened = File::open(&at).map_err(io_err("open", &at))?;
            folders.insert(parent.to_string(), opened);
        }
        let folder = &folders[parent];
        let full = || dir.join(&path);
        let c_name =
            CString::new(file_name).map_err(|_| ApplyError::UnsafePath { path: path.clone() })?;
        // SAFETY: `folder` is an open directory and `c_name` a
        // NUL-terminated name that outlives the call; the descriptor
        // returned is owned by the `File` made from it.
        let fd = unsafe {
            libc::openat(
                folder.as_raw_fd(),
                c_name.as_ptr(),
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC,
                0o666,
            )
        };
        if fd < 0 {
            return Err(io_err("create", &full())(std::io::Error::last_os_error()));
        }
        // SAFETY: `fd` was just opened and nothing else owns it.
        let mut out = unsafe { File::from_raw_fd(fd) };
        out.write_all(&bytes).map_err(io_err("write", &full()))?;
        drop(bytes);
        listed.push((path, hex_id(id.as_bytes())));
    }
    // They came in the order they were read; the write merges by path (a
    // tree has each path once).
    listed.sort_unstable();
    tracing::debug!(files = listed.len(), "early write done; flushing");
    flushes.wait()?;
    sync_filesystem_of(&root, dir)?;
    tracing::debug!("early write flushed");
    let present = listed
        .iter()
        .map(|(path, _)| (path.clone(), true))
        .collect();
    Ok(Inventory {
        name,
        listed,
        present,
        dirs,
        strays: Vec::new(),
    })
}
