//! Prices: one deterministic function of a tool's price and a checked submission. The same code
//! answers `estimateJobCost` and computes the charge at submission.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{InputFormat, InputSpec, Prepared};
use crate::credits::Credits;
use crate::error::{Error, Result};

/// A tool's price: a base plus terms per input size, per sequence residue and per unit of
/// numeric settings. All in whole credits, each from 0 to `Credits::MAX`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    #[serde(default)]
    pub base: Credits,
    /// Per started kilobyte (1024 bytes) of all inputs together.
    #[serde(default)]
    pub per_kilobyte: Credits,
    /// Per started thousand residues of the FASTA inputs.
    #[serde(default)]
    pub per_1k_residues: Credits,
    #[serde(default)]
    pub settings: Vec<SettingPrice>,
}

/// A price per unit of a numeric setting (rounded up to whole units).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SettingPrice {
    pub name: String,
    pub per_unit: Credits,
}

/// A price and how it was reached. Every figure is at most `Credits::MAX`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Estimate {
    pub total: Credits,
    pub lines: Vec<EstimateLine>,
}

/// One term of a price.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EstimateLine {
    pub label: String,
    /// At most `Credits::MAX`.
    pub quantity: i64,
    pub unit_price: Credits,
    pub amount: Credits,
}

impl Price {
    /// Whether every run is free: no term has a price.
    pub fn is_free(&self) -> bool {
        [self.base, self.per_kilobyte, self.per_1k_residues]
            .into_iter()
            .chain(self.settings.iter().map(|s| s.per_unit))
            .all(|rate| rate == Credits::ZERO)
    }

    /// A priced tool takes at least one credit for every run: its base. Otherwise a submission
    /// whose priced quantities are zero would run for nothing.
    pub(super) fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.is_free() || self.base > Credits::ZERO,
            "a priced tool needs a base of at least 1 credit, so that no run of it is free"
        );
        Ok(())
    }

    /// The price of a checked submission. BAD_USER_INPUT names the field whose quantity takes
    /// the price above `Credits::MAX`, or a priced setting that is not a number of units.
    pub fn estimate(&self, inputs: &[InputSpec], prepared: &Prepared) -> Result<Estimate> {
        let mut lines = vec![(
            "tool".to_owned(),
            EstimateLine {
                label: "base".to_owned(),
                quantity: 1,
                unit_price: self.base,
                amount: self.base,
            },
        )];
        if self.per_kilobyte > Credits::ZERO {
            let bytes = prepared
                .inputs
                .values()
                .try_fold(0u64, |sum, input| sum.checked_add(input.bytes))
                .unwrap_or(u64::MAX);
            lines.push(line(
                "inputs",
                "input kilobytes",
                bytes.div_ceil(1024),
                self.per_kilobyte,
            )?);
        }
        if self.per_1k_residues > Credits::ZERO {
            let residues = prepared
                .inputs
                .iter()
                .filter(|(name, _)| {
                    let name = super::input_of_key(name);
                    inputs
                        .iter()
                        .any(|spec| spec.name == name && spec.format == Some(InputFormat::Fasta))
                })
                .map(|(_, input)| match &input.text {
                    Some(text) => count_residues(text),
                    // A stored file whose residues were not counted (a program's output that
                    // is not FASTA to the reader) is priced by its size: no fewer residues.
                    None => input.residues.unwrap_or(input.bytes),
                })
                .try_fold(0u64, u64::checked_add)
                .unwrap_or(u64::MAX);
            lines.push(line(
                "inputs",
                "thousand residues",
                residues.div_ceil(1000),
                self.per_1k_residues,
            )?);
        }
        for setting in &self.settings {
            let field = format!("settings.{}", setting.name);
            let units = setting_units(&field, prepared.settings.get(&setting.name))?;
            lines.push(line(
                &field,
                &format!("setting {}", setting.name),
                units,
                setting.per_unit,
            )?);
        }
        let mut total = Credits::ZERO;
        for (field, line) in &lines {
            total = total
                .checked_add(line.amount)
                .ok_or_else(|| too_expensive(field))?;
        }
        Ok(Estimate {
            total,
            lines: lines.into_iter().map(|(_, line)| line).collect(),
        })
    }
}

/// The units of a priced setting: its value rounded up to a whole number; none when it is not
/// given. Anything but a number that is not negative is refused: it would make the run free.
fn setting_units(field: &str, value: Option<&Value>) -> Result<u64> {
    let value = match value {
        None => return Ok(0),
        Some(Value::Number(number)) => number.as_f64(),
        Some(_) => None,
    };
    match value {
        Some(value) if value.is_finite() && value >= 0.0 => {
            let units = value.ceil();
            if units > Credits::MAX.get() as f64 {
                return Err(too_expensive(field));
            }
            Ok(units as u64)
        }
        Some(value) if value < 0.0 => Err(Error::bad_input(
            field,
            "must not be negative: the price counts its units",
        )),
        _ => Err(Error::bad_input(
            field,
            "must be a number: the price counts its units",
        )),
    }
}

fn line(
    field: &str,
    label: &str,
    quantity: u64,
    unit_price: Credits,
) -> Result<(String, EstimateLine)> {
    let amount = unit_price
        .checked_mul(quantity)
        .filter(|_| quantity <= Credits::MAX.get() as u64)
        .ok_or_else(|| too_expensive(field))?;
    Ok((
        field.to_owned(),
        EstimateLine {
            label: label.to_owned(),
            quantity: quantity as i64,
            unit_price,
            amount,
        },
    ))
}

/// BAD_USER_INPUT on `field`: it takes a price above what any one job may cost.
pub(crate) fn too_expensive(field: &str) -> Error {
    Error::bad_input(
        field,
        format!(
            "takes the price above {} credits, the most one submission may cost",
            Credits::MAX
        ),
    )
}

/// The residues of a FASTA text: sequence characters outside header lines.
pub fn count_residues(fasta: &str) -> u64 {
    fasta
        .lines()
        .filter(|line| !line.starts_with('>') && !line.starts_with(';'))
        .map(|line| line.bytes().filter(|b| !b.is_ascii_whitespace()).count() as u64)
        .sum()
}

/// Checks that a text is FASTA: a `>` header first, then sequence letters.
pub fn check_fasta(text: &str) -> Result<(), String> {
    let mut lines = text.lines().map(str::trim).filter(|line| !line.is_empty());
    match lines.next() {
        Some(first) if first.starts_with('>') => {}
        _ => return Err("is not FASTA: it must start with a `>` header line".to_owned()),
    }
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.starts_with('>') || line.starts_with(';') {
            continue;
        }
        if let Some(bad) = line
            .chars()
            .find(|c| !(c.is_ascii_alphabetic() || *c == '*' || *c == '-'))
        {
            return Err(format!(
                "is not FASTA: line {} has the character `{bad}`",
                number + 1
            ));
        }
    }
    Ok(())
}

/// Checks FASTA and counts its residues as it arrives in chunks, so a stored file is checked
/// while it is written and never held whole: the same rules as `check_fasta` and
/// `count_residues`.
#[derive(Debug, Default)]
pub struct FastaStream {
    partial: Vec<u8>,
    line: usize,
    started: bool,
    residues: u64,
    error: Option<String>,
}

impl FastaStream {
    pub fn feed(&mut self, mut chunk: &[u8]) {
        while let Some(end) = chunk.iter().position(|b| *b == b'\n') {
            if self.partial.is_empty() {
                self.check_line(&chunk[..end]);
            } else {
                self.partial.extend_from_slice(&chunk[..end]);
                let line = std::mem::take(&mut self.partial);
                self.check_line(&line);
            }
            chunk = &chunk[end + 1..];
        }
        self.partial.extend_from_slice(chunk);
    }

    /// The residues, or why the text is not FASTA.
    pub fn finish(mut self) -> Result<u64, String> {
        let last = std::mem::take(&mut self.partial);
        self.check_line(&last);
        match self.error {
            Some(error) => Err(error),
            None if !self.started => {
                Err("is not FASTA: it must start with a `>` header line".to_owned())
            }
            None => Ok(self.residues),
        }
    }

    fn check_line(&mut self, line: &[u8]) {
        self.line += 1;
        if self.error.is_some() {
            return;
        }
        let trimmed = line.trim_ascii();
        if trimmed.is_empty() {
            return;
        }
        if !self.started {
            if trimmed.starts_with(b">") {
                self.started = true;
            } else {
                self.error = Some("is not FASTA: it must start with a `>` header line".to_owned());
            }
            return;
        }
        if trimmed.starts_with(b">") || trimmed.starts_with(b";") {
            return;
        }
        if let Some(bad) = trimmed
            .iter()
            .find(|c| !(c.is_ascii_alphabetic() || **c == b'*' || **c == b'-'))
        {
            self.error = Some(format!(
                "is not FASTA: line {} has the character `{}`",
                self.line,
                char::from(*bad)
            ));
            return;
        }
        if !line.starts_with(b">") && !line.starts_with(b";") {
            self.residues += line.iter().filter(|b| !b.is_ascii_whitespace()).count() as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Catalog, InputValue};
    use super::*;
    use serde_json::json;

    #[test]
    fn residues_are_counted_outside_headers() {
        assert_eq!(count_residues(">a desc\nACGT\nAC GT\n>b\nNNNN\n"), 12);
        assert!(check_fasta(">a\nACGT\n").is_ok());
        assert!(check_fasta("ACGT").is_err());
        assert!(check_fasta(">a\nAC1T").is_err());
    }

    #[test]
    fn fasta_checked_in_chunks_agrees_with_the_whole_text() {
        for text in [
            ">a desc\nACGT\nAC GT\n>b\nNNNN\n",
            "ACGT",
            ">a\nAC1T",
            ">a\nAC",
            "",
        ] {
            for size in [1, 2, 3, 7, 100] {
                let mut stream = FastaStream::default();
                for chunk in text.as_bytes().chunks(size) {
                    stream.feed(chunk);
                }
                match (stream.finish(), check_fasta(text)) {
                    (Ok(residues), Ok(())) => assert_eq!(residues, count_residues(text)),
                    (Err(a), Err(b)) => assert_eq!(a, b, "{text:?}"),
                    (a, b) => panic!("{text:?}: {a:?} vs {b:?}"),
                }
            }
        }
    }

    #[test]
    fn a_price_adds_its_terms_deterministically() {
        let catalog = Catalog::builtin();
        let kmer = catalog.get("kmer-count").unwrap();
        // 2500 residues -> 3 started thousands; k = 5 -> 5 units; base 2.
        let fasta = format!(">a\n{}\n", "ACGTA".repeat(500));
        let prepared = kmer
            .prepare(
                vec![("sequences".into(), InputValue::Text(fasta))],
                Some(json!({"k": 5})),
            )
            .unwrap();
        let estimate = kmer.estimate(&prepared).unwrap();
        assert_eq!(estimate.total.get(), 2 + 3 + 5);
        let amounts: Vec<_> = estimate
            .lines
            .iter()
            .map(|l| (l.label.as_str(), l.amount.get()))
            .collect();
        assert_eq!(
            amounts,
            [("base", 2), ("thousand residues", 3), ("setting k", 5)]
        );
        assert_eq!(kmer.estimate(&prepared).unwrap(), estimate);
    }

    /// A tool priced per unit of a setting its schema leaves unbounded, and per kilobyte.
    const OPEN: &str = r#"
[[tools]]
name = "open"
title = "Open"
version = "1"
timeout_seconds = 60
inputs = [{ name = "data", kind = "text" }]
settings_schema = { type = "object" }
price = { base = 1, per_kilobyte = 1000000000, settings = [{ name = "n", per_unit = 3 }] }
"#;

    /// The price of `open` for `settings` and `bytes` of text, or the field refused.
    fn price_of(settings: serde_json::Value, bytes: usize) -> Result<i64, String> {
        let catalog = Catalog::parse(OPEN).unwrap();
        let tool = catalog.get("open").unwrap();
        let inputs = match bytes {
            0 => vec![],
            n => vec![("data".into(), InputValue::Text("x".repeat(n)))],
        };
        let prepared = tool.prepare(inputs, Some(settings)).unwrap();
        match tool.estimate(&prepared) {
            Ok(estimate) => {
                assert!(estimate.total <= Credits::MAX);
                for line in &estimate.lines {
                    assert!(line.quantity <= Credits::MAX.get(), "{line:?}");
                }
                Ok(estimate.total.get())
            }
            Err(Error::BadInput { field, .. }) => Err(field),
            Err(other) => panic!("{other}"),
        }
    }

    #[test]
    fn prices_are_checked_against_the_ceiling_and_never_wrap() {
        let refused = |field: &str| Err(field.to_owned());
        for (settings, bytes, expected) in [
            (json!({}), 0, Ok(1)),
            (json!({"n": 0}), 0, Ok(1)),
            (json!({"n": 2}), 0, Ok(1 + 6)),
            // Fractions are rounded up to whole units.
            (json!({"n": 2.5}), 0, Ok(1 + 9)),
            (json!({"n": 0.0001}), 0, Ok(1 + 3)),
            (json!({"n": -0.0}), 0, Ok(1)),
            // The largest price, then one unit more.
            (json!({"n": 666_666_666}), 0, Ok(1_999_999_999)),
            (json!({"n": 666_666_667}), 0, refused("settings.n")),
            (json!({"n": 1e19}), 0, refused("settings.n")),
            (json!({"n": u64::MAX}), 0, refused("settings.n")),
            (json!({"n": 1.7e308}), 0, refused("settings.n")),
            (json!({"n": -1}), 0, refused("settings.n")),
            (json!({"n": -0.5}), 0, refused("settings.n")),
            (json!({"n": i64::MIN}), 0, refused("settings.n")),
            (json!({"n": "1000"}), 0, refused("settings.n")),
            (json!({"n": null}), 0, refused("settings.n")),
            (json!({"n": [1]}), 0, refused("settings.n")),
            // 1 started kilobyte at a billion, then 2 (two billion and the base).
            (json!({}), 1024, Ok(1_000_000_001)),
            (json!({}), 1025, refused("inputs")),
            // Each term fits; their sum does not.
            (json!({"n": 333_333_333}), 1024, Ok(2_000_000_000)),
            (json!({"n": 333_333_334}), 1024, refused("settings.n")),
        ] {
            assert_eq!(
                price_of(settings.clone(), bytes),
                expected,
                "{settings} {bytes}"
            );
        }
    }

    #[test]
    fn a_priced_tool_has_a_base_and_rates_within_the_ceiling() {
        let with_price = |price: &str| {
            Catalog::parse(&OPEN.replace(
                "price = { base = 1, per_kilobyte = 1000000000, settings = [{ name = \"n\", per_unit = 3 }] }",
                price,
            ))
        };
        assert!(with_price("price = { base = 0 }").is_ok(), "a free tool");
        assert!(with_price("price = { base = 1, per_kilobyte = 2000000000 }").is_ok());
        for bad in [
            "price = { base = 0, per_kilobyte = 1 }",
            "price = { base = 0, settings = [{ name = \"n\", per_unit = 1 }] }",
            "price = { base = -1 }",
            "price = { base = 1, per_1k_residues = 2000000001 }",
            "price = { base = 1, settings = [{ name = \"n\", per_unit = 9223372036854775807 }] }",
        ] {
            assert!(with_price(bad).is_err(), "{bad}");
        }
    }
}
