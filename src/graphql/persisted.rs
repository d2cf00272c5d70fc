//! Persisted documents: a request may name its document by hash instead of sending it.
//!
//! - **Automatic persisted queries**, as Apollo Client and urql send them: a request carries
//!   `extensions.persistedQuery = {version: 1, sha256Hash}`. Without `query`, the server runs
//!   the document it knows by that hash, or answers `PERSISTED_QUERY_NOT_FOUND`, and the client
//!   sends the document again with its hash, which the server checks and remembers (in a
//!   bounded cache: a forgotten document is simply sent again). A query sent by GET with only
//!   its hash has a short, stable URL that a CDN can cache.
//! - **Trusted documents** (`--trusted-documents FILE`): a production frontend registers its
//!   operations at build time, and nothing else runs. A request names one of them by id
//!   (`extensions.persistedQuery.sha256Hash`, or `documentId`) or sends its exact text; any
//!   other document is refused with `DOCUMENT_NOT_TRUSTED`, and nothing is registered.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use serde_json::{Map, Value};
use sha2::{Digest as _, Sha256};

use crate::error::ErrorCode;

/// Documents remembered for automatic persisted queries; past it, the least used are forgotten.
const REMEMBERED: usize = 10_000;

/// The document a request runs, or why it has none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The request names a hash the server does not know: send the document with it.
    NotFound,
    /// The request breaks the protocol (a wrong version, a hash that is not the document's).
    Invalid(String),
    /// Only trusted documents run, and this is not one of them.
    NotTrusted,
    /// Neither a document nor a hash.
    Missing,
}

impl Refusal {
    pub fn code(&self) -> ErrorCode {
        match self {
            Refusal::NotFound => ErrorCode::PersistedQueryNotFound,
            Refusal::NotTrusted => ErrorCode::DocumentNotTrusted,
            Refusal::Invalid(_) | Refusal::Missing => ErrorCode::BadRequest,
        }
    }

    /// The message clients see; `PersistedQueryNotFound` is what Apollo's clients look for.
    pub fn message(&self) -> String {
        match self {
            Refusal::NotFound => "PersistedQueryNotFound".to_owned(),
            Refusal::Invalid(message) => message.clone(),
            Refusal::NotTrusted => "only the trusted documents this server was started with run \
                                    here: this document is not one of them"
                .to_owned(),
            Refusal::Missing => "the `query` parameter is missing".to_owned(),
        }
    }
}

/// What this server knows of persisted documents.
pub struct Persisted {
    /// Documents registered by automatic persisted queries, by SHA-256 hash in hex.
    remembered: quick_cache::sync::Cache<String, Arc<str>>,
    /// The trusted documents, when only they run: by id, and the hashes of their texts.
    trusted: Option<Trusted>,
}

struct Trusted {
    by_id: HashMap<String, Arc<str>>,
    texts: HashSet<String>,
}

impl Persisted {
    /// Automatic persisted queries; with `trusted`, only those documents run.
    pub fn new(trusted: Option<&Path>) -> anyhow::Result<Self> {
        let trusted = trusted.map(read_trusted).transpose()?;
        Ok(Persisted {
            remembered: quick_cache::sync::Cache::new(REMEMBERED),
            trusted,
        })
    }

    /// Whether only trusted documents run.
    pub fn strict(&self) -> bool {
        self.trusted.is_some()
    }

    /// The document a request runs: the `query` it sent, or the one its extensions name.
    pub fn resolve(
        &self,
        query: Option<String>,
        extensions: Option<&Map<String, Value>>,
    ) -> Result<String, Refusal> {
        let named = named(extensions)?;
        match &self.trusted {
            Some(trusted) => trusted.resolve(query, named),
            None => self.automatic(query, named),
        }
    }

    fn automatic(&self, query: Option<String>, named: Option<Named>) -> Result<String, Refusal> {
        match (query, named) {
            (Some(query), None) => Ok(query),
            (None, None) => Err(Refusal::Missing),
            (None, Some(Named::Id(_))) => Err(Refusal::Invalid(
                "`documentId` names only trusted documents, and this server runs any document: \
                 send the `query`"
                    .to_owned(),
            )),
            (Some(_), Some(Named::Id(_))) => Err(Refusal::Invalid(
                "send either a `query` or a `documentId`, not both".to_owned(),
            )),
            (None, Some(Named::Hash(hash))) => self
                .remembered
                .get(&hash)
                .map(|text| text.to_string())
                .ok_or(Refusal::NotFound),
            (Some(query), Some(Named::Hash(hash))) => {
                if sha256_hex(&query) != hash {
                    return Err(Refusal::Invalid(
                        "provided sha does not match query: `extensions.persistedQuery.sha256Hash` \
                         must be the SHA-256 of the `query` text, in hexadecimal"
                            .to_owned(),
                    ));
                }
                self.remembered.insert(hash, Arc::from(query.as_str()));
                Ok(query)
            }
        }
    }
}

impl Trusted {
    fn resolve(&self, query: Option<String>, named: Option<Named>) -> Result<String, Refusal> {
        let found = match (&query, named) {
            (_, Some(Named::Hash(id) | Named::Id(id))) => {
                self.by_id.get(&id).map(|t| t.to_string())
            }
            (Some(query), None) => self
                .texts
                .contains(&sha256_hex(query))
                .then(|| query.clone()),
            (None, None) => return Err(Refusal::Missing),
        };
        let text = found.ok_or(Refusal::NotTrusted)?;
        // A request that sends both must send the document its id names.
        match query {
            Some(query) if query != text => Err(Refusal::NotTrusted),
            _ => Ok(text),
        }
    }
}

/// How a request names a persisted document.
enum Named {
    /// `extensions.persistedQuery.sha256Hash`, lower-cased.
    Hash(String),
    /// `extensions.documentId` (a trusted document's id, as the GraphQL-over-HTTP persisted
    /// documents proposal sends it; `sha256:` prefixes are accepted).
    Id(String),
}

fn named(extensions: Option<&Map<String, Value>>) -> Result<Option<Named>, Refusal> {
    let Some(extensions) = extensions else {
        return Ok(None);
    };
    if let Some(id) = extensions.get("documentId") {
        let Some(id) = id.as_str() else {
            return Err(Refusal::Invalid("`documentId` must be a string".to_owned()));
        };
        let id = id.strip_prefix("sha256:").unwrap_or(id);
        return Ok(Some(Named::Id(id.to_ascii_lowercase())));
    }
    let Some(persisted) = extensions.get("persistedQuery") else {
        return Ok(None);
    };
    let invalid =
        |message: &str| Refusal::Invalid(format!("`extensions.persistedQuery` {message}"));
    let Some(persisted) = persisted.as_object() else {
        return Err(invalid("must be a map"));
    };
    if persisted.get("version").and_then(Value::as_i64) != Some(1) {
        return Err(invalid(
            "must have `version: 1`, the only version this server knows",
        ));
    }
    match persisted.get("sha256Hash").and_then(Value::as_str) {
        Some(hash) if hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Ok(Some(Named::Hash(hash.to_ascii_lowercase())))
        }
        _ => Err(invalid("needs `sha256Hash`, 64 hexadecimal digits")),
    }
}

fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Reads a trusted documents file: an Apollo persisted query manifest
/// (`{"format": "apollo-persisted-query-manifest", "operations": [{"id", "body", ...}]}`) or a
/// map of id to document, as GraphQL Code Generator's `persistedDocuments` writes it.
fn read_trusted(path: &Path) -> anyhow::Result<Trusted> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--trusted-documents: reading {}", path.display()))?;
    let json: Value = serde_json::from_str(&text)
        .with_context(|| format!("--trusted-documents: {} is not JSON", path.display()))?;
    let pairs: Vec<(String, String)> = match &json {
        Value::Object(object) if object.contains_key("operations") => object["operations"]
            .as_array()
            .context("--trusted-documents: `operations` must be a list")?
            .iter()
            .enumerate()
            .map(|(i, operation)| {
                let field = |name: &str| {
                    operation[name]
                        .as_str()
                        .map(str::to_owned)
                        .with_context(|| {
                            format!("--trusted-documents: operation {i} needs a string `{name}`")
                        })
                };
                Ok((field("id")?, field("body")?))
            })
            .collect::<anyhow::Result<_>>()?,
        Value::Object(object) => object
            .iter()
            .map(|(id, body)| {
                let body = body
                    .as_str()
                    .with_context(|| format!("--trusted-documents: `{id}` must name a string"))?;
                Ok((id.clone(), body.to_owned()))
            })
            .collect::<anyhow::Result<_>>()?,
        _ => bail!("--trusted-documents: expected a manifest or a map of id to document"),
    };
    if pairs.is_empty() {
        bail!("--trusted-documents: {} holds no documents", path.display());
    }
    let mut by_id = HashMap::new();
    let mut texts = HashSet::new();
    for (id, body) in pairs {
        async_graphql::parser::parse_query(&body)
            .with_context(|| format!("--trusted-documents: document `{id}` does not parse"))?;
        let id = id
            .strip_prefix("sha256:")
            .unwrap_or(&id)
            .to_ascii_lowercase();
        texts.insert(sha256_hex(&body));
        by_id.insert(id, Arc::from(body.as_str()));
    }
    Ok(Trusted { by_id, texts })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn extensions(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    fn hashed(query: &str) -> Map<String, Value> {
        extensions(json!({"persistedQuery": {"version": 1, "sha256Hash": sha256_hex(query)}}))
    }

    #[test]
    fn a_hash_runs_once_its_document_was_sent_with_it() {
        let persisted = Persisted::new(None).unwrap();
        let query = "{ viewer { id } }";
        let ext = hashed(query);
        assert_eq!(persisted.resolve(None, Some(&ext)), Err(Refusal::NotFound));
        assert_eq!(
            persisted.resolve(Some(query.to_owned()), Some(&ext)),
            Ok(query.to_owned())
        );
        assert_eq!(persisted.resolve(None, Some(&ext)), Ok(query.to_owned()));
        // Plain requests are untouched.
        assert_eq!(
            persisted.resolve(Some("{ a }".to_owned()), None),
            Ok("{ a }".to_owned())
        );
        assert_eq!(persisted.resolve(None, None), Err(Refusal::Missing));
    }

    #[test]
    fn a_hash_that_is_not_the_documents_is_refused_and_not_remembered() {
        let persisted = Persisted::new(None).unwrap();
        let ext = hashed("{ viewer { id } }");
        let refused = persisted.resolve(Some("{ viewer { email } }".to_owned()), Some(&ext));
        assert!(matches!(refused, Err(Refusal::Invalid(_))), "{refused:?}");
        assert_eq!(persisted.resolve(None, Some(&ext)), Err(Refusal::NotFound));
        for bad in [
            json!({"persistedQuery": {"version": 2, "sha256Hash": sha256_hex("{a}")}}),
            json!({"persistedQuery": {"version": 1, "sha256Hash": "abc"}}),
            json!({"persistedQuery": {"version": 1}}),
            json!({"persistedQuery": "x"}),
            json!({"documentId": 3}),
        ] {
            let refused = persisted.resolve(None, Some(&extensions(bad.clone())));
            assert!(
                matches!(refused, Err(Refusal::Invalid(_))),
                "{bad}: {refused:?}"
            );
        }
    }

    #[test]
    fn trusted_documents_run_by_id_or_by_text_and_nothing_else_runs() {
        let dir = tempfile::tempdir().unwrap();
        let query = "query Me { viewer { id } }";
        let id = sha256_hex(query);
        let manifest = dir.path().join("manifest.json");
        std::fs::write(
            &manifest,
            json!({
                "format": "apollo-persisted-query-manifest",
                "version": 1,
                "operations": [{"id": id, "name": "Me", "type": "query", "body": query}],
            })
            .to_string(),
        )
        .unwrap();
        let map = dir.path().join("documents.json");
        std::fs::write(&map, json!({ format!("sha256:{id}"): query }).to_string()).unwrap();
        for file in [&manifest, &map] {
            let persisted = Persisted::new(Some(file)).unwrap();
            assert!(persisted.strict());
            assert_eq!(
                persisted.resolve(None, Some(&hashed(query))),
                Ok(query.into())
            );
            let by_id = extensions(json!({ "documentId": format!("sha256:{id}") }));
            assert_eq!(persisted.resolve(None, Some(&by_id)), Ok(query.into()));
            assert_eq!(
                persisted.resolve(Some(query.into()), None),
                Ok(query.into())
            );
            // Another document, even sent with its own hash, neither runs nor registers.
            let other = "{ viewer { email } }";
            for _ in 0..2 {
                assert_eq!(
                    persisted.resolve(Some(other.into()), Some(&hashed(other))),
                    Err(Refusal::NotTrusted)
                );
            }
            assert_eq!(
                persisted.resolve(Some(other.into()), None),
                Err(Refusal::NotTrusted)
            );
            // A trusted id with another text is refused too.
            assert_eq!(
                persisted.resolve(Some(other.into()), Some(&hashed(query))),
                Err(Refusal::NotTrusted)
            );
        }
    }

    #[test]
    fn a_trusted_documents_file_is_checked_at_start() {
        let dir = tempfile::tempdir().unwrap();
        for (name, content) in [
            ("missing.json", None),
            ("not-json.json", Some("{")),
            ("empty.json", Some("{}")),
            ("list.json", Some("[]")),
            ("bad-doc.json", Some(r#"{"a": "query {"}"#)),
            ("bad-op.json", Some(r#"{"operations": [{"id": "a"}]}"#)),
        ] {
            let path = dir.path().join(name);
            if let Some(content) = content {
                std::fs::write(&path, content).unwrap();
            }
            let err = Persisted::new(Some(&path)).err().expect(name);
            assert!(
                err.to_string().contains("--trusted-documents"),
                "{name}: {err:#}"
            );
        }
    }
}
