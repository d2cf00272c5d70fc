//! GraphiQL: served by the server itself, from files embedded in the binary.

use reqwest::StatusCode;
use serde_json::Value;

use crate::support::TestApp;

const BROWSER_ACCEPT: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

/// The values of `src="..."` and `href="..."` attributes in a page.
fn references(html: &str) -> Vec<String> {
    let mut found = Vec::new();
    for attribute in ["src=\"", "href=\""] {
        let mut rest = html;
        while let Some(start) = rest.find(attribute) {
            rest = &rest[start + attribute.len()..];
            let end = rest.find('"').expect("an unterminated attribute");
            found.push(rest[..end].to_owned());
            rest = &rest[end..];
        }
    }
    found
}

async fn graphiql_page(app: &TestApp) -> reqwest::Response {
    app.client()
        .get(app.url("/graphql"))
        .header("accept", BROWSER_ACCEPT)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_browser_gets_graphiql_whose_files_all_come_from_the_server() {
    let app = TestApp::spawn().await;
    let response = graphiql_page(&app).await;
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers().clone();
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = response.text().await.unwrap();
    assert!(html.contains("id=\"graphiql\""), "{html}");
    assert!(
        !html.contains("http://") && !html.contains("https://") && !html.contains("//cdn"),
        "the page names another host: {html}"
    );

    let references = references(&html);
    let local: Vec<&String> = references
        .iter()
        .filter(|r| !r.starts_with("data:"))
        .collect();
    assert!(
        local.iter().all(|r| r.starts_with("/graphiql/")),
        "{references:?}"
    );
    for expected in [
        "react.production.min.js",
        "react-dom.production.min.js",
        "graphiql.min.js",
        "graphiql.min.css",
        "graphql-ws.min.js",
        "jobgraph.js",
    ] {
        assert!(
            local
                .iter()
                .any(|r| r.starts_with(&format!("/graphiql/{expected}?v="))),
            "{expected} is not referenced with its digest: {references:?}"
        );
    }
    for reference in local {
        let response = app.client().get(app.url(reference)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{reference}");
        let content_type = response.headers()["content-type"].to_str().unwrap();
        let expected = match reference.split('?').next().unwrap().rsplit('.').next() {
            Some("js") => "text/javascript",
            Some("css") => "text/css",
            other => panic!("an unexpected file type {other:?} in {reference}"),
        };
        assert!(
            content_type.starts_with(expected),
            "{reference}: {content_type}"
        );
        let cache = response.headers()["cache-control"].to_str().unwrap();
        assert!(
            cache.contains("immutable") && cache.contains("max-age=31536000"),
            "{reference}: {cache}"
        );
        assert_eq!(response.headers()["x-content-type-options"], "nosniff");
        assert!(!response.bytes().await.unwrap().is_empty(), "{reference}");
    }
}

#[tokio::test]
async fn the_graphiql_page_may_reach_only_its_own_server() {
    let app = TestApp::spawn().await;
    let response = graphiql_page(&app).await;
    let policy = response.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    let directives: Vec<&str> = policy.split(';').map(str::trim).collect();
    for expected in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ] {
        assert!(directives.contains(&expected), "{expected} in {policy}");
    }
    let host = app.addr.to_string();
    assert!(
        directives.contains(&format!("connect-src 'self' ws://{host} wss://{host}").as_str()),
        "{policy}"
    );
    assert!(!policy.contains("unsafe"), "{policy}");
    assert!(!policy.contains("http"), "{policy}");
}

#[tokio::test]
async fn the_licences_of_graphiql_s_packages_are_served() {
    let app = TestApp::spawn().await;
    for (file, holder) in [
        ("LICENSE.graphiql", "GraphQL Contributors"),
        ("LICENSE.react", "Facebook, Inc."),
        ("LICENSE.react-dom", "Facebook, Inc."),
        ("LICENSE.graphql-ws", "Denis Badurina"),
    ] {
        let response = app
            .client()
            .get(app.url(&format!("/graphiql/{file}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{file}");
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain")
        );
        let text = response.text().await.unwrap();
        assert!(
            text.contains("MIT License") || text.contains("Permission is hereby granted"),
            "{file}"
        );
        assert!(text.contains(holder), "{file}: {text}");
    }
}

#[tokio::test]
async fn an_unknown_graphiql_file_is_not_found() {
    let app = TestApp::spawn().await;
    for path in [
        "/graphiql/nope.js",
        "/graphiql/index.html",
        "/graphiql/..%2fCargo.toml",
    ] {
        let response = app.client().get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
    }
}

#[tokio::test]
async fn a_get_without_a_query_from_an_api_client_is_still_an_error() {
    let app = TestApp::spawn().await;
    for accept in [
        None,
        Some("application/json"),
        Some("application/graphql-response+json"),
    ] {
        let mut request = app.client().get(app.url("/graphql"));
        if let Some(accept) = accept {
            request = request.header("accept", accept);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{accept:?}");
        assert!(
            !response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "BAD_REQUEST",
            "{body}"
        );
        assert!(
            body["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("`query`"),
            "{body}"
        );
    }
}
