//! The credit ledger: grants, adjustments and its invariants under concurrency.

use entity::credit_transaction;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{Value, json};

use crate::support::TestApp;

const GRANT: &str = "mutation($ws: ID!, $amount: Int!, $note: String) {
  grantCredits(input: {workspaceId: $ws, amount: $amount, note: $note}) {
    transaction { kind amount balanceAfter note actor { email } } workspace { creditBalance } } }";
const ADJUST: &str = "mutation($ws: ID!, $amount: Int!, $note: String!) {
  adjustCredits(input: {workspaceId: $ws, amount: $amount, note: $note}) {
    transaction { kind amount balanceAfter } workspace { creditBalance } } }";
const LEDGER: &str = "query($ws: ID!) { workspace(id: $ws) { creditBalance
  creditTransactions(first: 100) { edges { node { kind amount balanceAfter } } } } }";

/// Checks that the balance equals the ledger's sum and each entry's balanceAfter follows.
async fn assert_ledger_adds_up(app: &TestApp, token: &str, ws: &str) -> (i64, Vec<Value>) {
    let data = app.ok(Some(token), LEDGER, json!({"ws": ws})).await;
    let balance = data["workspace"]["creditBalance"].as_i64().unwrap();
    let mut entries: Vec<Value> = data["workspace"]["creditTransactions"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"].clone())
        .collect();
    entries.reverse(); // oldest first
    let mut running = 0;
    for entry in &entries {
        running += entry["amount"].as_i64().unwrap();
        assert_eq!(
            entry["balanceAfter"].as_i64().unwrap(),
            running,
            "{entries:?}"
        );
    }
    assert_eq!(balance, running);
    (balance, entries)
}

#[tokio::test]
async fn an_admin_grant_records_a_ledger_entry_and_moves_the_balance() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice@lab.test").await;
    let ws = app.workspace(&alice, "lab").await;
    let data = app
        .ok(
            Some(&app.admin_token),
            GRANT,
            json!({"ws": ws, "amount": 250, "note": "welcome"}),
        )
        .await;
    assert_eq!(
        data["grantCredits"],
        json!({
            "transaction": { "kind": "GRANT", "amount": 250, "balanceAfter": 250, "note": "welcome",
                             "actor": { "email": "admin@localhost" } },
            "workspace": { "creditBalance": 250 }
        })
    );
    let (balance, entries) = assert_ledger_adds_up(&app, &alice.token, &ws).await;
    assert_eq!((balance, entries.len()), (250, 1));
}

#[tokio::test]
async fn grants_must_be_positive_and_adjustments_need_a_reason() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice@lab.test").await;
    let ws = app.workspace(&alice, "lab").await;
    for amount in [0, -5] {
        let (_, body) = app
            .post(
                Some(&app.admin_token),
                GRANT,
                json!({"ws": ws, "amount": amount}),
            )
            .await;
        assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
        assert_eq!(body["errors"][0]["extensions"]["field"], "amount");
    }
    let (_, body) = app
        .post(
            Some(&app.admin_token),
            ADJUST,
            json!({"ws": ws, "amount": 5, "note": "  "}),
        )
        .await;
    assert_eq!(body["errors"][0]["extensions"]["field"], "note");
    let (balance, entries) = assert_ledger_adds_up(&app, &alice.token, &ws).await;
    assert_eq!((balance, entries.len()), (0, 0), "nothing was written");
}

#[tokio::test]
async fn an_adjustment_cannot_take_the_balance_below_zero() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice@lab.test").await;
    let ws = app.workspace(&alice, "lab").await;
    app.ok(
        Some(&app.admin_token),
        GRANT,
        json!({"ws": ws, "amount": 30}),
    )
    .await;
    let (_, body) = app
        .post(
            Some(&app.admin_token),
            ADJUST,
            json!({"ws": ws, "amount": -31, "note": "oops"}),
        )
        .await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "INSUFFICIENT_CREDITS",
        "{body}"
    );
    assert_eq!(
        body["errors"][0]["message"],
        "insufficient credits: an adjustment of -31 credits would take the balance below zero; \
         the workspace has 30"
    );
    let data = app
        .ok(
            Some(&app.admin_token),
            ADJUST,
            json!({"ws": ws, "amount": -30, "note": "correction"}),
        )
        .await;
    assert_eq!(data["adjustCredits"]["workspace"]["creditBalance"], 0);
    assert_ledger_adds_up(&app, &alice.token, &ws).await;
}

#[tokio::test]
async fn concurrent_grants_all_land_and_the_balance_equals_the_ledger() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice@lab.test").await;
    let ws = app.workspace(&alice, "lab").await;
    let grants = (0..40).map(|_| {
        app.post(
            Some(&app.admin_token),
            GRANT,
            json!({"ws": ws, "amount": 7}),
        )
    });
    for (status, body) in futures_util::future::join_all(grants).await {
        assert!(status.is_success() && body["errors"].is_null(), "{body}");
    }
    let (balance, entries) = assert_ledger_adds_up(&app, &alice.token, &ws).await;
    assert_eq!(balance, 280);
    assert_eq!(entries.len(), 40);
    let mut afters: Vec<i64> = entries
        .iter()
        .map(|e| e["balanceAfter"].as_i64().unwrap())
        .collect();
    afters.sort();
    assert_eq!(afters, (1..=40).map(|i| i * 7).collect::<Vec<_>>());
}

#[tokio::test]
async fn concurrent_debits_never_overdraw() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice@lab.test").await;
    let ws = app.workspace(&alice, "lab").await;
    app.ok(
        Some(&app.admin_token),
        GRANT,
        json!({"ws": ws, "amount": 100}),
    )
    .await;
    let debits = (0..30).map(|_| {
        app.post(
            Some(&app.admin_token),
            ADJUST,
            json!({"ws": ws, "amount": -10, "note": "debit"}),
        )
    });
    let results = futures_util::future::join_all(debits).await;
    let ok = results
        .iter()
        .filter(|(_, b)| b["errors"].is_null())
        .count();
    let refused = results
        .iter()
        .filter(|(_, b)| b["errors"][0]["extensions"]["code"] == "INSUFFICIENT_CREDITS")
        .count();
    assert_eq!((ok, refused), (10, 20));
    let (balance, entries) = assert_ledger_adds_up(&app, &alice.token, &ws).await;
    assert_eq!((balance, entries.len()), (0, 11));
}

#[tokio::test]
async fn the_database_refuses_a_second_charge_for_one_job() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice@lab.test").await;
    let ws = app.workspace(&alice, "lab").await;
    app.ok(
        Some(&app.admin_token),
        GRANT,
        json!({"ws": ws, "amount": 100}),
    )
    .await;
    let ws_id = jobgraph::ids::decode::<entity::ids::WorkspaceId>("ws", &ws).unwrap();
    let job_id = entity::ids::JobId::new();
    let charge = || jobgraph::credits::ledger::Entry {
        workspace_id: ws_id,
        kind: credit_transaction::TransactionKind::Charge,
        amount: -10,
        actor_id: None,
        job_id: Some(job_id),
        note: None,
    };
    let tx = jobgraph::db::begin_write(&app.db).await.unwrap();
    jobgraph::credits::ledger::append(&tx, charge())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let tx = jobgraph::db::begin_write(&app.db).await.unwrap();
    let second = jobgraph::credits::ledger::append(&tx, charge()).await;
    assert!(
        matches!(second, Err(jobgraph::error::Error::Conflict(_))),
        "{second:?}"
    );
    drop(tx);
    let (balance, _) = assert_ledger_adds_up(&app, &alice.token, &ws).await;
    assert_eq!(balance, 90, "the refused charge moved nothing");
    let charges = credit_transaction::Entity::find()
        .filter(credit_transaction::Column::JobId.eq(job_id))
        .all(&app.db)
        .await
        .unwrap();
    assert_eq!(charges.len(), 1);
}

#[tokio::test]
async fn a_balance_with_what_its_jobs_hold_stays_within_the_ceiling() {
    let app = TestApp::spawn().await;
    let alice = app.user("alice@lab.test").await;
    let ws = app.workspace(&alice, "lab").await;
    let ceiling = 2_000_000_000i64;
    for amount in [ceiling + 1, -(ceiling + 1)] {
        let (_, body) = app
            .post(
                Some(&app.admin_token),
                ADJUST,
                json!({"ws": ws, "amount": amount, "note": "too much"}),
            )
            .await;
        assert_eq!(body["errors"][0]["extensions"]["field"], "amount", "{body}");
    }
    app.grant(&ws, 100).await;
    // A job holds 6 credits until it ends: a failure gives them back.
    let job = app.job(&alice, &ws, 5).await;
    let (_, body) = app
        .post(
            Some(&app.admin_token),
            GRANT,
            json!({"ws": ws, "amount": ceiling - 100 + 1}),
        )
        .await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    assert_eq!(body["errors"][0]["extensions"]["field"], "amount", "{body}");
    let (_, body) = app
        .post(
            Some(&app.admin_token),
            ADJUST,
            json!({"ws": ws, "amount": ceiling - 100 + 1, "note": "more"}),
        )
        .await;
    assert_eq!(body["errors"][0]["extensions"]["field"], "amount", "{body}");
    let (balance, _) = assert_ledger_adds_up(&app, &alice.token, &ws).await;
    assert_eq!(balance, 94, "nothing moved");
    let data = app
        .ok(
            Some(&app.admin_token),
            GRANT,
            json!({"ws": ws, "amount": ceiling - 100}),
        )
        .await;
    assert_eq!(
        data["grantCredits"]["workspace"]["creditBalance"],
        ceiling - 6
    );
    // The refund brings the balance to the ceiling, not above.
    app.drive(
        job["id"].as_str().unwrap(),
        entity::job::JobStatus::Cancelled,
        Default::default(),
    )
    .await
    .unwrap();
    let (balance, _) = assert_ledger_adds_up(&app, &alice.token, &ws).await;
    assert_eq!(balance, ceiling);
}
