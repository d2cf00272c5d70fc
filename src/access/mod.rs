//! Who is asking, and the one place each permission is decided.
//!
//! Mutations enforce these rules and the `viewerCan*` fields report them, from the same functions.

use entity::job::{self, Visibility};
use entity::membership::Role;
use entity::{job_share, membership, user, workspace};
use sea_orm::sea_query::{Expr, ExprTrait as _, IntoCondition as _, LockType};
use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, JoinType, QueryFilter, QuerySelect, RelationTrait,
};
use uuid::Uuid;

use crate::cache::TtlCache;
use crate::error::{Error, Result};

/// The caller of a request.
#[derive(Debug, Clone)]
pub enum Viewer {
    /// No token: sees only what is public.
    Anonymous,
    /// A user, authenticated by one of their API tokens.
    User { user: user::Model, token_id: Uuid },
    /// A remote worker, authenticated by a worker token: it may use the worker API and
    /// download the inputs of the jobs it runs, and nothing else.
    Worker(WorkerToken),
    /// The server itself or its command line, acting with platform-admin rights.
    System,
}

/// The worker token behind a remote worker's request.
#[derive(Debug, Clone)]
pub struct WorkerToken {
    pub user_id: Uuid,
    pub token_id: Uuid,
    /// The token's secret hash: the key that signs the attempt tokens of the jobs it claims,
    /// so that no other token can speak for them.
    pub key: String,
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

    /// The API token this viewer authenticated with.
    pub fn token_id(&self) -> Option<Uuid> {
        match self {
            Viewer::User { token_id, .. } => Some(*token_id),
            Viewer::Worker(token) => Some(token.token_id),
            Viewer::Anonymous | Viewer::System => None,
        }
    }

    /// The worker token of a remote worker's request.
    pub fn worker(&self) -> Option<&WorkerToken> {
        match self {
            Viewer::Worker(token) => Some(token),
            _ => None,
        }
    }

    /// The worker token, for the worker API: FORBIDDEN for a user's token, UNAUTHENTICATED
    /// without one.
    pub fn require_worker(&self) -> Result<&WorkerToken> {
        match self {
            Viewer::Worker(token) => Ok(token),
            Viewer::Anonymous => Err(Error::Unauthenticated),
            Viewer::User { .. } | Viewer::System => Err(Error::forbidden(
                "the worker API takes a worker token; a platform administrator creates one \
                 with createApiToken(input: {kind: WORKER})",
            )),
        }
    }

    /// The user, or UNAUTHENTICATED.
    pub fn require_user(&self) -> Result<&user::Model> {
        self.user().ok_or(Error::Unauthenticated)
    }

    pub fn is_platform_admin(&self) -> bool {
        match self {
            Viewer::User { user, .. } => user.is_platform_admin,
            Viewer::System => true,
            Viewer::Anonymous | Viewer::Worker(_) => false,
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

    /// Decides one action on a workspace: FORBIDDEN, in words naming the action and the
    /// caller's role, unless the caller may.
    pub fn check(self, action: WorkspaceAction) -> Result<()> {
        let allowed = match action {
            WorkspaceAction::SubmitJobs => self.can_submit(),
            WorkspaceAction::Rename => self.can_rename(),
            WorkspaceAction::Delete => self.can_delete(),
            WorkspaceAction::ChangeMember { current, new } => self.can_change_member(current, new),
        };
        if allowed {
            return Ok(());
        }
        let what = match action {
            WorkspaceAction::SubmitJobs => "submit jobs in this workspace".to_owned(),
            WorkspaceAction::Rename => "rename this workspace".to_owned(),
            WorkspaceAction::Delete => "delete this workspace".to_owned(),
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
    /// Moving a member from `current` to `new` role; `None` is not being a member.
    ChangeMember {
        current: Option<Role>,
        new: Option<Role>,
    },
}

/// A workspace as one caller sees it.
#[derive(Debug, Clone)]
pub struct WorkspaceAccess {
    pub workspace: workspace::Model,
    pub standing: Standing,
}

/// Viewers' standing in workspaces, as this process checked it a moment ago: a stream of
/// requests about one workspace checks membership once every few seconds.
///
/// Member changes made through this process drop the workspace's entries at once
/// ([`StandingCache::forget_workspace`]); one made through another process is seen here within
/// the cache's time to live. Only readable standings are kept, and only users' (anonymous
/// callers read no workspace; the system reads every one).
pub struct StandingCache(TtlCache<(Uuid, Uuid), Standing>);

impl StandingCache {
    pub fn new(ttl: std::time::Duration) -> Self {
        StandingCache(TtlCache::new(ttl))
    }

    /// The viewer's standing in a workspace they could read a moment ago.
    pub fn get(&self, viewer: &Viewer, workspace_id: Uuid) -> Option<Standing> {
        self.0.get(&(viewer.user_id()?, workspace_id))
    }

    pub fn remember(&self, viewer: &Viewer, access: &WorkspaceAccess) {
        if let Some(user_id) = viewer.user_id()
            && access.standing.can_read()
        {
            self.0
                .insert((user_id, access.workspace.id), access.standing);
        }
    }

    /// Drops every viewer's standing in a workspace whose members changed.
    pub fn forget_workspace(&self, workspace_id: Uuid) {
        self.0
            .forget(|(_, workspace), _| *workspace == workspace_id);
    }
}

impl WorkspaceAccess {
    /// A workspace the viewer may read, with its standing from [`StandingCache`], without
    /// reading its row: only `workspace.id` is set, for readers that need nothing else (its
    /// lists and counts).
    pub fn without_row(workspace_id: Uuid, standing: Standing) -> Self {
        WorkspaceAccess {
            workspace: workspace::Model {
                id: workspace_id,
                name: String::new(),
                credit_balance: 0,
                created_at: Default::default(),
                updated_at: Default::default(),
            },
            standing,
        }
    }

    /// Loads a workspace the viewer can read; NOT_FOUND otherwise, never revealing it exists.
    /// Anonymous callers, who can read no workspace, are told to authenticate.
    pub async fn load(db: &impl ConnectionTrait, viewer: &Viewer, id: Uuid) -> Result<Self> {
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
        let standing = Standing {
            role: membership.map(|m| m.role),
            platform_admin: viewer.is_platform_admin(),
        };
        if !standing.can_read() {
            return Err(not_found());
        }
        Ok(WorkspaceAccess {
            workspace,
            standing,
        })
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

/// What a user may do to a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobAction {
    Rename,
    Delete,
    Cancel,
    Retry,
    /// Copying it into a workspace where the viewer has standing `into` (the job's own by
    /// default): whoever may read a job may copy it where they may submit jobs.
    Duplicate {
        into: Standing,
    },
    Share,
}

/// A viewer's standing towards the jobs of one workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobStanding {
    pub workspace: Standing,
    pub viewer_id: Option<Uuid>,
}

impl JobStanding {
    /// Whether the viewer manages this job: owners and admins manage every job of their
    /// workspace, members the jobs they submitted.
    pub fn manages(self, job: &job::Model) -> bool {
        let w = self.workspace;
        w.platform_admin
            || matches!(w.role, Some(Role::Owner | Role::Admin))
            || (w.role == Some(Role::Member) && self.viewer_id == Some(job.submitter_id))
    }

    /// Decides one action on one job the viewer may read: FORBIDDEN for the role, CONFLICT
    /// for the job's status. The mutations enforce this and `Job.viewerCan*` report it.
    pub fn check(self, job: &job::Model, action: JobAction) -> Result<()> {
        let allowed = match action {
            JobAction::Retry => self.workspace.can_submit(),
            JobAction::Duplicate { into } => into.can_submit(),
            _ => self.manages(job),
        };
        if !allowed {
            let why = "only its submitter and the workspace's owners and admins may";
            return Err(Error::forbidden(match action {
                JobAction::Rename => format!("you cannot rename this job: {why}"),
                JobAction::Delete => format!("you cannot delete this job: {why}"),
                JobAction::Cancel => format!("you cannot cancel this job: {why}"),
                JobAction::Share => format!("you cannot change the sharing of this job: {why}"),
                JobAction::Retry => {
                    "you cannot retry this job: you may not submit jobs in its workspace".to_owned()
                }
                JobAction::Duplicate { .. } => "you cannot duplicate this job into that \
                     workspace: you may not submit jobs there"
                    .to_owned(),
            }));
        }
        let status = crate::jobs::state::name(job.status);
        match action {
            JobAction::Delete if !job.status.is_final() => Err(Error::conflict(format!(
                "the job is {status}: cancel it before deleting it"
            ))),
            JobAction::Cancel if !crate::jobs::state::cancellable(job.status) => {
                Err(Error::conflict(format!(
                    "the job is {status} and can no longer be cancelled"
                )))
            }
            JobAction::Retry if !crate::jobs::state::retryable(job.status) => {
                Err(Error::conflict(format!(
                    "the job is {status}: only FAILED, TIMEOUT or CANCELLED jobs can be retried"
                )))
            }
            _ => Ok(()),
        }
    }
}

impl JobStanding {
    /// Whether the viewer sees what a job tells of its workspace: the workspace itself, who
    /// submitted it, its batch, its idempotency key and who acted on it. Members do; viewers
    /// who read the job only through its sharing see the work (tool, inputs, settings, result,
    /// files, timeline) and nothing of the workspace behind it. Every representation of a job
    /// (GraphQL, exports, live updates) asks this.
    pub fn sees_workspace(self) -> bool {
        self.workspace.can_read()
    }

    /// A timeline entry's message as the viewer may read it: outsiders do not learn who
    /// cancelled a job, nor which worker ran it, which those entries' messages name.
    pub fn event_message(self, event: &entity::job_event::Model) -> Option<&str> {
        if !self.sees_workspace() {
            match event.status {
                job::JobStatus::Cancelled => return Some("cancelled"),
                job::JobStatus::Processing => return Some("started"),
                _ => {}
            }
        }
        event.message.as_deref()
    }
}

/// A job as one viewer sees it.
#[derive(Debug, Clone)]
pub struct JobAccess {
    pub job: job::Model,
    pub standing: JobStanding,
}

impl JobAccess {
    /// Loads a job the viewer may read: as a member of its workspace, or through its sharing.
    /// NOT_FOUND otherwise.
    pub async fn load(db: &impl ConnectionTrait, viewer: &Viewer, id: Uuid) -> Result<Self> {
        Self::load_locked(db, viewer, id, None).await
    }

    /// [`JobAccess::load`] for a user's change of the job: its row stays locked for the rest of
    /// the write transaction (on PostgreSQL; SQLite's write transaction holds the database),
    /// so that the job is not deleted, with its workspace or alone, before the change is
    /// written.
    pub async fn load_to_change(
        tx: &crate::db::Transaction,
        viewer: &Viewer,
        id: Uuid,
    ) -> Result<Self> {
        Self::load_locked(tx, viewer, id, Some(LockType::NoKeyUpdate)).await
    }

    async fn load_locked(
        db: &impl ConnectionTrait,
        viewer: &Viewer,
        id: Uuid,
        lock: Option<LockType>,
    ) -> Result<Self> {
        let not_found = || Error::NotFound("job");
        let mut select = job::Entity::find_by_id(id);
        if let Some(lock) = lock {
            select = select.lock(lock);
        }
        let job = select.one(db).await?.ok_or_else(not_found)?;
        let workspace = standing(db, viewer, job.workspace_id).await?;
        let access = JobAccess {
            standing: JobStanding {
                workspace,
                viewer_id: viewer.user_id(),
            },
            job,
        };
        if workspace.can_read() || shared_with(db, viewer, &access.job).await? {
            Ok(access)
        } else {
            Err(not_found())
        }
    }

    pub fn check(&self, action: JobAction) -> Result<()> {
        self.standing.check(&self.job, action)
    }
}

/// A stored file the viewer may read: one of a job the viewer may read. NOT_FOUND otherwise,
/// exactly like a missing file.
pub async fn readable_file(
    db: &impl ConnectionTrait,
    viewer: &Viewer,
    id: Uuid,
) -> Result<entity::file::Model> {
    let not_found = || Error::NotFound("file");
    let file = entity::file::Entity::find_by_id(id)
        .one(db)
        .await?
        .ok_or_else(not_found)?;
    let job_id = file.job_id.ok_or_else(not_found)?;
    JobAccess::load(db, viewer, job_id)
        .await
        .map_err(|err| match err {
            Error::NotFound(_) => not_found(),
            other => other,
        })?;
    Ok(file)
}

/// An input file that a remote worker may read: one of the job whose running attempt the
/// attempt token names. NOT_FOUND otherwise, exactly like a missing file.
pub async fn worker_readable_file(
    db: &sea_orm::DatabaseConnection,
    worker: &WorkerToken,
    id: Uuid,
    attempt: Option<&str>,
) -> Result<entity::file::Model> {
    let not_found = || Error::NotFound("file");
    let attempt = attempt.ok_or_else(|| {
        Error::bad_input(
            "attempt",
            "a worker token downloads a file with the attempt token of the job it runs",
        )
    })?;
    let job = match crate::queue::remote::attempt(db, worker, attempt).await {
        Ok(crate::queue::remote::Attempt::Running(job)) => job,
        Ok(crate::queue::remote::Attempt::Cancelled(_)) | Err(Error::StaleAttempt(_)) => {
            return Err(not_found());
        }
        Err(err) => return Err(err),
    };
    entity::file::Entity::find_by_id(id)
        .one(db)
        .await?
        .filter(|file| file.job_id == Some(job.id) && file.role == entity::file::FileRole::Input)
        .ok_or_else(not_found)
}

/// Whether a job's sharing lets a viewer who is not a member read it.
pub async fn shared_with(
    db: &impl ConnectionTrait,
    viewer: &Viewer,
    job: &job::Model,
) -> Result<bool> {
    Ok(match job.visibility {
        Visibility::Public => true,
        Visibility::LoggedIn => viewer.user().is_some(),
        Visibility::Invited => match viewer.user() {
            Some(user) => job_share::Entity::find_of_job(job.id)
                .filter(job_share::Column::Email.eq(user.email.as_str()))
                .one(db)
                .await?
                .is_some(),
            None => false,
        },
        Visibility::Private => false,
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

/// Only platform administrators create worker tokens: a remote worker claims the jobs of
/// every workspace.
pub fn can_create_worker_tokens(viewer: &Viewer) -> bool {
    viewer.is_platform_admin()
}

/// The role with its article, as a sentence says it: "an OWNER", "a MEMBER".
pub fn a_role(role: Role) -> String {
    let article = match role {
        Role::Owner | Role::Admin => "an",
        Role::Member | Role::Viewer => "a",
    };
    format!("{article} {}", role_name(role))
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
