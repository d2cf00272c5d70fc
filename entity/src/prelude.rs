//! Entity aliases for `use entity::prelude::*`.

pub use crate::api_token::Entity as ApiToken;
pub use crate::batch::Entity as Batch;
pub use crate::credit_transaction::Entity as CreditTransaction;
pub use crate::file::Entity as File;
pub use crate::job::Entity as Job;
pub use crate::job_event::Entity as JobEvent;
pub use crate::job_key::Entity as JobKey;
pub use crate::job_share::Entity as JobShare;
pub use crate::live_event::Entity as LiveEvent;
pub use crate::membership::Entity as Membership;
pub use crate::user::Entity as User;
pub use crate::webhook::Entity as Webhook;
pub use crate::webhook_attempt::Entity as WebhookAttempt;
pub use crate::webhook_delivery::Entity as WebhookDelivery;
pub use crate::worker::Entity as Worker;
pub use crate::workflow::Entity as Workflow;
pub use crate::workflow_share::Entity as WorkflowShare;
pub use crate::workflow_step::Entity as WorkflowStep;
pub use crate::workspace::Entity as Workspace;
