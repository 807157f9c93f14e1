//! A commit id as it may arrive from outside (Redis, a webhook): only a
//! full 40- (SHA-1) or 64-digit (SHA-256) hex string, lowercased, is one.
//! Anything else is refused where it enters, so no later code slices or
//! prints a string it cannot handle.

use std::fmt;

/// A validated, lowercase, full-length commit id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha(String);

impl Sha {
    /// `None` unless `s` is exactly 40 or 64 hex digits (either case).
    pub fn parse(s: &str) -> Option<Sha> {
        Sha::is_full(s).then(|| Sha(s.to_ascii_lowercase()))
    }

    /// Whether `s` is a full commit id (40 or 64 hex digits, either case).
    pub fn is_full(s: &str) -> bool {
        matches!(s.len(), 40 | 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn short(&self) -> &str {
        short(&self.0)
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for Sha {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The first 12 characters of a sha-like string, for people. Cuts on a
/// character boundary: a string read from Redis or a state file may hold
/// anything, and slicing bytes inside a character panics.
pub fn short(s: &str) -> &str {
    match s.char_indices().nth(12) {
        Some((end, _)) => &s[..end],
        None => s,
    }
}

/// `s` without control characters (terminal escapes, newlines): for
/// anything read from Redis before it is printed or logged.
pub fn printable(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_full_hex_ids_are_shas() {
        let a = "A".repeat(40);
        assert_eq!(Sha::parse(&a).unwrap().as_str(), "a".repeat(40));
        assert!(Sha::parse(&"0".repeat(64)).is_some());
        for bad in [
            "",
            "abc1234",
            &"a".repeat(39),
            &"a".repeat(41),
            &"g".repeat(40),
            &format!("{}é", "a".repeat(38)),
            &format!("{}\n", "a".repeat(39)),
        ] {
            assert!(Sha::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn short_never_cuts_inside_a_character() {
        assert_eq!(short("0123456789abcdef"), "0123456789ab");
        assert_eq!(short("abc"), "abc");
        // 11 ASCII bytes then a two-byte character: byte 12 is inside it.
        let s = "aaaaaaaaaaaéééé";
        assert_eq!(short(s), "aaaaaaaaaaaé");
        assert_eq!(short("ééééééééééééééé").chars().count(), 12);
    }

    #[test]
    fn printable_drops_escapes_and_newlines() {
        assert_eq!(printable("pod\u{1b}[31m-1\n\r\t"), "pod[31m-1");
        assert_eq!(printable("é ok"), "é ok");
    }
}
