//! The bytes that let a stage before the analysis pass a file by without
//! parsing it: `${` for variables, the Dashboard's export and policy keys,
//! the Tyk OAS extension. One place for each, because the analysis also
//! asks all of them at once: a definition none of them touches is
//! `standalone` (see `ApiFacts::standalone`), and a later commit holding
//! the same blob need not read it.

use std::sync::LazyLock;

use memchr::memmem::Finder;

use crate::tree::{Content, EntryKind, TreeEntry};

/// The key of the Tyk OAS extension in an OpenAPI document.
pub const OAS_EXTENSION: &str = "x-tyk-api-gateway";
/// A Dashboard or tyk-sync export wraps a definition in this key.
pub const EXPORT_MARK: &[u8] = b"\"api_definition\"";
/// A Dashboard policy carries its database id in this key.
pub const POLICY_MARK: &[u8] = b"\"_id\"";

/// Whether `vars::substitute` could change a file of these bytes: only a
/// `$` starts a reference (or an escaped one).
pub fn may_substitute(bytes: &[u8]) -> bool {
    memchr::memchr(b'$', bytes).is_some()
}

/// Whether `exports::unwrap` could rewrite a file of these bytes, wherever
/// it sits.
pub fn may_unwrap(bytes: &[u8]) -> bool {
    has_export_mark(bytes) || has_policy_mark(bytes)
}

/// Whether the bytes hold `EXPORT_MARK`.
pub fn has_export_mark(bytes: &[u8]) -> bool {
    static FINDER: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(EXPORT_MARK));
    FINDER.find(bytes).is_some()
}

/// Whether the bytes hold `POLICY_MARK`.
pub fn has_policy_mark(bytes: &[u8]) -> bool {
    static FINDER: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(POLICY_MARK));
    FINDER.find(bytes).is_some()
}

/// Whether `oas::pair` could take a file of these bytes for a Tyk OAS
/// document kept alone, wherever it sits.
pub fn may_pair(bytes: &[u8]) -> bool {
    // Asked of every file read: the searcher is built once, not per call.
    static FINDER: LazyLock<Finder<'static>> =
        LazyLock::new(|| Finder::new(OAS_EXTENSION.as_bytes()));
    FINDER.find(bytes).is_some()
}

/// Whether no stage before the analysis changes a file of these bytes.
pub fn untouched(bytes: &[u8]) -> bool {
    !may_substitute(bytes) && !may_unwrap(bytes) && !may_pair(bytes)
}

/// A `.json` file read, whose bytes pass `test`.
pub fn json_file_where(entry: &TreeEntry, test: fn(&[u8]) -> bool) -> bool {
    match &entry.content {
        Content::Loaded(bytes) => {
            entry.kind == EntryKind::File && entry.path.ends_with(".json") && test(bytes)
        }
        _ => false,
    }
}
