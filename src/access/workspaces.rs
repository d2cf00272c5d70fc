//! Workspaces: a caller's standing in one, what it allows, and loading a workspace, or the
//! members and ledger entries of one, as a caller may see it.

use entity::ids::{MembershipId, TransactionId, WorkspaceId};
use std::collections::HashMap;

use entity::membership::Role;
use entity::{credit_transaction, membership, workspace};
use sea_orm::sea_query::{Expr, ExprTrait as _, IntoCondition as _};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, JoinType, QueryFilter, QuerySelect, RelationTrait,
};

use super::{Viewer, a_role};
use crate::error::{Error, Result};

/// A caller's standing in one workspace: the inputs of every workspace decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    pub role: Option<Role>,
    pub platform_admin: bool,
}

impl Standing {
    /// The standing of `viewer` with `role` (none when not a member).
    pub fn of(viewer: &Viewer, role: Option<Role>) -> Self {
        Standing {
            role,
            platform_admin: viewer.is_platform_admin(),
        }
    }

    pub fn can_read(self) -> bool {
        self.platform_admin || self.role.is_some()
    }

    pub fn can_manage_members(self) -> bool {
        self.platform_admin || matches!(self.role, Some(Role::Owner | Role::Admin))
    }

    pub fn can_submit(self) -> bool {
        self.platform_admin || matches!(self.role, Some(Role::Owner | Role::Admin | Role::Member))
    }

    pub fn can_rename(self) -> bool {
        self.can_manage_members()
    }

    /// Webhooks send the workspace's events elsewhere and sign them with its secrets: those
    /// who manage its members manage them.
    pub fn can_manage_webhooks(self) -> bool {
        self.can_manage_members()
    }

    pub fn can_delete(self) -> bool {
        self.platform_admin || self.role == Some(Role::Owner)
    }

    /// Whether the caller may move a member from `current` to `new` role, where `None` for
    /// `current` is adding someone and `None` for `new` is removing them.
    /// Owners manage everyone; admins manage everyone but owners, and cannot make owners.
    pub fn can_change_member(self, current: Option<Role>, new: Option<Role>) -> bool {
        if self.platform_admin || self.role == Some(Role::Owner) {
            return true;
        }
        self.role == Some(Role::Admin) && current != Some(Role::Owner) && new != Some(Role::Owner)
    }

    /// Decides one action on a workspace: FORBIDDEN, in words naming the action and the
    /// caller's role, unless the caller may.
    pub fn check(self, action: WorkspaceAction) -> Result<()> {
        let allowed = match action {
            WorkspaceAction::SubmitJobs => self.can_submit(),
            WorkspaceAction::Rename => self.can_rename(),
            WorkspaceAction::Delete => self.can_delete(),
            WorkspaceAction::ManageWebhooks => self.can_manage_webhooks(),
            WorkspaceAction::ChangeMember { current, new } => self.can_change_member(current, new),
        };
        if allowed {
            return Ok(());
        }
        let what = match action {
            WorkspaceAction::SubmitJobs => "submit jobs in this workspace".to_owned(),
            WorkspaceAction::Rename => "rename this workspace".to_owned(),
            WorkspaceAction::Delete => "delete this workspace".to_owned(),
            WorkspaceAction::ManageWebhooks => "manage the webhooks of this workspace".to_owned(),
            WorkspaceAction::ChangeMember { current, new } => match (current, new) {
                (None, Some(new)) => format!("add {} to this workspace", a_role(new)),
                (Some(current), Some(new)) => {
                    format!("change {} into {}", a_role(current), a_role(new))
                }
                (Some(current), None) => format!("remove {} from this workspace", a_role(current)),
                (None, None) => "change the members of this workspace".to_owned(),
            },
        };
        let you = match self.role {
            Some(role) => a_role(role),
            None => "not a member of it".to_owned(),
        };
        Err(Error::forbidden(format!(
            "you cannot {what}: you are {you}"
        )))
    }
}

/// What a caller may or may not do to a workspace, by their [`Standing`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkspaceAction {
    SubmitJobs,
    Rename,
    Delete,
    /// Reading, adding, changing and removing webhook endpoints and their deliveries.
    ManageWebhooks,
    /// Moving a member from `current` to `new` role; `None` is not being a member.
    ChangeMember {
        current: Option<Role>,
        new: Option<Role>,
    },
}

/// A workspace as one caller sees it: its row, read, and their standing in it.
#[derive(Debug, Clone)]
pub struct WorkspaceAccess {
    pub workspace: workspace::Model,
    pub standing: Standing,
}

/// A workspace the caller may read, known by its id and their standing, its row unread: what
/// its lists and counts need. Only a load or a standing this process checked makes one
/// ([`WorkspaceAccess::known`], [`super::StandingCache::known`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkspaceRef {
    pub id: WorkspaceId,
    pub standing: Standing,
}

impl WorkspaceAccess {
    /// The workspace by its id, with the viewer's standing: what reading its contents needs.
    pub fn known(&self) -> WorkspaceRef {
        WorkspaceRef {
            id: self.workspace.id,
            standing: self.standing,
        }
    }

    /// Loads a workspace the viewer can read; NOT_FOUND otherwise, never revealing it exists.
    /// Anonymous callers, who can read no workspace, are told to authenticate.
    pub async fn load(db: &impl ConnectionTrait, viewer: &Viewer, id: WorkspaceId) -> Result<Self> {
        let not_found = || Error::NotFound("workspace");
        if matches!(viewer, Viewer::Anonymous) {
            return Err(Error::Unauthenticated);
        }
        // The workspace and the viewer's membership, in one statement.
        let user_id = viewer.user_id();
        let membership_of_viewer =
            workspace::Relation::Membership
                .def()
                .on_condition(move |_, membership_table| {
                    Expr::col((membership_table, membership::Column::UserId))
                        .eq(user_id)
                        .into_condition()
                });
        let (workspace, membership) = workspace::Entity::find_by_id(id)
            .join(JoinType::LeftJoin, membership_of_viewer)
            .select_also(membership::Entity)
            .one(db)
            .await?
            .ok_or_else(not_found)?;
        let standing = Standing::of(viewer, membership.map(|m| m.role));
        if !standing.can_read() {
            return Err(not_found());
        }
        Ok(WorkspaceAccess {
            workspace,
            standing,
        })
    }

    /// Loads those of `ids` the viewer can read, in two statements whatever their number; the
    /// others are left out.
    pub async fn load_many(
        db: &impl ConnectionTrait,
        viewer: &Viewer,
        ids: &[WorkspaceId],
    ) -> Result<HashMap<WorkspaceId, Self>> {
        let roles: HashMap<WorkspaceId, Role> = match viewer.user_id() {
            Some(user_id) => membership::Entity::find()
                .filter(membership::Column::UserId.eq(user_id))
                .filter(membership::Column::WorkspaceId.is_in(ids.iter().copied()))
                .all(db)
                .await?
                .into_iter()
                .map(|m| (m.workspace_id, m.role))
                .collect(),
            None => HashMap::new(),
        };
        let readable: Vec<WorkspaceId> = ids
            .iter()
            .copied()
            .filter(|id| Standing::of(viewer, roles.get(id).copied()).can_read())
            .collect();
        let workspaces = workspace::Entity::find()
            .filter(workspace::Column::Id.is_in(readable))
            .all(db)
            .await?;
        Ok(workspaces
            .into_iter()
            .map(|workspace| {
                let standing = Standing::of(viewer, roles.get(&workspace.id).copied());
                (
                    workspace.id,
                    WorkspaceAccess {
                        workspace,
                        standing,
                    },
                )
            })
            .collect())
    }

    /// The viewer's access to a workspace whose row the caller has just read (under the
    /// workspace's lock, see `workspaces::hold`): their standing read now. NOT_FOUND if they
    /// may not read it.
    pub async fn of(
        db: &impl ConnectionTrait,
        viewer: &Viewer,
        workspace: workspace::Model,
    ) -> Result<Self> {
        let standing = standing(db, viewer, workspace.id).await?;
        if !standing.can_read() {
            return Err(Error::NotFound("workspace"));
        }
        Ok(WorkspaceAccess {
            workspace,
            standing,
        })
    }

    /// FORBIDDEN, naming the action and the viewer's role, unless the viewer may.
    pub fn check(&self, action: WorkspaceAction) -> Result<()> {
        self.standing.check(action)
    }
}

/// The viewer's standing in a workspace.
pub async fn standing(
    db: &impl ConnectionTrait,
    viewer: &Viewer,
    workspace_id: WorkspaceId,
) -> Result<Standing> {
    let role = match viewer.user_id() {
        Some(user_id) => membership::Entity::find_for(workspace_id, user_id)
            .one(db)
            .await?
            .map(|membership| membership.role),
        None => None,
    };
    Ok(Standing::of(viewer, role))
}

/// A membership the viewer may see: one of a workspace they can read, with their standing
/// there. NOT_FOUND otherwise, exactly like a missing one.
pub async fn readable_membership(
    db: &impl ConnectionTrait,
    viewer: &Viewer,
    id: MembershipId,
) -> Result<(membership::Model, Standing)> {
    let not_found = || Error::NotFound("membership");
    let found = membership::Entity::find_by_id(id)
        .one(db)
        .await?
        .ok_or_else(not_found)?;
    let access = WorkspaceAccess::load(db, viewer, found.workspace_id)
        .await
        .map_err(|_| not_found())?;
    Ok((found, access.standing))
}

/// A ledger entry the viewer may see: one of a workspace they can read. NOT_FOUND otherwise,
/// exactly like a missing one.
pub async fn readable_credit_transaction(
    db: &impl ConnectionTrait,
    viewer: &Viewer,
    id: TransactionId,
) -> Result<credit_transaction::Model> {
    let not_found = || Error::NotFound("credit transaction");
    let found = credit_transaction::Entity::find_by_id(id)
        .one(db)
        .await?
        .ok_or_else(not_found)?;
    WorkspaceAccess::load(db, viewer, found.workspace_id)
        .await
        .map_err(|_| not_found())?;
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROLES: [Option<Role>; 5] = [
        Some(Role::Owner),
        Some(Role::Admin),
        Some(Role::Member),
        Some(Role::Viewer),
        None,
    ];

    fn as_role(role: Option<Role>) -> Standing {
        Standing {
            role,
            platform_admin: false,
        }
    }

    #[test]
    fn each_role_may_do_what_its_table_row_says() {
        // role, read, manage members, submit, rename, delete
        let table = [
            (Some(Role::Owner), [true, true, true, true, true]),
            (Some(Role::Admin), [true, true, true, true, false]),
            (Some(Role::Member), [true, false, true, false, false]),
            (Some(Role::Viewer), [true, false, false, false, false]),
            (None, [false, false, false, false, false]),
        ];
        for (role, expected) in table {
            let s = as_role(role);
            let got = [
                s.can_read(),
                s.can_manage_members(),
                s.can_submit(),
                s.can_rename(),
                s.can_delete(),
            ];
            assert_eq!(got, expected, "{role:?}");
        }
    }

    #[test]
    fn refusals_name_the_action_and_the_role_as_a_sentence_would() {
        let refusal = |role, action| match as_role(role).check(action) {
            Err(Error::Forbidden(message)) => message,
            other => panic!("{other:?}"),
        };
        let change = |current, new| WorkspaceAction::ChangeMember { current, new };
        for (role, action, expected) in [
            (
                Some(Role::Viewer),
                WorkspaceAction::SubmitJobs,
                "you cannot submit jobs in this workspace: you are a VIEWER",
            ),
            (
                Some(Role::Member),
                WorkspaceAction::Rename,
                "you cannot rename this workspace: you are a MEMBER",
            ),
            (
                Some(Role::Admin),
                WorkspaceAction::Delete,
                "you cannot delete this workspace: you are an ADMIN",
            ),
            (
                Some(Role::Admin),
                change(None, Some(Role::Owner)),
                "you cannot add an OWNER to this workspace: you are an ADMIN",
            ),
            (
                Some(Role::Admin),
                change(Some(Role::Owner), Some(Role::Member)),
                "you cannot change an OWNER into a MEMBER: you are an ADMIN",
            ),
            (
                Some(Role::Member),
                change(Some(Role::Admin), None),
                "you cannot remove an ADMIN from this workspace: you are a MEMBER",
            ),
            (
                Some(Role::Member),
                WorkspaceAction::ManageWebhooks,
                "you cannot manage the webhooks of this workspace: you are a MEMBER",
            ),
            (
                None,
                WorkspaceAction::Rename,
                "you cannot rename this workspace: you are not a member of it",
            ),
        ] {
            assert_eq!(refusal(role, action), expected);
        }
    }

    #[test]
    fn platform_admins_may_do_everything() {
        let s = Standing {
            role: None,
            platform_admin: true,
        };
        assert!(s.can_read() && s.can_manage_members() && s.can_submit() && s.can_delete());
        assert!(s.can_change_member(Some(Role::Owner), None));
    }

    #[test]
    fn admins_never_touch_owners_and_others_never_change_members() {
        let admin = as_role(Some(Role::Admin));
        let owner = as_role(Some(Role::Owner));
        for current in ROLES {
            for new in ROLES {
                let touches_owner = current == Some(Role::Owner) || new == Some(Role::Owner);
                assert_eq!(admin.can_change_member(current, new), !touches_owner);
                assert!(owner.can_change_member(current, new));
                for other in [Some(Role::Member), Some(Role::Viewer), None] {
                    assert!(!as_role(other).can_change_member(current, new));
                }
            }
        }
    }
}
