//! Credits: the append-only ledger behind every workspace balance, and `Credits`, the checked
//! amount every price and balance is computed in.

mod amount;
pub mod ledger;

pub use amount::Credits;
