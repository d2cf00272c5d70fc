//! Scalars of the schema beyond GraphQL's own.

use async_graphql::{InputValueError, InputValueResult, Scalar, ScalarType, Value};

/// The largest whole number a JSON number carries exactly in every client (2^53 - 1).
const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// A size in bytes, which a file can take past GraphQL's 32-bit `Int`.
pub struct ByteCount(pub u64);

impl From<i64> for ByteCount {
    fn from(bytes: i64) -> Self {
        ByteCount(u64::try_from(bytes).unwrap_or(0))
    }
}

/// A size in bytes: a whole number from 0 to 2^53 - 1, written as a JSON number (files can be
/// larger than a GraphQL `Int` holds).
#[Scalar(name = "ByteCount")]
impl ScalarType for ByteCount {
    fn parse(value: Value) -> InputValueResult<Self> {
        match &value {
            Value::Number(n) => match n.as_u64() {
                Some(n) if n <= MAX_SAFE_INTEGER => Ok(ByteCount(n)),
                _ => Err(InputValueError::custom(
                    "a byte count is a whole number from 0 to 2^53 - 1",
                )),
            },
            _ => Err(InputValueError::expected_type(value)),
        }
    }

    fn to_value(&self) -> Value {
        Value::Number(self.0.min(MAX_SAFE_INTEGER).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_are_whole_json_safe_numbers() {
        assert_eq!(
            ByteCount(3_000_000_000).to_value(),
            Value::Number(3_000_000_000u64.into())
        );
        assert!(ByteCount::parse(Value::Number(MAX_SAFE_INTEGER.into())).is_ok());
        assert!(ByteCount::parse(Value::Number((MAX_SAFE_INTEGER + 1).into())).is_err());
        assert!(ByteCount::parse(Value::Number((-1).into())).is_err());
        assert!(ByteCount::parse(Value::String("1".into())).is_err());
        assert_eq!(ByteCount::from(-5).0, 0);
    }
}
