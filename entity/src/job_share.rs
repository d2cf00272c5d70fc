//! An e-mail address invited to see a job shared as INVITED.

use sea_orm::entity::prelude::*;

use crate::ids::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "job_shares")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub job_id: JobId,
    /// Lower-cased.
    pub email: String,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::job::Entity",
        from = "Column::JobId",
        to = "super::job::Column::Id",
        on_delete = "Cascade"
    )]
    Job,
}

impl ActiveModelBehavior for ActiveModel {}

impl Entity {
    /// The invitations of one job.
    pub fn find_of_job(job_id: JobId) -> Select<Entity> {
        Self::find().filter(Column::JobId.eq(job_id))
    }
}
