//! Credits: the append-only ledger behind every workspace balance.

pub mod ledger;
