//! Two keyed streams together: `connect` with a keyed co-process function, interval joins, and
//! window joins.

use std::hash::Hash;
use std::marker::PhantomData;

use shardflow_core::Data;
use shardflow_core::key::KeySelector;
use shardflow_core::keyed::interval_join::{IntervalJoin, ProcessJoinFunction};
use shardflow_core::keyed::{KeyedCoProcess, KeyedCoProcessFunction};
use shardflow_core::operator::{Collector, OutputTag, two_input};
use shardflow_core::window::{Trigger, WindowAssigner, WindowContext};

use crate::stream::{DataStream, KeyedStream};
use crate::window::WindowedStream;

/// Two keyed streams with keys of one type, connected: `a.connect(&b)`.
pub struct ConnectedStreams<T1, KS1, T2, KS2> {
    left: KeyedStream<T1, KS1>,
    right: KeyedStream<T2, KS2>,
}

impl<T1, KS1, T2, KS2> ConnectedStreams<T1, KS1, T2, KS2>
where
    T1: Data,
    T2: Data,
    KS1: KeySelector<T1>,
    KS2: KeySelector<T2, Key = KS1::Key>,
{
    pub(crate) fn new(left: KeyedStream<T1, KS1>, right: KeyedStream<T2, KS2>) -> Self {
        Self { left, right }
    }

    /// A keyed co-process function of both inputs, with the key's state and timers shared by
    /// them. Side outputs (`out.output(&tag, x)`) are read with `get_side_output`.
    pub fn process<O, F>(&self, f: F) -> DataStream<O>
    where
        O: Data,
        F: KeyedCoProcessFunction<KS1::Key, T1, T2, O>,
    {
        self.process_named("co-process", f)
    }

    pub(crate) fn process_named<O, F>(&self, name: &str, f: F) -> DataStream<O>
    where
        O: Data,
        F: KeyedCoProcessFunction<KS1::Key, T1, T2, O>,
    {
        let input1 = self.left.exchange_input(name, None::<fn(&mut T1, T1)>);
        let input2 = self.right.exchange_input(name, None::<fn(&mut T2, T2)>);
        let (key1, key2) = (self.left.key.clone(), self.right.key.clone());
        let env = self.left.stream.env.clone();
        let node = env.with_graph(|g| {
            g.use_processing_time();
            g.add_two_input_operator::<T1, T2, O, _>(
                name,
                input1,
                input2,
                move |ctx, down, side| {
                    Ok(two_input::ports(KeyedCoProcess::new(
                        key1.clone(),
                        key2.clone(),
                        f.clone(),
                        down,
                        side.take_all(),
                        ctx.clone(),
                    )))
                },
            )
        });
        DataStream::new(env, vec![node])
    }
}

/// `a.interval_join(&b)`: waiting for its bounds.
pub struct IntervalJoinBuilder<T1, KS1, T2, KS2> {
    streams: ConnectedStreams<T1, KS1, T2, KS2>,
}

/// An interval join with its bounds: waiting for its join function.
pub struct IntervalJoined<T1, KS1, T2, KS2> {
    streams: ConnectedStreams<T1, KS1, T2, KS2>,
    lower: i64,
    upper: i64,
    left_late: Option<OutputTag<T1>>,
    right_late: Option<OutputTag<T2>>,
}

impl<T1, KS1, T2, KS2> IntervalJoinBuilder<T1, KS1, T2, KS2>
where
    T1: Data,
    T2: Data,
    KS1: KeySelector<T1>,
    KS2: KeySelector<T2, Key = KS1::Key>,
{
    pub(crate) fn new(streams: ConnectedStreams<T1, KS1, T2, KS2>) -> Self {
        Self { streams }
    }

    /// Joins each left record at `t` with the right records of its key in
    /// `[t + lower_ms, t + upper_ms]` (both bounds included; either may be negative).
    pub fn between(self, lower_ms: i64, upper_ms: i64) -> IntervalJoined<T1, KS1, T2, KS2> {
        assert!(
            lower_ms <= upper_ms,
            "an interval join needs lower <= upper"
        );
        IntervalJoined {
            streams: self.streams,
            lower: lower_ms,
            upper: upper_ms,
            left_late: None,
            right_late: None,
        }
    }
}

impl<T1, KS1, T2, KS2> IntervalJoined<T1, KS1, T2, KS2>
where
    T1: Data,
    T2: Data,
    KS1: KeySelector<T1>,
    KS2: KeySelector<T2, Key = KS1::Key>,
{
    /// Left records that arrive behind the watermark go to `tag` (else they join nothing).
    pub fn side_output_left_late_data(mut self, tag: &OutputTag<T1>) -> Self {
        self.left_late = Some(tag.clone());
        self
    }

    /// Right records that arrive behind the watermark go to `tag`.
    pub fn side_output_right_late_data(mut self, tag: &OutputTag<T2>) -> Self {
        self.right_late = Some(tag.clone());
        self
    }

    /// Makes each joined pair's output.
    pub fn process<O, F>(self, f: F) -> DataStream<O>
    where
        O: Data,
        F: ProcessJoinFunction<T1, T2, O>,
    {
        let join = IntervalJoin {
            lower: self.lower,
            upper: self.upper,
            f,
            left_late: self.left_late,
            right_late: self.right_late,
        };
        self.streams.process_named("interval join", join)
    }
}

/// A record of either side of a window join, on its way through the shared window.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum Either<A, B> {
    Left(A),
    Right(B),
}

/// `a.join(&b)`: a window join, waiting for its keys and window.
pub struct JoinedStreams<T1, T2> {
    left: DataStream<T1>,
    right: DataStream<T2>,
}

impl<T1: Data, T2: Data> JoinedStreams<T1, T2> {
    pub(crate) fn new(left: DataStream<T1>, right: DataStream<T2>) -> Self {
        Self { left, right }
    }

    /// The keys the two sides are joined on: `where_key(|a| a.id).equal_to(|b| b.id)`.
    pub fn where_key<K, F1>(self, key1: F1) -> JoinWhere<T1, T2, K, F1>
    where
        K: Hash + Eq + Clone + Data,
        F1: Fn(&T1) -> K + Clone + Send + Sync + 'static,
    {
        JoinWhere {
            joined: self,
            key1,
            _k: PhantomData,
        }
    }
}

pub struct JoinWhere<T1, T2, K, F1> {
    joined: JoinedStreams<T1, T2>,
    key1: F1,
    _k: PhantomData<fn() -> K>,
}

/// The join key of a tagged record: the left side's key function or the right side's.
pub struct JoinKey<F1, F2, K> {
    k1: F1,
    k2: F2,
    _k: PhantomData<fn() -> K>,
}

impl<F1: Clone, F2: Clone, K> Clone for JoinKey<F1, F2, K> {
    fn clone(&self) -> Self {
        Self {
            k1: self.k1.clone(),
            k2: self.k2.clone(),
            _k: PhantomData,
        }
    }
}

impl<T1, T2, K, F1, F2> KeySelector<Either<T1, T2>> for JoinKey<F1, F2, K>
where
    K: Hash + Eq + Data,
    F1: Fn(&T1) -> K + Clone + Send + Sync + 'static,
    F2: Fn(&T2) -> K + Clone + Send + Sync + 'static,
{
    type Key = K;

    #[inline]
    fn with_key<R>(&self, record: &Either<T1, T2>, f: impl FnOnce(&K) -> R) -> R {
        let k = match record {
            Either::Left(a) => (self.k1)(a),
            Either::Right(b) => (self.k2)(b),
        };
        f(&k)
    }
}

impl<T1, T2, K, F1> JoinWhere<T1, T2, K, F1>
where
    T1: Data,
    T2: Data,
    K: Hash + Eq + Clone + Data,
    F1: Fn(&T1) -> K + Clone + Send + Sync + 'static,
{
    pub fn equal_to<F2>(self, key2: F2) -> JoinEqual<T1, T2, JoinKey<F1, F2, K>>
    where
        F2: Fn(&T2) -> K + Clone + Send + Sync + 'static,
    {
        let key = JoinKey {
            k1: self.key1,
            k2: key2,
            _k: PhantomData,
        };
        let left = self.joined.left.map(Either::<T1, T2>::Left);
        let right = self.joined.right.map(Either::<T1, T2>::Right);
        JoinEqual {
            keyed: KeyedStream {
                stream: left.union(&right),
                key,
            },
        }
    }
}

/// A window join with its keys: waiting for its window.
pub struct JoinEqual<T1, T2, KS> {
    keyed: KeyedStream<Either<T1, T2>, KS>,
}

impl<T1, T2, KS> JoinEqual<T1, T2, KS>
where
    T1: Data,
    T2: Data,
    KS: KeySelector<Either<T1, T2>>,
{
    /// The windows the two sides meet in.
    pub fn window<WA: WindowAssigner<Either<T1, T2>>>(
        self,
        assigner: WA,
    ) -> JoinWindowed<T1, T2, KS, WA, WA::DefaultTrigger> {
        JoinWindowed {
            windowed: self.keyed.window(assigner),
        }
    }
}

/// A window join, waiting for its join function.
pub struct JoinWindowed<T1, T2, KS, WA, TR> {
    windowed: WindowedStream<Either<T1, T2>, KS, WA, TR>,
}

impl<T1, T2, KS, WA, TR> JoinWindowed<T1, T2, KS, WA, TR>
where
    T1: Data,
    T2: Data,
    KS: KeySelector<Either<T1, T2>>,
    WA: WindowAssigner<Either<T1, T2>>,
    TR: Trigger<Either<T1, T2>, WA::W>,
{
    /// Replaces the window's trigger.
    pub fn trigger<TR2: Trigger<Either<T1, T2>, WA::W>>(
        self,
        trigger: TR2,
    ) -> JoinWindowed<T1, T2, KS, WA, TR2> {
        JoinWindowed {
            windowed: self.windowed.trigger(trigger),
        }
    }

    /// Calls `f` with every pair of a left and a right record of the same key in the same
    /// window (the window's cross product, as Flink's `JoinFunction`); the outputs get the
    /// window's last timestamp.
    pub fn apply<O, F>(self, f: F) -> DataStream<O>
    where
        O: Data,
        F: Fn(&T1, &T2) -> O + Clone + Send + Sync + 'static,
    {
        self.windowed.process(
            move |_k: &KS::Key,
                  _ctx: &WindowContext<WA::W>,
                  records: &[Either<T1, T2>],
                  out: &mut Collector<O>| {
                for e in records {
                    if let Either::Left(a) = e {
                        for e in records {
                            if let Either::Right(b) = e {
                                out.collect(f(a, b));
                            }
                        }
                    }
                }
                Ok(())
            },
        )
    }
}
