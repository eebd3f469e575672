//! Keyed state with a time-to-live: a running count of events per user, forgotten after an hour
//! without events (the README's keyed-state example, runnable).
//!
//! ```sh
//! cargo run --release -p shardflow --example user_counts -- [EVENTS] [STATE_MEMORY_MIB]
//! ```
//!
//! With a memory budget (second argument) far below the state, counts are evicted to the shards'
//! stores and read back when their user comes again; the totals are the same.

use std::time::Duration;

use shardflow::prelude::*;

#[derive(Clone, Default)]
struct CountPerUser {
    count: Option<ValueState<u64>>,
}

impl KeyedProcessFunction<String, String, (String, u64)> for CountPerUser {
    type State = ();

    fn open(&mut self, ctx: &mut KeyedOpenContext<'_, String>) -> Result<(), UserError> {
        let ttl = StateTtlConfig::new(Duration::from_secs(3600)); // forget idle users
        self.count = Some(ctx.value_state(ValueStateDescriptor::new("count").with_ttl(ttl))?);
        Ok(())
    }

    fn process_element(
        &mut self,
        user: String,
        ctx: &mut KeyedContext<String, ()>,
        out: &mut Collector<(String, u64)>,
    ) -> Result<(), UserError> {
        let n = self
            .count
            .as_ref()
            .ok_or("not opened")?
            .get_or_insert_with(ctx, || 0);
        *n += 1;
        let n = *n;
        out.collect((user, n));
        Ok(())
    }
}

fn main() -> Result<(), JobError> {
    let mut args = std::env::args().skip(1);
    let events: i64 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let budget_mib: Option<usize> = args.next().and_then(|a| a.parse().ok());

    let mut env = StreamExecutionEnvironment::local();
    env.config_mut().state_memory_bytes = budget_mib.map(|m| m << 20);
    let latest = env
        .generate_sequence(0, events - 1)
        .map(|i| format!("user-{}", shardflow_core::rng::mix64(i as u64) % 200_000))
        .key_by(|u: &String| u.clone())
        .process(CountPerUser::default())
        .key_by(|c: &(String, u64)| c.0.clone())
        .reduce(|last: &mut (String, u64), c| last.1 = last.1.max(c.1));
    let totals = latest.collect();
    env.set_runtime_mode(RuntimeMode::Batch);
    let result = env.execute("user counts")?;
    println!("{result}");
    let totals = totals.take();
    let sum: u64 = totals.iter().map(|c| c.1).sum();
    println!("{} users, {sum} events counted", totals.len());
    Ok(())
}
