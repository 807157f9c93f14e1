//! Positions in JSON source bytes: nesting depth and size (checked before parsing, so
//! hostile input never reaches serde_json's recursion limit) and JSON pointer
//! → line/column (parsed values carry no spans).
//!
//! Every function here is a single forward scan over the bytes, never
//! recursive, and never panics on malformed input: it gives up with `None`
//! or with the best position found so far.

use std::borrow::Cow;

use foldhash::HashMap;

use super::schema::go_fold_eq;

/// 1-based line and column (in characters) of byte `offset`.
pub fn line_col(bytes: &[u8], offset: usize) -> (u32, u32) {
    let offset = offset.min(bytes.len());
    let before = &bytes[..offset];
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    // Count characters, not bytes: UTF-8 continuation bytes are 0b10xx_xxxx.
    let column = before[line_start..]
        .iter()
        .filter(|&&b| (b & 0xC0) != 0x80)
        .count()
        + 1;
    (to_u32(line), to_u32(column))
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// What one scan of a document's structure (everything outside its
/// strings) finds; see `structure`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Structure {
    /// The offset of the first bracket that opens nesting level
    /// `max_depth + 1`, when the document nests deeper than that.
    pub too_deep: Option<usize>,
    /// Where the document passes `max_values` values, counted as
    /// containers opened plus separators (a close upper bound of the values
    /// it holds): a file of millions of tiny values (`[[],[],…]`) is
    /// refused before it is parsed into a tree that costs a hundred times
    /// its size.
    pub too_many: Option<usize>,
    /// Colons outside strings: in a document that parses, the number of
    /// object members it spells out. A parsed tree holding fewer had two
    /// members of one name in some object (see `members`).
    pub members: usize,
}

/// Scans `bytes` once for `Structure`; brackets, commas and colons inside
/// strings do not count. Stops at the first bracket too deep (the depth is
/// judged first). Strings are skipped by searching for their closing quote,
/// not byte by byte: they are most of a definition's bytes.
pub fn structure(bytes: &[u8], max_depth: usize, max_values: usize) -> Structure {
    let mut out = Structure {
        too_deep: None,
        too_many: None,
        members: 0,
    };
    // One value to start with; each opener or separator adds one, so the
    // limit is passed at the `max_values`-th of them.
    let max_values = max_values.max(1);
    let (mut depth, mut values) = (0usize, 0usize);
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'"' => {
                i = string_end(bytes, i + 1);
                continue;
            }
            b'{' | b'[' => {
                depth += 1;
                if depth > max_depth {
                    out.too_deep = Some(i);
                    return out;
                }
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            b':' => out.members += 1,
            _ => {}
        }
        if matches!(b, b'{' | b'[' | b',') {
            values += 1;
            if values == max_values {
                out.too_many.get_or_insert(i);
            }
        }
        i += 1;
    }
    out
}

/// The offset just past the quote that closes the string whose contents
/// start at `from` (or the end of `bytes` when it never closes).
fn string_end(bytes: &[u8], mut from: usize) -> usize {
    while let Some(at) = memchr::memchr2(b'"', b'\\', &bytes[from.min(bytes.len())..]) {
        let at = from + at;
        if bytes[at] == b'"' {
            return at + 1;
        }
        // A backslash escapes the byte after it, whatever it is.
        from = at + 2;
    }
    bytes.len()
}

/// The members of every object in `doc`, at any depth. Fewer than the
/// document's source spells out (`Structure::members`) means two members
/// of one object had the same name, the later replacing the earlier.
pub fn members(doc: &serde_json::Value) -> usize {
    use serde_json::Value;
    let mut count = 0;
    let mut stack = vec![doc];
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(map) => {
                count += map.len();
                stack.extend(map.values().filter(|v| v.is_object() || v.is_array()));
            }
            Value::Array(items) => {
                stack.extend(items.iter().filter(|v| v.is_object() || v.is_array()));
            }
            _ => {}
        }
    }
    count
}

/// A member name that appears twice in one object. serde_json and the
/// gateway's Go decoder both keep the last value without a word, so
/// `{"api_id":"a","api_id":"b"}` loads as `b`: almost always a merge or
/// copy-paste mistake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DuplicateKey {
    /// Where the repeated name starts (its opening quote).
    pub offset: usize,
    /// Where the same name first appeared in that object.
    pub first: usize,
    /// RFC 6901 pointer of the member, e.g. `/proxy/listen_path`.
    pub pointer: String,
    pub key: String,
}

/// A member name as the bytes between its quotes hold it, unescaped:
/// borrowed unless it has an escape (hardly ever).
fn decode_key(raw: &[u8]) -> Option<Cow<'_, [u8]>> {
    if !raw.contains(&b'\\') {
        return Some(Cow::Borrowed(raw));
    }
    let mut quoted = Vec::with_capacity(raw.len() + 2);
    quoted.push(b'"');
    quoted.extend_from_slice(raw);
    quoted.push(b'"');
    serde_json::from_slice::<String>(&quoted)
        .ok()
        .map(|k| Cow::Owned(k.into_bytes()))
}

/// The first `limit` duplicate member names, in document order. One forward
/// scan, no recursion (a stack of open containers instead); meant for
/// documents that already parsed, and gives up quietly on anything else.
/// Names are compared as borrowed bytes, and a pointer is only spelled out
/// for a duplicate: this runs on every definition read.
pub fn duplicate_keys(bytes: &[u8], limit: usize) -> Vec<DuplicateKey> {
    /// Names seen so far in one object → offset of their first occurrence.
    type Seen<'a> = HashMap<Cow<'a, [u8]>, usize>;
    enum Frame<'a> {
        /// The names seen, and the one whose value is being read.
        Object(Seen<'a>, Option<Cow<'a, [u8]>>),
        /// The index of the element being read.
        Array(usize),
    }
    /// RFC 6901 pointer of the member or element each frame is reading.
    fn pointer(stack: &[Frame<'_>]) -> String {
        let mut out = String::new();
        for frame in stack {
            out.push('/');
            match frame {
                Frame::Object(_, Some(key)) => {
                    out.push_str(&crate::bundle::escape_token(&String::from_utf8_lossy(key)));
                }
                Frame::Object(_, None) => {}
                Frame::Array(index) => out.push_str(&index.to_string()),
            }
        }
        out
    }

    let mut out = Vec::new();
    let mut stack: Vec<Frame<'_>> = Vec::new();
    // Emptied maps of closed objects, reused for the next ones.
    let mut spare: Vec<Seen<'_>> = Vec::new();
    let mut expect_key = false;
    let mut s = Scanner { bytes, pos: 0 };
    while out.len() < limit {
        s.ws();
        let Some(b) = s.peek() else { break };
        match b {
            b'{' => {
                stack.push(Frame::Object(spare.pop().unwrap_or_default(), None));
                expect_key = true;
                s.pos += 1;
            }
            b'[' => {
                stack.push(Frame::Array(0));
                expect_key = false;
                s.pos += 1;
            }
            b'}' | b']' => {
                if let Some(Frame::Object(mut seen, _)) = stack.pop() {
                    seen.clear();
                    spare.push(seen);
                }
                expect_key = false;
                s.pos += 1;
            }
            b',' => {
                match stack.last_mut() {
                    Some(Frame::Object(..)) => expect_key = true,
                    Some(Frame::Array(index)) => *index += 1,
                    None => {}
                }
                s.pos += 1;
            }
            b':' => s.pos += 1,
            b'"' => {
                let start = s.pos;
                let Some(raw) = s.string() else { break };
                if !expect_key {
                    continue;
                }
                expect_key = false;
                let Some(Frame::Object(seen, reading)) = stack.last_mut() else {
                    continue;
                };
                let Some(key) = decode_key(raw) else { break };
                match seen.get(&key) {
                    Some(&first) => {
                        *reading = Some(key.clone());
                        out.push(DuplicateKey {
                            offset: start,
                            first,
                            pointer: pointer(&stack),
                            key: String::from_utf8_lossy(&key).into_owned(),
                        });
                    }
                    None => {
                        seen.insert(key.clone(), start);
                        *reading = Some(key);
                    }
                }
            }
            _ => {
                // A number, true, false or null (skip_value moves at least
                // one byte here: the byte is no delimiter).
                if s.skip_value().is_none() {
                    break;
                }
            }
        }
    }
    out
}

/// Byte offset of the value at `pointer` (RFC 6901). When the pointer does
/// not resolve all the way (a missing property), the offset of the deepest
/// value that exists, so a "missing field" finding points at its parent.
pub fn locate(bytes: &[u8], pointer: &str) -> usize {
    let mut s = Scanner { bytes, pos: 0 };
    s.ws();
    let mut best = s.pos;
    if pointer.is_empty() {
        return best;
    }
    for token in pointer.split('/').skip(1) {
        let token = unescape_token(token);
        let found = match s.peek() {
            Some(b'{') => s.find_key(&token),
            Some(b'[') => token.parse::<usize>().ok().and_then(|n| s.find_index(n)),
            _ => None,
        };
        match found {
            Some(pos) => {
                s.pos = pos;
                best = pos;
            }
            None => return best,
        }
    }
    best
}

fn unescape_token(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

struct Scanner<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    /// At a `"`: moves past the closing quote; returns the raw contents.
    fn string(&mut self) -> Option<&'a [u8]> {
        if self.peek() != Some(b'"') {
            return None;
        }
        let start = self.pos + 1;
        let mut i = start;
        while i < self.bytes.len() {
            match self.bytes[i] {
                b'\\' => i += 2,
                b'"' => {
                    self.pos = i + 1;
                    return self.bytes.get(start..i);
                }
                _ => i += 1,
            }
        }
        None
    }

    /// Moves past one value of any kind, without recursion.
    fn skip_value(&mut self) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(|_| ()),
            b'{' | b'[' => {
                let mut depth = 0usize;
                while let Some(b) = self.peek() {
                    match b {
                        b'"' => {
                            self.string()?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        b'}' | b']' => {
                            depth = depth.saturating_sub(1);
                            if depth == 0 {
                                self.pos += 1;
                                return Some(());
                            }
                        }
                        _ => {}
                    }
                    self.pos += 1;
                }
                None
            }
            _ => {
                while let Some(b) = self.peek() {
                    if matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r') {
                        break;
                    }
                    self.pos += 1;
                }
                Some(())
            }
        }
    }

    /// At a `{`: the offset of the value of the last member named `key`
    /// (duplicate keys: the last one wins, as in serde_json and Go). Without
    /// one, the last member Go's decoder would match to it case-insensitively
    /// (`"Proxy"` for `proxy`): findings name fields as the gateway does.
    fn find_key(&mut self, key: &str) -> Option<usize> {
        self.pos += 1;
        let mut found = None;
        let mut folded = None;
        loop {
            self.ws();
            match self.peek() {
                Some(b'}') | None => return found.or(folded),
                Some(b',') => {
                    self.pos += 1;
                    continue;
                }
                _ => {}
            }
            let Some(raw) = self.string() else {
                return found.or(folded);
            };
            let name = if raw.contains(&b'\\') {
                let mut quoted = Vec::with_capacity(raw.len() + 2);
                quoted.push(b'"');
                quoted.extend_from_slice(raw);
                quoted.push(b'"');
                serde_json::from_slice::<String>(&quoted).ok()
            } else {
                std::str::from_utf8(raw).ok().map(str::to_string)
            };
            self.ws();
            if self.peek() != Some(b':') {
                return found.or(folded);
            }
            self.pos += 1;
            self.ws();
            match name {
                Some(n) if n == key => found = Some(self.pos),
                Some(n) if go_fold_eq(&n, key) => folded = Some(self.pos),
                _ => {}
            }
            if self.skip_value().is_none() {
                return found.or(folded);
            }
        }
    }

    /// At a `[`: the offset of element `n`.
    fn find_index(&mut self, n: usize) -> Option<usize> {
        self.pos += 1;
        let mut index = 0usize;
        loop {
            self.ws();
            match self.peek()? {
                b']' => return None,
                b',' => {
                    self.pos += 1;
                    continue;
                }
                _ => {}
            }
            if index == n {
                return Some(self.pos);
            }
            self.skip_value()?;
            index += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    fn too_many(bytes: &[u8], limit: usize) -> Option<usize> {
        structure(bytes, 127, limit).too_many
    }

    fn too_deep(bytes: &[u8], limit: usize) -> Option<usize> {
        structure(bytes, limit, 1000).too_deep
    }

    #[test]
    fn values_are_counted_outside_strings_only() {
        assert_eq!(too_many(br#"["a,b,c,{,[", 1]"#, 3), None);
        assert_eq!(too_many(b"[1,2]", 2), Some(2));
        assert_eq!(too_many(br#"{"k\",": [[]]}"#, 3), Some(10));
        assert_eq!(too_many(br#"["\\",[],"\\\"]"]"#, 3), Some(6));
        assert_eq!(too_many(b"[1,2]", 0), Some(0));
    }

    #[test]
    fn members_are_counted_outside_strings_and_against_the_parsed_tree() {
        let plain = br#"{"a:b":"c:d","e":[{"f":1},{"g\":":2}],"h":{}}"#;
        assert_eq!(structure(plain, 127, 1000).members, 5);
        let doc: serde_json::Value = serde_json::from_slice(plain).unwrap();
        assert_eq!(members(&doc), 5);
        let dup = br#"[{"a":1},{"k":{"x":1,"x":2}}]"#;
        assert_eq!(structure(dup, 127, 1000).members, 4);
        let doc: serde_json::Value = serde_json::from_slice(dup).unwrap();
        assert_eq!(members(&doc), 3);
        // A name spelled with an escape is the same name.
        let escaped = br#"{"eA":1,"e\u0041":2}"#;
        let doc: serde_json::Value = serde_json::from_slice(escaped).unwrap();
        assert_eq!(
            (structure(escaped, 127, 1000).members, members(&doc)),
            (2, 1)
        );
    }

    use super::*;

    const DOC: &str =
        "{\n  \"a\": {\"b/c\": [1, {\"d\": \"x\"}]},\n  \"é\": 2,\n  \"a\": {\"z\": true}\n}";

    #[test]
    fn pointer_resolves_to_line_and_column() {
        let bytes = DOC.as_bytes();
        // Duplicate "a": the last one is what the parser keeps.
        assert_eq!(line_col(bytes, locate(bytes, "/a/z")), (4, 14));
        assert_eq!(line_col(bytes, locate(bytes, "/é")), (3, 8));
        assert_eq!(line_col(bytes, locate(bytes, "")), (1, 1));
    }

    #[test]
    fn escaped_tokens_and_array_indexes() {
        let doc = br#"{"a": {"b/c": [1, {"d": "x"}]}}"#;
        assert_eq!(locate(doc, "/a/b~1c/1/d"), 24);
    }

    #[test]
    fn missing_member_points_at_the_deepest_existing_value() {
        let doc = br#"{"proxy": {"target_url": "x"}}"#;
        assert_eq!(locate(doc, "/proxy/listen_path"), 10);
    }

    #[test]
    fn depth_ignores_brackets_in_strings() {
        assert_eq!(too_deep(br#"[["[[[["]]"#, 2), None);
        assert_eq!(too_deep(b"[[[1]]]", 2), Some(2));
        assert_eq!(too_deep(br#"[["\"[[[\\",[[1]]]]"#, 3), Some(13));
        // The depth is judged even where the values already passed theirs.
        assert_eq!(structure(b"[[[1]]]", 2, 1).too_deep, Some(2));
    }

    #[test]
    fn duplicate_keys_are_found_with_their_pointer_at_any_depth() {
        let doc = br#"{"api_id":"a","proxy":{"x":[1,{"k":1,"k":2}],"listen_path":"/a/","listen_path":"/b/"},"api_id":"b","s":"{\"api_id\":1}","e\u0041":1,"eA":2}"#;
        let found: Vec<(String, String)> = duplicate_keys(doc, 10)
            .into_iter()
            .map(|d| (d.pointer, d.key))
            .collect();
        assert_eq!(
            found,
            [
                ("/proxy/x/1/k".to_string(), "k".to_string()),
                ("/proxy/listen_path".into(), "listen_path".into()),
                ("/api_id".into(), "api_id".into()),
                ("/eA".into(), "eA".into()),
            ]
        );
        let first = &duplicate_keys(doc, 1)[0];
        assert_eq!((first.first, first.offset), (31, 37));
        // The same name in sibling objects, or as a value, is no duplicate.
        assert!(duplicate_keys(br#"[{"a":1},{"a":"a"}]"#, 10).is_empty());
        assert!(duplicate_keys(br#"{"a":{"a":{"a":"a"}}}"#, 10).is_empty());
        // The pointer names the members and elements above, escaped.
        let nested = br#"{"a/b":[0,{"e\u0041":{"k~":1,"k~":2}}],"c":{"d":1,"d":1}}"#;
        let pointers: Vec<String> = duplicate_keys(nested, 10)
            .into_iter()
            .map(|d| d.pointer)
            .collect();
        assert_eq!(pointers, ["/a~1b/1/eA/k~0", "/c/d"]);
    }

    #[test]
    fn garbage_never_panics() {
        for doc in [&b"{\"a"[..], b"[1,", b"{\"a\":", b"\"\\", b"{,,,}", b"}"] {
            let _ = locate(doc, "/a/0/b");
            let _ = structure(doc, 1, 2);
            let _ = duplicate_keys(doc, 10);
            let _ = line_col(doc, 1000);
        }
    }
}
