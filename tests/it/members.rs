//! Members and roles: the role matrix and last-owner protection.

use serde_json::json;

use crate::support::{TestApp, TestUser};

/// A workspace with one user in each role, plus an outsider.
struct Roles {
    ws: String,
    owner: TestUser,
    admin: TestUser,
    member: TestUser,
    viewer: TestUser,
    outsider: TestUser,
}

impl Roles {
    async fn new(app: &TestApp, tag: &str) -> Roles {
        let owner = app.user(&format!("owner-{tag}@lab.test")).await;
        let admin = app.user(&format!("admin-{tag}@lab.test")).await;
        let member = app.user(&format!("member-{tag}@lab.test")).await;
        let viewer = app.user(&format!("viewer-{tag}@lab.test")).await;
        let outsider = app.user(&format!("outsider-{tag}@lab.test")).await;
        let ws = app.workspace(&owner, "Docking").await;
        app.add_member(&owner, &ws, &admin, "ADMIN").await;
        app.add_member(&owner, &ws, &member, "MEMBER").await;
        app.add_member(&owner, &ws, &viewer, "VIEWER").await;
        Roles {
            ws,
            owner,
            admin,
            member,
            viewer,
            outsider,
        }
    }

    fn actor(&self, name: &str) -> Option<&TestUser> {
        match name {
            "OWNER" => Some(&self.owner),
            "ADMIN" => Some(&self.admin),
            "MEMBER" => Some(&self.member),
            "VIEWER" => Some(&self.viewer),
            "OUTSIDER" => Some(&self.outsider),
            "ANONYMOUS" => None,
            other => panic!("unknown actor {other}"),
        }
    }
}

const ACTORS: [&str; 6] = [
    "OWNER",
    "ADMIN",
    "MEMBER",
    "VIEWER",
    "OUTSIDER",
    "ANONYMOUS",
];

/// What an operation answers for each actor, in `ACTORS` order: "ok" or an error code.
struct Case {
    name: &'static str,
    expected: [&'static str; 6],
    /// The operation and its variables, given the fixture.
    op: fn(&Roles) -> (&'static str, serde_json::Value),
}

const DENIED_OUTSIDE: [&str; 2] = ["NOT_FOUND", "UNAUTHENTICATED"];

fn cases() -> Vec<Case> {
    let [nf, unauth] = DENIED_OUTSIDE;
    vec![
        Case {
            name: "read the workspace",
            expected: ["ok", "ok", "ok", "ok", nf, unauth],
            op: |r| {
                (
                    "query($ws: ID!) { workspace(id: $ws) { name } }",
                    json!({"ws": r.ws}),
                )
            },
        },
        Case {
            name: "read members and the ledger",
            expected: ["ok", "ok", "ok", "ok", nf, unauth],
            op: |r| {
                (
                    "query($ws: ID!) { workspace(id: $ws) {
                       members(first: 10) { edges { node { role user { email } } } }
                       creditTransactions(first: 10) { edges { node { amount } } } } }",
                    json!({"ws": r.ws}),
                )
            },
        },
        Case {
            name: "rename the workspace",
            expected: ["ok", "ok", "FORBIDDEN", "FORBIDDEN", nf, unauth],
            op: |r| {
                (
                    "mutation($ws: ID!) { renameWorkspace(input: {workspaceId: $ws, name: \"Renamed\"}) { workspace { name } } }",
                    json!({"ws": r.ws}),
                )
            },
        },
        Case {
            name: "delete the workspace",
            expected: ["ok", "FORBIDDEN", "FORBIDDEN", "FORBIDDEN", nf, unauth],
            op: |r| {
                (
                    "mutation($ws: ID!) { deleteWorkspace(input: {workspaceId: $ws}) { deletedWorkspaceId } }",
                    json!({"ws": r.ws}),
                )
            },
        },
        Case {
            name: "add a member",
            expected: ["ok", "ok", "FORBIDDEN", "FORBIDDEN", nf, unauth],
            op: |r| {
                (
                    "mutation($ws: ID!) { addMember(input: {workspaceId: $ws, email: \"new@lab.test\", role: MEMBER}) { membership { role } } }",
                    json!({"ws": r.ws}),
                )
            },
        },
        Case {
            name: "add an owner",
            expected: ["ok", "FORBIDDEN", "FORBIDDEN", "FORBIDDEN", nf, unauth],
            op: |r| {
                (
                    "mutation($ws: ID!) { addMember(input: {workspaceId: $ws, email: \"new@lab.test\", role: OWNER}) { membership { role } } }",
                    json!({"ws": r.ws}),
                )
            },
        },
        Case {
            name: "change a member's role",
            expected: ["ok", "ok", "FORBIDDEN", "FORBIDDEN", nf, unauth],
            op: |r| {
                (
                    "mutation($ws: ID!, $u: ID!) { changeMemberRole(input: {workspaceId: $ws, userId: $u, role: VIEWER}) { membership { role } } }",
                    json!({"ws": r.ws, "u": r.member.id}),
                )
            },
        },
        Case {
            name: "promote an admin to owner",
            expected: ["ok", "FORBIDDEN", "FORBIDDEN", "FORBIDDEN", nf, unauth],
            op: |r| {
                (
                    "mutation($ws: ID!, $u: ID!) { changeMemberRole(input: {workspaceId: $ws, userId: $u, role: OWNER}) { membership { role } } }",
                    json!({"ws": r.ws, "u": r.admin.id}),
                )
            },
        },
        Case {
            name: "remove a viewer",
            expected: ["ok", "ok", "FORBIDDEN", "FORBIDDEN", nf, unauth],
            op: |r| {
                (
                    "mutation($ws: ID!, $u: ID!) { removeMember(input: {workspaceId: $ws, userId: $u}) { removedUserId } }",
                    json!({"ws": r.ws, "u": r.viewer.id}),
                )
            },
        },
        Case {
            name: "remove the owner",
            // Owners may remove owners, but this one is the last: CONFLICT.
            expected: [
                "CONFLICT",
                "FORBIDDEN",
                "FORBIDDEN",
                "FORBIDDEN",
                nf,
                unauth,
            ],
            op: |r| {
                (
                    "mutation($ws: ID!, $u: ID!) { removeMember(input: {workspaceId: $ws, userId: $u}) { removedUserId } }",
                    json!({"ws": r.ws, "u": r.owner.id}),
                )
            },
        },
        Case {
            name: "grant credits",
            expected: [
                "FORBIDDEN",
                "FORBIDDEN",
                "FORBIDDEN",
                "FORBIDDEN",
                nf,
                unauth,
            ],
            op: |r| {
                (
                    "mutation($ws: ID!) { grantCredits(input: {workspaceId: $ws, amount: 5}) { workspace { creditBalance } } }",
                    json!({"ws": r.ws}),
                )
            },
        },
    ]
}

#[tokio::test]
async fn each_role_may_do_exactly_what_the_role_matrix_allows() {
    let app = TestApp::spawn().await;
    let mut failures = Vec::new();
    for (i, case) in cases().into_iter().enumerate() {
        for (j, actor) in ACTORS.iter().enumerate() {
            // A fresh workspace per cell, so that what one cell changes cannot decide another.
            let roles = Roles::new(&app, &format!("{i}-{j}")).await;
            let (query, variables) = (case.op)(&roles);
            let token = roles.actor(actor).map(|u| u.token.as_str());
            let (_, body) = app.post(token, query, variables).await;
            let got = match body["errors"][0]["extensions"]["code"].as_str() {
                Some(code) => code.to_owned(),
                None if body["errors"].is_null() => "ok".to_owned(),
                None => format!("error without code: {body}"),
            };
            if got != case.expected[j] {
                failures.push(format!(
                    "{actor} / {}: expected {}, got {got}: {body}",
                    case.name, case.expected[j]
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn the_viewer_can_flags_follow_the_same_rules_as_the_mutations() {
    let app = TestApp::spawn().await;
    let roles = Roles::new(&app, "flags").await;
    // role, canManageMembers, canSubmit, canRename, canDelete
    let expected = [
        ("OWNER", [true, true, true, true]),
        ("ADMIN", [true, true, true, false]),
        ("MEMBER", [false, true, false, false]),
        ("VIEWER", [false, false, false, false]),
    ];
    for (role, flags) in expected {
        let user = roles.actor(role).unwrap();
        let data = app
            .ok(
                Some(&user.token),
                "query($ws: ID!) { workspace(id: $ws) { viewerRole viewerCanManageMembers
                   viewerCanSubmit viewerCanRename viewerCanDelete } }",
                json!({"ws": roles.ws}),
            )
            .await;
        let ws = &data["workspace"];
        assert_eq!(ws["viewerRole"], role);
        let got = [
            ws["viewerCanManageMembers"].as_bool().unwrap(),
            ws["viewerCanSubmit"].as_bool().unwrap(),
            ws["viewerCanRename"].as_bool().unwrap(),
            ws["viewerCanDelete"].as_bool().unwrap(),
        ];
        assert_eq!(got, flags, "{role}");
    }
}

#[tokio::test]
async fn the_last_owner_can_be_neither_demoted_nor_removed_nor_leave() {
    let app = TestApp::spawn().await;
    let roles = Roles::new(&app, "last").await;
    let owner = Some(roles.owner.token.as_str());
    let vars = json!({"ws": roles.ws, "u": roles.owner.id});
    let demote = "mutation($ws: ID!, $u: ID!) { changeMemberRole(input: {workspaceId: $ws, userId: $u, role: ADMIN}) { membership { role } } }";
    let remove = "mutation($ws: ID!, $u: ID!) { removeMember(input: {workspaceId: $ws, userId: $u}) { removedUserId } }";
    let leave =
        "mutation($ws: ID!) { leaveWorkspace(input: {workspaceId: $ws}) { removedUserId } }";
    assert_eq!(
        app.error_code(owner, demote, vars.clone()).await,
        "CONFLICT"
    );
    assert_eq!(
        app.error_code(owner, remove, vars.clone()).await,
        "CONFLICT"
    );
    assert_eq!(app.error_code(owner, leave, vars.clone()).await, "CONFLICT");

    // With a second owner, the first may step down.
    let promote = "mutation($ws: ID!, $u: ID!) { changeMemberRole(input: {workspaceId: $ws, userId: $u, role: OWNER}) { membership { role } } }";
    app.ok(owner, promote, json!({"ws": roles.ws, "u": roles.admin.id}))
        .await;
    let data = app.ok(owner, demote, vars.clone()).await;
    assert_eq!(data["changeMemberRole"]["membership"]["role"], "ADMIN");
}

#[tokio::test]
async fn two_owners_demoting_each_other_at_once_leave_one_owner() {
    let app = TestApp::spawn().await;
    let roles = Roles::new(&app, "race").await;
    let promote = "mutation($ws: ID!, $u: ID!) { changeMemberRole(input: {workspaceId: $ws, userId: $u, role: OWNER}) { membership { role } } }";
    app.ok(
        Some(&roles.owner.token),
        promote,
        json!({"ws": roles.ws, "u": roles.admin.id}),
    )
    .await;
    let demote = "mutation($ws: ID!, $u: ID!) { changeMemberRole(input: {workspaceId: $ws, userId: $u, role: MEMBER}) { membership { role } } }";
    for _ in 0..5 {
        let (a, b) = tokio::join!(
            app.post(
                Some(&roles.owner.token),
                demote,
                json!({"ws": roles.ws, "u": roles.admin.id})
            ),
            app.post(
                Some(&roles.admin.token),
                demote,
                json!({"ws": roles.ws, "u": roles.owner.id})
            ),
        );
        let succeeded = [&a.1, &b.1]
            .iter()
            .filter(|b| b["errors"].is_null())
            .count();
        assert_eq!(succeeded, 1, "exactly one demotion wins: {} / {}", a.1, b.1);
        let owners = owners(&app, &roles).await;
        assert_eq!(owners.len(), 1, "{owners:?}");
        // Put both back as owners for the next round.
        let remaining = owners[0].clone();
        let other = if remaining == roles.owner.email {
            &roles.admin
        } else {
            &roles.owner
        };
        let token = if remaining == roles.owner.email {
            &roles.owner.token
        } else {
            &roles.admin.token
        };
        app.ok(Some(token), promote, json!({"ws": roles.ws, "u": other.id}))
            .await;
    }
}

async fn owners(app: &TestApp, roles: &Roles) -> Vec<String> {
    let data = app
        .ok(
            Some(&roles.viewer.token),
            "query($ws: ID!) { workspace(id: $ws) { members(first: 100) { edges { node { role user { email } } } } } }",
            json!({"ws": roles.ws}),
        )
        .await;
    data["workspace"]["members"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["node"]["role"] == "OWNER")
        .map(|e| e["node"]["user"]["email"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn adding_an_unknown_email_invites_a_pending_user_and_twice_is_a_conflict() {
    let app = TestApp::spawn().await;
    let roles = Roles::new(&app, "invite").await;
    let add = "mutation($ws: ID!) { addMember(input: {workspaceId: $ws, email: \" New.Person@Lab.test \", role: MEMBER}) {
                 membership { role user { email isPending } } } }";
    let data = app
        .ok(Some(&roles.owner.token), add, json!({"ws": roles.ws}))
        .await;
    let user = &data["addMember"]["membership"]["user"];
    assert_eq!(user["email"], "new.person@lab.test");
    assert_eq!(user["isPending"], true);
    assert_eq!(
        app.error_code(Some(&roles.owner.token), add, json!({"ws": roles.ws}))
            .await,
        "CONFLICT"
    );
}

#[tokio::test]
async fn a_removed_member_loses_access_and_a_member_can_leave() {
    let app = TestApp::spawn().await;
    let roles = Roles::new(&app, "gone").await;
    let read = "query($ws: ID!) { workspace(id: $ws) { name } }";
    let vars = json!({"ws": roles.ws, "u": roles.member.id});
    app.ok(
        Some(&roles.admin.token),
        "mutation($ws: ID!, $u: ID!) { removeMember(input: {workspaceId: $ws, userId: $u}) { removedUserId } }",
        vars.clone(),
    )
    .await;
    assert_eq!(
        app.error_code(Some(&roles.member.token), read, vars.clone())
            .await,
        "NOT_FOUND"
    );

    let data = app
        .ok(
            Some(&roles.viewer.token),
            "mutation($ws: ID!) { leaveWorkspace(input: {workspaceId: $ws}) { removedUserId } }",
            vars.clone(),
        )
        .await;
    assert_eq!(
        data["leaveWorkspace"]["removedUserId"],
        roles.viewer.id.as_str()
    );
    assert_eq!(
        app.error_code(Some(&roles.viewer.token), read, vars).await,
        "NOT_FOUND"
    );
}
