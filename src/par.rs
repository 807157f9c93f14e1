//! Independent pieces of work split over a few threads (file writes,
//! analyses of new files). Scoped, so they may borrow; a panic in one is
//! resumed in the caller.

use std::sync::atomic::{AtomicUsize, Ordering};

/// The cores this process may use, at most 4: past that the work here
/// (kernel file creation, JSON analysis) stops scaling.
pub fn threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 4)
}

/// Runs `f` on consecutive chunks of `items`, one thread per chunk and at
/// most `threads()` of them; the results come back in chunk order.
pub fn chunks<T: Sync, R: Send>(items: &[T], f: impl Fn(&[T]) -> R + Sync) -> Vec<R> {
    let size = items.len().div_ceil(threads()).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(size)
            .map(|part| {
                let f = &f;
                scope.spawn(move || f(part))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

/// How the threads of `map` are scheduled beside the caller's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    Same,
    /// Below every other thread of the process (nice +`LOWER_BY`): work
    /// that should leave the cores first to a thread writing beside it.
    Lower,
}

/// How much `Priority::Lower` lowers a thread's priority.
pub const LOWER_BY: i32 = 10;

/// Runs `f` on each of `items` on at most `threads()` threads, each taking
/// the next `batch` items whenever it is free, so uneven work (or a thread
/// that shares its core with other work) does not leave one thread
/// finishing alone; the results come back in the order of `items`.
pub fn map<T: Sync, R: Send>(
    items: &[T],
    batch: usize,
    priority: Priority,
    f: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let batch = batch.max(1);
    let next = AtomicUsize::new(0);
    let workers = threads().min(items.len().div_ceil(batch)).max(1);
    let mut parts: Vec<(usize, Vec<R>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                let (f, next) = (&f, &next);
                scope.spawn(move || {
                    if priority == Priority::Lower {
                        lower_this_thread();
                    }
                    let mut done = Vec::new();
                    loop {
                        let start = next.fetch_add(batch, Ordering::Relaxed);
                        if start >= items.len() {
                            break done;
                        }
                        let end = (start + batch).min(items.len());
                        done.push((start, items[start..end].iter().map(f).collect::<Vec<R>>()));
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    parts.sort_unstable_by_key(|(start, _)| *start);
    parts.into_iter().flat_map(|(_, done)| done).collect()
}

/// Lowers the calling thread's priority by `LOWER_BY` (Linux sets a
/// nice value per thread). Best effort: a refusal leaves it as it was.
fn lower_this_thread() {
    // SAFETY: getpriority and setpriority read and set one value of the
    // calling thread, named by its id.
    unsafe {
        let tid = libc::gettid() as libc::id_t;
        *libc::__errno_location() = 0;
        let now = libc::getpriority(libc::PRIO_PROCESS, tid);
        if *libc::__errno_location() == 0 {
            libc::setpriority(libc::PRIO_PROCESS, tid, (now + LOWER_BY).min(19));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{LOWER_BY, Priority};

    #[test]
    fn every_item_once_in_order() {
        let items: Vec<u32> = (0..1001).collect();
        let parts = super::chunks(&items, |part| part.to_vec());
        assert!(parts.len() <= super::threads());
        assert_eq!(parts.concat(), items);
        assert!(super::chunks(&[] as &[u32], |p| p.len()).is_empty());
    }

    #[test]
    fn map_gives_each_result_once_in_order() {
        let items: Vec<u32> = (0..1001).collect();
        for batch in [0, 1, 7, 64, 2000] {
            let doubled = super::map(&items, batch, Priority::Same, |n| n * 2);
            assert_eq!(doubled, items.iter().map(|n| n * 2).collect::<Vec<_>>());
        }
        assert!(super::map(&[] as &[u32], 8, Priority::Same, |n| *n).is_empty());
    }

    fn nice() -> i32 {
        // SAFETY: reads the calling thread's nice value.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
    }

    #[test]
    fn lower_priority_threads_run_below_the_caller_and_leave_it_as_it_was() {
        let caller = nice();
        let items: Vec<u32> = (0..64).collect();
        let seen = super::map(&items, 1, Priority::Lower, |_| nice());
        let expected = (caller + LOWER_BY).min(19);
        assert!(
            seen.iter().all(|n| *n == expected),
            "{seen:?} (caller {caller})"
        );
        let same = super::map(&items, 1, Priority::Same, |_| nice());
        assert!(
            same.iter().all(|n| *n == caller),
            "{same:?} (caller {caller})"
        );
        assert_eq!(nice(), caller);
    }
}
