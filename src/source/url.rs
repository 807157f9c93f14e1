//! Remote URLs: what kind of transport they name, and how to show them
//! without their secrets. Every URL that reaches a message goes through
//! `redact_url`; every libgit2 message goes through `scrub`.

/// The transport a remote URL selects, with what the callbacks need to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// `file://` or a plain path: libgit2's local transport (no shallow).
    Local,
    /// `ssh://` or scp-like `user@host:path`.
    Ssh {
        host: String,
        port: Option<u16>,
        user: Option<String>,
    },
    /// `http://` or `https://`, with the credentials the URL itself carries.
    Http {
        user: Option<String>,
        password: Option<String>,
    },
    /// `git://` and anything else libgit2 may know.
    Other,
}

pub use crate::redact::redact_url;

/// Removes secrets from free text (a libgit2 message): every URL in it is
/// redacted and every known secret value replaced by `***`.
pub fn scrub(text: &str, secrets: &[&str]) -> String {
    let mut out = text
        .split(' ')
        .map(|word| {
            if word.contains("://") && word.contains('@') {
                // A URL may sit inside quotes or parentheses: redact from its scheme on.
                let start = word
                    .find("://")
                    .map(|i| {
                        word[..i]
                            .rfind(|c: char| !c.is_ascii_alphanumeric() && c != '+')
                            .map_or(0, |j| j + 1)
                    })
                    .unwrap_or(0);
                format!("{}{}", &word[..start], redact_url(&word[start..]))
            } else {
                word.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        out = out.replace(secret, "***");
    }
    out
}

/// Classifies a remote URL the way git does: a scheme, else scp-like
/// `[user@]host:path` when a colon comes before any slash, else a path.
pub fn transport(url: &str) -> Transport {
    if let Some(scheme_end) = url.find("://") {
        let scheme = url[..scheme_end].to_ascii_lowercase();
        let rest = &url[scheme_end + 3..];
        let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
        let (userinfo, hostport) = match authority.rfind('@') {
            Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
            None => (None, authority),
        };
        return match scheme.as_str() {
            "file" => Transport::Local,
            "http" | "https" => {
                let (user, password) = match userinfo {
                    Some(info) => match info.split_once(':') {
                        Some((u, p)) => (Some(percent_decode(u)), Some(percent_decode(p))),
                        None => (Some(percent_decode(info)), None),
                    },
                    None => (None, None),
                };
                Transport::Http { user, password }
            }
            "ssh" | "ssh+git" | "git+ssh" => {
                let (host, port) = split_host_port(hostport);
                Transport::Ssh {
                    host,
                    port,
                    user: userinfo.map(percent_decode),
                }
            }
            _ => Transport::Other,
        };
    }
    match url.find(':') {
        Some(colon) if !url[..colon].contains('/') => {
            let head = &url[..colon];
            let (user, host) = match head.rfind('@') {
                Some(at) => (Some(head[..at].to_string()), &head[at + 1..]),
                None => (None, head),
            };
            let host = host.trim_start_matches('[').trim_end_matches(']');
            Transport::Ssh {
                host: host.to_string(),
                port: None,
                user,
            }
        }
        _ => Transport::Local,
    }
}

/// `host`, `host:22`, `[::1]:22` → host and port.
fn split_host_port(hostport: &str) -> (String, Option<u16>) {
    if let Some((host, after)) = hostport
        .strip_prefix('[')
        .and_then(|rest| rest.split_once(']'))
    {
        let port = after.strip_prefix(':').and_then(|p| p.parse().ok());
        return (host.to_string(), port);
    }
    match hostport.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => (host.to_string(), port.parse().ok()),
        _ => (hostport.to_string(), None),
    }
}

/// Decodes `%XX` escapes (user names and tokens in URLs may carry them).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_url_hides_passwords_and_http_tokens() {
        assert_eq!(
            redact_url("https://user:s3cr3t@example.com/org/repo.git"),
            "https://user:***@example.com/org/repo.git"
        );
        assert_eq!(
            redact_url("https://ghp_token@github.com/o/r"),
            "https://***@github.com/o/r"
        );
        assert_eq!(
            redact_url("http://u:p%40ss@host:8080/r?x=1"),
            "http://u:***@host:8080/r?x=1"
        );
        assert_eq!(redact_url("ssh://git@host:22/r"), "ssh://git@host:22/r");
        assert_eq!(redact_url("ssh://git:pw@host/r"), "ssh://git:***@host/r");
        assert_eq!(
            redact_url("git@github.com:o/r.git"),
            "git@github.com:o/r.git"
        );
        assert_eq!(
            redact_url("https://example.com/a@b"),
            "https://example.com/a@b"
        );
        assert_eq!(redact_url("/srv/repo"), "/srv/repo");
    }

    #[test]
    fn scrub_redacts_urls_and_known_secrets_in_text() {
        let msg = "failed to reach 'https://me:tok123@h/r': token tok123 rejected";
        let clean = scrub(msg, &["tok123"]);
        assert!(!clean.contains("tok123"), "{clean}");
        assert!(clean.contains("https://me:***@h/r"), "{clean}");
    }

    #[test]
    fn transport_classifies_like_git() {
        assert_eq!(transport("/srv/repo"), Transport::Local);
        assert_eq!(transport("./repo"), Transport::Local);
        assert_eq!(transport("file:///srv/repo"), Transport::Local);
        assert_eq!(transport("git://h/r"), Transport::Other);
        assert_eq!(
            transport("git@github.com:o/r.git"),
            Transport::Ssh {
                host: "github.com".into(),
                port: None,
                user: Some("git".into())
            }
        );
        assert_eq!(
            transport("ssh://git@127.0.0.1:2222/srv/r"),
            Transport::Ssh {
                host: "127.0.0.1".into(),
                port: Some(2222),
                user: Some("git".into())
            }
        );
        assert_eq!(
            transport("https://u:p%40ss@h/r"),
            Transport::Http {
                user: Some("u".into()),
                password: Some("p@ss".into())
            }
        );
    }
}
