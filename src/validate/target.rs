//! What the gateway does with `proxy.target_url`. It resolves secret-store
//! references, parses the value with Go's `url.Parse` and skips the API
//! when that fails ("couldn't parse target URL"). `url.Parse` accepts far
//! more than an absolute URL (an empty string, a relative path), so a target
//! that parses can still be one the gateway loads and never reaches.
//!
//! `go_parse` ports the checks of Go's net/url `Parse` (not what it builds):
//! each error it returns is one Go returns for the same string.

/// The parts of a parsed URL the verdict needs.
#[derive(Debug, PartialEq, Eq)]
pub struct GoUrl {
    /// Lower-cased, empty when there is none.
    pub scheme: String,
    /// The host (with port) after `//`; `None` without an authority.
    pub host: Option<String>,
}

/// Go's `url.Parse(raw)`: the error text Go gives, without its
/// `parse "<url>": ` prefix.
pub fn go_parse(raw: &str) -> Result<GoUrl, String> {
    let (url, fragment) = match raw.split_once('#') {
        Some((u, f)) => (u, Some(f)),
        None => (raw, None),
    };
    let parsed = parse(url)?;
    if let Some(f) = fragment {
        unescape(f, Mode::Other)?;
    }
    Ok(parsed)
}

fn parse(raw: &str) -> Result<GoUrl, String> {
    if raw.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err("net/url: invalid control character in URL".into());
    }
    let mut url = GoUrl {
        scheme: String::new(),
        host: None,
    };
    if raw == "*" {
        return Ok(url);
    }
    let (scheme, rest) = scheme_of(raw)?;
    url.scheme = scheme.to_ascii_lowercase();
    let rest = if rest.ends_with('?') && rest.matches('?').count() == 1 {
        &rest[..rest.len() - 1]
    } else {
        rest.split_once('?').map_or(rest, |(r, _)| r)
    };
    if !rest.starts_with('/') {
        if !url.scheme.is_empty() {
            // `scheme:opaque`: Go keeps the rest as it is.
            return Ok(url);
        }
        let segment = rest.split_once('/').map_or(rest, |(s, _)| s);
        if segment.contains(':') {
            return Err("first path segment in URL cannot contain colon".into());
        }
    }
    let mut path = rest;
    if (!url.scheme.is_empty() || !rest.starts_with("///")) && rest.starts_with("//") {
        let authority = &rest[2..];
        let (authority, p) = match authority.find('/') {
            Some(i) => (&authority[..i], &authority[i..]),
            None => (authority, ""),
        };
        url.host = Some(parse_authority(authority)?);
        path = p;
    }
    unescape(path, Mode::Other)?;
    Ok(url)
}

/// `scheme:rest` when `raw` starts with `[a-zA-Z][a-zA-Z0-9+-.]*:`.
fn scheme_of(raw: &str) -> Result<(&str, &str), String> {
    for (i, c) in raw.bytes().enumerate() {
        match c {
            b'a'..=b'z' | b'A'..=b'Z' => {}
            b'0'..=b'9' | b'+' | b'-' | b'.' if i > 0 => {}
            b':' if i == 0 => return Err("missing protocol scheme".into()),
            b':' => return Ok((&raw[..i], &raw[i + 1..])),
            _ => return Ok(("", raw)),
        }
    }
    Ok(("", raw))
}

fn parse_authority(authority: &str) -> Result<String, String> {
    let (userinfo, host) = match authority.rfind('@') {
        Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
        None => (None, authority),
    };
    let host = parse_host(host)?;
    if let Some(userinfo) = userinfo {
        let valid = userinfo
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._:~!$&'()*+,;=%@".contains(c));
        if !valid {
            return Err("net/url: invalid userinfo".into());
        }
        let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
        unescape(user, Mode::Other)?;
        unescape(password, Mode::Other)?;
    }
    Ok(host.to_string())
}

fn parse_host(host: &str) -> Result<&str, String> {
    if host.starts_with('[') {
        let Some(i) = host.rfind(']') else {
            return Err("missing ']' in host".into());
        };
        let port = &host[i + 1..];
        if !valid_optional_port(port) {
            return Err(format!("invalid port {port:?} after host"));
        }
        if let Some(zone) = host[..i].find("%25") {
            unescape(&host[..zone], Mode::Host)?;
            unescape(&host[zone..i], Mode::Zone)?;
            unescape(&host[i..], Mode::Host)?;
            return Ok(host);
        }
    } else if let Some(i) = host.rfind(':') {
        let port = &host[i..];
        if !valid_optional_port(port) {
            return Err(format!("invalid port {port:?} after host"));
        }
    }
    unescape(host, Mode::Host)?;
    Ok(host)
}

/// Empty, or `:` and digits only (Go checks no range).
fn valid_optional_port(port: &str) -> bool {
    port.is_empty()
        || port
            .strip_prefix(':')
            .is_some_and(|d| d.bytes().all(|b| b.is_ascii_digit()))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Host,
    Zone,
    /// Path, user info, fragment: only the escapes are checked.
    Other,
}

/// Go's `unescape`, for its errors only.
fn unescape(s: &str, mode: Mode) -> Result<(), String> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if i + 2 >= b.len() || !b[i + 1].is_ascii_hexdigit() || !b[i + 2].is_ascii_hexdigit() {
                let bad = &s[i..(i + 3).min(s.len())];
                return Err(format!("invalid URL escape {bad:?}"));
            }
            let escape = &s[i..i + 3];
            let hi = hex(b[i + 1]);
            // A host may %-encode only non-ASCII bytes, and %25 (RFC 6874).
            if mode == Mode::Host && hi < 8 && escape != "%25" {
                return Err(format!("invalid URL escape {escape:?}"));
            }
            if mode == Mode::Zone {
                let v = (hi << 4) | hex(b[i + 2]);
                if escape != "%25" && v != b' ' && host_must_escape(v) {
                    return Err(format!("invalid URL escape {escape:?}"));
                }
            }
            i += 3;
        } else {
            if mode != Mode::Other && b[i] < 0x80 && host_must_escape(b[i]) {
                let c = char::from(b[i]);
                return Err(format!(
                    "invalid character {:?} in host name",
                    c.to_string()
                ));
            }
            i += 1;
        }
    }
    Ok(())
}

fn hex(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        b'A'..=b'F' => c - b'A' + 10,
        _ => 0,
    }
}

/// Go's `shouldEscape(c, encodeHost)`.
fn host_must_escape(c: u8) -> bool {
    !(c.is_ascii_alphanumeric() || b"!$&'()*+,;=:[]<>\"-_.~".contains(&c))
}

/// What the gateway would do with a target.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Loads and proxies (as far as the file can tell).
    Fine,
    /// `url.Parse` fails: the API is skipped. The text is Go's error.
    Skipped(String),
    /// Loads, but a request can never reach an upstream. The text says why.
    Unusable(String),
}

/// The verdict on `target` for an API whose requests go to it (not a
/// GraphQL engine, not load-balanced, not discovered). `Unusable` says what
/// is wrong and what the gateway then does.
pub fn judge(target: &str) -> Verdict {
    let url = match go_parse(target) {
        Ok(url) => url,
        Err(e) => return Verdict::Skipped(e),
    };
    const FAILS: &str = "the API loads, and every request to it fails";
    let placeholder = placeholder(target);
    let unfilled = placeholder
        .map(|p| format!(", and {p} looks like a template placeholder nobody filled in"))
        .unwrap_or_default();
    if target.is_empty() {
        return Verdict::Unusable(format!(
            "is empty: {FAILS} (there is no upstream to send it to)"
        ));
    }
    if url.scheme.is_empty() {
        return Verdict::Unusable(format!(
            "has no scheme (Go reads it as a relative path{unfilled}): {FAILS}"
        ));
    }
    match (url.host.as_deref(), placeholder) {
        (None, _) => Verdict::Unusable(format!(
            "has no host (Go reads {:?} as its scheme{unfilled}): {FAILS}",
            url.scheme
        )),
        (Some(""), _) => Verdict::Unusable(format!("has no host{unfilled}: {FAILS}")),
        (Some(_), Some(p)) => Verdict::Unusable(format!(
            "contains {p}, a template placeholder nobody filled in: the API loads and sends requests to that literal address"
        )),
        (Some(_), None) => Verdict::Fine,
    }
}

/// The first `{…}` or `${…}` in `s`, the marks template tools leave.
fn placeholder(s: &str) -> Option<&str> {
    let start = s.find('{')?;
    let start = if start > 0 && s.as_bytes()[start - 1] == b'$' {
        start - 1
    } else {
        start
    };
    let end = start + s[start..].find('}')?;
    let end = end + s[end..].bytes().take_while(|&b| b == b'}').count();
    Some(&s[start..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(s: &str) -> String {
        go_parse(s).expect_err(s)
    }

    #[test]
    fn go_accepts_what_go_accepts() {
        for ok in [
            "",
            "*",
            "httpbin.org",
            "/relative/path",
            "{{UPSTREAM}}",
            "${TARGET_URL}",
            "http://upstream:8080/",
            "http://upstream:/",
            "http://upstream:99999/",
            "http://user:p%40ss@upstream/",
            "http://[::1]:8080/",
            "http://[fe80::1%25en0]/",
            "http://upstream/a b/",
            "http://upstream/?q=%zz",
            "mailto:someone",
            "tyk://self/other",
            "http://ex%C3%A4mple.org/",
            "http:///path",
            "localhost:8080",
        ] {
            assert!(go_parse(ok).is_ok(), "{ok:?}: {:?}", go_parse(ok));
        }
    }

    #[test]
    fn go_rejects_what_go_rejects() {
        assert_eq!(err("http://upstream/%zz"), r#"invalid URL escape "%zz""#);
        assert_eq!(err("http://upstream/%4"), r#"invalid URL escape "%4""#);
        assert_eq!(err("http://up%41/"), r#"invalid URL escape "%41""#);
        assert_eq!(
            err("http://upstream/\n"),
            "net/url: invalid control character in URL"
        );
        assert_eq!(
            err("http://upstream:80a/"),
            r#"invalid port ":80a" after host"#
        );
        assert_eq!(
            err("127.0.0.1:8080"),
            "first path segment in URL cannot contain colon"
        );
        assert_eq!(
            err("10.0.0.1:8080/api"),
            "first path segment in URL cannot contain colon"
        );
        assert_eq!(err("://upstream"), "missing protocol scheme");
        assert_eq!(
            err("http://{{HOST}}/"),
            r#"invalid character "{" in host name"#
        );
        assert_eq!(err("http://a b/"), r#"invalid character " " in host name"#);
        assert_eq!(err("http://[::1/"), "missing ']' in host");
        assert_eq!(err("http://us er@host/"), "net/url: invalid userinfo");
        assert_eq!(err("http://host/#%zz"), r#"invalid URL escape "%zz""#);
    }

    #[test]
    fn verdicts() {
        assert_eq!(judge("http://upstream:8080/"), Verdict::Fine);
        assert_eq!(judge("tyk://self/other"), Verdict::Fine);
        assert!(matches!(judge("127.0.0.1:8080"), Verdict::Skipped(_)));
        // "localhost" is a scheme to Go: it loads, with no host.
        assert!(matches!(judge("localhost:8080"), Verdict::Unusable(_)));
        assert!(matches!(judge(""), Verdict::Unusable(_)));
        assert!(matches!(judge("httpbin.org"), Verdict::Unusable(_)));
        assert!(matches!(judge("http:upstream"), Verdict::Unusable(_)));
        let Verdict::Unusable(why) = judge("{{UPSTREAM_URL}}") else {
            panic!("placeholder")
        };
        assert!(why.contains("{{UPSTREAM_URL}}"), "{why}");
        let Verdict::Unusable(why) = judge("http://upstream/${VERSION}/") else {
            panic!("placeholder in path")
        };
        assert!(why.contains("${VERSION}"), "{why}");
    }
}
