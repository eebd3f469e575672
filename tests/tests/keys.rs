//! Every key is processed on exactly one shard: the one that owns its key group.

use std::collections::HashMap;

use shardflow::prelude::*;
use shardflow_core::key::{KeyGroupRange, key_group};
use shardflow_core::rng::SplitMix64;
use shardflow_tests::seed;

/// Emits (key, shard, the key group range the shard says it owns) for every record.
#[derive(Clone)]
struct WhereAmI;

impl ProcessFunction<(u64, u32), (u64, u32, u32, u32)> for WhereAmI {
    fn process_element(
        &mut self,
        (key, _): (u64, u32),
        ctx: &RuntimeContext,
        out: &mut Collector<(u64, u32, u32, u32)>,
    ) -> Result<(), UserError> {
        out.collect((key, ctx.shard, ctx.key_groups.start, ctx.key_groups.end));
        Ok(())
    }
}

#[test]
fn every_key_lands_on_the_one_shard_owning_its_group() {
    let mut rng = SplitMix64::new(seed(21));
    for round in 0..6 {
        let p = 1 + rng.below(8) as u32;
        let max_parallelism = [p, 7.max(p), 128, 4096][rng.below(4) as usize];
        let n = 2_000 + rng.below(3_000) as usize;
        let records: Vec<(u64, u32)> = (0..n).map(|i| (rng.below(500), i as u32)).collect();
        let mut env = StreamExecutionEnvironment::local();
        env.set_parallelism(p).set_max_parallelism(max_parallelism);
        let seen = env
            .from_iter(records.clone())
            .key_by(|r: &(u64, u32)| r.0)
            .process_by_shard(WhereAmI)
            .collect();
        env.execute("keys").unwrap();
        let seen = seen.take();
        assert_eq!(seen.len(), n, "round {round}: every record once");
        let mut shard_of: HashMap<u64, u32> = HashMap::new();
        for (key, shard, start, end) in seen {
            // The shard's view of its range is the one DESIGN.md defines...
            let range = KeyGroupRange::of_shard(shard, p, max_parallelism);
            assert_eq!((start, end), (range.start, range.end));
            // ...the key's group is in it (brute force over all shards' ranges)...
            let kg = key_group(&key, max_parallelism);
            let owners: Vec<u32> = (0..p)
                .filter(|&s| KeyGroupRange::of_shard(s, p, max_parallelism).contains(kg))
                .collect();
            assert_eq!(
                owners,
                vec![shard],
                "round {round}: key {key} group {kg} P={p} M={max_parallelism}"
            );
            // ...and the key never appears on two shards.
            assert_eq!(*shard_of.entry(key).or_insert(shard), shard);
        }
    }
}
