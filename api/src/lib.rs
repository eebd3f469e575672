//! # shardflow: stream and batch processing on a thread-per-core engine
//!
//! The API a program builds its job with, in the spirit of Apache Flink's DataStream API, and
//! the `shardflow` command line that runs the built-in jobs.
//!
//! ```
//! use shardflow::prelude::*;
//!
//! // WordCount on four shards.
//! let mut env = StreamExecutionEnvironment::local();
//! env.set_parallelism(4).set_runtime_mode(RuntimeMode::Batch);
//! let lines = env.from_iter(vec!["to be or not to be".to_string(), "that is".to_string()]);
//! let counts = lines
//!     .flat_map(|line: String, out: &mut Collector<(String, u64)>| {
//!         line.split_whitespace().for_each(|w| out.collect((w.to_string(), 1)))
//!     })
//!     .key_by_ref(|wc: &(String, u64)| &wc.0)
//!     .sum(|wc: &mut (String, u64)| &mut wc.1)
//!     .collect();
//! let result = env.execute("wordcount")?;
//! let mut counts = counts.take();
//! counts.sort();
//! assert_eq!(counts[0], ("be".to_string(), 2));
//! assert_eq!(counts.len(), 6);
//! println!("{result}");
//! # Ok::<(), JobError>(())
//! ```
//!
//! ## Where things are
//!
//! - [`StreamExecutionEnvironment`]: settings (parallelism, runtime and scheduling modes), sources,
//!   and `execute`.
//! - [`DataStream`] and [`KeyedStream`]: the operators (`map`, `filter`, `flat_map`, `process`,
//!   `key_by`, `reduce`, `sum`/`min`/`max`, `union`, `rebalance`, `broadcast`) and sinks (`print`,
//!   `write_as_text`, `write_as_csv`, `collect`).
//! - Records are user types deriving rkyv's `Archive`, `Serialize` and `Deserialize` (and
//!   `Clone`): see [`Data`].
//! - The engine underneath is `shardflow-core`; its crate docs tell the path of a record.

pub mod cluster;
pub mod connected;
pub mod control;
pub mod datagen;
pub mod env;
pub mod jobs;
pub mod sink;
pub mod source;
pub mod stream;
pub mod types;
pub mod window;

pub use env::StreamExecutionEnvironment;
pub use shardflow_core::{
    ChecksumPolicy, Data, FlushPolicy, JobConfig, JobError, JobResult, OnMalformed, RuntimeMode,
    SchedulingMode,
};
pub use stream::{DataStream, KeyedStream};

/// Everything a job program usually needs.
pub mod prelude {
    pub use crate::connected::Either;
    pub use crate::sink::collect::CollectHandle;
    pub use crate::sink::file::{FileSinkOptions, RollingPolicy};
    pub use crate::sink::text::WriteMode;
    pub use crate::source::text_file::TextFileOptions;
    pub use crate::window::OutputTag;
    pub use crate::{DataStream, KeyedStream, StreamExecutionEnvironment};
    pub use rkyv::{Archive, Deserialize, Serialize};
    pub use shardflow_core::keyed::interval_join::{JoinContext, ProcessJoinFunction};
    pub use shardflow_core::keyed::{
        KeyedCoProcessFunction, KeyedContext, KeyedOpenContext, KeyedProcessFunction, TimeDomain,
    };
    pub use shardflow_core::operator::process::UserError;
    pub use shardflow_core::operator::{Collector, ProcessFunction, RuntimeContext};
    pub use shardflow_core::state::{
        AggregatingState, AggregatingStateDescriptor, ListState, ListStateDescriptor, MapState,
        MapStateDescriptor, ReducingState, ReducingStateDescriptor, StateTtlConfig, TtlUpdate,
        TtlVisibility, ValueState, ValueStateDescriptor,
    };
    pub use shardflow_core::time::{ManualClock, ProcessingClock, WatermarkStrategy};
    pub use shardflow_core::window::{
        AggregateFunction, ContinuousEventTimeTrigger, ContinuousProcessingTimeTrigger,
        CountEvictor, CountTrigger, EventTimeTrigger, GlobalWindow, GlobalWindows,
        ProcessWindowFunction, ProcessingTimeTrigger, PurgingTrigger, SessionWindows,
        SlidingWindows, TimeEvictor, TimeWindow, Trigger, TriggerContext, TriggerResult,
        TumblingWindows, WindowContext,
    };
    pub use shardflow_core::{
        ChecksumPolicy, Data, FlushPolicy, JobError, JobResult, OnMalformed, RuntimeMode,
        SchedulingMode,
    };
}
