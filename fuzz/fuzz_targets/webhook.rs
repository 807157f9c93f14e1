//! Webhook requests: arbitrary headers and bodies through `authenticate`
//! and `parse_event` never panic, a push event only carries printable refs
//! and well-formed shas, and a signature computed here over an arbitrary
//! body with an arbitrary secret always verifies (and a flipped one never).
#![no_main]

use arbitrary::Arbitrary;
use hmac::{Hmac, KeyInit, Mac};
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;
use tyk_gitops::trigger::webhook::{Event, Provider, authenticate, parse_event};

const HEADERS: [&str; 14] = [
    "x-hub-signature-256",
    "x-gitlab-token",
    "x-gitea-signature",
    "x-forgejo-signature",
    "x-hub-signature",
    "x-signature",
    "x-github-event",
    "x-gitlab-event",
    "x-gitea-event",
    "x-forgejo-event",
    "x-event-key",
    "x-event",
    "content-type",
    "x-other",
];
const EVENTS: [&str; 8] = [
    "push",
    "ping",
    "Push Hook",
    "Tag Push Hook",
    "repo:push",
    "repo:refs_changed",
    "diagnostics:ping",
    "issues",
];
const PROVIDERS: [Provider; 5] = [
    Provider::GitHub,
    Provider::GitLab,
    Provider::Gitea,
    Provider::Bitbucket,
    Provider::Generic,
];

#[derive(Arbitrary, Debug)]
enum Val {
    Raw(Vec<u8>),
    Event(u8),
    /// `sha256=` + the given hex-ish text.
    Prefixed(String),
}

#[derive(Arbitrary, Debug)]
struct Input {
    headers: Vec<(u8, Val)>,
    body: Vec<u8>,
    secret: Vec<u8>,
    /// Which scheme the valid signature uses, and its event header.
    scheme: u8,
    event: u8,
    upper: bool,
    pad: bool,
}

fn check_event(ev: &Event) {
    if let Event::Push(pushes) = ev {
        assert!(!pushes.is_empty());
        for p in pushes {
            assert!(!p.git_ref.is_empty() && p.git_ref.len() <= 1024);
            assert!(!p.git_ref.chars().any(char::is_control), "{:?}", p.git_ref);
            if let Some(sha) = &p.sha {
                assert!(matches!(sha.len(), 40 | 64), "{sha:?}");
                assert!(
                    sha.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
                    "{sha:?}"
                );
                assert!(sha.bytes().any(|b| b != b'0'));
            }
        }
    }
    if let Event::Other(name) = ev {
        assert!(name.chars().count() <= 64);
    }
}

fn hmac_hex(secret: &[u8], body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

fuzz_target!(|input: Input| {
    // The secret as the daemon reads it: trailing newlines trimmed, never empty.
    let mut secret = input.secret.clone();
    while secret.last().is_some_and(|b| matches!(b, b'\n' | b'\r')) {
        secret.pop();
    }
    if secret.is_empty() {
        return;
    }
    let body = &input.body;

    // 1. Hostile headers: no panic, whatever they hold.
    let mut headers = HeaderMap::new();
    for (h, v) in input.headers.iter().take(8) {
        let name = HeaderName::from_static(HEADERS[*h as usize % HEADERS.len()]);
        let value = match v {
            Val::Raw(b) => HeaderValue::from_bytes(b).ok(),
            Val::Event(e) => Some(HeaderValue::from_static(EVENTS[*e as usize % EVENTS.len()])),
            Val::Prefixed(s) => HeaderValue::from_str(&format!("sha256={s}")).ok(),
        };
        if let Some(value) = value {
            headers.append(name, value);
        }
    }
    if let Ok(provider) = authenticate(&headers, body, &secret) {
        check_event(&parse_event(provider, &headers, body).unwrap_or(Event::Ping));
    }
    // The parsers are reached only after authentication; fuzz them directly.
    for provider in PROVIDERS {
        if let Ok(ev) = parse_event(provider, &headers, body) {
            check_event(&ev);
        }
    }

    // 2. A valid signature always verifies, for the provider it names.
    let (header, provider, proof) = [
        ("x-forgejo-signature", Provider::Gitea, 0),
        ("x-gitea-signature", Provider::Gitea, 0),
        ("x-hub-signature-256", Provider::GitHub, 1),
        ("x-gitlab-token", Provider::GitLab, 2),
        ("x-hub-signature", Provider::Bitbucket, 1),
        ("x-signature", Provider::Generic, 1),
    ][input.scheme as usize % 6];
    let mut tag = hmac_hex(&secret, body);
    if input.upper {
        tag = tag.to_ascii_uppercase();
    }
    let value = match proof {
        0 => tag.clone(),
        1 => format!("sha256={tag}"),
        _ => match std::str::from_utf8(&secret) {
            // A token is sent as a header value: visible ASCII, and the
            // value is trimmed, so a secret with outer spaces cannot match.
            Ok(s) if s.bytes().all(|b| b.is_ascii_graphic() || b == b' ') && s.trim() == s => {
                s.to_string()
            }
            _ => return,
        },
    };
    let value = if input.pad {
        format!(" {value} ")
    } else {
        value
    };
    let mut signed = HeaderMap::new();
    signed.insert(
        HeaderName::from_static(header),
        HeaderValue::from_str(&value).unwrap(),
    );
    signed.insert(
        HeaderName::from_static(HEADERS[6 + input.event as usize % 6]),
        HeaderValue::from_static(EVENTS[input.event as usize % EVENTS.len()]),
    );
    match authenticate(&signed, body, &secret) {
        Ok(p) => assert_eq!(p, provider),
        Err(e) => panic!("a valid {header} was refused: {e}"),
    }
    if let Ok(ev) = parse_event(provider, &signed, body) {
        check_event(&ev);
    }

    // 3. The same signature over another body, or with another secret, fails.
    if proof != 2 {
        let mut other = body.clone();
        other.push(0);
        assert!(
            authenticate(&signed, &other, &secret).is_err(),
            "signature accepted for another body"
        );
        let mut wrong = secret.clone();
        wrong.push(b'x');
        assert!(
            authenticate(&signed, body, &wrong).is_err(),
            "signature accepted with another secret"
        );
    } else {
        let mut wrong = secret.clone();
        wrong.push(b'x');
        assert!(
            authenticate(&signed, body, &wrong).is_err(),
            "token accepted for another secret"
        );
    }
});
