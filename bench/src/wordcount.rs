//! WordCount: the engine against a hand-written single-threaded loop over the same file.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use shardflow::datagen::ZipfText;
use shardflow::jobs::wordcount::{self, WordCountInput, normalize, tokens};
use shardflow::prelude::*;
use shardflow_core::key::KeyedMapHasher;

/// Writes `lines` lines of the standard generated text to `path`; returns its size in bytes.
pub fn write_text(path: &Path, lines: u64, seed: u64) -> std::io::Result<u64> {
    let text = ZipfText::standard(seed);
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut line = String::new();
    for j in 0..lines {
        line.clear();
        text.line(j, &mut line);
        line.push('\n');
        out.write_all(line.as_bytes())?;
    }
    out.flush()?;
    Ok(std::fs::metadata(path)?.len())
}

/// What one run measured.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    pub elapsed: Duration,
    pub words: u64,
    pub distinct: u64,
}

impl Run {
    pub fn words_per_second(&self) -> f64 {
        self.words as f64 / self.elapsed.as_secs_f64()
    }
}

/// The engine: `shardflow run wordcount --input path -p P` in batch mode, counts collected.
pub fn engine(path: &Path, parallelism: u32) -> Run {
    let mut env = StreamExecutionEnvironment::local();
    env.set_parallelism(parallelism)
        .set_runtime_mode(RuntimeMode::Batch);
    let lines = wordcount::lines(&env, &WordCountInput::Path(path.to_path_buf()));
    let counts = wordcount::word_counts(&lines).collect();
    let t0 = Instant::now();
    let result = env.execute("wordcount").expect("wordcount job");
    let counts = counts.take();
    let elapsed = t0.elapsed();
    Run {
        elapsed,
        words: result.operator("tokenize").map_or(0, |o| o.records_out),
        distinct: counts.len() as u64,
    }
}

/// The baseline: read the file, split lines, validate UTF-8, tokenize, count in a hash map —
/// one thread, as a careful engineer writes it (words already lowercase are looked up by `&str`,
/// so a known word costs no allocation; the same fast hasher as the engine's state).
pub fn baseline(path: &Path) -> Run {
    let t0 = Instant::now();
    let data = std::fs::read(path).expect("read input");
    let mut counts: HashMap<String, u64, KeyedMapHasher> = HashMap::default();
    let mut words = 0u64;
    for line in data.split(|&b| b == b'\n') {
        let line = std::str::from_utf8(line).expect("utf-8 input");
        for w in tokens(line) {
            words += 1;
            if w.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            {
                if let Some(c) = counts.get_mut(w) {
                    *c += 1;
                    continue;
                }
                counts.insert(w.to_owned(), 1);
            } else {
                *counts.entry(normalize(w).to_string()).or_insert(0) += 1;
            }
        }
    }
    Run {
        elapsed: t0.elapsed(),
        words,
        distinct: counts.len() as u64,
    }
}
