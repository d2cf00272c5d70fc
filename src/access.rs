//! Who is asking, and the one place each permission is decided.
//!
//! Mutations enforce these rules and the `viewerCan*` fields report them, from the same functions.

use entity::membership::Role;
use entity::{membership, user, workspace};
use sea_orm::{ConnectionTrait, EntityTrait};
use uuid::Uuid;

use crate::error::{Error, Result};

/// The caller of a request.
#[derive(Debug, Clone)]
pub enum Viewer {
    /// No token: sees only what is public.
    Anonymous,
    /// A user, authenticated by one of their API tokens.
    User { user: user::Model, token_id: Uuid },
    /// The server itself or its command line, acting with platform-admin rights.
    System,
}

impl Viewer {
    pub fn user(&self) -> Option<&user::Model> {
        match self {
            Viewer::User { user, .. } => Some(user),
            _ => None,
        }
    }

    pub fn user_id(&self) -> Option<Uuid> {
        self.user().map(|user| user.id)
    }

    /// The user, or UNAUTHENTICATED.
    pub fn require_user(&self) -> Result<&user::Model> {
        self.user().ok_or(Error::Unauthenticated)
    }

    pub fn is_platform_admin(&self) -> bool {
        match self {
            Viewer::User { user, .. } => user.is_platform_admin,
            Viewer::System => true,
            Viewer::Anonymous => false,
        }
    }
}

/// A caller's standing in one workspace: the inputs of every workspace decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Standing {
    pub role: Option<Role>,
    pub platform_admin: bool,
}

impl Standing {
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
}

/// A workspace as one caller sees it.
#[derive(Debug, Clone)]
pub struct WorkspaceAccess {
    pub workspace: workspace::Model,
    pub standing: Standing,
}

impl WorkspaceAccess {
    /// Loads a workspace the viewer can read; NOT_FOUND otherwise, never revealing it exists.
    /// Anonymous callers, who can read no workspace, are told to authenticate.
    pub async fn load(db: &impl ConnectionTrait, viewer: &Viewer, id: Uuid) -> Result<Self> {
        let not_found = || Error::NotFound("workspace");
        if matches!(viewer, Viewer::Anonymous) {
            return Err(Error::Unauthenticated);
        }
        let workspace = workspace::Entity::find_by_id(id)
            .one(db)
            .await?
            .ok_or_else(not_found)?;
        let standing = standing(db, viewer, id).await?;
        if !standing.can_read() {
            return Err(not_found());
        }
        Ok(WorkspaceAccess {
            workspace,
            standing,
        })
    }

    /// FORBIDDEN with a message naming the action unless `allowed`.
    pub fn require(&self, allowed: bool, action: &str) -> Result<()> {
        if allowed {
            return Ok(());
        }
        let role = match self.standing.role {
            Some(role) => format!("a {}", role_name(role)),
            None => "not a member".to_owned(),
        };
        Err(Error::forbidden(format!(
            "you cannot {action} in this workspace: you are {role}"
        )))
    }
}

/// The viewer's standing in a workspace.
pub async fn standing(
    db: &impl ConnectionTrait,
    viewer: &Viewer,
    workspace_id: Uuid,
) -> Result<Standing> {
    let role = match viewer.user_id() {
        Some(user_id) => membership::Entity::find_for(workspace_id, user_id)
            .one(db)
            .await?
            .map(|membership| membership.role),
        None => None,
    };
    Ok(Standing {
        role,
        platform_admin: viewer.is_platform_admin(),
    })
}

/// Only platform administrators give or adjust credits.
pub fn can_manage_credits(viewer: &Viewer) -> bool {
    viewer.is_platform_admin()
}

/// Only platform administrators create users and tokens for others.
pub fn can_manage_users(viewer: &Viewer) -> bool {
    viewer.is_platform_admin()
}

/// The role as clients spell it.
pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Owner => "OWNER",
        Role::Admin => "ADMIN",
        Role::Member => "MEMBER",
        Role::Viewer => "VIEWER",
    }
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
