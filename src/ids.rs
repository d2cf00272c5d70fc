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
}

impl Kind {
    const ALL: [Kind; 8] = [
        Kind::User,
        Kind::ApiToken,
        Kind::Workspace,
        Kind::Membership,
        Kind::CreditTransaction,
        Kind::Job,
        Kind::Batch,
        Kind::File,
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
        }
    }
}

/// The global id of an object.
pub fn encode(kind: Kind, id: Uuid) -> ID {
    ID(format!("{}_{}", kind.prefix(), id.simple()))
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
pub fn decode(kind: Kind, field: &str, id: &str) -> Result<Uuid> {
    let (found, uuid) = decode_any(field, id)?;
    if found != kind {
        return Err(Error::bad_input(
            field,
            format!(
                "expected a {} id, got a {} id",
                kind.type_name(),
                found.type_name()
            ),
        ));
    }
    Ok(uuid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_round_trips_with_its_kind() {
        let uuid = Uuid::now_v7();
        let id = encode(Kind::Workspace, uuid);
        assert!(id.starts_with("ws_"));
        assert_eq!(decode(Kind::Workspace, "id", &id).unwrap(), uuid);
        assert_eq!(decode_any("id", &id).unwrap(), (Kind::Workspace, uuid));
    }

    #[test]
    fn an_id_of_another_kind_is_refused_with_the_field_named() {
        let id = encode(Kind::Job, Uuid::now_v7());
        let err = decode(Kind::Workspace, "workspaceId", &id).unwrap_err();
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
