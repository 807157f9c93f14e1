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

/// Runs `f` on each of `items` on at most `threads()` threads, each taking
/// the next `batch` items whenever it is free, so uneven work (or a thread
/// that shares its core with other work) does not leave one thread
/// finishing alone; the results come back in the order of `items`.
pub fn map<T: Sync, R: Send>(items: &[T], batch: usize, f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    let batch = batch.max(1);
    let next = AtomicUsize::new(0);
    let workers = threads().min(items.len().div_ceil(batch)).max(1);
    let mut parts: Vec<(usize, Vec<R>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                let (f, next) = (&f, &next);
                scope.spawn(move || {
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

#[cfg(test)]
mod tests {
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
            let doubled = super::map(&items, batch, |n| n * 2);
            assert_eq!(doubled, items.iter().map(|n| n * 2).collect::<Vec<_>>());
        }
        assert!(super::map(&[] as &[u32], 8, |n| *n).is_empty());
    }
}
