//! Independent pieces of work split over a few threads (file writes,
//! analyses of new files). Scoped, so they may borrow; a panic in one is
//! resumed in the caller.

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
}
