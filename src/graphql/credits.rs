//! GraphQL for the credit ledger.

use async_graphql::{Context, Enum, ID, InputObject, Object, SimpleObject};
use chrono::{DateTime, Utc};
use entity::credit_transaction::{self, TransactionKind};
use entity::ids::WorkspaceId;

use super::users::{UserView, load_user};
use super::workspaces::WorkspaceView;
use super::{db, viewer};
use crate::access::WorkspaceAccess;
use crate::credits::ledger;
use crate::error::ApiResult;
use crate::ids::{self};

/// Why a balance moved.
#[derive(Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(name = "CreditTransactionKind")]
pub enum TransactionKindView {
    /// Credits given to the workspace.
    Grant,
    /// A job's price, taken at submission.
    Charge,
    /// A job's charge given back.
    Refund,
    /// A correction by a platform administrator.
    Adjustment,
}

impl From<TransactionKind> for TransactionKindView {
    fn from(kind: TransactionKind) -> Self {
        match kind {
            TransactionKind::Grant => TransactionKindView::Grant,
            TransactionKind::Charge => TransactionKindView::Charge,
            TransactionKind::Refund => TransactionKindView::Refund,
            TransactionKind::Adjustment => TransactionKindView::Adjustment,
        }
    }
}

/// One entry of a workspace's credit ledger.
pub struct CreditTransactionView(pub credit_transaction::Model);

#[Object(name = "CreditTransaction")]
impl CreditTransactionView {
    pub async fn id(&self) -> ID {
        ids::encode(self.0.id)
    }

    async fn kind(&self) -> TransactionKindView {
        self.0.kind.into()
    }

    /// Signed: positive adds credits, negative takes them. At most 2,000,000,000 either way.
    async fn amount(&self) -> i64 {
        self.0.amount
    }

    /// The workspace balance right after this entry: 0 to 2,000,000,000.
    async fn balance_after(&self) -> i64 {
        self.0.balance_after
    }

    /// Who caused it; null for the system.
    async fn actor(&self, ctx: &Context<'_>) -> ApiResult<Option<UserView>> {
        match self.0.actor_id {
            Some(id) => load_user(ctx, id).await.map(Some),
            None => Ok(None),
        }
    }

    /// The job charged or refunded; the id stays after the job is deleted.
    async fn job_id(&self) -> Option<ID> {
        self.0.job_id.map(ids::encode)
    }

    async fn note(&self) -> Option<&str> {
        self.0.note.as_deref()
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }
}

#[derive(InputObject)]
struct GrantCreditsInput {
    workspace_id: ID,
    /// 1 to 2,000,000,000 credits. A workspace holds at most 2,000,000,000 credits, counting
    /// what its unfinished jobs hold (a failed job gets its charge back).
    amount: i32,
    note: Option<String>,
}

#[derive(InputObject)]
struct AdjustCreditsInput {
    workspace_id: ID,
    /// Signed and non-zero; the balance cannot go below zero, nor above 2,000,000,000 credits
    /// counting what its unfinished jobs hold.
    amount: i32,
    /// Why; required.
    note: String,
}

#[derive(SimpleObject)]
struct CreditsPayload {
    transaction: CreditTransactionView,
    workspace: WorkspaceView,
}

#[derive(Default)]
pub struct CreditsMutation;

impl CreditsMutation {
    async fn payload(
        ctx: &Context<'_>,
        transaction: credit_transaction::Model,
    ) -> ApiResult<CreditsPayload> {
        let access = WorkspaceAccess::load(db(ctx), viewer(ctx), transaction.workspace_id).await?;
        Ok(CreditsPayload {
            transaction: CreditTransactionView(transaction),
            workspace: access.into(),
        })
    }
}

#[Object]
impl CreditsMutation {
    /// Gives credits to a workspace (platform administrators).
    async fn grant_credits(
        &self,
        ctx: &Context<'_>,
        input: GrantCreditsInput,
    ) -> ApiResult<CreditsPayload> {
        let id = ids::decode::<WorkspaceId>("workspaceId", &input.workspace_id)?;
        let (transaction, _) =
            ledger::grant(db(ctx), viewer(ctx), id, input.amount.into(), input.note).await?;
        Self::payload(ctx, transaction).await
    }

    /// Corrects a workspace balance up or down (platform administrators).
    async fn adjust_credits(
        &self,
        ctx: &Context<'_>,
        input: AdjustCreditsInput,
    ) -> ApiResult<CreditsPayload> {
        let id = ids::decode::<WorkspaceId>("workspaceId", &input.workspace_id)?;
        let (transaction, _) = ledger::adjust(
            db(ctx),
            viewer(ctx),
            id,
            input.amount.into(),
            Some(input.note),
        )
        .await?;
        Self::payload(ctx, transaction).await
    }
}
