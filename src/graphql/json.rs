//! A GraphQL response written as JSON, byte for byte as serde_json writes it, faster.
//!
//! serde_json examines every byte of every string through its escape table, keys included:
//! on a history page of 50 jobs that is about 760 strings and most of the serialization's
//! cost. Almost none of them needs escaping, and such a string is copied as it is here; any
//! other (a quote, a backslash or a control character in it) is written by serde_json, as are
//! numbers, errors and extensions. The field order is the `Response`'s own: `data`,
//! `extensions`, `errors`.
//!
//! A value may also be JSON written already ([`raw`]), which is copied as it is. It travels as
//! bytes (`Value::Binary`): no field of the schema answers bytes (it has no such scalar), so
//! in a response those are only ever JSON written already, and only this writer meets them
//! (only the HTTP responses this writer writes have them: `inline::WrittenInPlace`).

use async_graphql::{Response, Value};

/// A value whose JSON text is `json`, written already: it must be one JSON value.
pub fn raw(json: Vec<u8>) -> Value {
    Value::Binary(json.into())
}

/// Appends `response` to `out`.
pub fn write_response(out: &mut Vec<u8>, response: &Response) -> serde_json::Result<()> {
    out.extend_from_slice(b"{\"data\":");
    write_value(out, &response.data)?;
    if !response.extensions.is_empty() {
        out.extend_from_slice(b",\"extensions\":");
        serde_json::to_writer(&mut *out, &response.extensions)?;
    }
    if !response.errors.is_empty() {
        out.extend_from_slice(b",\"errors\":");
        serde_json::to_writer(&mut *out, &response.errors)?;
    }
    out.push(b'}');
    Ok(())
}

/// Appends `value`.
pub fn write_value(out: &mut Vec<u8>, value: &Value) -> serde_json::Result<()> {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Boolean(true) => out.extend_from_slice(b"true"),
        Value::Boolean(false) => out.extend_from_slice(b"false"),
        Value::String(text) => write_str(out, text)?,
        Value::Enum(name) => write_str(out, name)?,
        Value::List(items) => {
            out.push(b'[');
            for (at, item) in items.iter().enumerate() {
                if at > 0 {
                    out.push(b',');
                }
                write_value(out, item)?;
            }
            out.push(b']');
        }
        Value::Object(fields) => {
            out.push(b'{');
            for (at, (key, value)) in fields.iter().enumerate() {
                if at > 0 {
                    out.push(b',');
                }
                write_str(out, key)?;
                out.push(b':');
                write_value(out, value)?;
            }
            out.push(b'}');
        }
        Value::Binary(json) => out.extend_from_slice(json),
        Value::Number(_) => serde_json::to_writer(&mut *out, value)?,
    }
    Ok(())
}

/// A JSON string: copied between quotes when serde_json would escape none of its bytes (it
/// escapes `"`, `\` and the control characters below 0x20, nothing else).
pub fn write_str(out: &mut Vec<u8>, text: &str) -> serde_json::Result<()> {
    if needs_escaping(text.as_bytes()) {
        return serde_json::to_writer(&mut *out, text);
    }
    out.reserve(text.len() + 2);
    out.push(b'"');
    out.extend_from_slice(text.as_bytes());
    out.push(b'"');
    Ok(())
}

/// Whether a byte of `bytes` is below 0x20, `"` or `\`: eight bytes at a time, with the exact
/// tests of "Bit Twiddling Hacks" (a byte below `n`, for `n` up to 128; a zero byte).
fn needs_escaping(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    let below = |word: u64, n: u8| word.wrapping_sub(ONES * u64::from(n)) & !word & HIGHS;
    let zero = |word: u64| below(word, 1);
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let word = u64::from_ne_bytes(word.try_into().expect("eight bytes"));
        if below(word, 0x20) | zero(word ^ (ONES * u64::from(b'"'))) | zero(word ^ (ONES * 0x5c))
            != 0
        {
            return true;
        }
    }
    words
        .remainder()
        .iter()
        .any(|&byte| byte < 0x20 || byte == b'"' || byte == b'\\')
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_graphql::indexmap::IndexMap;
    use async_graphql::{ErrorExtensionValues, Name, PathSegment, Pos, ServerError};

    fn object(fields: Vec<(&str, Value)>) -> Value {
        Value::Object(
            fields
                .into_iter()
                .map(|(key, value)| (Name::new(key), value))
                .collect::<IndexMap<_, _>>(),
        )
    }

    #[test]
    fn a_byte_to_escape_is_found_wherever_it_is() {
        let plain = |byte: u8| !(byte < 0x20 || byte == b'"' || byte == b'\\');
        for len in 0..40 {
            assert!(!needs_escaping(&vec![b'a'; len]));
            for at in 0..len {
                for byte in 0..=255u8 {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = byte;
                    assert_eq!(
                        needs_escaping(&bytes),
                        !plain(byte),
                        "{byte:#x} at {at} of {len}"
                    );
                    // Among bytes with the high bit set, which the tests must not mistake.
                    let mut bytes = vec![0xe9; len];
                    bytes[at] = byte;
                    assert_eq!(
                        needs_escaping(&bytes),
                        !plain(byte),
                        "{byte:#x} at {at} of {len}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_response_is_written_as_serde_json_writes_it() {
        let strings = [
            "",
            "plain",
            "quote \" inside",
            "back\\slash",
            "line\nbreak\ttab\r",
            "\u{0}\u{1f}\u{7f}",
            "é ü 漢字 🧬",
            "\u{2028}\u{2029} / </script>",
        ];
        let mut fields: Vec<(&str, Value)> = strings
            .iter()
            .map(|text| (*text, Value::String((*text).to_owned())))
            .collect();
        fields.extend([
            ("null", Value::Null),
            ("yes", Value::Boolean(true)),
            ("no", Value::Boolean(false)),
            ("int", Value::from(-42)),
            ("big", Value::from(u64::MAX)),
            ("float", Value::from(0.1 + 0.2)),
            ("enum", Value::Enum(Name::new("QUEUED"))),
            ("empty list", Value::List(vec![])),
            ("empty object", object(vec![])),
            (
                "nested",
                Value::List(vec![
                    object(vec![("id", Value::from("job_1")), ("a\"b", Value::Null)]),
                    Value::List(vec![Value::from(1), Value::from("two")]),
                ]),
            ),
        ]);
        let mut extensions = ErrorExtensionValues::default();
        extensions.set("code", "NOT_FOUND");
        let mut error = ServerError::new("no \"such\" job", Some(Pos { line: 1, column: 3 }));
        error.path = vec![PathSegment::Field("job".to_owned()), PathSegment::Index(2)];
        error.extensions = Some(extensions);
        let mut responses = vec![
            Response::new(object(fields.clone())),
            Response::new(Value::Null),
            Response::from_errors(vec![error.clone()]),
        ];
        let mut with_all = Response::new(object(fields)).extension("cost", Value::from(7));
        with_all.errors = vec![error];
        responses.push(with_all);
        for response in responses {
            let mut written = Vec::new();
            write_response(&mut written, &response).unwrap();
            let expected = serde_json::to_vec(&response).unwrap();
            assert_eq!(
                String::from_utf8(written).unwrap(),
                String::from_utf8(expected).unwrap()
            );
        }
    }

    #[test]
    fn json_written_already_is_copied_as_it_is_at_any_depth() {
        // Keys in order: the expected text is written from a parsed value.
        let text = r#"{"id":"job_1","n":[1,null,{"x":true}],"name":"a \"b\" é"}"#;
        let written = |json: &str| raw(json.as_bytes().to_vec());
        let parsed = |json: &str| Value::from_json(serde_json::from_str(json).unwrap()).unwrap();
        let shape = |value: &dyn Fn(&str) -> Value| {
            object(vec![
                ("page", value(text)),
                (
                    "items",
                    Value::List(vec![value("{}"), value("null"), value(text)]),
                ),
                (
                    "deep",
                    object(vec![("node", value(text)), ("n", Value::from(1))]),
                ),
            ])
        };
        let mut out = Vec::new();
        write_response(&mut out, &Response::new(shape(&written))).unwrap();
        let expected = serde_json::to_vec(&Response::new(shape(&parsed))).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            String::from_utf8(expected).unwrap()
        );
    }
}
