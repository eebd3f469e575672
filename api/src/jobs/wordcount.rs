//! WordCount: the seed's example, and the main job of the `shardflow` binary.
//!
//! ```text
//! lines ─flat_map(tokens)─▶ (word, 1) ─key_by(word)─▶ sum(count) ─▶ sink
//! ```
//!
//! Words are the maximal runs of alphanumeric characters, lowercased (as Flink's example splits on
//! `\W+` and lowercases). In batch mode each shard pre-aggregates its words before the exchange,
//! so only (word, partial count) pairs cross cores, and the sum emits each word's final count once.

use std::path::PathBuf;
use std::sync::Arc;

pub use crate::types::ShortString;
use shardflow_core::operator::Collector;

use crate::datagen::ZipfText;
use crate::env::StreamExecutionEnvironment;
use crate::source::generated::GeneratedTextSource;
use crate::source::split_range;
use crate::stream::DataStream;

/// Where the words come from.
#[derive(Debug, Clone)]
pub enum WordCountInput {
    /// `lines` generated lines of Zipf-distributed words ([`ZipfText::standard`]).
    Generated { lines: u64, seed: u64 },
    /// A text file or a directory of them.
    Path(PathBuf),
}

/// The words of a line, as the job counts them.
pub fn tokens(line: &str) -> impl Iterator<Item = &str> {
    line.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
}

/// A word as the job keys it: lowercased, in a [`ShortString`] (words of up to 14 bytes are
/// held inline: making a word record, and dropping it once the combiner has counted it, costs
/// no allocation).
pub fn normalize(word: &str) -> ShortString {
    ShortString::lowercase(word)
}

/// The lines of the input.
pub fn lines(env: &StreamExecutionEnvironment, input: &WordCountInput) -> DataStream<String> {
    match input {
        WordCountInput::Generated { lines, seed } => {
            let text = Arc::new(ZipfText::standard(*seed));
            let lines = *lines;
            env.add_source("generated_text", move |ctx| {
                let r = split_range(0, lines, ctx.runtime.shard, ctx.runtime.parallelism);
                Ok(GeneratedTextSource::new(text.clone(), r))
            })
        }
        WordCountInput::Path(p) => env.read_text_file(p.clone()),
    }
}

/// The job's dataflow: (word, count) pairs.
pub fn word_counts(lines: &DataStream<String>) -> DataStream<(ShortString, u64)> {
    lines
        .flat_map(|line: String, out: &mut Collector<(ShortString, u64)>| {
            for w in tokens(&line) {
                out.collect((normalize(w), 1));
            }
        })
        .name("tokenize")
        .key_by_ref(|wc: &(ShortString, u64)| &wc.0)
        .sum(|wc: &mut (ShortString, u64)| &mut wc.1)
        .name("count")
}
