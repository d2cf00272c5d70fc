//! Prices: one deterministic function of a tool's price and a checked submission. The same code
//! answers `estimateJobCost` and computes the charge at submission.

use serde::Deserialize;

use super::{InputFormat, Prepared, Tool};

/// A tool's price: a base plus terms per input size, per sequence residue and per unit of
/// numeric settings. All in whole credits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    #[serde(default)]
    pub base: i64,
    /// Per started kilobyte (1024 bytes) of all inputs together.
    #[serde(default)]
    pub per_kilobyte: i64,
    /// Per started thousand residues of the FASTA inputs.
    #[serde(default)]
    pub per_1k_residues: i64,
    #[serde(default)]
    pub settings: Vec<SettingPrice>,
}

/// A price per unit of a numeric setting (rounded up to whole units).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingPrice {
    pub name: String,
    pub per_unit: i64,
}

/// A price and how it was reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Estimate {
    pub total: i64,
    pub lines: Vec<EstimateLine>,
}

/// One term of a price.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EstimateLine {
    pub label: String,
    pub quantity: i64,
    pub unit_price: i64,
    pub amount: i64,
}

impl Price {
    pub(super) fn check(&self) -> anyhow::Result<()> {
        let rates = [self.base, self.per_kilobyte, self.per_1k_residues]
            .into_iter()
            .chain(self.settings.iter().map(|s| s.per_unit));
        for rate in rates {
            anyhow::ensure!(rate >= 0, "prices must not be negative");
        }
        Ok(())
    }

    pub(super) fn estimate(&self, tool: &Tool, prepared: &Prepared) -> Estimate {
        let mut lines = vec![EstimateLine {
            label: "base".to_owned(),
            quantity: 1,
            unit_price: self.base,
            amount: self.base,
        }];
        if self.per_kilobyte > 0 {
            let bytes: u64 = prepared.inputs.values().map(|input| input.bytes).sum();
            lines.push(line(
                "input kilobytes",
                bytes.div_ceil(1024) as i64,
                self.per_kilobyte,
            ));
        }
        if self.per_1k_residues > 0 {
            let residues: u64 = prepared
                .inputs
                .iter()
                .filter(|(name, _)| {
                    tool.inputs
                        .iter()
                        .any(|spec| &spec.name == *name && spec.format == Some(InputFormat::Fasta))
                })
                .map(|(_, input)| match &input.text {
                    Some(text) => count_residues(text),
                    None => input.residues.unwrap_or(0),
                })
                .sum();
            lines.push(line(
                "thousand residues",
                residues.div_ceil(1000) as i64,
                self.per_1k_residues,
            ));
        }
        for setting in &self.settings {
            let units = prepared
                .settings
                .get(&setting.name)
                .and_then(serde_json::Value::as_f64)
                .map_or(0, |value| value.max(0.0).ceil() as i64);
            lines.push(line(
                &format!("setting {}", setting.name),
                units,
                setting.per_unit,
            ));
        }
        Estimate {
            total: lines.iter().map(|line| line.amount).sum(),
            lines,
        }
    }
}

fn line(label: &str, quantity: i64, unit_price: i64) -> EstimateLine {
    EstimateLine {
        label: label.to_owned(),
        quantity,
        unit_price,
        amount: quantity.saturating_mul(unit_price),
    }
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
        let estimate = kmer.estimate(&prepared);
        assert_eq!(estimate.total, 2 + 3 + 5);
        let amounts: Vec<_> = estimate
            .lines
            .iter()
            .map(|l| (l.label.as_str(), l.amount))
            .collect();
        assert_eq!(
            amounts,
            [("base", 2), ("thousand residues", 3), ("setting k", 5)]
        );
        assert_eq!(kmer.estimate(&prepared), estimate);
    }
}
