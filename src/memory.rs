//! What an idle sidecar keeps resident of the heap. glibc's allocator gives
//! each thread that allocates an arena of its own and keeps freed memory in
//! them for reuse; a sidecar that builds a 10,000-file revision once and
//! then idles would hold that peak for ever. Elsewhere (musl, other
//! allocators) both calls do nothing.

/// At most two arenas, for the runtime's threads to share: a sync
/// allocates in bursts from one blocking thread at a time, so more arenas
/// only keep more freed memory apart.
pub fn few_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt sets one allocator tunable; called before the runtime
    // starts its threads, it cannot race an allocation's choice of arena.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Returns the free pages of every arena to the system: called after a
/// sync that built a revision, whose tree, bundle and findings are freed by
/// then.
pub fn give_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory, under the allocator's
    // own locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Drops from the resident set the code and read-only data pages an idle
/// sidecar does not run: after a sync, most of the binary's text (Git
/// fetch, validation, revision writing) and of libcrypto stays mapped and
/// resident although the idle loop never touches it again. The pages stay
/// in the page cache, so the next sync maps each back with a minor fault;
/// what the idle loop itself runs comes back at its next poll. The kernel
/// does the same to an idle process under memory pressure; this does it
/// when the sidecar goes idle, so its footprint at rest is what rest needs.
///
/// Only mappings of the program and its libraries that are not writable
/// and hold no private copy of a page (`Anonymous: 0`) are touched: for
/// those, dropping a page loses nothing. Relocated read-only data (RELRO)
/// holds private copies and is left alone.
pub fn drop_idle_pages() {
    #[cfg(target_os = "linux")]
    {
        let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
            return;
        };
        for (start, end) in clean_file_mappings(&smaps) {
            // SAFETY: each range is a whole mapping of a loaded program or
            // library, which stays mapped for the life of the process, that
            // /proc just listed as read-only and without private pages: its
            // contents are the file's, which the next access maps again.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
            }
        }
    }
}

/// `(start, end)` of each mapping in `smaps` (the text of
/// `/proc/<pid>/smaps`) of a loaded program or library (a file that is
/// also mapped executable) that is not writable and holds no anonymous
/// (copied-on-write) page. Such mappings stay for the life of the process,
/// unlike a pack file's window that another thread may unmap (and the
/// allocator map again) while this runs.
fn clean_file_mappings(smaps: &str) -> Vec<(usize, usize)> {
    struct Mapping<'a> {
        range: (usize, usize),
        perms: &'a [u8],
        path: &'a str,
        anonymous: Option<&'a str>,
    }
    let mut maps: Vec<Mapping<'_>> = Vec::new();
    for line in smaps.lines() {
        let mut fields = line.split_ascii_whitespace();
        let first = fields.next().unwrap_or("");
        if let Some(range) = mapping_range(first) {
            // A mapping's header: range, perms, offset, device, inode, path.
            let perms = fields.next().unwrap_or("").as_bytes();
            let path = fields.nth(3).unwrap_or("");
            maps.push(Mapping {
                range,
                perms,
                path,
                anonymous: None,
            });
        } else if first == "Anonymous:"
            && let Some(last) = maps.last_mut()
        {
            last.anonymous = fields.next();
        }
    }
    let loaded: Vec<&str> = maps
        .iter()
        .filter(|m| m.perms.get(2) == Some(&b'x') && m.path.starts_with('/'))
        .map(|m| m.path)
        .collect();
    maps.iter()
        .filter(|m| {
            m.perms.get(1) == Some(&b'-') && m.anonymous == Some("0") && loaded.contains(&m.path)
        })
        .map(|m| m.range)
        .collect()
}

/// The address range of a mapping's header line in smaps (its first
/// field, `start-end` in hex); `None` for the field lines under it.
fn mapping_range(first_field: &str) -> Option<(usize, usize)> {
    let (start, end) = first_field.split_once('-')?;
    Some((
        usize::from_str_radix(start, 16).ok()?,
        usize::from_str_radix(end, 16).ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d0c0a00000-55d0c0b00000 r--p 00000000 fd:01 1234 /usr/bin/tyk-gitops
Rss:                 512 kB
Anonymous:             0 kB
55d0c0b00000-55d0c0f00000 r-xp 00100000 fd:01 1234 /usr/bin/tyk-gitops
Rss:                4096 kB
Anonymous:             0 kB
55d0c0f00000-55d0c0f40000 r--p 00500000 fd:01 1234 /usr/bin/tyk-gitops
Rss:                 256 kB
Anonymous:           256 kB
55d0c0f40000-55d0c0f50000 rw-p 00540000 fd:01 1234 /usr/bin/tyk-gitops
Anonymous:             0 kB
55d0c1000000-55d0c1200000 rw-p 00000000 00:00 0 [heap]
Anonymous:          2048 kB
7f0000000000-7f0000001000 r--s 00000000 00:05 99 /dev/shm/x (deleted)
Anonymous:             0 kB
7f0000100000-7f0000200000 r--p 00000000 fd:01 77 /srv/cache/objects/pack/pack-1.pack
Anonymous:             0 kB
7fff00000000-7fff00002000 r-xp 00000000 00:00 0 [vdso]
Anonymous:             0 kB
";

    #[test]
    fn only_read_only_mappings_of_loaded_code_without_private_pages_are_dropped() {
        assert_eq!(
            clean_file_mappings(SMAPS),
            vec![
                (0x55d0c0a00000, 0x55d0c0b00000),
                (0x55d0c0b00000, 0x55d0c0f00000),
            ]
        );
    }

    /// The resident pages of `addr`'s mapping, from /proc/self/smaps.
    fn resident_kib(addr: usize) -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        for line in smaps.lines() {
            let first = line.split_ascii_whitespace().next().unwrap_or("");
            if let Some((start, end)) = mapping_range(first) {
                inside = (start..end).contains(&addr);
                continue;
            }
            if inside && first == "Rss:" {
                return line
                    .split_ascii_whitespace()
                    .nth(1)
                    .unwrap()
                    .parse()
                    .unwrap();
            }
        }
        panic!("no mapping at {addr:#x}");
    }

    /// A real read-only mapping of a loaded file (mapped executable, as a
    /// library is) loses its resident pages and reads the same afterwards;
    /// one whose pages were copied before it became read-only (as RELRO
    /// is) keeps them, and its contents.
    #[cfg(target_os = "linux")]
    #[test]
    fn idle_pages_are_dropped_without_changing_any_content() {
        use std::os::fd::AsRawFd;
        const LEN: usize = 1 << 20;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pages");
        let data: Vec<u8> = (0..LEN).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let map = |prot| {
            // SAFETY: a fresh private mapping of a file we just wrote.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    LEN,
                    prot,
                    libc::MAP_PRIVATE,
                    file.as_raw_fd(),
                    0,
                )
            };
            assert_ne!(p, libc::MAP_FAILED);
            p as *mut u8
        };
        let clean = map(libc::PROT_READ | libc::PROT_EXEC);
        let copied = map(libc::PROT_READ | libc::PROT_WRITE);
        // SAFETY: both mappings are LEN bytes long and alive until munmap.
        unsafe {
            let sum: u64 = (0..LEN).map(|i| *clean.add(i) as u64).sum();
            assert!(sum > 0);
            for i in (0..LEN).step_by(4096) {
                *copied.add(i) = 7;
            }
            assert_eq!(libc::mprotect(copied as *mut _, LEN, libc::PROT_READ), 0);
        }
        assert!(resident_kib(clean as usize) >= 1024);
        drop_idle_pages();
        assert_eq!(resident_kib(clean as usize), 0);
        assert!(resident_kib(copied as usize) >= 1024);
        // SAFETY: as above.
        unsafe {
            assert_eq!(std::slice::from_raw_parts(clean, LEN), &data[..]);
            assert!((0..LEN).step_by(4096).all(|i| *copied.add(i) == 7));
            libc::munmap(clean as *mut _, LEN);
            libc::munmap(copied as *mut _, LEN);
        }
    }
}
