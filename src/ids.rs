//! Global object ids and pagination cursors: the opaque strings clients pass back.
//!
//! A global id is a type prefix and the object's UUID (`ws_0193...`), so `node(id)` knows what
//! to load and an id of the wrong type is refused before any query.

use async_graphql::ID;
use uuid::Uuid;

use crate::error::{Error, Result};

/// The object types that have global ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    User,
    ApiToken,
    Workspace,
    Membership,
    CreditTransaction,
    Job,
    Batch,
    File,
    Webhook,
    WebhookDelivery,
    Workflow,
}

impl Kind {
    const ALL: [Kind; 11] = [
        Kind::User,
        Kind::ApiToken,
        Kind::Workspace,
        Kind::Membership,
        Kind::CreditTransaction,
        Kind::Job,
        Kind::Batch,
        Kind::File,
        Kind::Webhook,
        Kind::WebhookDelivery,
        Kind::Workflow,
    ];

    const fn prefix(self) -> &'static str {
        match self {
            Kind::User => "usr",
            Kind::ApiToken => "tok",
            Kind::Workspace => "ws",
            Kind::Membership => "mem",
            Kind::CreditTransaction => "txn",
            Kind::Job => "job",
            Kind::Batch => "bat",
            Kind::File => "file",
            Kind::Webhook => "whk",
            Kind::WebhookDelivery => "dlv",
            Kind::Workflow => "wf",
        }
    }

    const fn type_name(self) -> &'static str {
        match self {
            Kind::User => "User",
            Kind::ApiToken => "ApiToken",
            Kind::Workspace => "Workspace",
            Kind::Membership => "Membership",
            Kind::CreditTransaction => "CreditTransaction",
            Kind::Job => "Job",
            Kind::Batch => "Batch",
            Kind::File => "File",
            Kind::Webhook => "Webhook",
            Kind::WebhookDelivery => "WebhookDelivery",
            Kind::Workflow => "Workflow",
        }
    }
}

/// An id type with a global form: its kind decides the prefix.
pub trait GlobalId: Copy + Into<Uuid> {
    const KIND: Kind;
    fn from_uuid(uuid: Uuid) -> Self;
}

macro_rules! global_ids {
    ($($kind:ident => $id:ident,)*) => {$(
        impl GlobalId for entity::ids::$id {
            const KIND: Kind = Kind::$kind;
            fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }
        }
    )*};
}

global_ids! {
    User => UserId,
    ApiToken => TokenId,
    Workspace => WorkspaceId,
    Membership => MembershipId,
    CreditTransaction => TransactionId,
    Job => JobId,
    Batch => BatchId,
    File => FileId,
    Webhook => WebhookId,
    WebhookDelivery => DeliveryId,
    Workflow => WorkflowId,
}

/// The global id of an object.
pub fn encode<I: GlobalId>(id: I) -> ID {
    // Written into a string of its final size: a page writes one for every object.
    let prefix = I::KIND.prefix();
    let mut out = String::with_capacity(prefix.len() + 1 + uuid::fmt::Simple::LENGTH);
    out.push_str(prefix);
    out.push('_');
    out.push_str(id.into().simple().encode_lower(&mut Uuid::encode_buffer()));
    ID(out)
}

/// Reads any global id: its type and UUID. `field` names the input in the error.
pub fn decode_any(field: &str, id: &str) -> Result<(Kind, Uuid)> {
    let invalid = || Error::bad_input(field, format!("`{id}` is not a jobgraph id"));
    let (prefix, rest) = id.split_once('_').ok_or_else(invalid)?;
    let kind = Kind::ALL
        .into_iter()
        .find(|kind| kind.prefix() == prefix)
        .ok_or_else(invalid)?;
    let uuid = Uuid::try_parse(rest).map_err(|_| invalid())?;
    Ok((kind, uuid))
}

/// Reads a global id that must be of one type.
pub fn decode<I: GlobalId>(field: &str, id: &str) -> Result<I> {
    let (found, uuid) = decode_any(field, id)?;
    if found != I::KIND {
        return Err(Error::bad_input(
            field,
            format!(
                "expected a {} id, got a {} id",
                I::KIND.type_name(),
                found.type_name()
            ),
        ));
    }
    Ok(I::from_uuid(uuid))
}

#[cfg(test)]
mod tests {
    use entity::ids::{JobId, WorkspaceId};

    use super::*;

    #[test]
    fn an_id_round_trips_with_its_kind() {
        let workspace = WorkspaceId::new();
        let id = encode(workspace);
        assert!(id.starts_with("ws_"));
        assert_eq!(decode::<WorkspaceId>("id", &id).unwrap(), workspace);
        assert_eq!(
            decode_any("id", &id).unwrap(),
            (Kind::Workspace, workspace.uuid())
        );
    }

    #[test]
    fn an_id_of_another_kind_is_refused_with_the_field_named() {
        let id = encode(JobId::new());
        let err = decode::<WorkspaceId>("workspaceId", &id).unwrap_err();
        assert_eq!(
            err.to_string(),
            "workspaceId: expected a Workspace id, got a Job id"
        );
    }

    #[test]
    fn malformed_ids_are_refused() {
        for bad in ["", "ws", "ws_", "ws_nothex", "zz_0193", "0193b1e2"] {
            assert!(decode_any("id", bad).is_err(), "{bad} accepted");
        }
    }
}
