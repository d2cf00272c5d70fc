//! A workflow's definition, as a tools file (`[[workflows]]`) or a submission gives it, and its
//! check against the tool catalog: every error names the step and field, and nothing is
//! written before the whole graph passes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::jobs::ToolVersion;
use crate::tools::{
    Catalog, InputFormat, InputKind, InputSpec, OutputKind, OutputSpec, Price, Tool,
};

/// The most steps one workflow may have.
pub const MAX_STEPS: usize = 1000;

/// The most items one mapped step runs over.
pub const MAX_MAP_ITEMS: usize = crate::tools::MAX_ITEMS;

/// The reserved name of a binding's source that is a workflow input: `inputs.<name>`.
pub const INPUTS: &str = "inputs";

/// A workflow as declared: its inputs, parameters and steps.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct Definition {
    /// Its name in the tools file; none for a workflow defined with its submission.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub inputs: Vec<WorkflowInput>,
    #[serde(default)]
    pub parameters: Vec<Parameter>,
    pub steps: Vec<StepDefinition>,
    /// Stop every step at the first failure, instead of only the steps that needed it.
    #[serde(default)]
    pub fail_fast: bool,
}

/// An input of the whole workflow, given at submission and bound to steps' inputs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowInput {
    pub name: String,
    pub kind: InputKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<InputFormat>,
    #[serde(default)]
    pub required: bool,
    /// Takes a list (an upload set): given by repeating its name, at most
    /// [`MAX_MAP_ITEMS`] items.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub list: bool,
    #[serde(default)]
    pub description: String,
}

/// A parameter: a value steps' settings refer to as `{ "$param": "<name>" }`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Parameter {
    pub name: String,
    /// Used when the submission gives none; without it the parameter is required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    #[serde(default)]
    pub description: String,
}

/// A step: a tool, its settings, and where each of its inputs comes from.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepDefinition {
    pub name: String,
    pub tool: String,
    /// The tool's settings; `{ "$param": "<name>" }` anywhere stands for a parameter's value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<Value>,
    /// Input name to source: `inputs.<workflow input>` or `<step>.<output>`.
    #[serde(default)]
    pub inputs: BTreeMap<String, String>,
    /// Steps to wait for besides those its inputs come from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
    /// Runs the step once per item of the list bound to this input (a list input of the
    /// workflow, a FILES output, or the outputs of a mapped step), each run taking one item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map: Option<String>,
}

/// Where a step's input comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "from", rename_all = "camelCase")]
pub enum Source {
    /// A workflow input.
    Input { name: String },
    /// A named output of an upstream step.
    Output { step: String, output: String },
}

impl Source {
    /// The source as definitions write it.
    pub fn spelled(&self) -> String {
        match self {
            Source::Input { name } => format!("{INPUTS}.{name}"),
            Source::Output { step, output } => format!("{step}.{output}"),
        }
    }
}

/// A checked step: what the workflow stores and runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    pub name: String,
    pub tool: String,
    /// With the parameters' values and the tool's defaults, valid for its schema.
    pub settings: Value,
    /// Input name to source, in input order.
    pub bindings: Vec<(String, Source)>,
    /// Every step it waits for, by name, sorted.
    pub depends_on: Vec<String>,
    /// The tool as it was when the workflow was checked: the step runs this version, checks
    /// its inputs against these and is priced by this price, whenever it starts.
    pub version: ToolVersion,
    pub input_specs: Vec<InputSpec>,
    pub outputs: Vec<OutputSpec>,
    pub price: Price,
    /// The input it maps over: it runs once per item of that input's list, and each of its
    /// outputs is a list, one per item in item order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map: Option<String>,
}

impl Step {
    /// Whether its output `output` is a list: every output of a mapped step, and FILES.
    pub fn output_is_list(&self, output: &str) -> bool {
        self.map.is_some()
            || self
                .outputs
                .iter()
                .any(|o| o.name == output && o.kind == OutputKind::Files)
    }
}

/// A checked workflow: its steps in definition order, each valid for its tool, with every
/// binding naming a compatible output of a step it depends on, and no cycle.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Checked {
    pub inputs: Vec<WorkflowInput>,
    pub steps: Vec<Step>,
    /// The parameters' values as used.
    pub parameters: Map<String, Value>,
    /// Each step's place in `steps`, by name (`indexed`).
    #[serde(skip)]
    positions: HashMap<String, usize>,
    /// The steps that wait for each step, by name (`indexed`).
    #[serde(skip)]
    dependents: HashMap<String, Vec<String>>,
}

impl Checked {
    /// With its steps indexed by name, for `step` to find them at once.
    pub fn indexed(mut self) -> Self {
        self.positions = self
            .steps
            .iter()
            .enumerate()
            .map(|(i, step)| (step.name.clone(), i))
            .collect();
        let mut dependents: HashMap<String, Vec<String>> = HashMap::new();
        for step in &self.steps {
            for upstream in &step.depends_on {
                dependents
                    .entry(upstream.clone())
                    .or_default()
                    .push(step.name.clone());
            }
        }
        self.dependents = dependents;
        self
    }

    /// The steps that wait for `name` directly.
    pub fn dependents(&self, name: &str) -> &[String] {
        self.dependents.get(name).map_or(&[], Vec::as_slice)
    }

    pub fn step(&self, name: &str) -> Option<&Step> {
        match self.positions.get(name) {
            Some(&i) => self.steps.get(i),
            None if self.positions.is_empty() => self.steps.iter().find(|step| step.name == name),
            None => None,
        }
    }

    /// The steps that wait for `name`, directly or through others: each edge followed once.
    pub fn downstream_of(&self, name: &str) -> BTreeSet<String> {
        let mut found = BTreeSet::new();
        let mut frontier = vec![name.to_owned()];
        while let Some(current) = frontier.pop() {
            let next: Vec<String> = if self.positions.is_empty() {
                self.steps
                    .iter()
                    .filter(|step| step.depends_on.contains(&current))
                    .map(|step| step.name.clone())
                    .collect()
            } else {
                self.dependents(&current).to_vec()
            };
            for step in next {
                if found.insert(step.clone()) {
                    frontier.push(step);
                }
            }
        }
        found
    }
}

fn step_field(step: &str, rest: &str) -> String {
    format!("steps.{step}.{rest}")
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Checks a tools file's workflow when the file loads: its graph and bindings, and its steps'
/// settings with the parameters' defaults (parameters without one are given at submission,
/// where the settings that use them are checked).
pub fn check_declared(catalog: &Catalog, definition: &Definition) -> Result<()> {
    if definition.parameters.iter().all(|p| p.default.is_some()) {
        return check(catalog, definition, None).map(|_| ());
    }
    let mut lenient = definition.clone();
    for step in &mut lenient.steps {
        if step.settings.as_ref().is_some_and(refers_to_parameters) {
            step.settings = None;
        }
    }
    for parameter in &mut lenient.parameters {
        parameter.default.get_or_insert(Value::Null);
    }
    match check(catalog, &lenient, None) {
        // A step whose settings were set aside may miss a required setting: given later.
        Err(Error::BadInput { field, .. }) if field.contains(".settings") => Ok(()),
        other => other.map(|_| ()),
    }
}

fn refers_to_parameters(value: &Value) -> bool {
    match value {
        Value::Object(map) => map.contains_key("$param") || map.values().any(refers_to_parameters),
        Value::Array(items) => items.iter().any(refers_to_parameters),
        _ => false,
    }
}

/// Checks `definition` with the submission's `parameters` against the tools of `catalog`.
/// BAD_USER_INPUT names the first offending field: `steps.<step>.<field>`, `inputs.<name>`,
/// `parameters.<name>`.
pub fn check(
    catalog: &Catalog,
    definition: &Definition,
    parameters: Option<&Value>,
) -> Result<Checked> {
    if definition.steps.is_empty() || definition.steps.len() > MAX_STEPS {
        return Err(Error::bad_input(
            "steps",
            format!(
                "a workflow has 1 to {MAX_STEPS} steps; this one has {}",
                definition.steps.len()
            ),
        ));
    }
    let mut inputs: HashMap<&str, &WorkflowInput> = HashMap::new();
    for input in &definition.inputs {
        let field = format!("definition.inputs.{}", input.name);
        if !valid_name(&input.name) {
            return Err(Error::bad_input(
                field,
                "a name is 1 to 64 letters, digits, `-` or `_`",
            ));
        }
        if inputs.insert(&input.name, input).is_some() {
            return Err(Error::bad_input(field, "is declared twice"));
        }
    }
    let parameters = check_parameters(definition, parameters)?;

    let mut tools: HashMap<&str, &Arc<Tool>> = HashMap::new();
    for step in &definition.steps {
        if !valid_name(&step.name) || step.name == INPUTS {
            return Err(Error::bad_input(
                step_field(&step.name, "name"),
                format!("a step's name is 1 to 64 letters, digits, `-` or `_`, and not `{INPUTS}`"),
            ));
        }
        let tool = catalog.require(&step_field(&step.name, "tool"), &step.tool)?;
        if tools.insert(&step.name, tool).is_some() {
            return Err(Error::bad_input(
                step_field(&step.name, "name"),
                "two steps have this name",
            ));
        }
    }

    let mapped: HashMap<&str, bool> = definition
        .steps
        .iter()
        .map(|step| (step.name.as_str(), step.map.is_some()))
        .collect();
    let mut steps = Vec::with_capacity(definition.steps.len());
    for step in &definition.steps {
        let tool = tools[step.name.as_str()];
        let settings = substitute(
            step.settings
                .clone()
                .unwrap_or_else(|| Value::Object(Map::new())),
            &parameters,
        )
        .map_err(|message| Error::bad_input(step_field(&step.name, "settings"), message))?;
        let settings = tool.check_settings(settings).map_err(|err| match err {
            Error::BadInput { field, message } => Error::BadInput {
                field: step_field(&step.name, &field),
                message,
            },
            other => other,
        })?;
        let mut depends_on = BTreeSet::new();
        let mut bindings = Vec::new();
        for (input, source) in &step.inputs {
            let field = step_field(&step.name, &format!("inputs.{input}"));
            let spec = tool.input(&field, input)?;
            let source = parse_source(source).ok_or_else(|| {
                Error::bad_input(
                    &field,
                    format!(
                        "`{source}` is not a source: write `{INPUTS}.<workflow input>` or `<step>.<output>`"
                    ),
                )
            })?;
            let list = match &source {
                Source::Input { name } => {
                    let given = inputs.get(name.as_str()).ok_or_else(|| {
                        let names: Vec<_> = inputs.keys().copied().collect();
                        Error::bad_input(
                            &field,
                            format!(
                                "the workflow has no input `{name}`; its inputs are: {}",
                                or_none(names)
                            ),
                        )
                    })?;
                    compatible(
                        &field,
                        spec.kind,
                        spec.format,
                        (given.kind, given.format),
                        &source,
                    )?;
                    given.list
                }
                Source::Output {
                    step: upstream,
                    output,
                } => {
                    if upstream == &step.name {
                        return Err(Error::bad_input(
                            &field,
                            "a step cannot take its own output",
                        ));
                    }
                    let upstream_tool = tools.get(upstream.as_str()).ok_or_else(|| {
                        Error::bad_input(&field, format!("there is no step `{upstream}`"))
                    })?;
                    let declared = upstream_tool.output(output).ok_or_else(|| {
                        let names: Vec<_> = upstream_tool
                            .outputs
                            .iter()
                            .map(|o| o.name.as_str())
                            .collect();
                        Error::bad_input(
                            &field,
                            format!(
                                "the step `{upstream}` ({}) has no output `{output}`; its outputs are: {}",
                                upstream_tool.name,
                                or_none(names)
                            ),
                        )
                    })?;
                    let kind = match declared.kind {
                        OutputKind::File | OutputKind::Files => InputKind::File,
                        OutputKind::Field => InputKind::Text,
                    };
                    compatible(
                        &field,
                        spec.kind,
                        spec.format,
                        (kind, declared.format),
                        &source,
                    )?;
                    depends_on.insert(upstream.clone());
                    mapped[upstream.as_str()] || declared.kind == OutputKind::Files
                }
            };
            let maps_over = step.map.as_deref() == Some(input.as_str());
            match (list, maps_over, spec.list) {
                (true, true, true) => {
                    return Err(Error::bad_input(
                        step_field(&step.name, "map"),
                        format!(
                            "`{}` takes a list already: bind `{}` to it without `map`",
                            tool.name,
                            source.spelled()
                        ),
                    ));
                }
                (false, true, _) => {
                    return Err(Error::bad_input(
                        step_field(&step.name, "map"),
                        format!(
                            "`{}` is one value, not a list: map over a list input of the workflow, a FILES output or the outputs of a mapped step",
                            source.spelled()
                        ),
                    ));
                }
                (true, false, false) => {
                    return Err(Error::bad_input(
                        &field,
                        format!(
                            "`{}` is a list, and `{}` takes one value: map the step over it (`map = \"{input}\"`) or bind it to an input that takes a list",
                            source.spelled(),
                            tool.name
                        ),
                    ));
                }
                _ => {}
            }
            bindings.push((input.clone(), source));
        }
        if let Some(map) = &step.map
            && !step.inputs.contains_key(map)
        {
            return Err(Error::bad_input(
                step_field(&step.name, "map"),
                format!("the step binds no input `{map}` to map over"),
            ));
        }
        for spec in tool.inputs.iter().filter(|spec| spec.required) {
            if !step.inputs.contains_key(&spec.name) {
                return Err(Error::bad_input(
                    step_field(&step.name, &format!("inputs.{}", spec.name)),
                    format!(
                        "is required by `{}`: bind it to a workflow input or an upstream output",
                        tool.name
                    ),
                ));
            }
        }
        for upstream in &step.after {
            let field = step_field(&step.name, "after");
            if upstream == &step.name {
                return Err(Error::bad_input(field, "a step cannot wait for itself"));
            }
            if !tools.contains_key(upstream.as_str()) {
                return Err(Error::bad_input(
                    field,
                    format!("there is no step `{upstream}`"),
                ));
            }
            depends_on.insert(upstream.clone());
        }
        steps.push(Step {
            name: step.name.clone(),
            tool: tool.name.clone(),
            settings,
            bindings,
            depends_on: depends_on.into_iter().collect(),
            version: ToolVersion::of(tool),
            input_specs: tool.inputs.clone(),
            outputs: tool.outputs.clone(),
            price: tool.price.clone(),
            map: step.map.clone(),
        });
    }
    if let Some(cycle) = find_cycle(&steps) {
        return Err(Error::bad_input(
            step_field(&cycle[0], "inputs"),
            format!(
                "the steps wait for each other in a cycle: {}",
                cycle.join(" -> ")
            ),
        ));
    }
    Ok(Checked {
        inputs: definition.inputs.clone(),
        steps,
        parameters,
        positions: HashMap::new(),
        dependents: HashMap::new(),
    }
    .indexed())
}

fn or_none(mut names: Vec<&str>) -> String {
    names.sort_unstable();
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

fn parse_source(source: &str) -> Option<Source> {
    let (head, tail) = source.split_once('.')?;
    if head.is_empty() || tail.is_empty() || tail.contains('.') {
        return None;
    }
    Some(if head == INPUTS {
        Source::Input {
            name: tail.to_owned(),
        }
    } else {
        Source::Output {
            step: head.to_owned(),
            output: tail.to_owned(),
        }
    })
}

/// Whether a value of `given` (kind, format) may feed an input of `kind` and `format`: files
/// feed file inputs, text feeds text inputs (and file inputs, as pasted content); an input of a
/// format takes only content declared of that format.
fn compatible(
    field: &str,
    kind: InputKind,
    format: Option<InputFormat>,
    given: (InputKind, Option<InputFormat>),
    source: &Source,
) -> Result<()> {
    let source = source.spelled();
    match (kind, given.0) {
        (InputKind::Text, InputKind::File) => {
            return Err(Error::bad_input(
                field,
                format!("takes text, and `{source}` is a file"),
            ));
        }
        (InputKind::File, InputKind::Text)
            if !matches!(source.split_once('.'), Some((INPUTS, _))) =>
        {
            return Err(Error::bad_input(
                field,
                format!("takes a file, and `{source}` is a field of a result"),
            ));
        }
        _ => {}
    }
    if let Some(format) = format
        && given.0 == InputKind::File
        && given.1 != Some(format)
    {
        return Err(Error::bad_input(
            field,
            format!(
                "takes {} content, and `{source}` is not declared {}",
                format_name(format),
                format_name(format)
            ),
        ));
    }
    Ok(())
}

fn format_name(format: InputFormat) -> &'static str {
    match format {
        InputFormat::Fasta => "FASTA",
    }
}

/// The parameters' values: the given ones (each declared) and the defaults of the others.
fn check_parameters(definition: &Definition, given: Option<&Value>) -> Result<Map<String, Value>> {
    let given = match given {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(map)) => map.clone(),
        Some(_) => {
            return Err(Error::bad_input(
                "parameters",
                "must be an object of parameter names to values",
            ));
        }
    };
    let mut declared = BTreeSet::new();
    for parameter in &definition.parameters {
        if !valid_name(&parameter.name) || !declared.insert(parameter.name.as_str()) {
            return Err(Error::bad_input(
                format!("definition.parameters.{}", parameter.name),
                "a parameter's name is 1 to 64 letters, digits, `-` or `_`, declared once",
            ));
        }
    }
    for name in given.keys() {
        if !declared.contains(name.as_str()) {
            return Err(Error::bad_input(
                format!("parameters.{name}"),
                format!(
                    "the workflow has no parameter `{name}`; its parameters are: {}",
                    or_none(declared.iter().copied().collect())
                ),
            ));
        }
    }
    let mut values = Map::new();
    for parameter in &definition.parameters {
        let value = match (given.get(&parameter.name), &parameter.default) {
            (Some(value), _) => value.clone(),
            (None, Some(default)) => default.clone(),
            (None, None) => {
                return Err(Error::bad_input(
                    format!("parameters.{}", parameter.name),
                    "is required",
                ));
            }
        };
        values.insert(parameter.name.clone(), value);
    }
    Ok(values)
}

/// `value` with every `{ "$param": "<name>" }` replaced by the parameter's value.
fn substitute(value: Value, parameters: &Map<String, Value>) -> Result<Value, String> {
    Ok(match value {
        Value::Object(map) if map.len() == 1 && map.contains_key("$param") => {
            let name = map["$param"].as_str().ok_or("`$param` names a parameter")?;
            parameters
                .get(name)
                .cloned()
                .ok_or_else(|| format!("refers to `{name}`, which is not a parameter"))?
        }
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(key, value)| Ok((key, substitute(value, parameters)?)))
                .collect::<Result<_, String>>()?,
        ),
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|item| substitute(item, parameters))
                .collect::<Result<_, String>>()?,
        ),
        other => other,
    })
}

/// A cycle among the steps' dependencies, as the names around it (first repeated last).
fn find_cycle(steps: &[Step]) -> Option<Vec<String>> {
    let index: HashMap<&str, usize> = steps
        .iter()
        .enumerate()
        .map(|(i, step)| (step.name.as_str(), i))
        .collect();
    // 0: not seen, 1: on the current path, 2: done.
    let mut mark = vec![0u8; steps.len()];
    let mut path: Vec<usize> = Vec::new();
    for start in 0..steps.len() {
        if mark[start] != 0 {
            continue;
        }
        // Iterative depth-first search: (step, next dependency to visit).
        let mut stack = vec![(start, 0usize)];
        mark[start] = 1;
        path.push(start);
        while let Some((at, next)) = stack.last_mut() {
            let at = *at;
            match steps[at].depends_on.get(*next) {
                Some(upstream) => {
                    *next += 1;
                    let upstream = index[upstream.as_str()];
                    match mark[upstream] {
                        0 => {
                            mark[upstream] = 1;
                            path.push(upstream);
                            stack.push((upstream, 0));
                        }
                        1 => {
                            let from = path.iter().position(|&i| i == upstream).unwrap_or(0);
                            let mut cycle: Vec<String> = path[from..]
                                .iter()
                                .map(|&i| steps[i].name.clone())
                                .collect();
                            cycle.push(steps[upstream].name.clone());
                            return Some(cycle);
                        }
                        _ => {}
                    }
                }
                None => {
                    mark[at] = 2;
                    path.pop();
                    stack.pop();
                }
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn definition(steps: Value) -> Definition {
        serde_json::from_value(json!({
            "inputs": [{ "name": "dna", "kind": "file", "format": "fasta", "required": true }],
            "parameters": [{ "name": "k", "default": 3 }],
            "steps": steps,
        }))
        .unwrap()
    }

    fn refused(steps: Value) -> (String, String) {
        match check(&Catalog::builtin(), &definition(steps), None) {
            Err(Error::BadInput { field, message }) => (field, message),
            other => panic!("expected BAD_USER_INPUT, got {other:?}"),
        }
    }

    #[test]
    fn a_diamond_is_checked_with_its_dependencies_and_parameters() {
        let checked = check(
            &Catalog::builtin(),
            &definition(json!([
                { "name": "translate", "tool": "translate-dna", "inputs": { "sequences": "inputs.dna" } },
                { "name": "stats", "tool": "sequence-stats", "inputs": { "sequences": "translate.proteins" } },
                { "name": "kmers", "tool": "kmer-count", "settings": { "k": { "$param": "k" } },
                  "inputs": { "sequences": "translate.proteins" } },
                { "name": "done", "tool": "noop", "after": ["stats", "kmers"] },
            ])),
            Some(&json!({ "k": 5 })),
        )
        .unwrap();
        assert_eq!(
            checked.step("kmers").unwrap().settings,
            json!({ "k": 5, "top": 20 })
        );
        assert_eq!(checked.step("done").unwrap().depends_on, ["kmers", "stats"]);
        assert_eq!(
            checked.downstream_of("translate"),
            ["done", "kmers", "stats"].map(String::from).into()
        );
    }

    #[test]
    fn bad_graphs_are_refused_naming_the_step_and_field() {
        let (field, message) = refused(json!([
            { "name": "a", "tool": "noop", "after": ["b"] },
            { "name": "b", "tool": "noop", "after": ["a"] },
        ]));
        assert_eq!(field, "steps.a.inputs");
        assert!(message.contains("a -> b -> a"), "{message}");
        let (field, message) = refused(json!([
            { "name": "t", "tool": "translate-dna", "inputs": { "sequences": "inputs.dna" } },
            { "name": "s", "tool": "sequence-stats", "inputs": { "sequences": "t.nothing" } },
        ]));
        assert_eq!(field, "steps.s.inputs.sequences");
        assert!(message.contains("its outputs are: proteins"), "{message}");
        // A table is no FASTA.
        let (field, message) = refused(json!([
            { "name": "k", "tool": "kmer-count", "inputs": { "sequences": "inputs.dna" } },
            { "name": "s", "tool": "sequence-stats", "inputs": { "sequences": "k.table" } },
        ]));
        assert_eq!(field, "steps.s.inputs.sequences");
        assert!(message.contains("FASTA"), "{message}");
        // A field feeds no file input.
        let (field, _) = refused(json!([
            { "name": "s", "tool": "sequence-stats", "inputs": { "sequences": "inputs.dna" } },
            { "name": "k", "tool": "kmer-count", "inputs": { "sequences": "s.count" } },
        ]));
        assert_eq!(field, "steps.k.inputs.sequences");
        let (field, _) = refused(json!([{ "name": "s", "tool": "sequence-stats" }]));
        assert_eq!(field, "steps.s.inputs.sequences");
        let (field, _) = refused(json!([
            { "name": "s", "tool": "kmer-count", "settings": { "k": 99 }, "inputs": { "sequences": "inputs.dna" } }
        ]));
        assert_eq!(field, "steps.s.settings.k");
        let (field, _) = refused(json!([
            { "name": "s", "tool": "kmer-count", "settings": { "k": { "$param": "nope" } },
              "inputs": { "sequences": "inputs.dna" } }
        ]));
        assert_eq!(field, "steps.s.settings");
        let (field, _) = refused(json!([{ "name": "inputs", "tool": "noop" }]));
        assert_eq!(field, "steps.inputs.name");
        let (field, _) = refused(json!([{ "name": "a", "tool": "nope" }]));
        assert_eq!(field, "steps.a.tool");
        let many: Vec<Value> = (0..=MAX_STEPS)
            .map(|i| json!({ "name": format!("s{i}"), "tool": "noop" }))
            .collect();
        assert_eq!(refused(Value::Array(many)).0, "steps");
    }

    #[test]
    fn parameters_are_declared_and_required() {
        let definition = definition(json!([{ "name": "a", "tool": "noop" }]));
        let catalog = Catalog::builtin();
        let field = |given: Value| match check(&catalog, &definition, Some(&given)) {
            Err(Error::BadInput { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        assert_eq!(field(json!({ "x": 1 })), "parameters.x");
        assert_eq!(field(json!([1])), "parameters");
    }
}
