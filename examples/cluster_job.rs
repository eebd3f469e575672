//! A job binary of one's own with the cluster roles (`shardflow::cluster::main`): the sum of
//! the numbers 1..=N per residue modulo 97, written as CSV.
//!
//! ```sh
//! cargo build --release -p shardflow --example cluster_job
//! B=target/release/examples/cluster_job
//! export SHARDFLOW_CLUSTER_SECRET=change-me
//! $B jobmanager --bind 127.0.0.1:6123 &
//! $B taskmanager --jobmanager 127.0.0.1:6123 --cores 1 &
//! $B taskmanager --jobmanager 127.0.0.1:6123 --cores 1 &
//! $B run --jobmanager 127.0.0.1:6123 -- 1000000 sums   # on the cluster, P = 2
//! $B run -- 1000000 sums-local                         # the same job in this process
//! ```

use shardflow::prelude::*;

fn main() -> std::process::ExitCode {
    shardflow::cluster::main("residue_sums", |args: &[String]| {
        let n: i64 = match args.first().map(|a| a.parse()) {
            Some(Ok(n)) => n,
            _ => return Err(JobError::Config("usage: run -- N OUTPUT_DIR".into())),
        };
        let out = args
            .get(1)
            .ok_or_else(|| JobError::Config("usage: run -- N OUTPUT_DIR".into()))?;
        let mut env = StreamExecutionEnvironment::local();
        env.set_runtime_mode(RuntimeMode::Batch);
        env.generate_sequence(1, n)
            .map(|x| (x % 97, x))
            .key_by(|p: &(i64, i64)| p.0)
            .sum(|p: &mut (i64, i64)| &mut p.1)
            .write_as_csv_with(out.clone(), WriteMode::Overwrite);
        env.execute("residue_sums")?;
        Ok(())
    })
}
