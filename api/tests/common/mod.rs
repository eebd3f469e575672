//! What the binary's tests share: the brute-force WordCount of generated text, and reading the
//! CSV files a job wrote.

#![allow(dead_code)]

pub mod cluster;

use std::collections::HashMap;
use std::path::Path;

use shardflow::datagen::ZipfText;
use shardflow::jobs::wordcount::{normalize, tokens};

/// Every word's count in `lines` generated lines of `seed`, counted by a plain loop.
pub fn brute_force_counts(seed: u64, lines: u64) -> HashMap<String, u64> {
    let text = ZipfText::standard(seed);
    let mut want: HashMap<String, u64> = HashMap::new();
    let mut line = String::new();
    for j in 0..lines {
        line.clear();
        text.line(j, &mut line);
        for w in tokens(&line) {
            *want.entry(normalize(w).to_string()).or_insert(0) += 1;
        }
    }
    want
}

/// The `word,count` rows of every CSV file in `dir` (a word twice is a failure).
pub fn read_counts(dir: &Path) -> HashMap<String, u64> {
    let mut got: HashMap<String, u64> = HashMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_path(entry.unwrap().path())
            .unwrap();
        for row in reader.records() {
            let row = row.unwrap();
            assert!(
                got.insert(row[0].to_string(), row[1].parse().unwrap())
                    .is_none(),
                "{} twice",
                &row[0]
            );
        }
    }
    got
}

/// Every line of every file in `dir`, sorted.
pub fn sorted_lines(dir: &Path) -> Vec<String> {
    let mut lines = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        lines.extend(text.lines().map(String::from));
    }
    lines.sort();
    lines
}
