//! WordCount against a plain-loop reference, at P = 1, 2, 4 and 8, in every mode.

use std::collections::HashMap;

use shardflow::jobs::wordcount::{self, WordCountInput};
use shardflow::prelude::*;
use shardflow_tests::{generated_lines, into_map, reference_word_counts, seed};

fn run(
    input: &WordCountInput,
    p: u32,
    configure: impl FnOnce(&mut StreamExecutionEnvironment),
) -> (Vec<(wordcount::ShortString, u64)>, JobResult) {
    let mut env = StreamExecutionEnvironment::local();
    env.set_parallelism(p).set_runtime_mode(RuntimeMode::Batch);
    configure(&mut env);
    let counts = wordcount::word_counts(&wordcount::lines(&env, input)).collect();
    let result = env.execute("wordcount").expect("job runs");
    (counts.take(), result)
}

#[test]
fn generated_zipf_text_matches_the_reference_at_every_parallelism() {
    let _cpus = shardflow_tests::shared_cpus();
    let seed = seed(11);
    let lines = 20_000;
    let reference = reference_word_counts(generated_lines(lines, seed).iter().map(|s| s.as_str()));
    let words: u64 = reference.values().sum();
    for p in [1, 2, 4, 8] {
        let (got, result) = run(&WordCountInput::Generated { lines, seed }, p, |_| {});
        assert_eq!(into_map(got), reference, "P = {p}");
        assert_eq!(
            result.operator("tokenize").unwrap().records_out,
            words,
            "P = {p}"
        );
        assert_eq!(
            result.operator("generated_text").unwrap().records_out,
            lines
        );
    }
}

#[test]
fn streaming_mode_emits_every_update_and_the_last_one_is_the_count() {
    let _cpus = shardflow_tests::shared_cpus();
    let seed = seed(12);
    let lines = 3_000;
    let reference = reference_word_counts(generated_lines(lines, seed).iter().map(|s| s.as_str()));
    let words: u64 = reference.values().sum();
    for p in [1, 3] {
        let (got, _) = run(&WordCountInput::Generated { lines, seed }, p, |env| {
            env.set_runtime_mode(RuntimeMode::Streaming);
        });
        assert_eq!(got.len() as u64, words, "one update per word read, P = {p}");
        // Updates of one key arrive in order on one shard: each key's updates count 1, 2, 3, ...
        let mut last: HashMap<String, u64> = HashMap::new();
        for (w, n) in got {
            let prev = last.insert(w.to_string(), n).unwrap_or(0);
            assert_eq!(n, prev + 1, "word {w:?}");
        }
        assert_eq!(last, reference, "P = {p}");
    }
}

#[test]
fn latency_mode_checksums_and_tiny_batches_give_the_same_counts() {
    let _cpus = shardflow_tests::exclusive_cpus();
    let seed = seed(13);
    let lines = 4_000;
    let reference = reference_word_counts(generated_lines(lines, seed).iter().map(|s| s.as_str()));
    let (got, _) = run(&WordCountInput::Generated { lines, seed }, 2, |env| {
        env.set_scheduling_mode(SchedulingMode::Latency);
    });
    assert_eq!(into_map(got), reference, "latency mode");
    let (got, _) = run(&WordCountInput::Generated { lines, seed }, 3, |env| {
        env.set_checksum_policy(ChecksumPolicy::Always);
        env.config_mut().batch_bytes = 256;
        env.config_mut().channel_buffers = 1;
    });
    assert_eq!(
        into_map(got),
        reference,
        "crc on every frame, one credit, 256-byte batches"
    );
    let (got, _) = run(&WordCountInput::Generated { lines, seed }, 2, |env| {
        env.set_flush_policy(FlushPolicy::WhenFull);
        env.config_mut().source_batch_records = 1;
    });
    assert_eq!(
        into_map(got),
        reference,
        "flush when full, one-line source batches"
    );
}

#[test]
fn text_files_split_by_byte_ranges_are_read_exactly_once() {
    let _cpus = shardflow_tests::shared_cpus();
    let seed = seed(14);
    let dir = tempfile::tempdir().unwrap();
    // A directory of files of uneven sizes, CRLF and LF endings, a file without a final newline,
    // an empty file, and a hidden file that must be ignored.
    let lines = generated_lines(5_000, seed);
    let mut all: Vec<String> = Vec::new();
    let cuts = [0, 1, 700, 701, 2_400, 5_000];
    for (i, w) in cuts.windows(2).enumerate() {
        let chunk = &lines[w[0]..w[1]];
        let sep = if i % 2 == 0 { "\n" } else { "\r\n" };
        let mut text = chunk.join(sep);
        if i != 3 {
            text.push_str(sep);
        }
        std::fs::write(dir.path().join(format!("part-{i}.txt")), text).unwrap();
        all.extend(chunk.iter().cloned());
    }
    std::fs::write(dir.path().join("empty.txt"), "").unwrap();
    std::fs::write(dir.path().join(".hidden"), "ignored words here\n").unwrap();
    let reference = reference_word_counts(all.iter().map(|s| s.as_str()));
    for p in [1, 2, 3, 4, 8] {
        let (got, result) = run(&WordCountInput::Path(dir.path().to_path_buf()), p, |_| {});
        assert_eq!(into_map(got), reference, "P = {p}");
        assert_eq!(
            result.operator("read_text_file").unwrap().records_out,
            all.len() as u64,
            "every line once, P = {p}"
        );
    }
}

#[test]
fn lines_are_whole_whatever_the_split_points() {
    let _cpus = shardflow_tests::shared_cpus();
    // Every split point of a small file, at every P up to 8: the lines read, as a multiset,
    // equal the file's lines.
    let dir = tempfile::tempdir().unwrap();
    let text = "alpha\n\nbeta gamma\nd\n\n\nepsilon zeta eta\ntheta";
    let path = dir.path().join("small.txt");
    std::fs::write(&path, text).unwrap();
    let mut expected: Vec<String> = text.split('\n').map(String::from).collect();
    expected.sort();
    for p in 1..=8 {
        let mut env = StreamExecutionEnvironment::local();
        env.set_parallelism(p);
        let got = env.read_text_file(&path).collect();
        env.execute("lines").unwrap();
        let mut got = got.take();
        got.sort();
        assert_eq!(got, expected, "P = {p}");
    }
}
