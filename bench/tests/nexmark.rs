//! Nexmark: the generator is deterministic and splits exactly; every query's output on a small
//! generated stream equals the brute-force reference, at P = 1, 2 and 3.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use shardflow::prelude::*;
use shardflow_bench::nexmark::generator::{Kind, kind_of};
use shardflow_bench::nexmark::queries::{self, BidderWindow, Q12_WINDOW};
use shardflow_bench::nexmark::source::NexmarkSource;
use shardflow_bench::nexmark::{Event, NexmarkConfig, events, reference};
use shardflow_core::operator::Batch;
use shardflow_core::source::{Source, SourceStatus};
use shardflow_core::state::OperatorStateStore;
use shardflow_core::state::operator::redistribute;

/// A small stream: 1,000 events per second of event time, so that its 60 s hold many of
/// every query's windows, sessions and auctions.
fn small(seed: u64) -> NexmarkConfig {
    NexmarkConfig {
        events: 60_000,
        rate: 1_000,
        seed,
        block: 100,
        ..Default::default()
    }
}

/// The same number of events at 2 million a second: 30 ms of event time, many events in each
/// millisecond, auctions open for a few (ties of time at every boundary).
fn dense(seed: u64) -> NexmarkConfig {
    NexmarkConfig {
        rate: 2_000_000,
        ..small(seed)
    }
}

fn all_events(config: &NexmarkConfig) -> Vec<Event> {
    (0..config.events).map(|i| config.event(i)).collect()
}

fn encoded(e: &Event) -> Vec<u8> {
    let mut v = Vec::new();
    e.encode(&mut v);
    v
}

#[test]
fn the_stream_has_nexmarks_proportions_and_ids() {
    let config = small(shardflow_tests::seed(1));
    let evs = all_events(&config);
    let (mut people, mut auctions, mut bids) = (Vec::new(), Vec::new(), 0u64);
    for (i, e) in evs.iter().enumerate() {
        match (e, kind_of(i as u64)) {
            (Event::Person(p), Kind::Person) => people.push(p.id),
            (Event::Auction(a), Kind::Auction) => {
                assert!(a.expires > a.date_time && a.reserve > a.initial_bid);
                assert!((10..15).contains(&a.category));
                auctions.push(a.id)
            }
            (Event::Bid(b), Kind::Bid) => {
                assert!((100..=100_000_000).contains(&b.price));
                bids += 1
            }
            (e, k) => panic!("event {i} is {e:?}, should be a {k:?}"),
        }
        assert_eq!(e.date_time(), config.timestamp(i as u64));
    }
    // Ids are dense and in order; one person, three auctions and 46 bids in every 50 events.
    assert_eq!(people, (1000..1000 + 1200).collect::<Vec<_>>());
    assert_eq!(auctions, (1000..1000 + 3600).collect::<Vec<_>>());
    assert_eq!(bids, 60_000 / 50 * 46);
    // Half the bids go to a hot auction, three quarters come from a hot bidder.
    let hot = evs
        .iter()
        .filter_map(Event::bid)
        .filter(|b| (b.auction - 1000) % 100 == 0)
        .count() as f64
        / bids as f64;
    assert!((0.45..0.6).contains(&hot), "{hot}");
}

#[test]
fn the_same_seed_gives_the_same_events_at_any_parallelism() {
    let _cpus = shardflow_tests::shared_cpus();
    let config = small(shardflow_tests::seed(2));
    let mut want: Vec<Vec<u8>> = all_events(&config).iter().map(encoded).collect();
    want.sort();
    for p in [1, 2, 3, 4] {
        let mut env = StreamExecutionEnvironment::local();
        env.set_parallelism(p);
        let got = events(&env, &config)
            .map(|e: Event| {
                let mut v = Vec::new();
                e.encode(&mut v);
                v
            })
            .collect();
        env.execute("nexmark events").unwrap();
        let mut got = got.take();
        got.sort();
        assert!(got == want, "the events at P = {p} differ from the stream");
    }
    // Another seed gives another stream.
    let other = small(config.seed + 1);
    assert_ne!(encoded(&other.event(7)), encoded(&config.event(7)));
}

/// Drives a source by hand: up to `max` batches of `per` events, with their timestamps.
fn drain(source: &mut NexmarkSource, per: usize, max: usize) -> (Vec<(i64, Vec<u8>)>, bool) {
    let mut out = Vec::new();
    for _ in 0..max {
        let mut batch = Batch::new();
        let status = futures_lite::future::block_on(source.next_timed_batch(&mut batch, per))
            .expect("generated");
        assert_eq!(batch.timestamps.len(), batch.records.len());
        for (e, ts) in batch.records.iter().zip(&batch.timestamps) {
            assert_eq!(e.date_time(), *ts);
            out.push((*ts, encoded(e)));
        }
        if status == SourceStatus::End {
            return (out, true);
        }
    }
    (out, false)
}

#[test]
fn each_shard_generates_in_time_order_and_resumes_where_a_checkpoint_left_it() {
    let config = NexmarkConfig {
        events: 5_000,
        ..small(shardflow_tests::seed(3))
    };
    let mut want: Vec<Vec<u8>> = all_events(&config).iter().map(encoded).collect();
    want.sort();
    for (from, to) in [(2u32, 2u32), (2, 3), (3, 1), (4, 2)] {
        let mut got = Vec::new();
        let mut snapshots = Vec::new();
        for shard in 0..from {
            let mut s = NexmarkSource::new(config.clone(), shard, from);
            // 37 events at a time: checkpoints fall inside blocks.
            let (evs, _) = drain(&mut s, 37, 5 + shard as usize);
            assert!(
                evs.windows(2).all(|w| w[0].0 <= w[1].0),
                "out of time order"
            );
            got.extend(evs.into_iter().map(|e| e.1));
            let mut state = OperatorStateStore::default();
            s.snapshot_state(&mut state).unwrap();
            snapshots.push(state.snapshot().unwrap());
        }
        for snapshot in redistribute(&snapshots, to) {
            let mut s = NexmarkSource::new(config.clone(), 0, 1);
            s.initialize_state(&mut OperatorStateStore::restored(snapshot))
                .unwrap();
            let (evs, ended) = drain(&mut s, 64, usize::MAX);
            assert!(ended);
            assert!(
                evs.windows(2).all(|w| w[0].0 <= w[1].0),
                "out of time order"
            );
            got.extend(evs.into_iter().map(|e| e.1));
        }
        got.sort();
        assert!(
            got == want,
            "P = {from} resumed at P = {to}: {} events for {}",
            got.len(),
            want.len()
        );
    }
}

/// Runs `query` over the stream at `p` and returns its sorted output.
fn run<O: Data + Ord>(
    config: &NexmarkConfig,
    p: u32,
    query: impl Fn(&DataStream<Event>) -> DataStream<O>,
) -> Vec<O> {
    let mut env = StreamExecutionEnvironment::local();
    env.set_parallelism(p);
    let out = query(&events(&env, config)).collect();
    env.execute("nexmark query").unwrap();
    let mut out = out.take();
    out.sort();
    out
}

fn check<O: Data + Ord + std::fmt::Debug>(
    name: &str,
    query: impl Fn(&DataStream<Event>) -> DataStream<O>,
    reference: impl Fn(&[Event]) -> Vec<O>,
) {
    let _cpus = shardflow_tests::shared_cpus();
    let seed = shardflow_tests::seed(0x7e5);
    for config in [small(seed), dense(seed)] {
        let want = reference(&all_events(&config));
        assert!(!want.is_empty(), "{name}: the reference found nothing");
        eprintln!("{name} at {} events/s: {} rows", config.rate, want.len());
        for p in [1, 2, 3] {
            let got = run(&config, p, &query);
            if got != want {
                let missing = want.iter().filter(|w| !got.contains(w)).take(3);
                let extra = got.iter().filter(|g| !want.contains(g)).take(3);
                panic!(
                    "{name} at {} events/s, P = {p}: {} rows, the reference {}; missing e.g. {:?}; extra e.g. {:?}",
                    config.rate,
                    got.len(),
                    want.len(),
                    missing.collect::<Vec<_>>(),
                    extra.collect::<Vec<_>>()
                );
            }
        }
    }
}

fn bid_tuples(
    q: fn(&DataStream<Event>) -> DataStream<shardflow_bench::nexmark::Bid>,
) -> impl Fn(&DataStream<Event>) -> DataStream<(u64, u64, u64, i64)> {
    move |e| {
        q(e).map(|b: shardflow_bench::nexmark::Bid| (b.auction, b.bidder, b.price, b.date_time))
    }
}

#[test]
fn q0_passes_the_bids_through() {
    check("q0", bid_tuples(queries::q0), reference::q0);
}

#[test]
fn q1_converts_the_prices() {
    check("q1", bid_tuples(queries::q1), reference::q1);
}

#[test]
fn q2_selects_the_bids_on_every_123rd_auction() {
    check("q2", queries::q2, reference::q2);
}

#[test]
fn q3_joins_local_sellers_with_their_auctions() {
    check("q3", queries::q3, reference::q3);
}

/// q4 updates a category's average at every closed auction: the update over the most
/// auctions is the final average, and there is one update per winning bid.
#[test]
fn q4_averages_the_winning_prices_per_category() {
    let _cpus = shardflow_tests::shared_cpus();
    let config = small(shardflow_tests::seed(0x7e5));
    let evs = all_events(&config);
    let (want, winners) = (reference::q4(&evs), reference::q9(&evs).len());
    for p in [1, 2, 3] {
        let updates = run(&config, p, queries::q4);
        assert_eq!(updates.len(), winners, "P = {p}");
        let mut last: BTreeMap<u64, queries::CategoryPrice> = BTreeMap::new();
        for u in updates {
            let l = last.entry(u.category).or_insert(u);
            if u.auctions > l.auctions {
                *l = u;
            }
        }
        assert_eq!(last.into_values().collect::<Vec<_>>(), want, "P = {p}");
    }
}

#[test]
fn q5_finds_each_windows_hottest_auctions() {
    check("q5", queries::q5, reference::q5);
}

#[test]
fn q6_averages_each_sellers_last_ten_auctions() {
    check("q6", queries::q6, reference::q6);
}

#[test]
fn q7_finds_each_windows_highest_bids() {
    check("q7", queries::q7, reference::q7);
}

#[test]
fn q8_finds_new_people_who_sell_at_once() {
    check("q8", queries::q8, reference::q8);
}

#[test]
fn q9_finds_every_auctions_winning_bid() {
    check(
        "q9",
        |e| {
            queries::q9(e).map(|w: queries::Winner| {
                (
                    w.auction.id,
                    w.auction.seller,
                    w.bid.price,
                    w.bid.bidder,
                    w.bid.date_time,
                )
            })
        },
        |evs| {
            reference::q9(evs)
                .into_iter()
                .map(|w| {
                    (
                        w.auction.id,
                        w.auction.seller,
                        w.bid.price,
                        w.bid.bidder,
                        w.bid.date_time,
                    )
                })
                .collect()
        },
    );
}

#[test]
fn q11_counts_each_bidders_sessions() {
    check("q11", queries::q11, reference::q11);
}

/// q12's windows follow the clock: a test clock moved on by a second every few hundred
/// microseconds spreads the bids over many windows, whose counts must add up per bidder.
#[test]
fn q12_counts_bids_in_processing_time_windows() {
    let _cpus = shardflow_tests::shared_cpus();
    let config = small(shardflow_tests::seed(0x12));
    let want = reference::bids_per_bidder(&all_events(&config));
    for p in [1, 2] {
        let clock = ManualClock::new(1_000_000);
        let done = Arc::new(AtomicBool::new(false));
        let ticker = {
            let (clock, done) = (clock.clone(), done.clone());
            std::thread::spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    clock.advance(Duration::from_secs(1));
                    std::thread::sleep(Duration::from_micros(300));
                }
            })
        };
        let mut env = StreamExecutionEnvironment::local();
        env.set_parallelism(p);
        env.config_mut().clock = ProcessingClock::Manual(clock);
        let out = queries::q12(&events(&env, &config)).collect();
        env.execute("nexmark q12").unwrap();
        done.store(true, Ordering::Relaxed);
        ticker.join().unwrap();
        let windows: Vec<BidderWindow> = out.take();
        let size = Q12_WINDOW.as_millis() as i64;
        let mut got: BTreeMap<u64, u64> = BTreeMap::new();
        let mut seen = std::collections::HashSet::new();
        for w in &windows {
            assert_eq!(w.window_end - w.window_start, size);
            assert_eq!(w.window_start % size, 0);
            assert!(seen.insert((w.bidder, w.window_start)), "{w:?} twice");
            *got.entry(w.bidder).or_default() += w.bids;
        }
        assert_eq!(got, want, "P = {p}");
        eprintln!("P = {p}: {} windows", windows.len());
    }
}
