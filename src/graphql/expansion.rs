//! The refusal of documents that spread fragments into more fields than any accepted document
//! has, before validation walks them.
//!
//! A fragment may spread another twice, that one the next twice, and so on: a document of a
//! kilobyte then stands for 2^24 fields, and async-graphql's validation (its complexity limit
//! among the rest) walks every one of them before it refuses the document, seconds of a core
//! for one anonymous request, and minutes a few levels further. Here the fields a document
//! stands for are counted once per fragment, in time linear in the document's text, and a
//! document past the limit is refused as async-graphql refuses a document too complex.
//!
//! Every field counts at least 1 towards the complexity limit (`limit_complexity`, a page's
//! fields times its size), so a document within that limit stands for no more fields than the
//! limit: refusing past a multiple of it refuses nothing the limit would accept.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery};
use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::{ServerError, ServerResult, Variables};

use crate::error::ErrorCode;

/// How many times the complexity limit a document may stand for in fields.
const FIELDS_PER_COMPLEXITY: usize = 20;

/// Fragments spread within fragments deeper than this are refused: no document of this schema
/// needs that many, and the count recurses through them.
const MAX_FRAGMENT_NESTING: usize = 64;

/// Installs the refusal on the schema, with the schema's complexity limit.
pub struct Expansion {
    pub max_complexity: usize,
}

impl ExtensionFactory for Expansion {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(Limit(
            self.max_complexity.saturating_mul(FIELDS_PER_COMPLEXITY),
        ))
    }
}

/// The most fields a document may stand for.
struct Limit(usize);

#[async_trait::async_trait]
impl Extension for Limit {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let document = next.run(ctx, query, variables).await?;
        if fields(&document) > self.0 {
            return Err(super::guard::coded(
                ServerError::new("Query is too complex.", None),
                ErrorCode::GraphqlValidationFailed,
            ));
        }
        Ok(document)
    }
}

/// The fields the operations and fragments of `document` stand for, each fragment spread
/// counted with its own fields; `usize::MAX` past the nesting limit or for a cycle (which
/// validation refuses anyway).
pub fn fields(document: &ExecutableDocument) -> usize {
    let mut counted = HashMap::new();
    document
        .operations
        .iter()
        .map(|(_, operation)| &operation.node.selection_set.node)
        .chain(
            document
                .fragments
                .values()
                .map(|f| &f.node.selection_set.node),
        )
        .fold(0usize, |sum, set| {
            sum.saturating_add(in_set(document, set, &mut counted, 0))
        })
}

/// The fields `set` stands for; `counted` holds each fragment's once worked out (`None` while
/// it is being worked out: met again, it is a cycle).
fn in_set<'a>(
    document: &'a ExecutableDocument,
    set: &'a SelectionSet,
    counted: &mut HashMap<&'a str, Option<usize>>,
    nesting: usize,
) -> usize {
    let mut sum = 0usize;
    for selection in &set.items {
        let here = match &selection.node {
            Selection::Field(field) => 1usize.saturating_add(in_set(
                document,
                &field.node.selection_set.node,
                counted,
                nesting,
            )),
            Selection::InlineFragment(fragment) => in_set(
                document,
                &fragment.node.selection_set.node,
                counted,
                nesting,
            ),
            Selection::FragmentSpread(spread) => {
                let name = spread.node.fragment_name.node.as_str();
                match counted.get(name) {
                    Some(Some(fields)) => *fields,
                    Some(None) => usize::MAX,
                    None if nesting >= MAX_FRAGMENT_NESTING => usize::MAX,
                    None => match document.fragments.get(&spread.node.fragment_name.node) {
                        // An unknown fragment: validation says so.
                        None => 0,
                        Some(fragment) => {
                            counted.insert(name, None);
                            let fields = in_set(
                                document,
                                &fragment.node.selection_set.node,
                                counted,
                                nesting + 1,
                            );
                            counted.insert(name, Some(fields));
                            fields
                        }
                    },
                }
            }
        };
        sum = sum.saturating_add(here);
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(document: &str) -> ExecutableDocument {
        async_graphql::parser::parse_query(document).unwrap()
    }

    #[test]
    fn a_document_stands_for_its_fields_with_each_spread_counted_in_full() {
        assert_eq!(fields(&parse("{ a b { c d } }")), 4);
        // The operation's 1 + 2 * 2, and the fragment's own 2.
        assert_eq!(
            fields(&parse("{ x { ...F ...F } } fragment F on T { a b }")),
            7
        );
        // Doubled at each of 60 levels: counted, not walked.
        let mut wide = "{ ...F0 }".to_owned();
        for i in 0..60 {
            wide.push_str(&format!(
                " fragment F{i} on T {{ ...F{} ...F{} }}",
                i + 1,
                i + 1
            ));
        }
        wide.push_str(" fragment F60 on T { a }");
        assert!(fields(&parse(&wide)) > 1usize << 60);
        // A cycle, and fragments nested past the limit.
        assert_eq!(
            fields(&parse(
                "{ ...A } fragment A on T { ...B } fragment B on T { ...A }"
            )),
            usize::MAX
        );
        let mut deep = "{ ...F0 }".to_owned();
        for i in 0..100 {
            deep.push_str(&format!(" fragment F{i} on T {{ ...F{} }}", i + 1));
        }
        deep.push_str(" fragment F100 on T { a }");
        assert_eq!(fields(&parse(&deep)), usize::MAX);
    }
}
