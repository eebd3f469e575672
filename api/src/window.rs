//! Windowed streams: `keyed.window(assigner)` and what follows it (trigger, evictor, allowed
//! lateness, late output, and the window function).

use std::marker::PhantomData;
use std::time::Duration;

use shardflow_core::Data;
use shardflow_core::key::{KeyByRef, KeySelector};
use shardflow_core::window::functions::{
    AggregateFn, Evicting, ProcessAll, ReduceFn, ThenProcess, WindowFunction,
};
use shardflow_core::window::triggers::TimeTrigger;
use shardflow_core::window::two_phase::{MergePartials, Partial, PartialWindows, WindowCombiner};
use shardflow_core::window::{
    AggregateFunction, Evictor, ProcessWindowFunction, Trigger, WindowAssigner, WindowOperator,
    WindowSettings,
};

use crate::stream::{DataStream, KeyedStream};

pub use shardflow_core::operator::OutputTag;

/// A keyed stream cut into windows, waiting for its window function.
pub struct WindowedStream<T, KS, WA, TR> {
    keyed: KeyedStream<T, KS>,
    assigner: WA,
    trigger: TR,
    settings: WindowSettings,
    late_tag: Option<u32>,
}

/// A windowed stream with an evictor: every record of a window is kept until it fires.
pub struct EvictingWindowedStream<T, KS, WA, TR, E> {
    windowed: WindowedStream<T, KS, WA, TR>,
    evictor: E,
}

impl<T, KS, WA> WindowedStream<T, KS, WA, WA::DefaultTrigger>
where
    T: Data,
    KS: KeySelector<T>,
    WA: WindowAssigner<T>,
{
    pub(crate) fn new(keyed: KeyedStream<T, KS>, assigner: WA) -> Self {
        Self {
            keyed,
            trigger: assigner.default_trigger(),
            assigner,
            settings: WindowSettings::default(),
            late_tag: None,
        }
    }
}

impl<T, KS, WA, TR> WindowedStream<T, KS, WA, TR>
where
    T: Data,
    KS: KeySelector<T>,
    WA: WindowAssigner<T>,
    TR: Trigger<T, WA::W>,
{
    /// Replaces the assigner's default trigger.
    pub fn trigger<TR2: Trigger<T, WA::W>>(self, trigger: TR2) -> WindowedStream<T, KS, WA, TR2> {
        WindowedStream {
            keyed: self.keyed,
            assigner: self.assigner,
            trigger,
            settings: self.settings,
            late_tag: self.late_tag,
        }
    }

    /// Keeps windows for `lateness` of event time after their end: a late record within it
    /// updates its window, which fires again.
    pub fn allowed_lateness(mut self, lateness: Duration) -> Self {
        self.settings.allowed_lateness_ms = lateness.as_millis() as i64;
        self
    }

    /// Sends records that come after their windows were dropped to the side output `tag`
    /// (read it with `get_side_output` on the windowed result). Without it they are dropped,
    /// and counted as late.
    pub fn side_output_late_data(mut self, tag: &OutputTag<T>) -> Self {
        self.late_tag = Some(tag.id());
        self
    }

    /// Evicts records before (or after) the window function runs; the window then keeps every
    /// record until it fires.
    pub fn evictor<E: Evictor<T>>(self, evictor: E) -> EvictingWindowedStream<T, KS, WA, TR, E> {
        EvictingWindowedStream {
            windowed: self,
            evictor,
        }
    }

    /// Folds each window's records into one: `reduce(|acc, x| acc.1 += x.1)`.
    pub fn reduce(self, f: impl Fn(&mut T, T) + Clone + Send + Sync + 'static) -> DataStream<T> {
        self.build("window reduce", ReduceFn(f))
    }

    /// Aggregates each window incrementally with an [`AggregateFunction`].
    pub fn aggregate<A>(self, f: A) -> DataStream<A::Out>
    where
        A: AggregateFunction<T>,
        A::Out: Data,
    {
        self.build("window aggregate", AggregateFn(f))
    }

    /// Calls a [`ProcessWindowFunction`] with every record of each window.
    pub fn process<O, P>(self, f: P) -> DataStream<O>
    where
        O: Data,
        P: ProcessWindowFunction<KS::Key, T, O, WA::W>,
    {
        self.build("window process", ProcessAll(f, PhantomData))
    }

    /// Reduces each window incrementally, then calls `f` with the result and the window.
    pub fn reduce_with<O, P>(
        self,
        reduce: impl Fn(&mut T, T) + Clone + Send + Sync + 'static,
        f: P,
    ) -> DataStream<O>
    where
        O: Data,
        P: ProcessWindowFunction<KS::Key, T, O, WA::W>,
    {
        self.build("window reduce", ThenProcess::new(ReduceFn(reduce), f))
    }

    /// Aggregates each window incrementally, then calls `f` with the result and the window.
    pub fn aggregate_with<A, O, P>(self, aggregate: A, f: P) -> DataStream<O>
    where
        A: AggregateFunction<T>,
        O: Data,
        P: ProcessWindowFunction<KS::Key, A::Out, O, WA::W>,
    {
        self.build(
            "window aggregate",
            ThenProcess::new(AggregateFn(aggregate), f),
        )
    }

    fn build<F>(self, name: &str, f: F) -> DataStream<F::Out>
    where
        F: WindowFunction<KS::Key, T, WA::W>,
        F::Out: Data,
    {
        let input = self.keyed.exchange_input(name, None::<fn(&mut T, T)>);
        let Self {
            keyed,
            assigner,
            trigger,
            settings,
            late_tag,
        } = self;
        let key = keyed.key.clone();
        let env = keyed.stream.env.clone();
        let node = env.with_graph(|g| {
            g.use_processing_time();
            g.add_operator_with_side_outputs::<T, F::Out, _>(name, input, move |ctx, down, side| {
                Ok(Box::new(WindowOperator::new(
                    key.clone(),
                    assigner.clone(),
                    trigger.clone(),
                    f.clone(),
                    settings,
                    down,
                    side.take_all(),
                    late_tag,
                    ctx.clone(),
                )?))
            })
        });
        DataStream::new(env, vec![node])
    }
}

impl<T, KS, WA, TR, E> EvictingWindowedStream<T, KS, WA, TR, E>
where
    T: Data,
    KS: KeySelector<T>,
    WA: WindowAssigner<T>,
    TR: Trigger<T, WA::W>,
    E: Evictor<T>,
{
    pub fn reduce(self, f: impl Fn(&mut T, T) + Clone + Send + Sync + 'static) -> DataStream<T> {
        self.windowed
            .build("window reduce", Evicting(self.evictor, ReduceFn(f)))
    }

    pub fn aggregate<A>(self, f: A) -> DataStream<A::Out>
    where
        A: AggregateFunction<T>,
        A::Out: Data,
    {
        self.windowed
            .build("window aggregate", Evicting(self.evictor, AggregateFn(f)))
    }

    pub fn process<O, P>(self, f: P) -> DataStream<O>
    where
        O: Data,
        P: ProcessWindowFunction<KS::Key, T, O, WA::W>,
    {
        self.windowed.build(
            "window process",
            Evicting(self.evictor, ProcessAll(f, PhantomData)),
        )
    }
}

/// The partial of a two-phase aggregation, keyed by its key.
fn partial_key<K, W, A>(p: &(K, W, A)) -> &K {
    &p.0
}

impl<T, KS, WA> WindowedStream<T, KS, WA, TimeTrigger>
where
    T: Data,
    KS: KeySelector<T>,
    KS::Key: Data,
    WA: WindowAssigner<T, DefaultTrigger = TimeTrigger>,
    WA::W: Data,
{
    /// As [`aggregate_with`](Self::aggregate_with), in two phases (Flink SQL's local-global
    /// aggregation): each shard pre-aggregates its records per key and window before the
    /// exchange, so only one partial accumulator per key, window and shard crosses it. The
    /// results are those of `aggregate_with`. For event-time, non-merging windows with their
    /// default trigger and no late output (late records are still dropped and counted); the
    /// accumulator must be a record type, since it crosses shards.
    pub fn aggregate_two_phase_with<A, O, P>(self, aggregate: A, f: P) -> DataStream<O>
    where
        A: AggregateFunction<T>,
        A::Acc: Data,
        O: Data,
        P: ProcessWindowFunction<KS::Key, A::Out, O, WA::W>,
    {
        assert!(
            self.assigner.is_event_time() && !self.assigner.is_merging(),
            "two-phase window aggregation needs event-time, non-merging windows"
        );
        assert!(
            self.late_tag.is_none(),
            "two-phase window aggregation has no late output (its partials are not records)"
        );
        assert!(
            self.trigger.event_time,
            "two-phase window aggregation needs the event-time trigger"
        );
        let Self {
            keyed,
            assigner,
            settings,
            ..
        } = self;
        let key = keyed.key.clone();
        let agg = aggregate.clone();
        let partials: DataStream<Partial<KS::Key, WA::W, A::Acc>> = keyed.stream.op(
            "window aggregate (local)",
            crate::env::forward(&keyed.stream.heads),
            move |ctx, down| {
                Ok(Box::new(WindowCombiner::new(
                    key.clone(),
                    assigner.clone(),
                    agg.clone(),
                    down,
                    ctx.clone(),
                )))
            },
        );
        let by_key = KeyedStream {
            stream: partials,
            key: KeyByRef::new(partial_key::<KS::Key, WA::W, A::Acc> as fn(&_) -> &_),
        };
        let mut global = WindowedStream::new(by_key, PartialWindows);
        global.settings = settings;
        global.build(
            "window aggregate (global)",
            ThenProcess::new(MergePartials::new(aggregate), f),
        )
    }
}
