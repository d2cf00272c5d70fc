//! Documents this server has parsed, kept by their text, with the operations of each that
//! passed validation.
//!
//! async-graphql validates every request in full, even one whose document it has seen: for a
//! history page the rules cost about as much as reading its rows. Of the validation rules, only
//! one looks at the variables' values (that each argument's value, with the variables put in,
//! is of the argument's type); the others read the document alone and the operation chosen in
//! it. So an operation that passed them once needs only its variables checked again, besides
//! the limits on complexity and depth, which depend on the variables and always run:
//! [`Document::validated`] checks each value against its variable's declared type (validation
//! has already checked that the declared type fits every place the variable is used), as
//! async-graphql checks an argument's value. It answers `true` only where it is sure; where it
//! is not (a value of a type it does not know, a null where the document gives a default), the
//! request is validated in full, which then gives async-graphql's own error.

use std::sync::{Mutex, OnceLock};

use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::registry::{MetaType, MetaTypeName, Registry};
use async_graphql::{Value, Variables};

/// A parsed document, and the operations of it that passed validation in full.
pub struct Document {
    pub parsed: ExecutableDocument,
    /// The names requests gave the operations that passed (`None`: the only operation).
    passed: Mutex<Vec<Option<String>>>,
    /// Whether no selection set of the document selects a response key twice
    /// ([`keys_unique`]), worked out once an operation of it passed validation.
    unique_keys: OnceLock<bool>,
}

impl Document {
    pub fn new(parsed: ExecutableDocument) -> Self {
        Document {
            parsed,
            passed: Mutex::new(Vec::new()),
            unique_keys: OnceLock::new(),
        }
    }

    /// Whether the document, validated, selects no response key twice in any selection set,
    /// so that no two values of one key are ever merged: its objects may then be written as
    /// JSON as they are resolved (`inline::WrittenInPlace`). False until an operation passed.
    pub fn keys_unique(&self) -> bool {
        self.unique_keys.get().copied().unwrap_or(false)
    }

    /// Whether a request of this document naming `operation` needs only the checks that depend
    /// on its variables: the operation passed validation before, and `variables` hold values
    /// of the types it declares.
    pub fn validated(
        &self,
        registry: &Registry,
        operation: Option<&str>,
        variables: &Variables,
    ) -> bool {
        let passed = self
            .passed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .any(|name| name.as_deref() == operation);
        passed && admissible(registry, &self.parsed, operation, variables)
    }

    /// Records that a request naming `operation` passed validation in full.
    pub fn passed(&self, operation: Option<&str>) {
        let mut passed = self
            .passed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if !passed.iter().any(|name| name.as_deref() == operation) {
            passed.push(operation.map(str::to_owned));
        }
        drop(passed);
        self.unique_keys.get_or_init(|| keys_unique(&self.parsed));
    }
}

/// Selections [`keys_unique`] looks at, at most: fragments spread in fragments can make a
/// small valid document select very many fields, and a document past this is taken as one
/// that may repeat a key.
const SELECTIONS_LOOKED_AT: usize = 10_000;

/// Whether no selection set of `document` (each with the fields of the fragments it spreads,
/// whatever their type condition) has a response key twice.
fn keys_unique(document: &ExecutableDocument) -> bool {
    let mut budget = SELECTIONS_LOOKED_AT;
    let operations = document
        .operations
        .iter()
        .map(|(_, op)| &op.node.selection_set);
    let fragments = document.fragments.values().map(|f| &f.node.selection_set);
    operations
        .chain(fragments)
        .all(|set| set_unique(document, &set.node, &mut budget))
}

/// Whether `set` and every set below it select each response key once.
fn set_unique(document: &ExecutableDocument, set: &SelectionSet, budget: &mut usize) -> bool {
    let mut keys = Vec::new();
    let mut below = Vec::new();
    if !gather(document, set, &mut keys, &mut below, budget, 0) {
        return false;
    }
    keys.sort_unstable();
    keys.windows(2).all(|pair| pair[0] != pair[1])
        && below
            .into_iter()
            .all(|set| set_unique(document, set, budget))
}

/// The response keys `set` selects, through its fragments, and the selection sets of its
/// fields. False past the budget, or fragments nested deeper than any valid document has them
/// (a cycle, which validation refuses).
fn gather<'a>(
    document: &'a ExecutableDocument,
    set: &'a SelectionSet,
    keys: &mut Vec<&'a str>,
    below: &mut Vec<&'a SelectionSet>,
    budget: &mut usize,
    depth: usize,
) -> bool {
    if depth > 32 {
        return false;
    }
    for selection in &set.items {
        let Some(left) = budget.checked_sub(1) else {
            return false;
        };
        *budget = left;
        let fragment = match &selection.node {
            Selection::Field(field) => {
                keys.push(field.node.response_key().node.as_str());
                if !field.node.selection_set.node.items.is_empty() {
                    below.push(&field.node.selection_set.node);
                }
                continue;
            }
            Selection::FragmentSpread(spread) => {
                match document.fragments.get(&spread.node.fragment_name.node) {
                    Some(fragment) => &fragment.node.selection_set.node,
                    None => return false,
                }
            }
            Selection::InlineFragment(fragment) => &fragment.node.selection_set.node,
        };
        if !gather(document, fragment, keys, below, budget, depth + 1) {
            return false;
        }
    }
    true
}

/// Whether the values of `variables` are of the types the chosen operation of `document`
/// declares for them (the operation named `operation`, or its only one).
fn admissible(
    registry: &Registry,
    document: &ExecutableDocument,
    operation: Option<&str>,
    variables: &Variables,
) -> bool {
    let Some(operation) = super::guard::operation(document, operation) else {
        return false;
    };
    operation
        .node
        .variable_definitions
        .iter()
        .all(|definition| {
            let definition = &definition.node;
            match variables.get(&definition.name.node) {
                // An absent value is not checked by validation either: the default stands in.
                None => true,
                // A null where the document gives a default may stand where the type allows
                // no null: full validation decides.
                Some(Value::Null) if definition.default_value.is_some() => false,
                Some(value) => valid(registry, &definition.var_type.node.to_string(), value),
            }
        })
}

/// Whether `value` is of the type `ty` (in the document's notation), as async-graphql's
/// validation decides for an argument: a single value stands for a list of it, an input object
/// needs its required fields and no others.
fn valid(registry: &Registry, ty: &str, value: &Value) -> bool {
    match MetaTypeName::create(ty) {
        MetaTypeName::NonNull(ty) => !matches!(value, Value::Null) && valid(registry, ty, value),
        MetaTypeName::List(item) => match value {
            Value::List(items) => items.iter().all(|value| valid(registry, item, value)),
            Value::Null => true,
            value => valid(registry, item, value),
        },
        MetaTypeName::Named(_) if matches!(value, Value::Null) => true,
        MetaTypeName::Named(name) => match registry.types.get(name) {
            Some(MetaType::Scalar { is_valid, .. }) => {
                is_valid.as_ref().is_none_or(|is_valid| is_valid(value))
            }
            Some(MetaType::Enum { enum_values, .. }) => match value {
                Value::Enum(name) => enum_values.contains_key(name.as_str()),
                Value::String(name) => enum_values.contains_key(name.as_str()),
                _ => false,
            },
            Some(MetaType::InputObject {
                input_fields,
                oneof,
                ..
            }) => match value {
                Value::Object(values) => {
                    if *oneof
                        && (values.len() != 1 || values.values().any(|v| matches!(v, Value::Null)))
                    {
                        return false;
                    }
                    values
                        .keys()
                        .all(|key| input_fields.contains_key(key.as_str()))
                        && input_fields.values().all(|field| {
                            match values.get(field.name.as_str()) {
                                Some(value) => valid(registry, &field.ty, value),
                                None => {
                                    !MetaTypeName::create(&field.ty).is_non_null()
                                        || field.default_value.is_some()
                                }
                            }
                        })
                }
                _ => false,
            },
            // An output type, or a name the schema does not have: validation says which.
            _ => false,
        },
    }
}
