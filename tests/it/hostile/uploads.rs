//! File placeholders in the wrong places: a file may land only in an `Upload`.

use sea_orm::{EntityTrait, PaginatorTrait};
use serde_json::json;

use super::{Expect, Hostile, Send};

const FASTA: &[u8] = b">a\nACGT\n";

#[tokio::test]
async fn a_file_mapped_anywhere_but_an_upload_is_refused() {
    let hostile = Hostile::spawn().await;
    let ws = &hostile.ws;
    let submit = |inputs: &str| {
        format!(
            "mutation($ws: ID!, $s: JSON, $t: String, $i: [JobInputValue!]!) {{ submitJob(input: \
             {{workspaceId: $ws, tool: \"sequence-stats\", settings: $s, inputs: {inputs}}}) \
             {{ job {{ id }} }} }}"
        )
    };
    let multipart = |query: String, variables: serde_json::Value, path: &str| {
        Send::Multipart(
            json!({"query": query, "variables": variables})
                .to_string()
                .into_bytes(),
            json!({"0": [path]}).to_string(),
            vec![FASTA.to_vec()],
        )
    };
    let cases = vec![
        (
            "a String! variable",
            multipart(
                "mutation($name: String!) { createWorkspace(input: {name: $name}) { workspace { id } } }".into(),
                json!({"name": null}),
                "variables.name",
            ),
            "variables.name",
        ),
        (
            "a String field of an input object",
            multipart(
                "mutation($input: CreateWorkspaceInput!) { createWorkspace(input: $input) { workspace { id } } }".into(),
                json!({"input": {"name": null}}),
                "variables.input.name",
            ),
            "variables.input.name",
        ),
        (
            "the settings JSON",
            multipart(submit("[]"), json!({"ws": ws, "s": null, "i": []}), "variables.s"),
            "variables.s",
        ),
        (
            "a value inside the settings JSON",
            multipart(submit("[]"), json!({"ws": ws, "s": {"k": null}, "i": []}), "variables.s.k"),
            "variables.s.k",
        ),
        (
            "a text input",
            multipart(
                submit("$i"),
                json!({"ws": ws, "i": [{"name": "sequences", "text": null}]}),
                "variables.i.0.text",
            ),
            "variables.i.0.text",
        ),
        (
            "a variable the operation does not declare",
            multipart(
                "{ viewer { isAuthenticated } }".into(),
                json!({"stray": null}),
                "variables.stray",
            ),
            "variables.stray",
        ),
        (
            "a list where one file is expected",
            multipart(
                submit("$i"),
                json!({"ws": ws, "i": [{"name": "sequences", "file": [null]}]}),
                "variables.i.0.file.0",
            ),
            "variables.i.0.file.0",
        ),
    ];
    let workspaces = entity::workspace::Entity::find()
        .count(&hostile.app.db)
        .await
        .unwrap();
    for (name, send, field) in cases {
        hostile
            .check(Expect::BadInput(field), vec![(name.to_owned(), send)])
            .await;
    }
    assert_eq!(
        entity::workspace::Entity::find()
            .count(&hostile.app.db)
            .await
            .unwrap(),
        workspaces,
        "no workspace was created"
    );
}

#[tokio::test]
async fn a_placeholder_without_a_file_is_refused() {
    let hostile = Hostile::spawn().await;
    let query = "mutation($ws: ID!, $i: [JobInputValue!]!) { submitJob(input: \
                 {workspaceId: $ws, tool: \"sequence-stats\", inputs: $i}) { job { id } } }";
    let placeholder = json!([{"name": "sequences", "file": "#__graphql_file__:0"}]);
    let cases = vec![
        (
            "in a JSON request".to_owned(),
            Send::Post(query.into(), json!({"ws": hostile.ws, "i": placeholder})),
        ),
        (
            "pointing past the files of a multipart request".to_owned(),
            Send::Multipart(
                json!({"query": query, "variables": {"ws": hostile.ws, "i": [
                    {"name": "sequences", "file": null},
                    {"name": "sequences", "file": "#__graphql_file__:7"},
                ]}})
                .to_string()
                .into_bytes(),
                json!({"0": ["variables.i.0.file"]}).to_string(),
                vec![FASTA.to_vec()],
            ),
        ),
    ];
    hostile.check(Expect::Refused, cases).await;
}

#[tokio::test]
async fn a_file_mapped_to_an_upload_is_still_accepted() {
    let hostile = Hostile::spawn().await;
    let query = "mutation($ws: ID!, $i: [JobInputValue!]!) { submitJob(input: \
                 {workspaceId: $ws, tool: \"sequence-stats\", inputs: $i}) { job { id } } }";
    let outcome = hostile
        .send(&Send::Multipart(
            json!({"query": query, "variables": {"ws": hostile.ws, "i": [{"name": "sequences", "file": null}]}})
                .to_string()
                .into_bytes(),
            json!({"0": ["variables.i.0.file"]}).to_string(),
            vec![FASTA.to_vec()],
        ))
        .await;
    let super::Outcome::Http(status, body) = outcome else {
        unreachable!()
    };
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    assert!(body["errors"].is_null(), "{body}");
    assert!(body["data"]["submitJob"]["job"]["id"].is_string(), "{body}");
}
