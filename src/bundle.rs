//! Config repo layout → `Bundle`: which files are API definitions, policies,
//! middleware, templates; also tyk-sync `.tyk.json` indexes.
//! (Contract fixed; implementation owned by the validation work.)

use std::borrow::Cow;
use std::collections::BTreeSet;

/// One file that goes into the revision's `apps/` folder.
#[derive(Debug, Clone)]
pub struct ApiFile {
    /// File name inside `apps/` (unique in the bundle), e.g. `petstore.json`.
    pub name: String,
    /// Where it came from, relative to the config root.
    pub source: String,
    pub bytes: Vec<u8>,
    /// The `api_id` the gateway will load it under; `None` for OAS/MCP
    /// companion documents (`*-oas.json`, `*-mcp.json`), which it does not
    /// load as APIs.
    pub api_id: Option<String>,
}

/// One policy, as one JSON object whose `id` field equals `id`.
#[derive(Debug, Clone)]
pub struct PolicyEntry {
    pub id: String,
    /// Where it came from, relative to the config root.
    pub source: String,
    pub bytes: Vec<u8>,
}

/// A file copied byte for byte (middleware, templates, tyk.conf).
#[derive(Debug, Clone)]
pub struct PlainFile {
    /// Relative to the config root, and to the revision directory.
    pub path: String,
    pub bytes: Vec<u8>,
}

/// One file of a revision, relative to the revision directory.
#[derive(Debug, Clone)]
pub struct OutFile<'a> {
    pub path: String,
    pub bytes: Cow<'a, [u8]>,
}

#[derive(Debug, Clone, Default)]
pub struct Bundle {
    pub apps: Vec<ApiFile>,
    pub policies: Vec<PolicyEntry>,
    pub middleware: Vec<PlainFile>,
    pub templates: Vec<PlainFile>,
    pub tyk_conf: Option<PlainFile>,
}

impl Bundle {
    /// The api ids the gateway must report after loading this bundle.
    pub fn api_ids(&self) -> BTreeSet<String> {
        self.apps.iter().filter_map(|a| a.api_id.clone()).collect()
    }

    /// The policy ids the gateway must report after loading this bundle.
    pub fn policy_ids(&self) -> BTreeSet<String> {
        self.policies.iter().map(|p| p.id.clone()).collect()
    }
}
