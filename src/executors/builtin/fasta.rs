//! The FASTA analyses compiled into jobgraph: sequence statistics, k-mer counting and DNA
//! translation. Pure functions from text and settings to a structured result and its output
//! file.

use std::collections::HashMap;

use serde_json::{Value, json};

/// A FASTA analysis a built-in tool runs on its input `sequences`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Analysis {
    SequenceStats,
    KmerCount,
    TranslateDna,
}

/// An output file: its name, content type and bytes.
pub type OutputFile = (&'static str, &'static str, Vec<u8>);

impl Analysis {
    /// The result of the analysis of `fasta` with the job's `settings`, their defaults where
    /// absent.
    pub fn compute(self, fasta: &str, settings: &Value) -> Value {
        let number = |name: &str, default: u64| {
            settings
                .get(name)
                .and_then(Value::as_u64)
                .unwrap_or(default) as usize
        };
        match self {
            Analysis::SequenceStats => sequence_stats(fasta, number("min_length", 0)),
            Analysis::KmerCount => kmer_count(fasta, number("k", 4), number("top", 20)),
            Analysis::TranslateDna => translate_dna(
                fasta,
                number("frame", 1),
                settings
                    .get("stop_at_first_stop")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            ),
        }
    }

    /// The output file made from a result: a table of the sequences, of the k-mers, or the
    /// proteins as FASTA.
    pub fn output_file(self, result: &Value) -> OutputFile {
        match self {
            Analysis::SequenceStats => sequences_table(result),
            Analysis::KmerCount => kmers_table(result),
            Analysis::TranslateDna => proteins_fasta(result),
        }
    }
}

/// One FASTA record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub id: String,
    pub description: String,
    pub sequence: String,
}

/// Reads FASTA records; sequence letters are upper-cased and whitespace dropped.
pub fn parse_fasta(text: &str) -> Vec<Record> {
    let mut records = Vec::new();
    let mut current: Option<Record> = None;
    for line in text.lines() {
        let line = line.trim();
        if let Some(header) = line.strip_prefix('>') {
            records.extend(current.take());
            let (id, description) = header
                .split_once(char::is_whitespace)
                .unwrap_or((header, ""));
            current = Some(Record {
                id: id.to_owned(),
                description: description.trim().to_owned(),
                sequence: String::new(),
            });
        } else if !line.starts_with(';')
            && let Some(record) = current.as_mut()
        {
            record.sequence.extend(
                line.chars()
                    .filter(|c| !c.is_whitespace())
                    .map(|c| c.to_ascii_uppercase()),
            );
        }
    }
    records.extend(current);
    records
}

/// N50: the length L such that sequences of length L or more hold half of all residues.
pub fn n50(lengths: &[usize]) -> usize {
    let mut sorted = lengths.to_vec();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    let total: usize = sorted.iter().sum();
    let mut running = 0;
    for length in sorted {
        running += length;
        if running * 2 >= total {
            return length;
        }
    }
    0
}

/// Count, lengths, GC content and N50 of the sequences at least `min_length` long, with a
/// table of the sequences.
pub fn sequence_stats(fasta: &str, min_length: usize) -> Value {
    let records: Vec<Record> = parse_fasta(fasta)
        .into_iter()
        .filter(|r| r.sequence.len() >= min_length)
        .collect();
    let lengths: Vec<usize> = records.iter().map(|r| r.sequence.len()).collect();
    let total: usize = lengths.iter().sum();
    let gc = |s: &str| s.bytes().filter(|b| matches!(b, b'G' | b'C')).count();
    let acgt = |s: &str| {
        s.bytes()
            .filter(|b| matches!(b, b'A' | b'C' | b'G' | b'T' | b'U'))
            .count()
    };
    let ratio = |num: usize, den: usize| {
        if den == 0 {
            0.0
        } else {
            num as f64 / den as f64
        }
    };
    let all_gc: usize = records.iter().map(|r| gc(&r.sequence)).sum();
    let all_acgt: usize = records.iter().map(|r| acgt(&r.sequence)).sum();
    json!({
        "count": records.len(),
        "totalLength": total,
        "minLength": lengths.iter().min().copied().unwrap_or(0),
        "maxLength": lengths.iter().max().copied().unwrap_or(0),
        "meanLength": ratio(total, records.len()),
        "gcContent": ratio(all_gc, all_acgt),
        "n50": n50(&lengths),
        "sequences": records.iter().map(|r| json!({
            "id": r.id,
            "length": r.sequence.len(),
            "gcContent": ratio(gc(&r.sequence), acgt(&r.sequence)),
        })).collect::<Vec<_>>(),
    })
}

/// The `top` most frequent k-mers over all sequences (k-mers with letters other than A, C, G, T
/// skipped), most frequent first, ties alphabetically.
pub fn kmer_count(fasta: &str, k: usize, top: usize) -> Value {
    let mut counts: HashMap<&[u8], u64> = HashMap::new();
    let records = parse_fasta(fasta);
    let mut total = 0u64;
    for record in &records {
        let bytes = record.sequence.as_bytes();
        if k == 0 || bytes.len() < k {
            continue;
        }
        for window in bytes.windows(k) {
            if window
                .iter()
                .all(|b| matches!(b, b'A' | b'C' | b'G' | b'T'))
            {
                *counts.entry(window).or_default() += 1;
                total += 1;
            }
        }
    }
    let distinct = counts.len();
    let mut ranked: Vec<(&[u8], u64)> = counts.into_iter().collect();
    ranked.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    ranked.truncate(top);
    json!({
        "k": k,
        "totalKmers": total,
        "distinctKmers": distinct,
        "kmers": ranked.into_iter().map(|(kmer, count)| json!({
            "kmer": String::from_utf8_lossy(kmer),
            "count": count,
        })).collect::<Vec<_>>(),
    })
}

/// The amino acid of a codon in the standard genetic code; `X` for codons with other letters.
pub fn codon_to_amino_acid(codon: &[u8]) -> char {
    const BASES: [u8; 4] = [b'T', b'C', b'A', b'G'];
    const TABLE: &[u8; 64] = b"FFLLSSSSYY**CC*WLLLLPPPPHHQQRRRRIIIMTTTTNNKKSSRRVVVVAAAADDEEGGGG";
    let index = |b: u8| {
        BASES
            .iter()
            .position(|x| *x == if b == b'U' { b'T' } else { b })
    };
    match (index(codon[0]), index(codon[1]), index(codon[2])) {
        (Some(a), Some(b), Some(c)) => TABLE[a * 16 + b * 4 + c] as char,
        _ => 'X',
    }
}

/// Translates each sequence in reading frame 1, 2 or 3.
pub fn translate_dna(fasta: &str, frame: usize, stop_at_first_stop: bool) -> Value {
    let proteins: Vec<Value> = parse_fasta(fasta)
        .iter()
        .map(|record| {
            let bytes = record.sequence.as_bytes();
            let start = frame.saturating_sub(1).min(bytes.len());
            let mut protein = String::with_capacity(bytes.len() / 3);
            for codon in bytes[start..].chunks_exact(3) {
                let amino_acid = codon_to_amino_acid(codon);
                if amino_acid == '*' && stop_at_first_stop {
                    break;
                }
                protein.push(amino_acid);
            }
            json!({ "id": record.id, "length": protein.len(), "protein": protein })
        })
        .collect();
    json!({ "frame": frame, "proteins": proteins })
}

/// The rows of a result's array `key`.
fn rows(result: &Value, key: &str) -> Vec<Value> {
    result[key].as_array().cloned().unwrap_or_default()
}

/// A value as a table cell: strings without their quotes.
fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn sequences_table(result: &Value) -> OutputFile {
    let mut tsv = String::from("id\tlength\tgc_content\n");
    for row in rows(result, "sequences") {
        tsv.push_str(&format!(
            "{}\t{}\t{}\n",
            text(&row["id"]),
            text(&row["length"]),
            text(&row["gcContent"])
        ));
    }
    (
        "sequences.tsv",
        "text/tab-separated-values",
        tsv.into_bytes(),
    )
}

fn kmers_table(result: &Value) -> OutputFile {
    let mut tsv = String::from("kmer\tcount\n");
    for row in rows(result, "kmers") {
        tsv.push_str(&format!(
            "{}\t{}\n",
            text(&row["kmer"]),
            text(&row["count"])
        ));
    }
    ("kmers.tsv", "text/tab-separated-values", tsv.into_bytes())
}

fn proteins_fasta(result: &Value) -> OutputFile {
    let mut fasta = String::new();
    for row in rows(result, "proteins") {
        fasta.push_str(&format!(">{}\n", text(&row["id"])));
        let protein = text(&row["protein"]);
        for line in protein.as_bytes().chunks(60) {
            fasta.push_str(&String::from_utf8_lossy(line));
            fasta.push('\n');
        }
    }
    ("proteins.fasta", "text/x-fasta", fasta.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FASTA: &str = ">a first\nACGTAC\nGG\n>b\nATATAT\n>c short\nGC\n";

    #[test]
    fn fasta_records_are_parsed_with_ids_and_joined_lines() {
        let records = parse_fasta(FASTA);
        assert_eq!(records.len(), 3);
        assert_eq!(records[0].id, "a");
        assert_eq!(records[0].description, "first");
        assert_eq!(records[0].sequence, "ACGTACGG");
    }

    #[test]
    fn n50_halves_the_residues() {
        assert_eq!(n50(&[2, 3, 4, 5, 6, 7, 8, 9, 10]), 8);
        assert_eq!(n50(&[]), 0);
        assert_eq!(n50(&[5]), 5);
    }

    #[test]
    fn sequence_statistics_count_lengths_gc_and_n50() {
        let stats = sequence_stats(FASTA, 0);
        assert_eq!(stats["count"], 3);
        assert_eq!(stats["totalLength"], 16);
        assert_eq!(stats["minLength"], 2);
        assert_eq!(stats["maxLength"], 8);
        // G/C: 5 in a, 0 in b, 2 in c, of 16.
        assert_eq!(stats["gcContent"], 7.0 / 16.0);
        // Lengths 8, 6, 2: the 8 alone holds half of the 16 residues.
        assert_eq!(stats["n50"], 8);
        assert_eq!(sequence_stats(FASTA, 3)["count"], 2);
    }

    #[test]
    fn kmers_are_counted_and_ranked() {
        let result = kmer_count(">x\nAAAAC\n>y\nAAN\n", 2, 2);
        assert_eq!(result["totalKmers"], 5);
        assert_eq!(result["distinctKmers"], 2);
        assert_eq!(
            result["kmers"],
            json!([{"kmer": "AA", "count": 4}, {"kmer": "AC", "count": 1}])
        );
    }

    #[test]
    fn dna_translates_with_the_standard_code() {
        let result = translate_dna(">g\nATGGCCTAAGGG\n", 1, false);
        assert_eq!(result["proteins"][0]["protein"], "MA*G");
        let result = translate_dna(">g\nATGGCCTAAGGG\n", 1, true);
        assert_eq!(result["proteins"][0]["protein"], "MA");
        let result = translate_dna(">g\nCATGGCC\n", 2, false);
        assert_eq!(result["proteins"][0]["protein"], "MA");
        assert_eq!(codon_to_amino_acid(b"NNN"), 'X');
    }

    #[test]
    fn analyses_read_their_settings_or_their_defaults() {
        let fasta = ">g\nATGGCCTAAGGG\n";
        let kmers = Analysis::KmerCount.compute(fasta, &json!({}));
        assert_eq!(kmers, kmer_count(fasta, 4, 20));
        let kmers = Analysis::KmerCount.compute(fasta, &json!({"k": 2, "top": 1}));
        assert_eq!(kmers, kmer_count(fasta, 2, 1));
        let proteins = Analysis::TranslateDna.compute(fasta, &json!({"stop_at_first_stop": true}));
        assert_eq!(proteins, translate_dna(fasta, 1, true));
        let stats = Analysis::SequenceStats.compute(fasta, &json!({"min_length": 20}));
        assert_eq!(stats["count"], 0);
    }

    #[test]
    fn analyses_write_tables_and_fasta() {
        let file = Analysis::KmerCount.output_file(&kmer_count(">x\nAAAAC\n", 2, 5));
        assert_eq!(file.0, "kmers.tsv");
        assert_eq!(
            String::from_utf8_lossy(&file.2),
            "kmer\tcount\nAA\t3\nAC\t1\n"
        );
        let file = Analysis::TranslateDna.output_file(&translate_dna(">g\nATGGCC\n", 1, false));
        assert_eq!(String::from_utf8_lossy(&file.2), ">g\nMA\n");
        let file = Analysis::SequenceStats.output_file(&sequence_stats(">a\nGGAA\n", 0));
        assert_eq!(
            String::from_utf8_lossy(&file.2),
            "id\tlength\tgc_content\na\t4\t0.5\n"
        );
    }
}
