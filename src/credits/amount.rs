//! `Credits`: an amount of credits that is never negative and never above `Credits::MAX`, with
//! checked arithmetic. Every price, charge and balance passes through it, so no product or sum
//! can wrap, and every figure fits a GraphQL `Int` (a signed 32-bit integer).

use std::fmt;

use serde::{Deserialize, Serialize};

/// A whole number of credits, from 0 to `Credits::MAX`. Read from a tools file, a number outside
/// that range is refused when the file is loaded.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize,
)]
#[serde(try_from = "i64", into = "i64")]
pub struct Credits(i64);

impl Credits {
    /// The most credits one price, one movement or one balance may reach: two billion, below
    /// the 2,147,483,647 of a GraphQL `Int`.
    pub const MAX: Credits = Credits(2_000_000_000);

    pub const ZERO: Credits = Credits(0);

    /// `n` credits, or `None` outside 0 to `MAX`.
    pub const fn new(n: i64) -> Option<Credits> {
        if n >= 0 && n <= Self::MAX.0 {
            Some(Credits(n))
        } else {
            None
        }
    }

    /// `n` credits, or `None` above `MAX`.
    pub fn from_u64(n: u64) -> Option<Credits> {
        i64::try_from(n).ok().and_then(Credits::new)
    }

    pub const fn get(self) -> i64 {
        self.0
    }

    /// The sum, or `None` above `MAX`.
    pub fn checked_add(self, other: Credits) -> Option<Credits> {
        Credits::new(self.0.checked_add(other.0)?)
    }

    /// `quantity` times this price, or `None` above `MAX`.
    pub fn checked_mul(self, quantity: u64) -> Option<Credits> {
        Credits::from_u64(u64::try_from(self.0).ok()?.checked_mul(quantity)?)
    }

    /// The sum of many amounts, or `None` above `MAX`.
    pub fn checked_sum(amounts: impl IntoIterator<Item = Credits>) -> Option<Credits> {
        amounts
            .into_iter()
            .try_fold(Credits::ZERO, Credits::checked_add)
    }
}

impl fmt::Display for Credits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl From<Credits> for i64 {
    fn from(credits: Credits) -> i64 {
        credits.0
    }
}

impl TryFrom<i64> for Credits {
    type Error = String;

    fn try_from(n: i64) -> Result<Self, Self::Error> {
        Credits::new(n).ok_or_else(|| format!("must be 0 to {} credits", Credits::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_stay_between_zero_and_the_ceiling() {
        let max = Credits::MAX;
        assert!(max.get() < i64::from(i32::MAX));
        assert_eq!(Credits::new(-1), None);
        assert_eq!(Credits::new(max.get() + 1), None);
        assert_eq!(Credits::from_u64(u64::MAX), None);
        let two = Credits::new(2).unwrap();
        assert_eq!(two.checked_add(two), Credits::new(4));
        assert_eq!(max.checked_add(Credits::new(1).unwrap()), None);
        assert_eq!(two.checked_mul(3), Credits::new(6));
        assert_eq!(two.checked_mul(u64::MAX), None);
        assert_eq!(max.checked_mul(1), Some(max));
        assert_eq!(Credits::ZERO.checked_mul(u64::MAX), Some(Credits::ZERO));
        assert_eq!(
            Credits::checked_sum([max, Credits::new(1).unwrap()]),
            None,
            "a sum above the ceiling"
        );
        assert_eq!(Credits::checked_sum([two; 3]), Credits::new(6));
        assert!(Credits::try_from(-5).is_err());
    }
}
