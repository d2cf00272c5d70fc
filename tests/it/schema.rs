//! The exported SDL stays in sync with the code.

#[test]
fn schema_graphql_matches_the_code() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql");
    let sdl = jobgraph::graphql::sdl();
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::write(path, &sdl).unwrap();
    }
    let file = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        file == sdl,
        "schema.graphql is out of date: run `cargo run -- schema > schema.graphql` \
         (or `UPDATE_SCHEMA=1 cargo test --test it schema`)"
    );
}

#[test]
fn every_listed_object_type_implements_node() {
    let sdl = jobgraph::graphql::sdl();
    for ty in [
        "User",
        "Workspace",
        "Membership",
        "ApiToken",
        "CreditTransaction",
        "File",
    ] {
        assert!(
            sdl.contains(&format!("type {ty} implements Node")),
            "{ty} does not implement Node"
        );
    }
}
