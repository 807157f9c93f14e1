//! The gateway secret: where it comes from (a file re-read on every use, or
//! `TYK_GITOPS_GATEWAY_SECRET`) and a value that is never printed. Shared by
//! `sync`/`run`, `plan` and `export`.

use std::fmt;
use std::path::{Path, PathBuf};

/// The secret itself, when no file is given.
pub const GATEWAY_SECRET_ENV: &str = "TYK_GITOPS_GATEWAY_SECRET";

#[derive(Debug, thiserror::Error)]
#[error("cannot read the gateway secret from {path} (--gateway-secret-file): {source}")]
pub struct SecretFileError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// A secret value; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Where the gateway secret comes from.
#[derive(Debug, Clone)]
pub enum SecretSource {
    File(PathBuf),
    Value(Secret),
}

impl SecretSource {
    /// `--gateway-secret-file` when given, else a non-empty
    /// `TYK_GITOPS_GATEWAY_SECRET` (`env`, passed in so tests need not set
    /// the process environment); `None` when neither is there.
    pub fn choose(file: Option<&Path>, env: Option<String>) -> Option<SecretSource> {
        match (file, env) {
            (Some(file), _) => Some(SecretSource::File(file.to_path_buf())),
            (None, Some(value)) if !value.is_empty() => {
                Some(SecretSource::Value(Secret::new(value)))
            }
            _ => None,
        }
    }

    /// Where the secret comes from, for messages (never the value).
    pub fn describe(&self) -> String {
        match self {
            SecretSource::File(path) => format!("--gateway-secret-file {}", path.display()),
            SecretSource::Value(_) => GATEWAY_SECRET_ENV.to_string(),
        }
    }

    /// The secret now (a file is re-read every time; trailing newline dropped).
    pub fn read(&self) -> Result<Secret, SecretFileError> {
        match self {
            SecretSource::Value(s) => Ok(s.clone()),
            SecretSource::File(path) => std::fs::read_to_string(path)
                .map(|s| Secret(s.trim_end_matches(['\n', '\r']).to_string()))
                .map_err(|source| SecretFileError {
                    path: path.clone(),
                    source,
                }),
        }
    }
}
