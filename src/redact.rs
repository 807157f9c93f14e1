//! Showing a URL without its secrets: every URL that reaches a message,
//! a log line or a finding goes through `redact_url`. Below every stage, so
//! each can use it without reaching into another.

/// Replaces the secret part of a URL's user info with `***`.
///
/// `https://user:token@host/r` → `https://user:***@host/r`; for HTTP(S) a
/// user alone is often a token (`https://TOKEN@github.com/...`), so it is
/// hidden too. SSH user names (`git@host`) are not secrets and stay.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let scheme = url[..scheme_end].to_ascii_lowercase();
    let rest = &url[scheme_end + 3..];
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_len];
    let Some(at) = authority.rfind('@') else {
        return url.to_string();
    };
    let userinfo = &authority[..at];
    let redacted = match userinfo.split_once(':') {
        Some((user, _password)) => format!("{user}:***"),
        None if scheme.starts_with("http") => "***".to_string(),
        None => userinfo.to_string(),
    };
    format!("{}://{}{}", &url[..scheme_end], redacted, &rest[at..])
}
