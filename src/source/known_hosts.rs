//! SSH host-key verification against an OpenSSH `known_hosts` file.
//! Invariant: a key is accepted only if a non-revoked entry for the host
//! (plain, `[host]:port`, wildcard or hashed `|1|`) carries exactly its bytes;
//! there is no "accept new" and no fallback.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// What the known_hosts file says about one host and the key it offered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// An entry for the host carries this exact key.
    Trusted,
    /// No entry names the host.
    Unknown,
    /// The host is listed, but with other keys (or this key is `@revoked`):
    /// possibly a man in the middle.
    Mismatch { known_types: Vec<String> },
}

/// One usable line of a known_hosts file.
struct Entry<'a> {
    revoked: bool,
    hosts: &'a str,
    key_type: &'a str,
    key: Vec<u8>,
}

/// The name a host goes by in known_hosts: `host` on port 22, `[host]:port`
/// elsewhere (as OpenSSH writes it).
pub fn host_pattern(host: &str, port: Option<u16>) -> String {
    match port {
        None | Some(22) => host.to_string(),
        Some(port) => format!("[{host}]:{port}"),
    }
}

/// Checks `key` (the raw SSH wire-format host key blob) offered by `host`
/// against the text of a known_hosts file.
pub fn check(known_hosts: &str, host: &str, port: Option<u16>, key: &[u8]) -> Verdict {
    let name = host_pattern(host, port);
    let mut known_types = Vec::new();
    let mut trusted = false;
    for entry in known_hosts.lines().filter_map(parse_line) {
        if !hosts_match(entry.hosts, &name) {
            continue;
        }
        if entry.key == key {
            if entry.revoked {
                // A revoked key is refused even if another line trusts it.
                return Verdict::Mismatch {
                    known_types: vec![format!("{} (revoked)", entry.key_type)],
                };
            }
            trusted = true;
        } else if !entry.revoked {
            known_types.push(entry.key_type.to_string());
        }
    }
    if trusted {
        Verdict::Trusted
    } else if known_types.is_empty() {
        Verdict::Unknown
    } else {
        Verdict::Mismatch { known_types }
    }
}

/// The OpenSSH fingerprint of a key blob (`SHA256:...`), for messages.
pub fn fingerprint(key: &[u8]) -> String {
    format!("SHA256:{}", STANDARD_NO_PAD.encode(Sha256::digest(key)))
}

/// The key type named inside an SSH key blob (its first string field).
pub fn key_type(key: &[u8]) -> String {
    key.get(..4)
        .map(|len| u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize)
        .and_then(|len| key.get(4..4 + len))
        .map_or_else(
            || "unknown".to_string(),
            |name| String::from_utf8_lossy(name).into_owned(),
        )
}

fn parse_line(line: &str) -> Option<Entry<'_>> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let mut fields = line.split_whitespace();
    let mut first = fields.next()?;
    let mut revoked = false;
    if first.starts_with('@') {
        match first {
            "@revoked" => revoked = true,
            // Certificate authorities need certificate support we do not
            // have; ignoring them can only refuse, never wrongly accept.
            _ => return None,
        }
        first = fields.next()?;
    }
    let key_type = fields.next()?;
    let key = STANDARD.decode(fields.next()?).ok()?;
    Some(Entry {
        revoked,
        hosts: first,
        key_type,
        key,
    })
}

/// A comma-separated host list matches if some pattern matches and no
/// negated (`!`) pattern does.
fn hosts_match(patterns: &str, name: &str) -> bool {
    if let Some(hashed) = patterns.strip_prefix("|1|") {
        return hashed_match(hashed, name);
    }
    let mut matched = false;
    for pattern in patterns.split(',') {
        if let Some(negated) = pattern.strip_prefix('!') {
            if glob(negated, name) {
                return false;
            }
        } else if glob(pattern, name) {
            matched = true;
        }
    }
    matched
}

/// `|1|base64(salt)|base64(HMAC-SHA1(salt, name))`.
fn hashed_match(hashed: &str, name: &str) -> bool {
    let Some((salt, hash)) = hashed.split_once('|') else {
        return false;
    };
    let (Ok(salt), Ok(hash)) = (STANDARD.decode(salt), STANDARD.decode(hash)) else {
        return false;
    };
    let Ok(mut mac) = <Hmac<Sha1> as KeyInit>::new_from_slice(&salt) else {
        return false;
    };
    mac.update(name.as_bytes());
    mac.verify_slice(&hash).is_ok()
}

/// OpenSSH patterns: `*` any run, `?` one character; host names compare
/// case-insensitively.
fn glob(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.to_ascii_lowercase().chars().collect();
    let n: Vec<char> = name.to_ascii_lowercase().chars().collect();
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    // An ed25519 public key blob and a different one.
    const KEY_A: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIG2iZ7b3swaIFrcA8z5i/MgggH8G94VQhfG2tus00eG3";
    const KEY_B: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIN1opfWoTXt36h9c38hYGNro33XREqNC6olvMpurzjRU";

    fn blob(b64: &str) -> Vec<u8> {
        STANDARD.decode(b64).unwrap()
    }

    #[test]
    fn plain_and_bracketed_port_entries() {
        let file =
            format!("example.com ssh-ed25519 {KEY_A}\n[127.0.0.1]:2222 ssh-ed25519 {KEY_B}\n");
        assert_eq!(
            check(&file, "example.com", None, &blob(KEY_A)),
            Verdict::Trusted
        );
        assert_eq!(
            check(&file, "example.com", Some(22), &blob(KEY_A)),
            Verdict::Trusted
        );
        assert_eq!(
            check(&file, "127.0.0.1", Some(2222), &blob(KEY_B)),
            Verdict::Trusted
        );
        // The port matters: the plain entry does not cover another port.
        assert_eq!(
            check(&file, "example.com", Some(2222), &blob(KEY_A)),
            Verdict::Unknown
        );
        assert_eq!(
            check(&file, "127.0.0.1", Some(2222), &blob(KEY_A)),
            Verdict::Mismatch {
                known_types: vec!["ssh-ed25519".into()]
            }
        );
    }

    #[test]
    fn hashed_entries_match_their_host_only() {
        // `ssh-keygen -H` of "github.com" with a fixed salt, computed here.
        let salt = b"0123456789abcdefghij";
        let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(salt).unwrap();
        mac.update(b"github.com");
        let hash = mac.finalize().into_bytes();
        let line = format!(
            "|1|{}|{} ssh-ed25519 {KEY_A}",
            STANDARD.encode(salt),
            STANDARD.encode(hash)
        );
        assert_eq!(
            check(&line, "github.com", None, &blob(KEY_A)),
            Verdict::Trusted
        );
        assert_eq!(
            check(&line, "gitlab.com", None, &blob(KEY_A)),
            Verdict::Unknown
        );
    }

    #[test]
    fn comments_wildcards_negation_and_revocation() {
        let file = format!(
            "# comment\n\n*.corp,!evil.corp ssh-ed25519 {KEY_A}\n@revoked * ssh-ed25519 {KEY_B}\n@cert-authority * ssh-ed25519 {KEY_B}\n"
        );
        assert_eq!(
            check(&file, "git.corp", None, &blob(KEY_A)),
            Verdict::Trusted
        );
        assert_eq!(
            check(&file, "evil.corp", None, &blob(KEY_A)),
            Verdict::Unknown
        );
        assert!(matches!(
            check(&file, "git.corp", None, &blob(KEY_B)),
            Verdict::Mismatch { .. }
        ));
    }

    #[test]
    fn key_type_and_fingerprint_read_the_blob() {
        assert_eq!(key_type(&blob(KEY_A)), "ssh-ed25519");
        assert_eq!(key_type(b"\0"), "unknown");
        assert!(fingerprint(&blob(KEY_A)).starts_with("SHA256:"));
    }

    #[test]
    fn glob_matches_like_openssh() {
        assert!(glob("*.example.com", "git.example.com"));
        assert!(glob("git?.x", "git1.x"));
        assert!(!glob("*.example.com", "example.com"));
        assert!(glob("GitHub.com", "github.com"));
    }
}
