//! Commit signatures: with `--verify-signatures`, a commit reaches the
//! gateway only when it, or the annotated tag `--ref` names, carries a valid
//! signature by a key listed in `--allowed-signers` (SSH keys, the format of
//! git's `gpg.ssh.allowedSignersFile`) or `--trusted-keys` (armored OpenPGP
//! public keys). The key files are read on every check, so a rotated list
//! applies at the next sync. The cryptography is `ssh-key`'s and `pgp`'s.
//!
//! Expiry is judged when the check runs, never by the date inside the commit
//! (that date is whatever the signer wrote).

use std::io::Cursor;
use std::path::{Path, PathBuf};

use chrono::{NaiveDate, NaiveDateTime, Utc};
use pgp::composed::{Deserializable, DetachedSignature, SignedPublicKey};
use pgp::types::KeyDetails;
use ssh_key::{HashAlg, PublicKey, SshSig};

/// The SSH signature namespace git signs commits and tags in.
const GIT_NAMESPACE: &str = "git";
const SSH_ARMOR: &str = "-----BEGIN SSH SIGNATURE-----";
const PGP_ARMOR: &str = "-----BEGIN PGP SIGNATURE-----";

/// Which keys a commit may be signed by.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustConfig {
    pub allowed_signers: Option<PathBuf>,
    pub trusted_keys: Option<PathBuf>,
}

/// One signed Git object: its signature and the exact bytes it signs.
#[derive(Debug, Clone)]
pub struct Signed {
    /// `commit` or `tag <name>`, for messages.
    pub what: String,
    pub signature: Vec<u8>,
    pub data: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// The commit is refused like an invalid one.
    #[error("{0}")]
    Untrusted(String),
    /// A key file cannot be used: a local problem, not the commit's.
    #[error("{path}: {message}")]
    KeyFile { path: PathBuf, message: String },
}

/// Who signed: the principal or user id, and the key's fingerprint.
pub type Signer = String;

/// Accepts when any of `signed` (the commit's signature, then a tag's)
/// verifies against a listed key; otherwise says why each one did not.
pub fn verify(signed: &[Signed], config: &TrustConfig) -> Result<Signer, TrustError> {
    if signed.is_empty() {
        return Err(TrustError::Untrusted(
            "the commit is not signed (nor is an annotated tag naming it)".into(),
        ));
    }
    let ssh = config
        .allowed_signers
        .as_deref()
        .map(read_allowed_signers)
        .transpose()?;
    let pgp = config
        .trusted_keys
        .as_deref()
        .map(read_trusted_keys)
        .transpose()?;
    let mut reasons = Vec::new();
    for s in signed {
        let text = String::from_utf8_lossy(&s.signature);
        let outcome = if text.trim_start().starts_with(SSH_ARMOR) {
            match &ssh {
                Some(signers) => verify_ssh(&text, &s.data, signers),
                None => Err("it is an SSH signature and no --allowed-signers is given".into()),
            }
        } else if text.trim_start().starts_with(PGP_ARMOR) {
            match &pgp {
                Some(keys) => verify_pgp(&text, &s.data, keys),
                None => Err("it is an OpenPGP signature and no --trusted-keys is given".into()),
            }
        } else {
            Err("its signature is neither SSH nor OpenPGP (X.509 is not supported)".into())
        };
        match outcome {
            Ok(signer) => return Ok(format!("{} signed by {signer}", s.what)),
            Err(reason) => reasons.push(format!("{}: {reason}", s.what)),
        }
    }
    Err(TrustError::Untrusted(reasons.join("; ")))
}

/// One line of an allowed-signers file.
#[derive(Debug, Clone)]
struct AllowedSigner {
    principals: String,
    key: PublicKey,
    /// `namespaces="git,file"`; `None` allows every namespace.
    namespaces: Option<Vec<String>>,
    valid_after: Option<NaiveDateTime>,
    valid_before: Option<NaiveDateTime>,
}

fn key_file_error(path: &Path, message: String) -> TrustError {
    TrustError::KeyFile {
        path: path.to_path_buf(),
        message,
    }
}

fn read_allowed_signers(path: &Path) -> Result<Vec<AllowedSigner>, TrustError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| key_file_error(path, format!("cannot read the allowed signers: {e}")))?;
    let mut signers = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let signer = parse_allowed_signer(line)
            .map_err(|m| key_file_error(path, format!("line {}: {m}", n + 1)))?;
        signers.push(signer);
    }
    if signers.is_empty() {
        return Err(key_file_error(path, "lists no key".into()));
    }
    Ok(signers)
}

/// Splits where `is_separator` holds outside double quotes (principals and
/// option values may be quoted, and hold spaces or commas); empty pieces
/// are dropped, quotes kept.
fn split_unquoted(text: &str, is_separator: impl Fn(char) -> bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in text.chars() {
        if c == '"' {
            quoted = !quoted;
        }
        if !quoted && is_separator(c) {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
        } else {
            cur.push(c);
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn is_key_type(word: &str) -> bool {
    ["ssh-", "ecdsa-sha2-", "sk-ssh-", "sk-ecdsa-"]
        .iter()
        .any(|p| word.starts_with(p))
}

/// `principals [options] keytype base64 [comment]`, as ssh-keygen(1)
/// describes it under ALLOWED SIGNERS.
fn parse_allowed_signer(line: &str) -> Result<AllowedSigner, String> {
    let words = split_unquoted(line, char::is_whitespace);
    let at = words
        .iter()
        .position(|w| is_key_type(w))
        .ok_or("no key (expected `principals [options] keytype base64`)")?;
    if at == 0 {
        return Err("no principals before the key".into());
    }
    let blob = words.get(at + 1).ok_or("the key has no base64 part")?;
    let key = PublicKey::from_openssh(&format!("{} {blob}", words[at]))
        .map_err(|e| format!("the key does not parse: {e}"))?;
    let mut signer = AllowedSigner {
        principals: words[0].trim_matches('"').to_string(),
        key,
        namespaces: None,
        valid_after: None,
        valid_before: None,
    };
    for option in words[1..at]
        .iter()
        .flat_map(|w| split_unquoted(w, |c| c == ','))
    {
        let (name, value) = match option.split_once('=') {
            Some((n, v)) => (n.to_ascii_lowercase(), v.trim_matches('"').to_string()),
            None => (option.to_ascii_lowercase(), String::new()),
        };
        match name.as_str() {
            "namespaces" => {
                signer.namespaces = Some(value.split(',').map(|s| s.trim().to_string()).collect())
            }
            "valid-after" => signer.valid_after = Some(parse_time(&value)?),
            "valid-before" => signer.valid_before = Some(parse_time(&value)?),
            "cert-authority" => {
                return Err("cert-authority (SSH certificates) is not supported: list the signing keys themselves".into());
            }
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    Ok(signer)
}

/// `YYYYMMDD[HHMM[SS]][Z]`; times are taken as UTC (sidecars run in UTC).
fn parse_time(value: &str) -> Result<NaiveDateTime, String> {
    let digits = value.trim_end_matches(['Z', 'z']);
    let bad = || format!("{value:?} is not YYYYMMDD[HHMM[SS]][Z]");
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| digits.get(r).and_then(|s| s.parse::<u32>().ok());
    let date = match digits.len() {
        8 | 12 | 14 => NaiveDate::from_ymd_opt(
            i32::try_from(num(0..4).ok_or_else(bad)?).map_err(|_| bad())?,
            num(4..6).ok_or_else(bad)?,
            num(6..8).ok_or_else(bad)?,
        )
        .ok_or_else(bad)?,
        _ => return Err(bad()),
    };
    let (h, m, s) = match digits.len() {
        8 => (0, 0, 0),
        12 => (num(8..10).ok_or_else(bad)?, num(10..12).ok_or_else(bad)?, 0),
        _ => (
            num(8..10).ok_or_else(bad)?,
            num(10..12).ok_or_else(bad)?,
            num(12..14).ok_or_else(bad)?,
        ),
    };
    date.and_hms_opt(h, m, s).ok_or_else(bad)
}

fn verify_ssh(armored: &str, data: &[u8], signers: &[AllowedSigner]) -> Result<Signer, String> {
    let sig = SshSig::from_pem(armored.trim())
        .map_err(|e| format!("the SSH signature does not parse: {e}"))?;
    if sig.namespace() != GIT_NAMESPACE {
        return Err(format!(
            "the SSH signature is for namespace {:?}, not {GIT_NAMESPACE:?}",
            sig.namespace()
        ));
    }
    let fingerprint = sig.public_key().fingerprint(HashAlg::Sha256);
    let now = Utc::now().naive_utc();
    let mut listed = false;
    let mut reasons = Vec::new();
    for signer in signers
        .iter()
        .filter(|s| s.key.key_data() == sig.public_key())
    {
        listed = true;
        if let Some(ns) = &signer.namespaces
            && !ns.iter().any(|n| n == GIT_NAMESPACE)
        {
            reasons.push(format!(
                "{} may not sign in namespace git",
                signer.principals
            ));
            continue;
        }
        if let Some(before) = signer.valid_before
            && now >= before
        {
            reasons.push(format!(
                "the key of {} expired on {before} (valid-before)",
                signer.principals
            ));
            continue;
        }
        if let Some(after) = signer.valid_after
            && now < after
        {
            reasons.push(format!(
                "the key of {} is not valid before {after}",
                signer.principals
            ));
            continue;
        }
        return match signer.key.verify(GIT_NAMESPACE, data, &sig) {
            Ok(()) => Ok(format!("{} ({fingerprint})", signer.principals)),
            Err(_) => Err(format!(
                "bad signature by {} ({fingerprint}): it was not made for this content",
                signer.principals
            )),
        };
    }
    if listed {
        Err(reasons.join("; "))
    } else {
        Err(format!(
            "signed by {fingerprint}, which --allowed-signers does not list"
        ))
    }
}

fn read_trusted_keys(path: &Path) -> Result<Vec<SignedPublicKey>, TrustError> {
    let text = std::fs::read(path)
        .map_err(|e| key_file_error(path, format!("cannot read the trusted keys: {e}")))?;
    let (keys, _) = SignedPublicKey::from_armor_many(Cursor::new(text))
        .map_err(|e| key_file_error(path, format!("not armored OpenPGP public keys: {e}")))?;
    let keys: Vec<SignedPublicKey> = keys
        .collect::<Result<_, _>>()
        .map_err(|e| key_file_error(path, format!("a key does not parse: {e}")))?;
    if keys.is_empty() {
        return Err(key_file_error(path, "holds no public key".into()));
    }
    Ok(keys)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

fn verify_pgp(armored: &str, data: &[u8], keys: &[SignedPublicKey]) -> Result<Signer, String> {
    let (sig, _) = DetachedSignature::from_armor_single(Cursor::new(armored.as_bytes()))
        .map_err(|e| format!("the OpenPGP signature does not parse: {e}"))?;
    let issuers: Vec<String> = sig
        .signature
        .issuer_fingerprint()
        .iter()
        .map(|f| hex(f.as_bytes()))
        .collect();
    let key_ids: Vec<String> = sig
        .signature
        .issuer_key_id()
        .iter()
        .map(|k| hex(k.as_ref()))
        .collect();
    let matches = |fp: &pgp::types::Fingerprint, id: &pgp::types::KeyId| {
        issuers.contains(&hex(fp.as_bytes())) || key_ids.contains(&hex(id.as_ref()))
    };
    let now = std::time::SystemTime::now();
    for key in keys {
        let user = key
            .details
            .users
            .first()
            .map(|u| String::from_utf8_lossy(u.id.id()).into_owned())
            .unwrap_or_default();
        let primary_fp = hex(key.primary_key.fingerprint().as_bytes());
        let who = format!("{user} ({primary_fp})");
        let primary = matches(
            &key.primary_key.fingerprint(),
            &key.primary_key.legacy_key_id(),
        );
        let subkey = key
            .public_subkeys
            .iter()
            .find(|s| matches(&s.key.fingerprint(), &s.key.legacy_key_id()));
        if !primary && subkey.is_none() {
            continue;
        }
        if key.verify_bindings().is_err() {
            return Err(format!("the key of {who} has invalid self-signatures"));
        }
        if !key.details.revocation_signatures.is_empty() {
            return Err(format!("the key of {who} is revoked"));
        }
        let self_sigs = key.details.users.iter().flat_map(|u| &u.signatures);
        if expired(key.primary_key.created_at(), self_sigs, now) {
            return Err(format!("the key of {who} has expired"));
        }
        let verified = match subkey {
            Some(sub) => {
                if expired(sub.key.created_at(), sub.signatures.iter(), now) {
                    return Err(format!("the signing subkey of {who} has expired"));
                }
                sig.verify(&sub.key, data)
            }
            None => sig.verify(&key.primary_key, data),
        };
        return match verified {
            Ok(()) => Ok(who),
            Err(_) => Err(format!(
                "bad signature by {who}: it was not made for this content"
            )),
        };
    }
    let by = issuers
        .first()
        .or(key_ids.first())
        .cloned()
        .unwrap_or_default();
    Err(format!(
        "signed by OpenPGP key {by}, which --trusted-keys does not hold"
    ))
}

/// Whether the newest self-signature among `sigs` gives the key an
/// expiration time that has passed.
fn expired<'a>(
    created: pgp::types::Timestamp,
    sigs: impl Iterator<Item = &'a pgp::packet::Signature>,
    now: std::time::SystemTime,
) -> bool {
    let newest = sigs
        .filter_map(|s| s.created().map(|at| (std::time::SystemTime::from(at), s)))
        .max_by_key(|(at, _)| *at);
    match newest.and_then(|(_, s)| s.key_expiration_time()) {
        Some(d) if d.as_secs() > 0 => {
            std::time::SystemTime::from(created) + std::time::Duration::from(d) <= now
        }
        _ => false,
    }
}

/// The signature block at the end of a raw annotated tag object, and the
/// bytes before it (what the tagger signed). `None` when it has none.
pub fn split_tag_signature(raw: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let text = String::from_utf8_lossy(raw);
    let at = [SSH_ARMOR, PGP_ARMOR]
        .iter()
        .filter_map(|armor| {
            text.match_indices(armor)
                .map(|(i, _)| i)
                .find(|&i| i == 0 || text.as_bytes()[i - 1] == b'\n')
        })
        .min()?;
    Some((raw[at..].to_vec(), raw[..at].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_signers_lines_as_ssh_keygen_documents_them() {
        let key =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE+LKlW20POMJ0d3y6dx/13bvxKU32wS5b9OXvfr8nEN";
        let s = parse_allowed_signer(&format!("alice@example.com {key} laptop")).expect("plain");
        assert_eq!(s.principals, "alice@example.com");
        assert!(s.namespaces.is_none());
        let s = parse_allowed_signer(&format!(
            "\"a@x,b@x\" namespaces=\"git,file\",valid-before=20300101Z {key}"
        ))
        .expect("options");
        assert_eq!(s.principals, "a@x,b@x");
        assert_eq!(
            s.namespaces.as_deref(),
            Some(&["git".to_string(), "file".to_string()][..])
        );
        assert_eq!(
            s.valid_before.map(|t| t.to_string()).as_deref(),
            Some("2030-01-01 00:00:00")
        );
        assert!(parse_allowed_signer("alice@example.com").is_err());
        assert!(parse_allowed_signer(&format!("a@x cert-authority {key}")).is_err());
        assert!(parse_time("2030011").is_err());
        assert_eq!(
            parse_time("203001021530").expect("time").to_string(),
            "2030-01-02 15:30:00"
        );
    }

    #[test]
    fn a_tag_signature_is_the_armored_block_at_the_start_of_a_line() {
        let raw = b"object abc\ntype commit\ntag v1\n\nrelease\n-----BEGIN SSH SIGNATURE-----\nxyz\n-----END SSH SIGNATURE-----\n";
        let (sig, data) = split_tag_signature(raw).expect("signed");
        assert!(sig.starts_with(b"-----BEGIN SSH SIGNATURE-----"));
        assert!(data.ends_with(b"release\n"));
        assert!(
            split_tag_signature(b"object abc\n\nsays -----BEGIN SSH SIGNATURE----- inline")
                .is_none()
        );
    }

    #[test]
    fn nothing_signed_is_untrusted() {
        let err = verify(&[], &TrustConfig::default()).expect_err("unsigned");
        assert!(matches!(err, TrustError::Untrusted(m) if m.contains("not signed")));
    }
}
