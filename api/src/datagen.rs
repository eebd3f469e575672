//! Generated input: text whose words follow a Zipf law, as natural language does.
//!
//! Line `j` of a [`ZipfText`] depends only on the seed and `j`, never on how many shards generate
//! it, so a test or a baseline can regenerate exactly the text a job read.

use shardflow_core::rng::SplitMix64;

/// Syllables words are built from: pronounceable, lowercase, distinct by construction.
const SYLLABLES: [&str; 32] = [
    "ka", "to", "ri", "mu", "sel", "van", "do", "pe", "lin", "gra", "zo", "fu", "ne", "shi", "bar",
    "qui", "lo", "tem", "ax", "or", "dri", "ve", "nu", "cal", "po", "hex", "mi", "ras", "ju", "bo",
    "tir", "we",
];

/// A vocabulary with Zipf-distributed word frequencies.
#[derive(Debug, Clone)]
pub struct ZipfText {
    words: Vec<String>,
    /// cdf[i] = P(rank <= i), rank 0 the most frequent.
    cdf: Vec<f64>,
    seed: u64,
    words_per_line_min: usize,
    words_per_line_max: usize,
}

impl ZipfText {
    /// `vocabulary` distinct words, frequency of rank r proportional to 1/(r+1)^`exponent`.
    pub fn new(vocabulary: usize, exponent: f64, seed: u64) -> Self {
        assert!(vocabulary >= 1);
        let words = (0..vocabulary).map(word_of).collect();
        let mut cdf = Vec::with_capacity(vocabulary);
        let mut acc = 0.0;
        for r in 0..vocabulary {
            acc += 1.0 / ((r + 1) as f64).powf(exponent);
            cdf.push(acc);
        }
        for c in &mut cdf {
            *c /= acc;
        }
        Self {
            words,
            cdf,
            seed,
            words_per_line_min: 6,
            words_per_line_max: 14,
        }
    }

    /// The default text of the wordcount job: 10,000 words, exponent 1.0.
    pub fn standard(seed: u64) -> Self {
        Self::new(10_000, 1.0, seed)
    }

    pub fn vocabulary(&self) -> &[String] {
        &self.words
    }

    /// Appends line `j` (without a newline) to `out`.
    pub fn line(&self, j: u64, out: &mut String) {
        let mut rng = SplitMix64::new(self.seed ^ j.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let span = (self.words_per_line_max - self.words_per_line_min + 1) as u64;
        let n = self.words_per_line_min + rng.below(span) as usize;
        for i in 0..n {
            if i > 0 {
                out.push(' ');
            }
            let u = rng.next_f64();
            let rank = self
                .cdf
                .partition_point(|&c| c < u)
                .min(self.words.len() - 1);
            out.push_str(&self.words[rank]);
        }
    }
}

/// The word of rank `r`: its base-32 digits as syllables.
fn word_of(mut r: usize) -> String {
    let mut w = String::new();
    loop {
        w.push_str(SYLLABLES[r % 32]);
        r /= 32;
        if r == 0 {
            break;
        }
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_distinct_and_frequencies_skewed() {
        let z = ZipfText::new(2000, 1.0, 1);
        let set: std::collections::HashSet<_> = z.vocabulary().iter().collect();
        assert_eq!(set.len(), 2000);
        let mut counts = std::collections::HashMap::new();
        let mut line = String::new();
        for j in 0..20_000 {
            line.clear();
            z.line(j, &mut line);
            for w in line.split(' ') {
                *counts.entry(w.to_string()).or_insert(0u64) += 1;
            }
        }
        let top = counts[&z.vocabulary()[0]];
        let tenth = counts[&z.vocabulary()[9]];
        // Zipf with exponent 1: rank 1 about ten times as frequent as rank 10.
        let ratio = top as f64 / tenth as f64;
        assert!((7.0..14.0).contains(&ratio), "ratio {ratio}");
    }

    #[test]
    fn a_line_depends_only_on_seed_and_index() {
        let (a, b) = (ZipfText::standard(5), ZipfText::standard(5));
        let (mut x, mut y) = (String::new(), String::new());
        a.line(123, &mut x);
        b.line(123, &mut y);
        assert_eq!(x, y);
        y.clear();
        ZipfText::standard(6).line(123, &mut y);
        assert_ne!(x, y);
    }
}
