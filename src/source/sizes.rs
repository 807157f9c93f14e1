//! Blob sizes read from the fetched packs themselves. libgit2 answers a
//! size (`Odb::read_header`) by walking a deltified object's chain of
//! bases to learn its type, one locked pack lookup per link: a cold read
//! of 11,000 blobs spent 26 of its 68 ms there, on one thread, before any
//! blob was read. The size alone is at the start of the entry:
//! in the entry's header for a whole object, in the first bytes of the
//! delta for a deltified one. So this looks the id up in each pack's index
//! (version 2), reads that header, and inflates only the delta's first
//! bytes. Anything it cannot read plainly (another index version, an id in
//! no pack, a loose object, an entry that is not a blob or a delta, bytes
//! that do not parse) it leaves to libgit2: the caller asks `read_header`.
//! The sizes only bound what is read; each blob read is measured again.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use flate2::{Decompress, FlushDecompress};
use git2::Oid;

const IDX_MAGIC: [u8; 4] = [0xff, b't', b'O', b'c'];
const IDX_VERSION: u32 = 2;
const FANOUT: usize = 8;
const HEADER: usize = FANOUT + 256 * 4;
const ID: usize = 20;
const TRAILER: usize = 2 * ID;

const OBJ_BLOB: u8 = 3;
const OBJ_OFS_DELTA: u8 = 6;
const OBJ_REF_DELTA: u8 = 7;

/// The packs under a repository's `objects/pack`, mapped read-only. Packs
/// are never changed once written (named by their checksum; a fetch adds
/// new ones), which is what libgit2 relies on when it maps them too.
pub struct PackSizes {
    packs: Vec<Pack>,
    inflate: Decompress,
}

struct Pack {
    idx: Map,
    pack: Map,
    count: usize,
}

impl PackSizes {
    /// The packs of the repository at `git_dir` that can be read; none is
    /// an error (every size then comes from libgit2).
    pub fn open(git_dir: &Path) -> PackSizes {
        let dir = git_dir.join("objects").join("pack");
        let mut packs = Vec::new();
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "idx")
                && let Some(pack) = Pack::open(&path, &path.with_extension("pack"))
            {
                packs.push(pack);
            }
        }
        PackSizes {
            packs,
            inflate: Decompress::new(true),
        }
    }

    /// The size of blob `id` as its pack entry gives it; `None` when no
    /// pack here answers plainly.
    pub fn size(&mut self, id: Oid) -> Option<u64> {
        let inflate = &mut self.inflate;
        self.packs.iter().find_map(|pack| {
            let offset = pack.offset(id.as_bytes())?;
            entry_size(pack.pack.bytes(), offset, inflate)
        })
    }
}

impl Pack {
    fn open(idx: &Path, pack: &Path) -> Option<Pack> {
        let idx = Map::open(idx)?;
        let bytes = idx.bytes();
        if bytes.len() < HEADER + TRAILER
            || bytes[..4] != IDX_MAGIC
            || be32(bytes, 4) != IDX_VERSION
        {
            return None;
        }
        let count = be32(bytes, HEADER - 4) as usize;
        // Ids, checksums and offsets, then 64-bit offsets (a whole number
        // of them), then the trailer.
        let fixed = HEADER + count.checked_mul(ID + 4 + 4)? + TRAILER;
        let large = bytes.len().checked_sub(fixed)?;
        if large % 8 != 0 {
            return None;
        }
        Some(Pack {
            pack: Map::open(pack)?,
            idx,
            count,
        })
    }

    /// Where `id`'s entry starts in the pack.
    fn offset(&self, id: &[u8]) -> Option<usize> {
        let idx = self.idx.bytes();
        let first = id[0] as usize;
        let mut low = match first {
            0 => 0,
            _ => be32(idx, FANOUT + (first - 1) * 4) as usize,
        };
        let mut high = (be32(idx, FANOUT + first * 4) as usize).min(self.count);
        while low < high {
            let mid = low + (high - low) / 2;
            let at = HEADER + mid * ID;
            match idx[at..at + ID].cmp(id) {
                std::cmp::Ordering::Less => low = mid + 1,
                std::cmp::Ordering::Greater => high = mid,
                std::cmp::Ordering::Equal => return self.offset_of(mid),
            }
        }
        None
    }

    fn offset_of(&self, nth: usize) -> Option<usize> {
        let idx = self.idx.bytes();
        let small = be32(idx, HEADER + self.count * (ID + 4) + nth * 4);
        if small & 0x8000_0000 == 0 {
            return Some(small as usize);
        }
        let at = HEADER + self.count * (ID + 4 + 4) + (small & 0x7fff_ffff) as usize * 8;
        let large = idx.get(at..at + 8)?;
        usize::try_from(u64::from_be_bytes(large.try_into().ok()?)).ok()
    }
}

/// The size of the object whose entry starts at `offset`, if it is a blob
/// or a delta (whose result, read from a tree entry, is a blob: libgit2
/// checks the type when it reads it).
fn entry_size(pack: &[u8], offset: usize, inflate: &mut Decompress) -> Option<u64> {
    let mut at = offset;
    let first = *pack.get(at)?;
    at += 1;
    let kind = (first >> 4) & 7;
    let mut size = u64::from(first & 0x0f);
    let mut shift = 4;
    let mut byte = first;
    while byte & 0x80 != 0 {
        byte = *pack.get(at)?;
        at += 1;
        if shift > 57 {
            return None;
        }
        size |= u64::from(byte & 0x7f) << shift;
        shift += 7;
    }
    match kind {
        OBJ_BLOB => return Some(size),
        OBJ_OFS_DELTA => {
            // The distance back to the base, in its own encoding.
            while *pack.get(at)? & 0x80 != 0 {
                at += 1;
            }
            at += 1;
        }
        OBJ_REF_DELTA => at += ID,
        _ => return None,
    }
    // A delta starts with the base's size and then the result's, each a
    // little-endian base-128 number of at most 10 bytes.
    let mut head = [0u8; 20];
    inflate.reset(true);
    inflate
        .decompress(pack.get(at..)?, &mut head, FlushDecompress::None)
        .ok()?;
    let head = &head[..inflate.total_out() as usize];
    let (_, used) = varint(head)?;
    varint(&head[used..]).map(|(result, _)| result)
}

/// A delta header's number and the bytes it took.
fn varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, byte) in bytes.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

fn be32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// A file mapped read-only, unmapped on drop.
struct Map {
    ptr: *mut libc::c_void,
    len: usize,
}

impl Map {
    fn open(path: &Path) -> Option<Map> {
        let file = File::open(path).ok()?;
        let len = usize::try_from(file.metadata().ok()?.len()).ok()?;
        if len == 0 {
            return None;
        }
        // SAFETY: a fresh read-only private mapping of an open file; the
        // pointer is checked before use and unmapped once, in `drop`.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                file.as_raw_fd(),
                0,
            )
        };
        (ptr != libc::MAP_FAILED).then_some(Map { ptr, len })
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` maps `len` readable bytes for as long as `self`
        // lives; packs and their indexes are not changed once written.
        unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.len) }
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: `ptr` and `len` are the mapping made in `open`.
        unsafe { libc::munmap(self.ptr, self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn git(dir: &Path, args: &[&str]) {
        let out = Command::new("git")
            .current_dir(dir)
            .args(["-c", "user.name=t", "-c", "user.email=t@t"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {out:?}");
    }

    /// The kind of each object's pack entry, as the entry's first byte
    /// says: to show the packs hold deltas of both encodings.
    fn kinds(git_dir: &Path) -> Vec<u8> {
        let sizes = PackSizes::open(git_dir);
        let mut kinds = Vec::new();
        for pack in &sizes.packs {
            for nth in 0..pack.count {
                let offset = pack.offset_of(nth).unwrap();
                kinds.push((pack.pack.bytes()[offset] >> 4) & 7);
            }
        }
        kinds
    }

    /// Similar files, so `git repack` stores most as deltas; one large
    /// enough for a size of several header bytes.
    fn repo(delta_base_offset: bool) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path();
        git(path, &["init", "-q", "-b", "main"]);
        for round in 0..3 {
            for n in 0..40 {
                let body = format!(
                    "{{\"api_id\": \"api-{n}\", \"round\": {round}, \"listen_path\": \"/svc-{n}/\", \"pad\": \"{}\"}}\n",
                    "x".repeat(200 + n * 7)
                );
                std::fs::write(path.join(format!("f{n}.json")), body).unwrap();
            }
            std::fs::write(path.join("big.bin"), vec![b'a' + round; 300_000]).unwrap();
            git(path, &["add", "-A"]);
            git(path, &["commit", "-q", "-m", "r"]);
        }
        let offsets = format!("repack.useDeltaBaseOffset={delta_base_offset}");
        git(
            path,
            &[
                "-c",
                &offsets,
                "repack",
                "-q",
                "-a",
                "-d",
                "-f",
                "--depth=50",
            ],
        );
        dir
    }

    #[test]
    fn every_blob_size_is_the_one_libgit2_reads() {
        for delta_base_offset in [true, false] {
            let dir = repo(delta_base_offset);
            let git_dir = dir.path().join(".git");
            let delta = if delta_base_offset {
                OBJ_OFS_DELTA
            } else {
                OBJ_REF_DELTA
            };
            let kinds = kinds(&git_dir);
            assert!(
                kinds.iter().filter(|k| **k == delta).count() > 20,
                "{kinds:?}"
            );
            assert!(kinds.contains(&OBJ_BLOB), "{kinds:?}");

            let repo = git2::Repository::open(&git_dir).unwrap();
            let odb = repo.odb().unwrap();
            let mut ids = Vec::new();
            odb.foreach(|id| {
                ids.push(*id);
                true
            })
            .unwrap();
            let mut sizes = PackSizes::open(&git_dir);
            let mut blobs = 0;
            for id in ids {
                let (size, kind) = odb.read_header(id).unwrap();
                let ours = sizes.size(id);
                if kind == git2::ObjectType::Blob {
                    blobs += 1;
                    assert_eq!(ours, Some(size as u64), "{id}");
                } else if let Some(ours) = ours {
                    // A delta of a tree or commit reads as its size too;
                    // whole trees and commits are not answered.
                    assert_eq!(ours, size as u64, "{id}");
                }
            }
            assert!(blobs >= 120, "{blobs}");
        }
    }

    #[test]
    fn what_is_in_no_pack_or_unreadable_is_left_to_libgit2() {
        let dir = repo(true);
        let git_dir = dir.path().join(".git");
        let mut sizes = PackSizes::open(&git_dir);
        assert_eq!(sizes.size(Oid::from_bytes(&[0x42; 20]).unwrap()), None);
        // A loose object (not in any pack).
        std::fs::write(dir.path().join("new.txt"), "loose\n").unwrap();
        let repo = git2::Repository::open(&git_dir).unwrap();
        let loose = repo.blob(b"loose\n").unwrap();
        assert_eq!(sizes.size(loose), None);
        // Indexes that are not what they claim are skipped, never read
        // past their end.
        let packs = git_dir.join("objects/pack");
        for entry in std::fs::read_dir(&packs).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "idx") {
                let mut bytes = std::fs::read(&path).unwrap();
                let mut perms = std::fs::metadata(&path).unwrap().permissions();
                #[allow(clippy::permissions_set_readonly_false)]
                perms.set_readonly(false);
                std::fs::set_permissions(&path, perms).unwrap();
                bytes.truncate(bytes.len() - 3);
                std::fs::write(&path, &bytes).unwrap();
            }
        }
        assert!(PackSizes::open(&git_dir).packs.is_empty());
    }
}
