//! Rule ids: a public contract (CI configs and users grep for them), with
//! their severity. Below both the per-file analysis and the cross-file
//! rules, which name them.

use super::report::Severity;

// Errors.
pub const JSON_SYNTAX: &str = "json-syntax";
pub const SCHEMA: &str = "schema";
pub const DUPLICATE_API_ID: &str = "duplicate-api-id";
pub const DUPLICATE_LISTEN_PATH: &str = "duplicate-listen-path";
pub const INVALID_LISTEN_PATH: &str = "invalid-listen-path";
pub const INVALID_TARGET_URL: &str = "invalid-target-url";
pub const OAS_COMPANION_MISSING: &str = "oas-companion-missing";
pub const BARE_OAS: &str = "bare-oas";
pub const POLICY_UNKNOWN_API: &str = "policy-unknown-api";
pub const DUPLICATE_POLICY_ID: &str = "duplicate-policy-id";
pub const MISSING_MIDDLEWARE_FILE: &str = "missing-middleware-file";
pub const SYMLINK: &str = "symlink";
pub const SUBMODULE: &str = "submodule";
pub const FILE_TOO_LARGE: &str = "file-too-large";
pub const TOO_DEEP: &str = "too-deep";
pub const DUPLICATE_KEY: &str = "duplicate-key";
pub const NOT_UTF8: &str = "not-utf8";
pub const INVALID_PATH: &str = "invalid-path";
/// A commit over the total size or file count a sync will read
/// (`source::MAX_COMMIT_BYTES`, `MAX_COMMIT_FILES`).
pub const COMMIT_TOO_LARGE: &str = "commit-too-large";
pub const TYK_INDEX: &str = "tyk-index";
pub const WRAPPED_POLICIES_MAP: &str = "wrapped-policies-map";
pub const POLICIES_MAP_IS_A_POLICY: &str = "policies-map-is-a-policy";
pub const NESTED_ACCESS_RIGHTS: &str = "nested-access-rights";
pub const API_UNKNOWN_POLICY: &str = "api-unknown-policy";
/// Checked by `empty.rs`, outside `check`: they depend on the flags and on
/// what the gateway serves, not only on the files.
pub const EMPTY_CONFIG_ROOT: &str = "empty-config-root";
pub const NO_APIS: &str = "no-apis";
/// Checked by `vars.rs` before `check`: a `${VAR}` without a value.
pub const UNSET_VARIABLE: &str = "unset-variable";
pub const SHADOWED_LISTEN_PATH: &str = "shadowed-listen-path";
pub const MISSING_ERROR_TEMPLATE: &str = "missing-error-template";
pub const NEEDS_NEWER_GATEWAY: &str = "needs-newer-gateway";

// Warnings.
pub const INACTIVE_API: &str = "inactive-api";
pub const ORG_ID_MISMATCH: &str = "org-id-mismatch";
pub const IGNORED_FILE: &str = "ignored-file";
pub const DOTFILE: &str = "dotfile";
pub const UNKNOWN_FIELD: &str = "unknown-field";
pub const POLICIES_MAP_IN_POLICY_DIR: &str = "policies-map-in-policy-dir";
pub const ABSOLUTE_MIDDLEWARE_PATH: &str = "absolute-middleware-path";
pub const UNUSABLE_TARGET_URL: &str = "unusable-target-url";
pub const TRAILING_CONTENT: &str = "trailing-content";
pub const MISPLACED_FIELD: &str = "misplaced-field";
/// A Tyk OAS document kept alone uses a setting the classic half derived
/// from it (`oas.rs`) does not carry.
pub const OAS_NOT_DERIVED: &str = "oas-not-derived";

/// Every rule id with its severity, for docs and tests.
pub const ALL: [(&str, Severity); 41] = [
    (JSON_SYNTAX, Severity::Error),
    (SCHEMA, Severity::Error),
    (DUPLICATE_API_ID, Severity::Error),
    (DUPLICATE_LISTEN_PATH, Severity::Error),
    (INVALID_LISTEN_PATH, Severity::Error),
    (INVALID_TARGET_URL, Severity::Error),
    (OAS_COMPANION_MISSING, Severity::Error),
    (BARE_OAS, Severity::Error),
    (POLICY_UNKNOWN_API, Severity::Error),
    (DUPLICATE_POLICY_ID, Severity::Error),
    (MISSING_MIDDLEWARE_FILE, Severity::Error),
    (SYMLINK, Severity::Error),
    (SUBMODULE, Severity::Error),
    (FILE_TOO_LARGE, Severity::Error),
    (TOO_DEEP, Severity::Error),
    (DUPLICATE_KEY, Severity::Error),
    (NOT_UTF8, Severity::Error),
    (INVALID_PATH, Severity::Error),
    (COMMIT_TOO_LARGE, Severity::Error),
    (TYK_INDEX, Severity::Error),
    (WRAPPED_POLICIES_MAP, Severity::Error),
    (POLICIES_MAP_IS_A_POLICY, Severity::Error),
    (NESTED_ACCESS_RIGHTS, Severity::Error),
    (API_UNKNOWN_POLICY, Severity::Error),
    (EMPTY_CONFIG_ROOT, Severity::Error),
    (NO_APIS, Severity::Error),
    (UNSET_VARIABLE, Severity::Error),
    (SHADOWED_LISTEN_PATH, Severity::Error),
    (MISSING_ERROR_TEMPLATE, Severity::Error),
    (NEEDS_NEWER_GATEWAY, Severity::Error),
    (INACTIVE_API, Severity::Warning),
    (ORG_ID_MISMATCH, Severity::Warning),
    (IGNORED_FILE, Severity::Warning),
    (DOTFILE, Severity::Warning),
    (UNKNOWN_FIELD, Severity::Warning),
    (POLICIES_MAP_IN_POLICY_DIR, Severity::Warning),
    (ABSOLUTE_MIDDLEWARE_PATH, Severity::Warning),
    (UNUSABLE_TARGET_URL, Severity::Warning),
    (TRAILING_CONTENT, Severity::Warning),
    (MISPLACED_FIELD, Severity::Warning),
    (OAS_NOT_DERIVED, Severity::Warning),
];
