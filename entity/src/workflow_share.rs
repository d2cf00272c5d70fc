//! An e-mail address invited to see a workflow shared as INVITED.

use sea_orm::entity::prelude::*;

use crate::ids::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "workflow_shares")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub workflow_id: WorkflowId,
    /// Lower-cased.
    pub email: String,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::workflow::Entity",
        from = "Column::WorkflowId",
        to = "super::workflow::Column::Id",
        on_delete = "Cascade"
    )]
    Workflow,
}

impl ActiveModelBehavior for ActiveModel {}

impl Entity {
    /// The invitations of one workflow.
    pub fn find_of_workflow(workflow_id: WorkflowId) -> Select<Entity> {
        Self::find().filter(Column::WorkflowId.eq(workflow_id))
    }
}
