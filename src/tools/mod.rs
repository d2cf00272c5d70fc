//! Tools: what users can run, read from a TOML file or the built-in set, and how a submission's
//! inputs and settings are checked against a tool before anything is written.

pub mod pricing;

use entity::ids::FileId;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::executors::ExecutorSpec;
pub use pricing::{Estimate, EstimateLine, Price};

const DEFAULT_TOOLS: &str = include_str!("default_tools.toml");

/// The kind of value an input takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InputKind {
    /// Short text, given inline.
    Text,
    /// A file's content: pasted inline, uploaded, or fetched from a URL.
    File,
}

/// The format of an input's content, where pricing or validation depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InputFormat {
    Fasta,
}

/// An input a tool takes.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    pub name: String,
    pub kind: InputKind,
    #[serde(default)]
    pub required: bool,
    /// Largest accepted size, in bytes.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
    pub format: Option<InputFormat>,
    /// Takes a list of values (files of an upload set, or every output a workflow gathers),
    /// given by repeating the input's name; each item is kept as `<name>/<index>` (see
    /// [`item_key`]) and a program finds them in the folder `inputs/<name>/`.
    #[serde(default)]
    pub list: bool,
    /// The most items a list input takes.
    #[serde(default = "default_max_items")]
    pub max_items: usize,
    #[serde(default)]
    pub description: String,
}

/// The most items a list input takes unless its tool says fewer, and the most items a workflow
/// step maps over.
pub const MAX_ITEMS: usize = 1000;

fn default_max_items() -> usize {
    MAX_ITEMS
}

/// The name under which item `index` of the list input `input` is stored: `<input>/<index>`,
/// the index zero-padded so that names sort in item order.
pub fn item_key(input: &str, index: usize) -> String {
    format!("{input}/{index:04}")
}

impl OutputSpec {
    /// Whether a stored file of this name is (one of) this output.
    pub fn matches(&self, file_name: &str) -> bool {
        let Some(path) = &self.path else {
            return false;
        };
        match (self.kind, path.split_once('*')) {
            (OutputKind::File, _) => file_name == path,
            (OutputKind::Files, Some((prefix, suffix))) => {
                file_name.len() >= prefix.len() + suffix.len()
                    && file_name.starts_with(prefix)
                    && file_name.ends_with(suffix)
            }
            _ => false,
        }
    }
}

/// The input a stored input's name belongs to: `name` itself, or the list input of an item
/// (`<input>/<index>`).
pub fn input_of_key(key: &str) -> &str {
    key.split_once('/').map_or(key, |(input, _)| input)
}

impl InputSpec {
    /// BAD_USER_INPUT unless this input takes files.
    pub fn require_file(&self, field: &str) -> Result<()> {
        match self.kind {
            InputKind::File => Ok(()),
            InputKind::Text => Err(Error::bad_input(
                field,
                "takes text: give its `text`, not a file or URL",
            )),
        }
    }

    /// BAD_USER_INPUT when `bytes` is over this input's limit.
    pub fn check_size(&self, field: &str, bytes: u64) -> Result<()> {
        if bytes > self.max_bytes {
            return Err(Error::bad_input(
                field,
                format!("is {bytes} bytes; the limit is {} bytes", self.max_bytes),
            ));
        }
        Ok(())
    }
}

/// The kind of a named output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputKind {
    /// A file the run stores, by its name (`path`).
    File,
    /// A field of the run's result, by its key (`field`), given to text inputs.
    Field,
    /// Every file the run stores whose name matches a pattern (`path`, with one `*`:
    /// `chunk-*.fasta`), in name order: a list, which a workflow step maps over or gathers.
    Files,
}

/// A named output of a tool's runs: what a workflow step's input can be bound to.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    pub name: String,
    pub kind: OutputKind,
    /// FILE: the name of the file the run stores (`proteins.fasta`); FILES: the pattern its
    /// files' names match, with one `*` (`chunk-*.fasta`).
    pub path: Option<String>,
    /// FIELD: the key of the run's result.
    pub field: Option<String>,
    /// FILE: the format of its content, checked against the inputs it feeds.
    pub format: Option<InputFormat>,
    #[serde(default)]
    pub description: String,
}

fn default_max_bytes() -> u64 {
    10 * 1024 * 1024
}

/// A tool, as declared in the tools file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tool {
    pub name: String,
    pub title: String,
    #[serde(default)]
    pub description: String,
    pub version: String,
    #[serde(default)]
    pub inputs: Vec<InputSpec>,
    /// What its runs produce, by name, for workflow steps to bind to.
    #[serde(default)]
    pub outputs: Vec<OutputSpec>,
    /// A JSON Schema for the settings object.
    #[serde(default = "open_schema", deserialize_with = "toml_to_json")]
    pub settings_schema: Value,
    pub price: Price,
    /// The execution limit.
    pub timeout_seconds: u64,
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Most runs of this tool at once, across every worker; none means no limit of its own.
    #[serde(default)]
    pub max_running: Option<u32>,
    /// The executor as the file declares it, checked into `executor` when the file loads.
    #[serde(rename = "executor")]
    declared_executor: Option<toml::Value>,
    /// How the tool runs; a tool without one is offered, but its runs fail.
    #[serde(skip)]
    pub executor: Option<ExecutorSpec>,
    #[serde(skip)]
    validator: Option<Arc<jsonschema::Validator>>,
}

fn open_schema() -> Value {
    serde_json::json!({ "type": "object" })
}

fn default_max_attempts() -> u32 {
    3
}

fn toml_to_json<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Value, D::Error> {
    let value = toml::Value::deserialize(deserializer)?;
    serde_json::to_value(value).map_err(serde::de::Error::custom)
}

/// A submitted input value, before checks.
#[derive(Debug, Clone)]
pub enum InputValue {
    /// Pasted text.
    Text(String),
    /// An uploaded file, not yet in storage.
    Upload(crate::files::Upload),
    /// Another job's stored file, to copy (a retry or a duplicate), with its FASTA residues.
    Copy(entity::file::Model, Option<u64>),
    /// A file in storage for this submission: an upload or a copy, already checked.
    File(crate::files::NewFile),
    /// A URL, fetched after submission.
    Url(String),
}

/// An input as stored on a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredInput {
    pub kind: StoredInputKind,
    pub text: Option<String>,
    pub bytes: u64,
    /// FILE and fetched URL inputs: the stored file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_id: Option<FileId>,
    /// URL inputs: where the content comes from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// FASTA files: their residues, for pricing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub residues: Option<u64>,
    /// Stored files: the SHA-256 of their content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Stored files kept outside the job's own folder: where (a workflow step's input is the
    /// output of its upstream step, or the workflow's own input, not a copy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl StoredInput {
    /// Text given inline, stored as it is.
    pub fn text(text: String) -> Self {
        StoredInput {
            kind: StoredInputKind::Text,
            bytes: text.len() as u64,
            text: Some(text),
            file_id: None,
            url: None,
            residues: None,
            sha256: None,
            key: None,
        }
    }

    /// A stored file: its row `file_id` once the job has one, and its storage `key` when it is
    /// kept outside the job's own folder.
    pub fn file(
        file: &crate::files::NewFile,
        file_id: Option<FileId>,
        key: Option<String>,
    ) -> Self {
        StoredInput {
            kind: StoredInputKind::File,
            text: None,
            bytes: file.size,
            file_id,
            url: None,
            residues: file.residues,
            sha256: Some(file.sha256.clone()),
            key,
        }
    }

    /// Where a stored file input's content is kept, for a job of `workspace_id` and `job_id`.
    pub fn storage_key(
        &self,
        workspace_id: entity::ids::WorkspaceId,
        job_id: entity::ids::JobId,
    ) -> Option<String> {
        match (&self.key, self.file_id) {
            (Some(key), _) => Some(key.clone()),
            (None, Some(file_id)) => Some(crate::files::input_key(workspace_id, job_id, file_id)),
            (None, None) => None,
        }
    }

    /// Whether two inputs hold the same content, wherever it is stored: a duplicate's copy of
    /// a file is the same input as the original.
    pub fn same_content(&self, other: &StoredInput) -> bool {
        match (&self.sha256, &other.sha256) {
            (Some(a), Some(b)) => a == b,
            _ => self == other,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StoredInputKind {
    Text,
    File,
    Url,
}

/// Checked inputs and settings, ready to store on a job.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    pub inputs: BTreeMap<String, StoredInput>,
    /// The settings with the schema's top-level defaults filled in: what the run will use.
    pub settings: Value,
}

impl Prepared {
    /// The inputs as the JSON stored on the job.
    pub fn inputs_json(&self) -> Value {
        serde_json::to_value(&self.inputs).expect("inputs serialize")
    }

    /// Reads the inputs stored on a job.
    pub fn from_stored(inputs: &Value, settings: &Value) -> Self {
        Prepared {
            inputs: serde_json::from_value(inputs.clone()).unwrap_or_default(),
            settings: settings.clone(),
        }
    }
}

impl Tool {
    /// Whether the tool's runs wait for remote workers (the worker API) rather than the worker
    /// pools of jobgraph processes.
    pub fn runs_remotely(&self) -> bool {
        matches!(self.executor, Some(ExecutorSpec::Remote))
    }

    fn compile(&mut self) -> anyhow::Result<()> {
        let validator = jsonschema::validator_for(&self.settings_schema)
            .map_err(|err| anyhow::anyhow!("{err}"))
            .with_context(|| {
                format!(
                    "tool `{}`: settings_schema is not a valid JSON Schema",
                    self.name
                )
            })?;
        self.validator = Some(Arc::new(validator));
        let mut seen = std::collections::HashSet::new();
        for input in &self.inputs {
            if !seen.insert(&input.name) {
                bail!(
                    "tool `{}`: input `{}` is declared twice",
                    self.name,
                    input.name
                );
            }
            if input.name.is_empty() || input.name.contains('/') {
                bail!(
                    "tool `{}`: input `{}`: a name is not empty and has no `/`",
                    self.name,
                    input.name
                );
            }
            if input.list && (input.max_items == 0 || input.max_items > MAX_ITEMS) {
                bail!(
                    "tool `{}`: input `{}`: max_items is 1 to {MAX_ITEMS}",
                    self.name,
                    input.name
                );
            }
        }
        let mut outputs = std::collections::HashSet::new();
        for output in &self.outputs {
            if !outputs.insert(&output.name) {
                bail!(
                    "tool `{}`: output `{}` is declared twice",
                    self.name,
                    output.name
                );
            }
            match (output.kind, &output.path, &output.field) {
                (OutputKind::File, Some(path), None) if !path.is_empty() => {}
                (OutputKind::Files, Some(path), None) if path.matches('*').count() == 1 => {}
                (OutputKind::Field, None, Some(field)) if !field.is_empty() => {}
                (OutputKind::Files, ..) => bail!(
                    "tool `{}`: output `{}` is files: give its `path`, a file name pattern with one `*` (`chunk-*.fasta`), and no `field`",
                    self.name,
                    output.name
                ),
                (OutputKind::File, ..) => bail!(
                    "tool `{}`: output `{}` is a file: give its `path` (the file's name), and no `field`",
                    self.name,
                    output.name
                ),
                (OutputKind::Field, ..) => bail!(
                    "tool `{}`: output `{}` is a field: give its `field` (the result's key), and no `path`",
                    self.name,
                    output.name
                ),
            }
            if output.kind == OutputKind::Field && output.format.is_some() {
                bail!(
                    "tool `{}`: output `{}` is a field, which has no format",
                    self.name,
                    output.name
                );
            }
        }
        if let Some(declared) = self.declared_executor.take() {
            self.executor = Some(ExecutorSpec::declared(declared, &self.name)?);
        }
        if self.max_running == Some(0) {
            bail!("tool `{}`: max_running must be positive", self.name);
        }
        if self.timeout_seconds == 0 || self.max_attempts == 0 {
            bail!(
                "tool `{}`: timeout_seconds and max_attempts must be positive",
                self.name
            );
        }
        // Both are GraphQL `Int`s of the tool.
        if self.timeout_seconds > i32::MAX as u64 || self.max_attempts > i32::MAX as u32 {
            bail!(
                "tool `{}`: timeout_seconds and max_attempts must be at most {}",
                self.name,
                i32::MAX
            );
        }
        self.price
            .check()
            .with_context(|| format!("tool `{}`", self.name))?;
        Ok(())
    }

    /// Checks a submission's inputs and settings; BAD_USER_INPUT names the offending field.
    pub fn prepare(
        &self,
        inputs: Vec<(String, InputValue)>,
        settings: Option<Value>,
    ) -> Result<Prepared> {
        let mut stored = BTreeMap::new();
        let mut items: HashMap<String, usize> = HashMap::new();
        for (name, value) in inputs {
            let field = format!("inputs.{name}");
            let spec = self.input(&field, &name)?;
            // A list input's items, in the order given.
            let name = if spec.list {
                let count = items.entry(name.clone()).or_default();
                if *count == spec.max_items {
                    return Err(Error::bad_input(
                        field,
                        format!("takes at most {} items", spec.max_items),
                    ));
                }
                *count += 1;
                item_key(&name, *count - 1)
            } else {
                name
            };
            if stored.contains_key(&name) {
                return Err(Error::bad_input(field, "given twice"));
            }
            let text = match value {
                InputValue::Text(text) => text,
                InputValue::File(file) => {
                    spec.require_file(&field)?;
                    spec.check_size(&field, file.size)?;
                    stored.insert(name, StoredInput::file(&file, Some(file.id), None));
                    continue;
                }
                InputValue::Url(url) => {
                    spec.require_file(&field)?;
                    let url = crate::files::fetch::check_url(&url)
                        .map_err(|message| Error::bad_input(&field, message))?;
                    stored.insert(
                        name,
                        StoredInput {
                            kind: StoredInputKind::Url,
                            text: None,
                            bytes: 0,
                            file_id: None,
                            url: Some(url.to_string()),
                            residues: None,
                            sha256: None,
                            key: None,
                        },
                    );
                    continue;
                }
                InputValue::Upload(_) | InputValue::Copy(..) => {
                    return Err(Error::Internal(anyhow::anyhow!(
                        "the input `{name}` reached the checks before it was stored"
                    )));
                }
            };
            let bytes = text.len() as u64;
            spec.check_size(&field, bytes)?;
            if spec.format == Some(InputFormat::Fasta) {
                pricing::check_fasta(&text).map_err(|message| Error::bad_input(&field, message))?;
            }
            stored.insert(name, StoredInput::text(text));
        }
        for spec in self.inputs.iter().filter(|spec| spec.required) {
            if !stored.contains_key(&spec.name) && !items.contains_key(&spec.name) {
                return Err(Error::bad_input(
                    format!("inputs.{}", spec.name),
                    "is required",
                ));
            }
        }
        let settings =
            self.check_settings(settings.unwrap_or_else(|| Value::Object(Map::new())))?;
        Ok(Prepared {
            inputs: stored,
            settings,
        })
    }

    /// The declared output `name`.
    pub fn output(&self, name: &str) -> Option<&OutputSpec> {
        self.outputs.iter().find(|spec| spec.name == name)
    }

    /// The declared input `name`, or BAD_USER_INPUT on `field` listing the inputs.
    pub fn input(&self, field: &str, name: &str) -> Result<&InputSpec> {
        self.inputs
            .iter()
            .find(|spec| spec.name == name)
            .ok_or_else(|| {
                let known: Vec<_> = self.inputs.iter().map(|s| s.name.as_str()).collect();
                Error::bad_input(
                    field,
                    format!(
                        "`{}` takes no input `{name}`; its inputs are: {}",
                        self.name,
                        known.join(", ")
                    ),
                )
            })
    }

    /// Fills top-level defaults and validates the settings against the tool's schema.
    pub fn check_settings(&self, settings: Value) -> Result<Value> {
        let mut settings = settings;
        if let (Value::Object(map), Some(Value::Object(properties))) =
            (&mut settings, self.settings_schema.get("properties"))
        {
            for (key, schema) in properties {
                if let Some(default) = schema.get("default") {
                    map.entry(key.clone()).or_insert_with(|| default.clone());
                }
            }
        }
        let validator = self
            .validator
            .as_ref()
            .expect("tools are compiled when loaded");
        if let Some(error) = validator.iter_errors(&settings).next() {
            let path = error.instance_path().to_string();
            let field = if path.is_empty() {
                "settings".to_owned()
            } else {
                format!("settings{}", path.replace('/', "."))
            };
            return Err(Error::bad_input(field, error.to_string()));
        }
        Ok(settings)
    }

    /// The price of a checked submission, with its breakdown; BAD_USER_INPUT names the field
    /// that takes it above `Credits::MAX`.
    pub fn estimate(&self, prepared: &Prepared) -> Result<Estimate> {
        self.price.estimate(&self.inputs, prepared)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ToolsFile {
    tools: Vec<Tool>,
    #[serde(default)]
    workflows: Vec<crate::workflows::Definition>,
}

/// Every tool on offer, by name.
#[derive(Debug, Clone)]
pub struct Catalog {
    tools: Vec<Arc<Tool>>,
    by_name: HashMap<String, Arc<Tool>>,
    /// The workflows of the tools file, checked against its tools when it loads.
    workflows: Vec<crate::workflows::Definition>,
}

impl Catalog {
    /// The built-in tools.
    pub fn builtin() -> Self {
        Self::parse(DEFAULT_TOOLS).expect("the built-in tools are valid")
    }

    /// The tools of a file, or the built-in ones without a file.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        match path {
            None => Ok(Self::builtin()),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading the tools file {}", path.display()))?;
                Self::parse(&text).with_context(|| format!("in the tools file {}", path.display()))
            }
        }
    }

    /// Parses and checks a tools file.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let file: ToolsFile = toml::from_str(text)?;
        let mut by_name = HashMap::new();
        let mut tools = Vec::new();
        for mut tool in file.tools {
            tool.compile()?;
            let tool = Arc::new(tool);
            if by_name.insert(tool.name.clone(), tool.clone()).is_some() {
                bail!("tool `{}` is declared twice", tool.name);
            }
            tools.push(tool);
        }
        let mut catalog = Catalog {
            tools,
            by_name,
            workflows: Vec::new(),
        };
        let mut names = std::collections::HashSet::new();
        for workflow in &file.workflows {
            let Some(name) = workflow.name.clone() else {
                bail!("a workflow of the tools file has no `name`");
            };
            if !names.insert(name.clone()) {
                bail!("workflow `{name}` is declared twice");
            }
            crate::workflows::definition::check_declared(&catalog, workflow)
                .map_err(|err| anyhow::anyhow!("workflow `{name}`: {err}"))?;
        }
        catalog.workflows = file.workflows;
        Ok(catalog)
    }

    /// The workflows of the tools file.
    pub fn workflows(&self) -> &[crate::workflows::Definition] {
        &self.workflows
    }

    /// The tools file's workflow `name`, or BAD_USER_INPUT on `field`.
    pub fn require_workflow(
        &self,
        field: &str,
        name: &str,
    ) -> Result<&crate::workflows::Definition> {
        self.workflows
            .iter()
            .find(|w| w.name.as_deref() == Some(name))
            .ok_or_else(|| {
                let names: Vec<_> = self
                    .workflows
                    .iter()
                    .filter_map(|w| w.name.as_deref())
                    .collect();
                Error::bad_input(
                    field,
                    format!(
                        "no workflow `{name}`; the workflows are: {}",
                        if names.is_empty() {
                            "none".to_owned()
                        } else {
                            names.join(", ")
                        }
                    ),
                )
            })
    }

    pub fn all(&self) -> &[Arc<Tool>] {
        &self.tools
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Tool>> {
        self.by_name.get(name)
    }

    /// The named tool, or BAD_USER_INPUT on `field`.
    pub fn require(&self, field: &str, name: &str) -> Result<&Arc<Tool>> {
        self.get(name).ok_or_else(|| {
            let names: Vec<_> = self.tools.iter().map(|t| t.name.as_str()).collect();
            Error::bad_input(
                field,
                format!("no tool `{name}`; the tools are: {}", names.join(", ")),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_builtin_tools_load() {
        let catalog = Catalog::builtin();
        let names: Vec<_> = catalog.all().iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "sequence-stats",
                "kmer-count",
                "translate-dna",
                "split-fasta",
                "concat-fasta",
                "sleep",
                "noop"
            ]
        );
    }

    #[test]
    fn a_list_input_keeps_its_items_in_order_within_its_limit() {
        let catalog = Catalog::builtin();
        let concat = catalog.get("concat-fasta").unwrap();
        let item = |text: &str| ("sequences".to_owned(), InputValue::Text(text.to_owned()));
        let prepared = concat
            .prepare(vec![item(">a\nMA\n"), item(">b\nMK\n")], None)
            .unwrap();
        let keys: Vec<_> = prepared.inputs.keys().cloned().collect();
        assert_eq!(keys, ["sequences/0000", "sequences/0001"]);
        assert_eq!(input_of_key(&keys[1]), "sequences");
        let too_many = (0..=MAX_ITEMS).map(|_| item(">a\nMA\n")).collect();
        assert!(matches!(
            concat.prepare(too_many, None),
            Err(Error::BadInput { field, .. }) if field == "inputs.sequences"
        ));
        // A single-valued input is still given once.
        let stats = catalog.get("sequence-stats").unwrap();
        assert!(
            stats
                .prepare(vec![item(">a\nA\n"), item(">b\nA\n")], None)
                .is_err()
        );
    }

    #[test]
    fn a_files_output_matches_its_pattern() {
        let catalog = Catalog::builtin();
        let chunks = catalog
            .get("split-fasta")
            .unwrap()
            .output("chunks")
            .unwrap();
        assert!(chunks.matches("chunk-0001.fasta"));
        assert!(!chunks.matches("chunk-0001.txt"));
        assert!(!chunks.matches("other.fasta"));
        let bad = DEFAULT_TOOLS.replace("path = \"chunk-*.fasta\"", "path = \"chunks/\"");
        let err = format!("{:#}", Catalog::parse(&bad).unwrap_err());
        assert!(err.contains("one `*`"), "{err}");
    }

    #[test]
    fn settings_get_defaults_and_are_validated_against_the_schema() {
        let catalog = Catalog::builtin();
        let kmer = catalog.get("kmer-count").unwrap();
        let fasta = ">a\nACGT\n".to_owned();
        let ok = kmer
            .prepare(
                vec![("sequences".into(), InputValue::Text(fasta.clone()))],
                Some(json!({"k": 3})),
            )
            .unwrap();
        assert_eq!(ok.settings, json!({"k": 3, "top": 20}));
        let err = kmer
            .prepare(
                vec![("sequences".into(), InputValue::Text(fasta.clone()))],
                Some(json!({"k": 40})),
            )
            .unwrap_err();
        assert!(
            matches!(err, Error::BadInput { ref field, .. } if field == "settings.k"),
            "{err}"
        );
        let err = kmer
            .prepare(
                vec![("sequences".into(), InputValue::Text(fasta))],
                Some(json!({"bogus": 1})),
            )
            .unwrap_err();
        assert!(
            matches!(err, Error::BadInput { ref field, .. } if field == "settings"),
            "{err}"
        );
    }

    #[test]
    fn inputs_are_checked_by_name_requirement_size_and_format() {
        let catalog = Catalog::builtin();
        let stats = catalog.get("sequence-stats").unwrap();
        let field_of = |inputs: Vec<(String, InputValue)>| match stats.prepare(inputs, None) {
            Err(Error::BadInput { field, .. }) => field,
            other => panic!("expected BAD_USER_INPUT, got {other:?}"),
        };
        assert_eq!(field_of(vec![]), "inputs.sequences");
        assert_eq!(
            field_of(vec![("nope".into(), InputValue::Text("x".into()))]),
            "inputs.nope"
        );
        assert_eq!(
            field_of(vec![(
                "sequences".into(),
                InputValue::Text("not fasta".into())
            )]),
            "inputs.sequences"
        );
        let huge = format!(">a\n{}\n", "A".repeat(11 * 1024 * 1024));
        assert_eq!(
            field_of(vec![("sequences".into(), InputValue::Text(huge))]),
            "inputs.sequences"
        );
    }

    /// A tool `t` with `executor`, as a tools file declares it.
    fn tool_with(executor: &str) -> anyhow::Result<Catalog> {
        Catalog::parse(&format!(
            "[[tools]]\nname = \"t\"\ntitle = \"T\"\nversion = \"1\"\n\
             timeout_seconds = 5\nprice = {{ base = 1 }}\nexecutor = {executor}\n"
        ))
    }

    #[test]
    fn executors_are_checked_when_the_tools_file_loads() {
        let spec = |executor: &str| {
            tool_with(executor)
                .unwrap()
                .get("t")
                .unwrap()
                .executor
                .clone()
        };
        assert!(matches!(
            spec(r#"{ kind = "builtin", function = "kmer_count" }"#),
            Some(ExecutorSpec::Builtin(
                crate::executors::builtin::Function::Fasta(
                    crate::executors::builtin::Analysis::KmerCount
                )
            ))
        ));
        assert!(matches!(
            spec(r#"{ kind = "command", program = "sh", args = ["-c", "true"] }"#),
            Some(ExecutorSpec::Command(ref command))
                if command.program == "sh" && command.result_file == "result.json"
        ));
        assert!(matches!(
            spec(r#"{ kind = "remote" }"#),
            Some(ExecutorSpec::Remote)
        ));
        let refused = |executor: &str| format!("{:#}", tool_with(executor).unwrap_err());
        for (executor, reason) in [
            (
                r#"{ kind = "builtin", function = "flaky" }"#,
                "no built-in function `flaky`",
            ),
            (r#"{ kind = "builtin" }"#, "no built-in function `t`"),
            (r#"{ kind = "command" }"#, "missing field `program`"),
            (
                r#"{ kind = "command", program = "" }"#,
                "`program` is empty",
            ),
            (
                r#"{ kind = "command", program = "sh", args = [1] }"#,
                "invalid type",
            ),
            (
                r#"{ kind = "command", program = "sh", retryable = [75] }"#,
                "unknown field `retryable`",
            ),
            (
                r#"{ kind = "remote", program = "sh" }"#,
                "unknown field `program`",
            ),
            (r#"{ kind = "docker" }"#, "unknown variant `docker`"),
        ] {
            let err = refused(executor);
            assert!(err.starts_with("tool `t`: "), "{executor}: {err}");
            assert!(err.contains(reason), "{executor}: {err}");
        }
    }

    #[test]
    fn a_builtin_tool_without_a_function_runs_the_function_of_its_name() {
        let catalog = Catalog::parse(
            "[[tools]]\nname = \"noop\"\ntitle = \"N\"\nversion = \"1\"\n\
             timeout_seconds = 5\nprice = { base = 0 }\nexecutor = { kind = \"builtin\" }\n",
        )
        .unwrap();
        assert!(matches!(
            catalog.get("noop").unwrap().executor,
            Some(ExecutorSpec::Builtin(
                crate::executors::builtin::Function::Noop
            ))
        ));
    }

    #[test]
    fn a_bad_tools_file_is_refused_with_the_reason() {
        let err = Catalog::parse("[[tools]]\nname = \"x\"\n").unwrap_err();
        assert!(format!("{err:#}").contains("missing field"), "{err:#}");
        let dup = DEFAULT_TOOLS.to_owned()
            + "\n"
            + &DEFAULT_TOOLS[DEFAULT_TOOLS.find("[[tools]]").unwrap()..];
        assert!(format!("{:#}", Catalog::parse(&dup).unwrap_err()).contains("declared twice"));
    }
}
