//! WordCount, written against shardflow's DataStream API.
//!
//! ```text
//! cargo run --release --example wordcount -p shardflow                 # generated text
//! cargo run --release --example wordcount -p shardflow -- FILE_OR_DIR  # your text
//! cargo run --release --example wordcount -p shardflow -- --socket localhost:9999
//! ```
//!
//! With `--socket`, the job reads lines from a TCP server (try `nc -lk 9999` in another terminal
//! and type) and prints every updated count as it streams, as Flink's socket WordCount does.

use shardflow::prelude::*;

fn main() -> Result<(), JobError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut env = StreamExecutionEnvironment::local();

    let (lines, streaming) = match args.as_slice() {
        [flag, address] if flag == "--socket" => {
            let (host, port) = address.rsplit_once(':').expect("--socket HOST:PORT");
            let port = port.parse().expect("a port number");
            (env.socket_text_stream(host, port), true)
        }
        [path] => (env.read_text_file(path), false),
        _ => {
            let text = shardflow::datagen::ZipfText::standard(7);
            let lines: Vec<String> = (0..100_000)
                .map(|j| {
                    let mut s = String::new();
                    text.line(j, &mut s);
                    s
                })
                .collect();
            (env.from_iter(lines), false)
        }
    };
    env.set_runtime_mode(if streaming {
        RuntimeMode::Streaming
    } else {
        RuntimeMode::Batch
    });

    let counts = lines
        .flat_map(|line: String, out: &mut Collector<(String, u64)>| {
            for word in line
                .split(|c: char| !c.is_alphanumeric())
                .filter(|w| !w.is_empty())
            {
                out.collect((word.to_lowercase(), 1));
            }
        })
        .key_by_ref(|wc: &(String, u64)| &wc.0)
        .sum(|wc: &mut (String, u64)| &mut wc.1);

    if streaming {
        counts.print();
        env.execute("socket wordcount")?;
    } else {
        let counts = counts.collect();
        let result = env.execute("wordcount")?;
        let mut counts = counts.take();
        counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        for (word, n) in counts.iter().take(10) {
            println!("{n:>10}  {word}");
        }
        eprint!("{result}");
    }
    Ok(())
}
