//! `DataStream` and `KeyedStream`: the typed handles a program builds its job with.

use std::hash::Hash;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::rc::Rc;

use shardflow_core::exchange::{Broadcast, KeyBy, Rebalance};
use shardflow_core::graph::InputRef;
use shardflow_core::key::{KeyByRef, KeyByValue, KeySelector};
use shardflow_core::operator::filter::Filter;
use shardflow_core::operator::flat_map::FlatMap;
use shardflow_core::operator::map::Map;
use shardflow_core::operator::process::Process;
use shardflow_core::operator::reduce::{Emit, KeyedReduce};
use shardflow_core::operator::sink::{Sink, SinkFunction};
use shardflow_core::operator::{BoxPush, Collector, Forward, OperatorContext, ProcessFunction};
use shardflow_core::{Data, JobError, NodeId, RuntimeMode};

use shardflow_core::keyed::{KeyedProcess, KeyedProcessFunction};
use shardflow_core::time::{
    AssignTimestamps, TimestampAssigner, WatermarkGenerator, WatermarkStrategy,
};
use shardflow_core::window::{
    CountEvictor, CountTrigger, GlobalWindows, PurgingTrigger, WindowAssigner,
};

use crate::connected::{ConnectedStreams, IntervalJoinBuilder, JoinedStreams};
use crate::env::{EnvInner, forward};
use crate::sink::collect::{CollectHandle, CollectSink};
use crate::sink::csv::{CsvSink, ToCsv};
use crate::sink::file::{FileSink, FileSinkOptions, display_line};
use crate::sink::print::PrintSink;
use crate::sink::text::{TextSink, WriteMode};
use crate::window::{EvictingWindowedStream, OutputTag, WindowedStream};

/// A stream of records `T`: the output of a source or an operator (or the union of several).
pub struct DataStream<T> {
    pub(crate) env: Rc<EnvInner>,
    pub(crate) heads: Vec<NodeId>,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for DataStream<T> {
    fn clone(&self) -> Self {
        Self {
            env: self.env.clone(),
            heads: self.heads.clone(),
            _t: PhantomData,
        }
    }
}

impl<T> DataStream<T> {
    pub(crate) fn new(env: Rc<EnvInner>, heads: Vec<NodeId>) -> Self {
        Self {
            env,
            heads,
            _t: PhantomData,
        }
    }
}

/// Keys of combiners before an exchange, at most: a combiner emits its partial results early
/// rather than grow past this.
pub const COMBINER_KEYS_MAX: usize = 1 << 16;

impl<T: Data> DataStream<T> {
    pub(crate) fn op<U: Data>(
        &self,
        name: &str,
        input: InputRef,
        make: impl Fn(&OperatorContext, BoxPush<U>) -> Result<BoxPush<T>, JobError>
        + Send
        + Sync
        + 'static,
    ) -> DataStream<U> {
        let node = self
            .env
            .with_graph(|g| g.add_operator::<T, U, _>(name, input, make));
        DataStream::new(self.env.clone(), vec![node])
    }

    /// Gives each record its event timestamp and emits watermarks, as `strategy` says.
    ///
    /// ```
    /// # use shardflow::prelude::*;
    /// # use std::time::Duration;
    /// let mut env = StreamExecutionEnvironment::local();
    /// // (key, timestamp in ms, value)
    /// let events = vec![("a", 1_000i64, 1u64), ("a", 1_500, 2), ("b", 2_500, 5), ("a", 500, 4)];
    /// let sums = env
    ///     .from_iter(events.into_iter().map(|(k, t, v)| (k.to_string(), t, v)).collect::<Vec<_>>())
    ///     .assign_timestamps_and_watermarks(
    ///         WatermarkStrategy::for_bounded_out_of_orderness(Duration::from_secs(1))
    ///             .with_timestamp_assigner(|e: &(String, i64, u64)| e.1),
    ///     )
    ///     .key_by_ref(|e: &(String, i64, u64)| &e.0)
    ///     .window(TumblingWindows::event_time(Duration::from_secs(1)))
    ///     .reduce(|acc: &mut (String, i64, u64), e| acc.2 += e.2)
    ///     .map(|(k, _, v)| (k, v))
    ///     .collect();
    /// env.execute("windowed sums")?;
    /// let mut got = sums.take();
    /// got.sort();
    /// assert_eq!(got, [("a".to_string(), 3), ("a".to_string(), 4), ("b".to_string(), 5)]);
    /// # Ok::<(), JobError>(())
    /// ```
    pub fn assign_timestamps_and_watermarks<G, A>(
        &self,
        strategy: WatermarkStrategy<G, A>,
    ) -> DataStream<T>
    where
        G: WatermarkGenerator<T>,
        A: TimestampAssigner<T>,
    {
        let group = self.env.with_graph(|g| {
            g.use_processing_time();
            strategy
                .alignment
                .as_ref()
                .map(|(name, _)| g.alignment_group(name))
        });
        self.op(
            "timestamps/watermarks",
            forward(&self.heads),
            move |ctx, down| {
                let op = AssignTimestamps::new(strategy.clone(), down, ctx.clone());
                Ok(Box::new(match &group {
                    Some(g) => op.with_alignment_group(g),
                    None => op,
                }))
            },
        )
    }

    /// Joins this stream with `other` in windows: `.where_key(..).equal_to(..).window(..)
    /// .apply(|a, b| ..)` pairs every record of a key with every record of `other` of the same
    /// key in the same window.
    pub fn join<T2: Data>(&self, other: &DataStream<T2>) -> JoinedStreams<T, T2> {
        JoinedStreams::new(self.clone(), other.clone())
    }

    /// The records the operator producing this stream sent to the side output `tag`.
    pub fn get_side_output<X: Data>(&self, tag: &OutputTag<X>) -> DataStream<X> {
        assert_eq!(
            self.heads.len(),
            1,
            "a side output belongs to one operator, not to a union"
        );
        let node = self
            .env
            .with_graph(|g| g.add_side_output::<X>(self.heads[0], tag.id()));
        DataStream::new(self.env.clone(), vec![node])
    }

    /// Windows over the whole stream (not keyed): every record goes to one shard, as Flink's
    /// `windowAll` runs with parallelism 1.
    #[allow(clippy::type_complexity)]
    pub fn window_all<WA: WindowAssigner<T>>(
        &self,
        assigner: WA,
    ) -> WindowedStream<T, KeyByValue<fn(&T) -> (), ()>, WA, WA::DefaultTrigger> {
        let all: fn(&T) -> () = |_| ();
        self.key_by(all).window(assigner)
    }

    /// Renames the operator(s) that produce this stream (in metrics, errors and summaries).
    pub fn name(self, name: &str) -> Self {
        self.env.with_graph(|g| {
            for h in &self.heads {
                g.rename_node(*h, name);
            }
        });
        self
    }

    /// Gives the operator(s) that produce this stream a stable id (Flink's `uid`): a
    /// checkpoint or savepoint restores their state by it, so the job may change around them
    /// (operators added, removed or renamed) and still resume. Unique in the job; a stream of
    /// several operators (a union) gives each `uid#i`.
    pub fn uid(self, uid: &str) -> Self {
        self.env.with_graph(|g| {
            if let [one] = self.heads.as_slice() {
                g.set_uid(*one, uid);
            } else {
                for (i, h) in self.heads.iter().enumerate() {
                    g.set_uid(*h, &format!("{uid}#{i}"));
                }
            }
        });
        self
    }

    /// One record in, one record out.
    ///
    /// ```
    /// # use shardflow::prelude::*;
    /// let mut env = StreamExecutionEnvironment::local();
    /// let out = env.generate_sequence(1, 3).map(|x| x * 10).collect();
    /// env.execute("map")?;
    /// let mut got = out.take();
    /// got.sort();
    /// assert_eq!(got, [10, 20, 30]);
    /// # Ok::<(), JobError>(())
    /// ```
    pub fn map<U: Data>(
        &self,
        f: impl Fn(T) -> U + Clone + Send + Sync + 'static,
    ) -> DataStream<U> {
        self.op("map", forward(&self.heads), move |ctx, down| {
            Ok(Box::new(Map::new(f.clone(), down, ctx.clone())))
        })
    }

    /// Keeps the records `f` accepts.
    ///
    /// ```
    /// # use shardflow::prelude::*;
    /// let mut env = StreamExecutionEnvironment::local();
    /// let out = env.generate_sequence(1, 10).filter(|x| x % 5 == 0).collect();
    /// env.execute("filter")?;
    /// let mut got = out.take();
    /// got.sort();
    /// assert_eq!(got, [5, 10]);
    /// # Ok::<(), JobError>(())
    /// ```
    pub fn filter(&self, f: impl Fn(&T) -> bool + Clone + Send + Sync + 'static) -> DataStream<T> {
        self.op("filter", forward(&self.heads), move |ctx, down| {
            Ok(Box::new(Filter::new(f.clone(), down, ctx.clone())))
        })
    }

    /// Each record becomes zero or more, emitted through the collector.
    ///
    /// ```
    /// # use shardflow::prelude::*;
    /// let env = StreamExecutionEnvironment::local();
    /// let words = env
    ///     .from_iter(vec!["a b".to_string(), "c".to_string()])
    ///     .flat_map(|line: String, out: &mut Collector<String>| {
    ///         line.split(' ').for_each(|w| out.collect(w.to_string()))
    ///     });
    /// ```
    pub fn flat_map<U: Data>(
        &self,
        f: impl Fn(T, &mut Collector<U>) + Clone + Send + Sync + 'static,
    ) -> DataStream<U> {
        self.op("flat_map", forward(&self.heads), move |ctx, down| {
            Ok(Box::new(FlatMap::new(f.clone(), down, ctx.clone())))
        })
    }

    /// The general operator: a [`ProcessFunction`] per shard, with its runtime context.
    ///
    /// The function may also emit to side outputs (`out.output(&tag, value)`), read with
    /// [`get_side_output`](Self::get_side_output) on the returned stream.
    pub fn process<U: Data, P: ProcessFunction<T, U>>(&self, f: P) -> DataStream<U> {
        let input = forward(&self.heads);
        let node = self.env.with_graph(|g| {
            g.add_operator_with_side_outputs::<T, U, _>("process", input, move |ctx, down, side| {
                Ok(Box::new(Process::with_side_outputs(
                    f.clone(),
                    down,
                    side.take_all(),
                    ctx.clone(),
                )))
            })
        });
        DataStream::new(self.env.clone(), vec![node])
    }

    /// This stream and `other` as one (same record type, no order between them).
    ///
    /// ```
    /// # use shardflow::prelude::*;
    /// let mut env = StreamExecutionEnvironment::local();
    /// let both = env.generate_sequence(1, 2).union(&env.generate_sequence(100, 101)).collect();
    /// env.execute("union")?;
    /// let mut got = both.take();
    /// got.sort();
    /// assert_eq!(got, [1, 2, 100, 101]);
    /// # Ok::<(), JobError>(())
    /// ```
    pub fn union(&self, other: &DataStream<T>) -> DataStream<T> {
        assert!(
            Rc::ptr_eq(&self.env, &other.env),
            "union of streams from different environments"
        );
        let mut heads = self.heads.clone();
        heads.extend(other.heads.iter().copied());
        DataStream::new(self.env.clone(), heads)
    }

    fn exchanged<P: shardflow_core::exchange::Partition<T>>(
        &self,
        name: &str,
        partition: P,
    ) -> DataStream<T> {
        let e = self
            .env
            .with_graph(|g| g.add_exchange::<T, P>(name, &self.heads, partition));
        self.op(name, InputRef::Exchange(e), |_ctx, down| {
            Ok(Box::new(Forward::new(down)))
        })
    }

    /// Spreads records round robin over all shards.
    ///
    /// ```
    /// # use shardflow::prelude::*;
    /// let mut env = StreamExecutionEnvironment::local();
    /// env.set_parallelism(2);
    /// let out = env.generate_sequence(1, 100).rebalance().collect();
    /// env.execute("rebalance")?;
    /// for (_shard, records) in out.take_by_shard() {
    ///     assert_eq!(records.len(), 50);
    /// }
    /// # Ok::<(), JobError>(())
    /// ```
    pub fn rebalance(&self) -> DataStream<T> {
        self.exchanged("rebalance", Rebalance::default())
    }

    /// Sends every record to every shard.
    ///
    /// ```
    /// # use shardflow::prelude::*;
    /// let mut env = StreamExecutionEnvironment::local();
    /// env.set_parallelism(3);
    /// let out = env.from_iter(vec![7u32]).broadcast().collect();
    /// env.execute("broadcast")?;
    /// assert_eq!(out.take(), [7, 7, 7]);
    /// # Ok::<(), JobError>(())
    /// ```
    pub fn broadcast(&self) -> DataStream<T> {
        self.exchanged("broadcast", Broadcast)
    }

    /// Partitions by a key computed from each record: `key_by(|r| r.id)`. Every record of a key
    /// is processed on the shard that owns the key's group.
    ///
    /// ```
    /// # use shardflow::prelude::*;
    /// let mut env = StreamExecutionEnvironment::local();
    /// env.set_runtime_mode(RuntimeMode::Batch);
    /// // Sum of the numbers 1..=10 by parity.
    /// let sums = env
    ///     .generate_sequence(1, 10)
    ///     .map(|x| (x % 2, x))
    ///     .key_by(|r: &(i64, i64)| r.0)
    ///     .sum(|r: &mut (i64, i64)| &mut r.1)
    ///     .collect();
    /// env.execute("by parity")?;
    /// let mut got = sums.take();
    /// got.sort();
    /// assert_eq!(got, [(0, 30), (1, 25)]);
    /// # Ok::<(), JobError>(())
    /// ```
    pub fn key_by<K, F>(&self, key: F) -> KeyedStream<T, KeyByValue<F, K>>
    where
        K: Hash + Eq + Clone + 'static,
        F: Fn(&T) -> K + Clone + Send + Sync + 'static,
    {
        KeyedStream {
            stream: self.clone(),
            key: KeyByValue::new(key),
        }
    }

    /// Partitions by a key borrowed from each record: `key_by_ref(|r| &r.word)`. Keyed state is
    /// then looked up without cloning the key.
    ///
    /// ```
    /// # use shardflow::prelude::*;
    /// let mut env = StreamExecutionEnvironment::local();
    /// env.set_runtime_mode(RuntimeMode::Batch);
    /// let words = vec![("a".to_string(), 1u64), ("b".to_string(), 1), ("a".to_string(), 1)];
    /// let counts = env
    ///     .from_iter(words)
    ///     .key_by_ref(|w: &(String, u64)| &w.0)
    ///     .reduce(|acc: &mut (String, u64), w: (String, u64)| acc.1 += w.1)
    ///     .collect();
    /// env.execute("count")?;
    /// let mut got = counts.take();
    /// got.sort();
    /// assert_eq!(got, [("a".to_string(), 2), ("b".to_string(), 1)]);
    /// # Ok::<(), JobError>(())
    /// ```
    pub fn key_by_ref<K, F>(&self, key: F) -> KeyedStream<T, KeyByRef<F, K>>
    where
        K: Hash + Eq + Clone + 'static,
        F: for<'a> Fn(&'a T) -> &'a K + Clone + Send + Sync + 'static,
    {
        KeyedStream {
            stream: self.clone(),
            key: KeyByRef::new(key),
        }
    }

    /// Ends the stream in a user-defined sink; `make` builds one per shard.
    pub fn sink_to<S, F>(&self, name: &str, make: F)
    where
        S: SinkFunction<T>,
        F: Fn(&OperatorContext) -> Result<S, JobError> + Send + Sync + 'static,
    {
        self.env.with_graph(|g| {
            g.add_sink::<T, _>(name, forward(&self.heads), move |ctx| {
                Ok(Box::new(Sink::new(make(ctx)?, ctx.clone())))
            })
        });
    }

    /// Prints every record to standard output as `shard> record`, as Flink does.
    pub fn print(&self)
    where
        T: std::fmt::Debug,
    {
        self.sink_to("print", |ctx| Ok(PrintSink::new(ctx.runtime.shard)));
    }

    /// Writes every record's `Display` form, a line each, into the directory `dir`: one file
    /// `part-NNNNN` per shard. Fails if a part file exists (see [`write_as_text_with`](Self::write_as_text_with)).
    pub fn write_as_text(&self, dir: impl Into<PathBuf>)
    where
        T: std::fmt::Display,
    {
        self.write_as_text_with(dir, WriteMode::NoOverwrite)
    }

    pub fn write_as_text_with(&self, dir: impl Into<PathBuf>, mode: WriteMode)
    where
        T: std::fmt::Display,
    {
        let dir = dir.into();
        self.sink_to("write_as_text", move |ctx| TextSink::open(&dir, mode, ctx));
    }

    /// Writes every record as a CSV row (RFC 4180 quoting) into the directory `dir`, one file
    /// `part-NNNNN.csv` per shard.
    ///
    /// ```
    /// # use shardflow::prelude::*;
    /// let dir = std::env::temp_dir().join(format!("shardflow-doc-csv-{}", std::process::id()));
    /// let mut env = StreamExecutionEnvironment::local();
    /// env.set_parallelism(1);
    /// env.from_iter(vec![("a, quoted".to_string(), 1u64)]).write_as_csv(&dir);
    /// env.execute("csv")?;
    /// let text = std::fs::read_to_string(dir.join("part-00000.csv")).unwrap();
    /// assert_eq!(text, "\"a, quoted\",1\n");
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), JobError>(())
    /// ```
    pub fn write_as_csv(&self, dir: impl Into<PathBuf>)
    where
        T: ToCsv,
    {
        self.write_as_csv_with(dir, WriteMode::NoOverwrite)
    }

    pub fn write_as_csv_with(&self, dir: impl Into<PathBuf>, mode: WriteMode)
    where
        T: ToCsv,
    {
        let dir = dir.into();
        self.sink_to("write_as_csv", move |ctx| CsvSink::open(&dir, mode, ctx));
    }

    /// Writes every record's `Display` form, a line each, into part files in `dir`, exactly
    /// once: with checkpoints on, a part becomes visible (is renamed from its hidden
    /// in-progress name) only when the checkpoint after it completes, and a restart aborts
    /// what no complete checkpoint covers. See [`sink::file`](crate::sink::file) and
    /// [`sink_to_files_with`](Self::sink_to_files_with) for rolling policies and encoders.
    ///
    /// ```
    /// # use shardflow::prelude::*;
    /// let dir = std::env::temp_dir().join(format!("shardflow-doc-files-{}", std::process::id()));
    /// let mut env = StreamExecutionEnvironment::local();
    /// env.set_parallelism(1);
    /// env.from_iter(vec![1u64, 2, 3]).sink_to_files(&dir);
    /// env.execute("files")?;
    /// let text = std::fs::read_to_string(dir.join("part-00000-000000")).unwrap();
    /// assert_eq!(text, "1\n2\n3\n");
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// # Ok::<(), JobError>(())
    /// ```
    pub fn sink_to_files(&self, dir: impl Into<PathBuf>)
    where
        T: std::fmt::Display,
    {
        self.sink_to_files_with(dir, FileSinkOptions::default(), display_line::<T>);
    }

    /// [`sink_to_files`](Self::sink_to_files) with a rolling policy, part names, and `encode`
    /// writing a record's bytes (any row format: lines, CSV, JSON lines).
    pub fn sink_to_files_with<E>(
        &self,
        dir: impl Into<PathBuf>,
        options: FileSinkOptions,
        encode: E,
    ) where
        E: Fn(&T, &mut Vec<u8>) + Clone + Send + Sync + 'static,
    {
        let dir = dir.into();
        self.sink_to("sink_to_files", move |ctx| {
            FileSink::open(&dir, options.clone(), encode.clone(), ctx)
        });
    }

    /// Collects every record; the handle yields them after `execute` returns.
    ///
    /// ```
    /// # use shardflow::prelude::*;
    /// let mut env = StreamExecutionEnvironment::local();
    /// let out = env.from_iter(vec!["x".to_string()]).collect();
    /// env.execute("collect")?;
    /// assert_eq!(out.take(), ["x"]);
    /// # Ok::<(), JobError>(())
    /// ```
    pub fn collect(&self) -> CollectHandle<T> {
        let handle = CollectHandle::new();
        let h = handle.clone();
        self.sink_to("collect", move |ctx| {
            Ok(CollectSink::new(h.clone(), ctx.runtime.shard))
        });
        handle
    }
}

/// A stream partitioned by key: the input of keyed operators.
pub struct KeyedStream<T, KS> {
    pub(crate) stream: DataStream<T>,
    pub(crate) key: KS,
}

impl<T: Data, KS: KeySelector<T>> KeyedStream<T, KS> {
    /// The exchange by key, after a combiner in batch mode when `combine` is given.
    pub(crate) fn exchange_input(
        &self,
        name: &str,
        combine: Option<impl Fn(&mut T, T) + Clone + Send + Sync + 'static>,
    ) -> InputRef {
        let stream = match combine {
            Some(f) => {
                let key = self.key.clone();
                self.stream.op::<T>(
                    &format!("{name} (combine)"),
                    forward(&self.stream.heads),
                    move |ctx, down| {
                        Ok(match ctx.config.runtime_mode {
                            RuntimeMode::Batch => Box::new(KeyedReduce::new(
                                key.clone(),
                                f.clone(),
                                Emit::AtEndOrKeys(COMBINER_KEYS_MAX),
                                false,
                                down,
                                ctx.clone(),
                            )?),
                            RuntimeMode::Streaming => Box::new(Forward::new(down)),
                        })
                    },
                )
            }
            None => self.stream.clone(),
        };
        let e = self.stream.env.with_graph(|g| {
            g.add_exchange::<T, _>(
                &format!("key_by → {name}"),
                &stream.heads,
                KeyBy::new(self.key.clone()),
            )
        });
        InputRef::Exchange(e)
    }

    /// Folds each record into its key's accumulator: `reduce(|acc, x| acc.1 += x.1)`.
    ///
    /// In streaming mode every updated accumulator is emitted (a rolling reduce); in batch mode
    /// only the final accumulator of each key, when the input ends, and records are
    /// pre-aggregated before the exchange.
    pub fn reduce(&self, f: impl Fn(&mut T, T) + Clone + Send + Sync + 'static) -> DataStream<T> {
        self.reduce_named("reduce", f)
    }

    fn reduce_named(
        &self,
        name: &str,
        f: impl Fn(&mut T, T) + Clone + Send + Sync + 'static,
    ) -> DataStream<T> {
        let input = self.exchange_input(name, Some(f.clone()));
        let key = self.key.clone();
        self.stream.op(name, input, move |ctx, down| {
            let emit = match ctx.config.runtime_mode {
                RuntimeMode::Streaming => Emit::EveryUpdate,
                RuntimeMode::Batch => Emit::AtEnd,
            };
            Ok(Box::new(KeyedReduce::new(
                key.clone(),
                f.clone(),
                emit,
                true,
                down,
                ctx.clone(),
            )?))
        })
    }

    /// Sums the field `field` points to: `sum(|r| &mut r.1)`. The other fields are those of the
    /// key's first record (as Flink's `sum`).
    ///
    /// ```
    /// # use shardflow::prelude::*;
    /// let mut env = StreamExecutionEnvironment::local();
    /// env.set_parallelism(1); // one source shard: the two records arrive in order
    /// // Streaming mode (the default): every update is emitted, as a rolling sum.
    /// let out = env
    ///     .from_iter(vec![("k".to_string(), 1u64), ("k".to_string(), 2)])
    ///     .key_by_ref(|r: &(String, u64)| &r.0)
    ///     .sum(|r: &mut (String, u64)| &mut r.1)
    ///     .collect();
    /// env.execute("rolling sum")?;
    /// let mut got: Vec<u64> = out.take().into_iter().map(|r| r.1).collect();
    /// got.sort();
    /// assert_eq!(got, [1, 3]);
    /// # Ok::<(), JobError>(())
    /// ```
    pub fn sum<N>(
        &self,
        field: impl Fn(&mut T) -> &mut N + Clone + Send + Sync + 'static,
    ) -> DataStream<T>
    where
        N: Copy + std::ops::Add<Output = N> + 'static,
    {
        self.reduce_named("sum", move |acc: &mut T, mut x: T| {
            let v = *field(&mut x);
            let a = field(acc);
            *a = *a + v;
        })
    }

    /// The smallest value of the field, in the key's first record (Flink's `min`).
    pub fn min<N>(
        &self,
        field: impl Fn(&mut T) -> &mut N + Clone + Send + Sync + 'static,
    ) -> DataStream<T>
    where
        N: Copy + PartialOrd + 'static,
    {
        self.reduce_named("min", move |acc: &mut T, mut x: T| {
            let v = *field(&mut x);
            let a = field(acc);
            if v < *a {
                *a = v;
            }
        })
    }

    /// The largest value of the field, in the key's first record (Flink's `max`).
    pub fn max<N>(
        &self,
        field: impl Fn(&mut T) -> &mut N + Clone + Send + Sync + 'static,
    ) -> DataStream<T>
    where
        N: Copy + PartialOrd + 'static,
    {
        self.reduce_named("max", move |acc: &mut T, mut x: T| {
            let v = *field(&mut x);
            let a = field(acc);
            if v > *a {
                *a = v;
            }
        })
    }

    /// The whole record with the smallest field (the first of equals), as Flink's `minBy`.
    pub fn min_by<N: PartialOrd>(
        &self,
        field: impl Fn(&T) -> N + Clone + Send + Sync + 'static,
    ) -> DataStream<T> {
        self.reduce_named("min_by", move |acc: &mut T, x: T| {
            if field(&x) < field(acc) {
                *acc = x;
            }
        })
    }

    /// The whole record with the largest field (the first of equals), as Flink's `maxBy`.
    pub fn max_by<N: PartialOrd>(
        &self,
        field: impl Fn(&T) -> N + Clone + Send + Sync + 'static,
    ) -> DataStream<T> {
        self.reduce_named("max_by", move |acc: &mut T, x: T| {
            if field(&x) > field(acc) {
                *acc = x;
            }
        })
    }

    /// A plain process function behind the key exchange: every record reaches the shard owning
    /// its key, and one instance per shard sees all of that shard's keys (no keyed state).
    pub fn process_by_shard<U: Data, P: ProcessFunction<T, U>>(&self, f: P) -> DataStream<U> {
        let input = self.exchange_input("process", None::<fn(&mut T, T)>);
        self.stream.op("process", input, move |ctx, down| {
            Ok(Box::new(Process::new(f.clone(), down, ctx.clone())))
        })
    }

    /// A keyed process function (Flink's `KeyedProcessFunction`): each record with its key's
    /// state and timers.
    pub fn process<U, P>(&self, f: P) -> DataStream<U>
    where
        U: Data,
        P: KeyedProcessFunction<KS::Key, T, U>,
    {
        let input = self.exchange_input("keyed process", None::<fn(&mut T, T)>);
        let key = self.key.clone();
        let env = self.stream.env.clone();
        let node = env.with_graph(|g| {
            g.use_processing_time();
            g.add_operator_with_side_outputs::<T, U, _>(
                "keyed process",
                input,
                move |ctx, down, side| {
                    Ok(Box::new(KeyedProcess::with_side_outputs(
                        key.clone(),
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

    /// Connects this keyed stream with another of the same key type: a keyed co-process
    /// function then sees both, with each key's state and timers shared.
    pub fn connect<T2, KS2>(&self, other: &KeyedStream<T2, KS2>) -> ConnectedStreams<T, KS, T2, KS2>
    where
        T2: Data,
        KS2: KeySelector<T2, Key = KS::Key>,
    {
        ConnectedStreams::new(self.clone(), other.clone())
    }

    /// Joins each record of this stream with the records of `other` of its key whose
    /// timestamps fall in an interval around its own: `.between(lower_ms, upper_ms)`.
    pub fn interval_join<T2, KS2>(
        &self,
        other: &KeyedStream<T2, KS2>,
    ) -> IntervalJoinBuilder<T, KS, T2, KS2>
    where
        T2: Data,
        KS2: KeySelector<T2, Key = KS::Key>,
    {
        IntervalJoinBuilder::new(self.connect(other))
    }

    /// Cuts each key's records into windows: `window(TumblingWindows::event_time(1 s))`.
    pub fn window<WA: WindowAssigner<T>>(
        &self,
        assigner: WA,
    ) -> WindowedStream<T, KS, WA, WA::DefaultTrigger> {
        WindowedStream::new(self.clone(), assigner)
    }

    /// Windows of `size` records per key, each emitted when full (Flink's `countWindow(size)`).
    pub fn count_window(
        &self,
        size: u64,
    ) -> WindowedStream<T, KS, GlobalWindows, PurgingTrigger<CountTrigger>> {
        self.window(GlobalWindows)
            .trigger(PurgingTrigger::of(CountTrigger::of(size)))
    }

    /// The last `size` records per key, emitted every `slide` records (Flink's
    /// `countWindow(size, slide)`).
    pub fn count_window_sliding(
        &self,
        size: u64,
        slide: u64,
    ) -> EvictingWindowedStream<T, KS, GlobalWindows, CountTrigger, CountEvictor> {
        self.window(GlobalWindows)
            .trigger(CountTrigger::of(slide))
            .evictor(CountEvictor::of(size as usize))
    }
}

impl<T, KS: Clone> Clone for KeyedStream<T, KS> {
    fn clone(&self) -> Self {
        Self {
            stream: self.stream.clone(),
            key: self.key.clone(),
        }
    }
}
