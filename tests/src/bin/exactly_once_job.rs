//! The exactly-once test job as a process of its own, for the process-death test: it runs the
//! job of `shardflow_tests::exactly_once` with checkpoints, and with `--resume` starts from the
//! newest complete checkpoint in the checkpoint directory, if there is one.
//!
//! `exactly_once_job OUT CHECKPOINTS EVENTS KEYS SEED P THROTTLE [--resume]`

use std::path::PathBuf;
use std::time::Duration;

use shardflow::prelude::*;
use shardflow_core::checkpoint::CheckpointConfig;
use shardflow_state::checkpoint::CheckpointStorage;
use shardflow_tests::exactly_once::{self, Failures};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 7 {
        eprintln!("usage: exactly_once_job OUT CHECKPOINTS EVENTS KEYS SEED P THROTTLE [--resume]");
        std::process::exit(2);
    }
    let number = |i: usize| -> u64 {
        args[i].parse().unwrap_or_else(|_| {
            eprintln!("argument {}: not a number: {:?}", i + 1, args[i]);
            std::process::exit(2)
        })
    };
    let out = PathBuf::from(&args[0]);
    let checkpoints = PathBuf::from(&args[1]);
    let (events, keys, seed) = (number(2), number(3), number(4));
    let (p, throttle) = (number(5) as u32, number(6));
    let resume = args.get(7).is_some_and(|a| a == "--resume");

    let mut env = StreamExecutionEnvironment::local();
    env.set_parallelism(p);
    env.config_mut().state_dir = Some(checkpoints.join("working"));
    // Small batches: the throttled map lets a barrier through every few milliseconds.
    env.config_mut().source_batch_records = 100;
    let mut c = CheckpointConfig::new(checkpoints.join("store"), Duration::from_millis(20));
    c.timeout = Duration::from_secs(60);
    if resume {
        let storage = CheckpointStorage::new(&c.dir).expect("checkpoint directory");
        let (latest, skipped) = storage.latest().expect("checkpoints listed");
        for s in skipped {
            println!("passed over {}: {}", s.path.display(), s.reason);
        }
        if latest.is_some() {
            env.config_mut().restore_from = Some(c.dir.clone());
        }
    }
    env.config_mut().checkpoints = Some(c);
    let events = exactly_once::events(events, keys, seed);
    exactly_once::build(&env, events, Failures::NONE, &out, 20_000, throttle);
    match env.execute("exactly once, in a process") {
        Ok(r) => {
            let ms: Vec<u128> = r
                .checkpoints
                .iter()
                .map(|c| c.duration.as_millis())
                .collect();
            println!(
                "done: restored from {:?}, {} checkpoints (ms: {ms:?})",
                r.restored_from,
                r.checkpoints.len()
            );
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(e.exit_code());
        }
    }
}
