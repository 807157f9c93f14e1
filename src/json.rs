//! JSON Pointer (RFC 6901) lookups that copy nothing. `Value::pointer`
//! makes two new strings per token (unescaping `~1` and `~0`) even when
//! there is nothing to unescape; validation asks for a few dozen pointers
//! of every definition it reads.

use std::borrow::Cow;

use serde_json::Value;

/// `Value::pointer` and `Value::pointer_mut`, with the same answers.
pub trait Lookup {
    fn lookup(&self, pointer: &str) -> Option<&Value>;
    fn lookup_mut(&mut self, pointer: &str) -> Option<&mut Value>;
}

/// A token as a key: `~1` is `/`, `~0` is `~` (in that order, as
/// serde_json does it).
fn key(token: &str) -> Cow<'_, str> {
    match token.contains('~') {
        true => Cow::Owned(token.replace("~1", "/").replace("~0", "~")),
        false => Cow::Borrowed(token),
    }
}

/// A token as an array index: decimal digits without a sign or a leading
/// zero. An escaped token is never one.
fn index(token: &str) -> Option<usize> {
    if token.starts_with('+') || (token.starts_with('0') && token.len() != 1) {
        return None;
    }
    token.parse().ok()
}

impl Lookup for Value {
    fn lookup(&self, pointer: &str) -> Option<&Value> {
        if pointer.is_empty() {
            return Some(self);
        }
        let mut tokens = pointer.strip_prefix('/')?.split('/');
        tokens.try_fold(self, |node, token| match node {
            Value::Object(map) => map.get(key(token).as_ref()),
            Value::Array(items) => index(token).and_then(|i| items.get(i)),
            _ => None,
        })
    }

    fn lookup_mut(&mut self, pointer: &str) -> Option<&mut Value> {
        if pointer.is_empty() {
            return Some(self);
        }
        let mut tokens = pointer.strip_prefix('/')?.split('/');
        tokens.try_fold(self, |node, token| match node {
            Value::Object(map) => map.get_mut(key(token).as_ref()),
            Value::Array(items) => index(token).and_then(|i| items.get_mut(i)),
            _ => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pointer_finds_what_serde_json_finds() {
        let mut doc = serde_json::json!({
            "a": {"b": [10, {"c": true}], "": {"": 1}},
            "m~n": 2, "s/t": 3, "~1": 4, "/0": 5,
            "list": [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
            "01": "key", "+1": "plus", "1": "one"
        });
        let pointers = [
            "",
            "/",
            "//",
            "/a",
            "/a/b",
            "/a/b/0",
            "/a/b/1/c",
            "/a/b/2",
            "/a/b/-",
            "/a/",
            "/a//",
            "/m~0n",
            "/s~1t",
            "/~01",
            "/~1",
            "/~10",
            "/~2",
            "/~",
            "a",
            "/list/0",
            "/list/00",
            "/list/01",
            "/list/+1",
            "/list/11",
            "/list/12",
            "/list/1x",
            "/list/-1",
            "/list/ 1",
            "/01",
            "/+1",
            "/1",
            "/a/b/1/c/d",
            "/a/b/18446744073709551616",
        ];
        for p in pointers {
            assert_eq!(doc.lookup(p), doc.pointer(p), "{p:?}");
            let want = doc.clone().pointer_mut(p).map(|v| v.clone());
            assert_eq!(doc.lookup_mut(p).map(|v| v.clone()), want, "{p:?} (mut)");
        }
        *doc.lookup_mut("/a/b/1/c").unwrap() = Value::from(false);
        assert_eq!(doc["a"]["b"][1]["c"], Value::from(false));
    }
}
