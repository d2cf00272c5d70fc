//! The input boundary: what every GraphQL request must pass before its document is parsed
//! and anything runs, whatever transport brought it (HTTP POST, GET, multipart, websocket).
//!
//! - A document nests brackets at most `MAX_NESTING` levels deep. The parser and every walk
//!   after it recurse on nested values (a list in a list in an argument), so a few kilobytes
//!   of `[[[[...` would otherwise overflow a worker thread's stack and abort the process. JSON
//!   (variables, extensions, websocket messages, multipart `operations`) is held to the same
//!   depth by serde_json's recursion limit of 128.
//! - No text holds a NUL character: PostgreSQL cannot store one in text or JSON, SQLite can,
//!   so it is refused here once for both, naming where it was found.
//! - A file of a multipart request lands only where the operation expects an `Upload`: the
//!   request's map could otherwise put a file's placeholder into any variable, a name say.
//!   A placeholder must name a file the request holds (the `Upload` scalar would index past
//!   them and panic), and a document may not write one.

use std::collections::HashMap;
use std::sync::LazyLock;

use async_graphql::parser::types::{
    BaseType, Directive, DocumentOperations, ExecutableDocument, OperationDefinition, Selection,
    SelectionSet, Type, TypeKind, TypeSystemDefinition,
};
use async_graphql::{Name, Positioned, Request, ServerError, Variables};
use async_graphql_value::{ConstValue, Value};

use crate::error::ErrorCode;

/// The deepest bracket nesting (`(`, `[`, `{` together) a document may have: far beyond what
/// the query depth limit lets a selection use, as deep as serde_json lets JSON nest.
pub const MAX_NESTING: usize = 128;

/// The text async-graphql writes into a variable a multipart request maps a file to.
const FILE_PLACEHOLDER: &str = "#__graphql_file__:";

/// Admits a request: checks its document (unless `cached`, a document that passed before)
/// and its variables, and leaves the document parsed in the request. The error carries its
/// `extensions.code`.
pub fn admit(request: &mut Request, cached: Option<ExecutableDocument>) -> Result<(), ServerError> {
    let document = match cached {
        Some(document) => document,
        None => document(&request.query)?,
    };
    if let Some((name, path)) = request
        .variables
        .iter()
        .find_map(|(name, value)| text_in_const(value, has_nul).map(|(path, _)| (name, path)))
    {
        return Err(nul_refused(&joined("variables", name, path)));
    }
    uploads_in_place(&document, request)?;
    request.set_parsed_query(document);
    Ok(())
}

/// Parses a document after checking its nesting, and checks the text of its values.
fn document(query: &str) -> Result<ExecutableDocument, ServerError> {
    if nesting_exceeds(query, MAX_NESTING) {
        return Err(coded(
            ServerError::new(
                format!("the document nests brackets more than {MAX_NESTING} levels deep"),
                None,
            ),
            ErrorCode::GraphqlParseFailed,
        ));
    }
    let document = async_graphql::parser::parse_query(query)
        .map_err(|err| coded(err.into(), ErrorCode::GraphqlParseFailed))?;
    // A placeholder written in the document would stand for a file no map placed.
    match text_in_document(&document) {
        Some((field, text)) if has_nul(&text) => Err(nul_refused(&field)),
        Some((field, _)) => Err(upload_refused(&field)),
        None => Ok(document),
    }
}

/// Whether `query` nests `(`, `[` and `{` more than `limit` deep, outside strings, block
/// strings and comments. It reads the text once, without parsing: what it cannot make sense
/// of, the parser refuses next.
fn nesting_exceeds(query: &str, limit: usize) -> bool {
    let bytes = query.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'#' => {
                while i < bytes.len() && !matches!(bytes[i], b'\n' | b'\r') {
                    i += 1;
                }
            }
            b'"' if bytes[i..].starts_with(b"\"\"\"") => {
                i += 3;
                while i < bytes.len() {
                    if bytes[i..].starts_with(b"\\\"\"\"") {
                        i += 4;
                    } else if bytes[i..].starts_with(b"\"\"\"") {
                        i += 2;
                        break;
                    } else {
                        i += 1;
                    }
                }
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && !matches!(bytes[i], b'"' | b'\n' | b'\r') {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'(' | b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    false
}

/// Sets `extensions.code` on an error.
pub(crate) fn coded(mut error: ServerError, code: ErrorCode) -> ServerError {
    error
        .extensions
        .get_or_insert_with(Default::default)
        .set("code", code.as_str());
    error
}

/// A BAD_USER_INPUT error naming the input `field`.
fn bad_input(field: &str, message: String) -> ServerError {
    let mut error = coded(ServerError::new(message, None), ErrorCode::BadUserInput);
    if let Some(extensions) = error.extensions.as_mut() {
        extensions.set("field", field);
    }
    error
}

fn has_nul(text: &str) -> bool {
    text.contains('\0')
}

/// Text a document may not write: a NUL, or what stands for an uploaded file.
fn refused_in_document(text: &str) -> bool {
    has_nul(text) || text.starts_with(FILE_PLACEHOLDER)
}

fn upload_refused(field: &str) -> ServerError {
    bad_input(
        field,
        format!(
            "{field}: `{FILE_PLACEHOLDER}` stands for an uploaded file; a file may be given \
             only by a multipart request, mapped to a variable or input field of type `Upload`"
        ),
    )
}

fn nul_refused(field: &str) -> ServerError {
    bad_input(
        field,
        format!("{field}: text may not contain the NUL character (U+0000)"),
    )
}

/// `head.name.path...`, the path given innermost first.
fn joined(head: &str, name: &str, mut path: Vec<String>) -> String {
    path.reverse();
    std::iter::once(head)
        .chain(std::iter::once(name))
        .chain(path.iter().map(String::as_str))
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(".")
}

/// A text `refused` in a value (or its keys), with where it is, innermost segment first.
fn text_in_const(value: &ConstValue, refused: fn(&str) -> bool) -> Option<(Vec<String>, &str)> {
    match value {
        ConstValue::String(text) => refused(text).then_some((Vec::new(), text.as_str())),
        ConstValue::List(items) => items.iter().enumerate().find_map(|(index, item)| {
            text_in_const(item, refused).map(|(path, text)| (within(path, index.to_string()), text))
        }),
        ConstValue::Object(fields) => fields.iter().find_map(|(key, item)| {
            if refused(key) {
                return Some((vec![key.replace('\0', "\\u0000")], key.as_str()));
            }
            text_in_const(item, refused).map(|(path, text)| (within(path, key.to_string()), text))
        }),
        _ => None,
    }
}

/// The text a document may not write in a value, with where it is, innermost segment first.
fn text_in_value(value: &Value) -> Option<(Vec<String>, &str)> {
    match value {
        Value::String(text) => refused_in_document(text).then_some((Vec::new(), text.as_str())),
        Value::List(items) => items.iter().enumerate().find_map(|(index, item)| {
            text_in_value(item).map(|(path, text)| (within(path, index.to_string()), text))
        }),
        Value::Object(fields) => fields.iter().find_map(|(key, item)| {
            text_in_value(item).map(|(path, text)| (within(path, key.to_string()), text))
        }),
        _ => None,
    }
}

fn within(mut path: Vec<String>, segment: String) -> Vec<String> {
    path.push(segment);
    path
}

/// Text a value written in the document may not hold, and where: `field.argument.path`,
/// `@directive.argument.path` or `$variable.path` (a default value).
fn text_in_document(document: &ExecutableDocument) -> Option<(String, String)> {
    let operations = document.operations.iter().map(|(_, operation)| {
        let node = &operation.node;
        node.variable_definitions
            .iter()
            .find_map(|definition| {
                let name = &definition.node.name.node;
                let default = definition.node.default_value.as_ref()?;
                let (path, text) = text_in_const(&default.node, refused_in_document)?;
                Some((joined("", &format!("${name}"), path), text.to_owned()))
            })
            .or_else(|| {
                node.variable_definitions
                    .iter()
                    .find_map(|definition| text_in_directives(&definition.node.directives))
            })
            .or_else(|| text_in_directives(&node.directives))
            .or_else(|| text_in_selections(&node.selection_set.node))
    });
    let fragments = document.fragments.values().map(|fragment| {
        text_in_directives(&fragment.node.directives)
            .or_else(|| text_in_selections(&fragment.node.selection_set.node))
    });
    operations.chain(fragments).find_map(|found| found)
}

fn text_in_arguments(
    owner: &str,
    arguments: &[(Positioned<Name>, Positioned<Value>)],
) -> Option<(String, String)> {
    arguments.iter().find_map(|(name, value)| {
        text_in_value(&value.node)
            .map(|(path, text)| (joined(owner, &name.node, path), text.to_owned()))
    })
}

fn text_in_directives(directives: &[Positioned<Directive>]) -> Option<(String, String)> {
    directives.iter().find_map(|directive| {
        let owner = format!("@{}", directive.node.name.node);
        text_in_arguments(&owner, &directive.node.arguments)
    })
}

/// Recurses as deep as the selections nest, which `MAX_NESTING` bounds.
fn text_in_selections(selections: &SelectionSet) -> Option<(String, String)> {
    selections.items.iter().find_map(|item| match &item.node {
        Selection::Field(field) => {
            let field = &field.node;
            text_in_arguments(&field.name.node, &field.arguments)
                .or_else(|| text_in_directives(&field.directives))
                .or_else(|| text_in_selections(&field.selection_set.node))
        }
        Selection::FragmentSpread(spread) => text_in_directives(&spread.node.directives),
        Selection::InlineFragment(fragment) => text_in_directives(&fragment.node.directives)
            .or_else(|| text_in_selections(&fragment.node.selection_set.node)),
    })
}

/// The fields of each input object of the schema, with their types.
type InputTypes = HashMap<String, HashMap<String, Type>>;

/// Read once from the schema's SDL, which is the same for the life of the process.
static INPUT_TYPES: LazyLock<InputTypes> = LazyLock::new(|| input_types(&super::sdl()));

fn input_types(sdl: &str) -> InputTypes {
    let document = async_graphql::parser::parse_schema(sdl).expect("the schema's own SDL parses");
    document
        .definitions
        .into_iter()
        .filter_map(|definition| match definition {
            TypeSystemDefinition::Type(ty) => match ty.node.kind {
                TypeKind::InputObject(input) => Some((
                    ty.node.name.node.to_string(),
                    input
                        .fields
                        .into_iter()
                        .map(|field| (field.node.name.node.to_string(), field.node.ty.node))
                        .collect(),
                )),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// The operation a request runs, chosen as async-graphql chooses it: by name when the request
/// names one (a lone anonymous operation has none), else the document's only operation.
/// `None` when no operation can be picked; execution then says why.
pub(crate) fn operation<'a>(
    document: &'a ExecutableDocument,
    name: Option<&str>,
) -> Option<&'a Positioned<OperationDefinition>> {
    match (&document.operations, name) {
        (DocumentOperations::Single(_), Some(_)) => None,
        (DocumentOperations::Single(operation), None) => Some(operation),
        (DocumentOperations::Multiple(operations), Some(name)) => operations.get(name),
        (DocumentOperations::Multiple(operations), None) if operations.len() == 1 => {
            operations.values().next()
        }
        (DocumentOperations::Multiple(_), None) => None,
    }
}

/// The kind and name of the operation a parsed request runs, as the metrics name them: kind
/// `query`, `mutation` or `subscription` (`None` when no operation can be picked), and the
/// operation's own name, also when the request does not repeat it in `operationName`.
pub(crate) fn operation_labels(request: &mut Request) -> (Option<&'static str>, Option<String>) {
    let asked = request.operation_name.clone();
    let Ok(document) = request.parsed_query() else {
        return (None, asked);
    };
    let kind = operation(document, asked.as_deref()).map(|operation| kind_label(operation.node.ty));
    let name = match (&document.operations, asked) {
        (DocumentOperations::Multiple(operations), None) if operations.len() == 1 => {
            operations.keys().next().map(|name| name.to_string())
        }
        (_, asked) => asked,
    };
    (kind, name)
}

/// How the metrics name an operation type.
pub(crate) fn kind_label(ty: async_graphql::parser::types::OperationType) -> &'static str {
    use async_graphql::parser::types::OperationType;
    match ty {
        OperationType::Query => "query",
        OperationType::Mutation => "mutation",
        OperationType::Subscription => "subscription",
    }
}

/// Refuses a request whose files were mapped anywhere but to an `Upload` of its operation,
/// or whose variables name a file it does not hold: the `Upload` scalar would index past
/// the request's files and panic.
fn uploads_in_place(document: &ExecutableDocument, request: &Request) -> Result<(), ServerError> {
    let operation = operation(document, request.operation_name.as_deref());
    let definitions = operation.map_or(&[][..], |operation| &operation.node.variable_definitions);
    let files = request.uploads.len();
    match misplaced_upload(&request.variables, definitions, files, &INPUT_TYPES) {
        Some(field) => Err(upload_refused(&field)),
        None => Ok(()),
    }
}

/// The first variable path holding a file placeholder where the operation expects anything
/// but an `Upload`, or naming none of the request's `files`.
fn misplaced_upload(
    variables: &Variables,
    definitions: &[Positioned<async_graphql::parser::types::VariableDefinition>],
    files: usize,
    inputs: &InputTypes,
) -> Option<String> {
    variables.iter().find_map(|(name, value)| {
        let ty = definitions
            .iter()
            .find(|definition| definition.node.name.node == *name)
            .map(|definition| &definition.node.var_type.node);
        let position = Position { files, inputs };
        position
            .misplaced(value, ty)
            .map(|path| joined("variables", name, path))
    })
}

/// What a placeholder must match: a file of the request, at an `Upload`.
struct Position<'a> {
    files: usize,
    inputs: &'a InputTypes,
}

/// The name of the named type inside `ty`'s list wrappers.
fn named(ty: &Type) -> &str {
    match &ty.base {
        BaseType::Named(name) => name.as_str(),
        BaseType::List(inner) => named(inner),
    }
}

impl Position<'_> {
    /// Where in `value`, of type `ty` (`None`: not an input position of the operation), a
    /// file placeholder stands anywhere but at an `Upload`, or names no file; innermost
    /// segment first.
    fn misplaced(&self, value: &ConstValue, ty: Option<&Type>) -> Option<Vec<String>> {
        match value {
            ConstValue::String(text) => {
                let index = text.strip_prefix(FILE_PLACEHOLDER)?;
                let held = index.parse::<usize>().is_ok_and(|index| index < self.files);
                (!held || ty.map(named) != Some("Upload")).then(Vec::new)
            }
            ConstValue::List(items) => {
                let item_type = ty.and_then(|ty| match &ty.base {
                    BaseType::List(inner) => Some(&**inner),
                    BaseType::Named(_) => None,
                });
                items.iter().enumerate().find_map(|(index, item)| {
                    self.misplaced(item, item_type)
                        .map(|path| within(path, index.to_string()))
                })
            }
            ConstValue::Object(fields) => {
                let field_types = ty.and_then(|ty| self.inputs.get(named(ty)));
                fields.iter().find_map(|(key, item)| {
                    let field_type = field_types.and_then(|types| types.get(key.as_str()));
                    self.misplaced(item, field_type)
                        .map(|path| within(path, key.to_string()))
                })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_counts_brackets_outside_strings_and_comments() {
        assert!(!nesting_exceeds("{ a(x: [[1]]) { b } }", 4));
        assert!(nesting_exceeds("{ a(x: [[[1]]]) { b } }", 4));
        let deep = format!("{{a(x: {}1{})}}", "[".repeat(200), "]".repeat(200));
        assert!(nesting_exceeds(&deep, MAX_NESTING));
        let quoted = format!("{{a(x: \"{}\")}}", "[".repeat(200));
        assert!(!nesting_exceeds(&quoted, MAX_NESTING));
        let escaped = format!("{{a(x: \"\\\"{}\")}}", "[".repeat(200));
        assert!(!nesting_exceeds(&escaped, MAX_NESTING));
        let block = format!("{{a(x: \"\"\" \\\"\"\" {} \"\"\")}}", "{".repeat(200));
        assert!(!nesting_exceeds(&block, MAX_NESTING));
        let comment = format!("{{a # {}\n}}", "(".repeat(200));
        assert!(!nesting_exceeds(&comment, MAX_NESTING));
        // Closing brackets do not buy depth back below zero.
        let unbalanced = format!("{}{}", "]".repeat(300), "[".repeat(129));
        assert!(nesting_exceeds(&unbalanced, MAX_NESTING));
    }

    #[test]
    fn refused_text_is_found_wherever_the_document_writes_it() {
        for (query, field) in [
            (r#"{ a(x: "a\u0000") }"#, "a.x"),
            (r#"{ a { b(x: {y: ["ok", "\u0000"]}) } }"#, "b.x.y.1"),
            (r#"{ a @include(if: true) @d(x: "\u0000") }"#, "@d.x"),
            (r#"query($v: String = "\u0000") { a }"#, "$v"),
            (r#"{ ...F } fragment F on Q { a(x: "\u0000") }"#, "a.x"),
            (r##"{ a(x: {file: "#__graphql_file__:0"}) }"##, "a.x.file"),
        ] {
            let document = async_graphql::parser::parse_query(query).unwrap();
            let found = text_in_document(&document).map(|(field, _)| field);
            assert_eq!(found.as_deref(), Some(field), "{query}");
        }
        let clean = async_graphql::parser::parse_query(r#"{ a(x: "fine") }"#).unwrap();
        assert_eq!(text_in_document(&clean), None);
    }

    #[test]
    fn a_file_lands_only_at_an_upload() {
        let inputs = input_types(
            "scalar Upload input In { name: String, file: Upload, files: [Upload!] } \
             type Query { a: Int }",
        );
        let document = async_graphql::parser::parse_query(
            "mutation($name: String!, $file: Upload, $in: In, $list: [Upload!]) { a }",
        )
        .unwrap();
        let DocumentOperations::Single(operation) = &document.operations else {
            unreachable!()
        };
        let file = format!("{FILE_PLACEHOLDER}0");
        let check = |variables: serde_json::Value| {
            misplaced_upload(
                &Variables::from_json(variables),
                &operation.node.variable_definitions,
                1,
                &inputs,
            )
        };
        assert_eq!(check(serde_json::json!({"file": file})), None);
        assert_eq!(check(serde_json::json!({"list": [file]})), None);
        assert_eq!(
            check(serde_json::json!({"in": {"file": file, "files": [file]}})),
            None
        );
        assert_eq!(
            check(serde_json::json!({"name": file})).as_deref(),
            Some("variables.name")
        );
        assert_eq!(
            check(serde_json::json!({"in": {"name": file}})).as_deref(),
            Some("variables.in.name")
        );
        assert_eq!(
            check(serde_json::json!({"undeclared": file})).as_deref(),
            Some("variables.undeclared")
        );
        assert_eq!(
            check(serde_json::json!({"file": [file]})).as_deref(),
            Some("variables.file.0")
        );
        // A file the request does not hold.
        assert_eq!(
            check(serde_json::json!({"file": format!("{FILE_PLACEHOLDER}1")})).as_deref(),
            Some("variables.file")
        );
    }
}
