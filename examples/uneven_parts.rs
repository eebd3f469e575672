//! A job binary whose shards never exchange records, so that on a cluster one task manager's
//! part ends long before the other's: shard 0 writes the numbers `0..10` and ends; every other
//! shard writes its share of `10..N`, one number a millisecond. With checkpoints (a directory
//! given), the part that ended answers the checkpoints that follow with its operators' last
//! snapshots, so they still complete; its output is committed when the whole job has ended.
//! The cluster tests run it; it runs like any job binary:
//!
//! ```sh
//! cargo build --release -p shardflow --example uneven_parts
//! B=target/release/examples/uneven_parts
//! export SHARDFLOW_CLUSTER_SECRET=change-me
//! $B jobmanager --bind 127.0.0.1:6123 &
//! $B taskmanager --jobmanager 127.0.0.1:6123 --cores 1 &
//! $B taskmanager --jobmanager 127.0.0.1:6123 --cores 1 &
//! $B run --jobmanager 127.0.0.1:6123 -- 1000 out/ ck/
//! ```

use std::time::Duration;

use shardflow::prelude::*;
use shardflow_core::checkpoint::CheckpointConfig;
use shardflow_core::source::{Source, SourceStatus};

/// Numbers `next..end`, one a millisecond unless `paced` is off.
struct Numbers {
    next: u64,
    end: u64,
    paced: bool,
}

impl Source<u64> for Numbers {
    async fn next_batch(
        &mut self,
        out: &mut Vec<u64>,
        _max_records: usize,
    ) -> Result<SourceStatus, JobError> {
        if self.next < self.end {
            if self.paced {
                glommio::timer::sleep(Duration::from_millis(1)).await;
                out.push(self.next);
                self.next += 1;
            } else {
                out.extend(self.next..self.end);
                self.next = self.end;
            }
        }
        Ok(if self.next >= self.end {
            SourceStatus::End
        } else {
            SourceStatus::More
        })
    }
}

fn main() -> std::process::ExitCode {
    shardflow::cluster::main("uneven_parts", |args: &[String]| {
        let usage = || JobError::Config("usage: run -- N OUTPUT_DIR [CHECKPOINT_DIR]".into());
        let n: u64 = args
            .first()
            .and_then(|a| a.parse().ok())
            .ok_or_else(usage)?;
        let out = args.get(1).ok_or_else(usage)?.clone();
        let mut env = StreamExecutionEnvironment::local();
        if let Some(ck) = args.get(2) {
            env.config_mut().checkpoints =
                Some(CheckpointConfig::new(ck, Duration::from_millis(100)));
        }
        env.add_source("numbers", move |ctx| {
            let (shard, p) = (ctx.runtime.shard as u64, ctx.runtime.parallelism as u64);
            Ok(if shard == 0 {
                Numbers {
                    next: 0,
                    end: 10.min(n),
                    paced: false,
                }
            } else {
                // The others split 10..n among themselves.
                let (lo, len) = (10.min(n), n.saturating_sub(10));
                let others = (p - 1).max(1);
                Numbers {
                    next: lo + len * (shard - 1) / others,
                    end: lo + len * shard / others,
                    paced: true,
                }
            })
        })
        .map(|x: u64| x.to_string())
        .sink_to_files(out);
        env.execute("uneven_parts")?;
        Ok(())
    })
}
