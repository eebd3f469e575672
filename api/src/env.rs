//! The execution environment: where a job's graph is built and from where it runs.

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use shardflow_core::graph::InputRef;
use shardflow_core::runtime::MetricsSnapshot;
use shardflow_core::{
    ChecksumPolicy, Data, FlushPolicy, JobConfig, JobError, JobGraph, JobResult, NodeId,
    RuntimeMode, SchedulingMode,
};

use crate::source::socket::SocketTextSource;
use crate::source::text_file::{TextFileOptions, TextFileSource};
use crate::source::{IterSource, SequenceSource, split_range};
use crate::stream::DataStream;

/// Called every progress interval with the live counters and the time since the start.
pub type ProgressReporter = Box<dyn FnMut(&MetricsSnapshot, Duration)>;

pub(crate) struct EnvInner {
    pub(crate) graph: RefCell<Option<JobGraph>>,
}

impl EnvInner {
    pub(crate) fn with_graph<R>(&self, f: impl FnOnce(&mut JobGraph) -> R) -> R {
        let mut g = self.graph.borrow_mut();
        f(g.as_mut().expect("the environment was already executed"))
    }
}

/// Builds and runs a streaming (or batch) job: the entry point of every program.
///
/// Local mode, the default: one process, the job's shards on this machine's cores.
///
/// ```
/// use shardflow::prelude::*;
///
/// let mut env = StreamExecutionEnvironment::local();
/// env.set_parallelism(2);
/// let squares = env.generate_sequence(1, 100).map(|x| x * x);
/// let out = squares.collect();
/// env.execute("squares")?;
/// let mut got = out.take();
/// got.sort();
/// assert_eq!(got, (1..=100i64).map(|x| x * x).collect::<Vec<_>>());
/// # Ok::<(), JobError>(())
/// ```
pub struct StreamExecutionEnvironment {
    pub(crate) inner: Rc<EnvInner>,
    config: JobConfig,
    progress: Option<ProgressReporter>,
}

impl Default for StreamExecutionEnvironment {
    fn default() -> Self {
        Self::local()
    }
}

impl StreamExecutionEnvironment {
    /// A local environment: P = the CPUs this process may use.
    pub fn local() -> Self {
        Self {
            inner: Rc::new(EnvInner {
                graph: RefCell::new(Some(JobGraph::new())),
            }),
            config: JobConfig::default(),
            progress: None,
        }
    }

    /// Shards the job runs on (may exceed the cores; shards then share them).
    pub fn set_parallelism(&mut self, parallelism: u32) -> &mut Self {
        self.config.parallelism = parallelism;
        self
    }

    pub fn parallelism(&self) -> u32 {
        self.config.parallelism
    }

    /// Key groups: the most shards the job can be rescaled to (default 4096).
    pub fn set_max_parallelism(&mut self, max_parallelism: u32) -> &mut Self {
        self.config.max_parallelism = max_parallelism;
        self
    }

    /// Streaming (every update emitted) or batch (final results of bounded input).
    pub fn set_runtime_mode(&mut self, mode: RuntimeMode) -> &mut Self {
        self.config.runtime_mode = mode;
        self
    }

    /// Throughput (idle shards park) or latency (idle shards busy-poll).
    pub fn set_scheduling_mode(&mut self, mode: SchedulingMode) -> &mut Self {
        self.config.scheduling = mode;
        self
    }

    pub fn set_flush_policy(&mut self, flush: FlushPolicy) -> &mut Self {
        self.config.flush = flush;
        self
    }

    pub fn set_checksum_policy(&mut self, checksum: ChecksumPolicy) -> &mut Self {
        self.config.checksum = checksum;
        self
    }

    /// Every setting at once.
    pub fn config_mut(&mut self) -> &mut JobConfig {
        &mut self.config
    }

    pub fn config(&self) -> &JobConfig {
        &self.config
    }

    /// Called on the driving thread every progress interval while the job runs.
    pub fn on_progress(
        &mut self,
        f: impl FnMut(&MetricsSnapshot, Duration) + 'static,
    ) -> &mut Self {
        self.progress = Some(Box::new(f));
        self
    }

    fn stream<T>(&self, node: NodeId) -> DataStream<T> {
        DataStream::new(self.inner.clone(), vec![node])
    }

    /// A bounded source of the given records, split across shards by position.
    pub fn from_iter<T: Data + Sync>(&self, records: impl IntoIterator<Item = T>) -> DataStream<T> {
        let records: std::sync::Arc<Vec<T>> = std::sync::Arc::new(records.into_iter().collect());
        let node = self.inner.with_graph(|g| {
            g.add_source::<T, _, _>("from_iter", move |ctx| {
                let n = records.len() as u64;
                let r = split_range(0, n, ctx.runtime.shard, ctx.runtime.parallelism);
                Ok(IterSource::new(
                    records.clone(),
                    r.start as usize..r.end as usize,
                ))
            })
        });
        self.stream(node)
    }

    /// The numbers `from..=to`, split across shards in contiguous ranges.
    ///
    /// ```
    /// # use shardflow::prelude::*;
    /// let mut env = StreamExecutionEnvironment::local();
    /// let n = env.generate_sequence(-2, 2).collect();
    /// env.execute("sequence")?;
    /// let mut got = n.take();
    /// got.sort();
    /// assert_eq!(got, [-2, -1, 0, 1, 2]);
    /// # Ok::<(), JobError>(())
    /// ```
    pub fn generate_sequence(&self, from: i64, to: i64) -> DataStream<i64> {
        let node = self.inner.with_graph(|g| {
            g.add_source::<i64, _, _>("sequence", move |ctx| {
                Ok(SequenceSource::new(
                    from,
                    to,
                    ctx.runtime.shard,
                    ctx.runtime.parallelism,
                ))
            })
        });
        self.stream(node)
    }

    /// The lines of a text file, or of every file of a directory, split across shards by byte
    /// ranges. A line that is not UTF-8 fails the job with its file and line number.
    ///
    /// ```
    /// # use shardflow::prelude::*;
    /// let path = std::env::temp_dir().join(format!("shardflow-doc-{}.txt", std::process::id()));
    /// std::fs::write(&path, "first line\nsecond line\r\nthird")?;
    /// let mut env = StreamExecutionEnvironment::local();
    /// let lines = env.read_text_file(&path).collect();
    /// env.execute("lines")?;
    /// let mut got = lines.take();
    /// got.sort();
    /// assert_eq!(got, ["first line", "second line", "third"]);
    /// # std::fs::remove_file(&path)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn read_text_file(&self, path: impl Into<PathBuf>) -> DataStream<String> {
        self.read_text_file_with(path, TextFileOptions::default())
    }

    /// As [`read_text_file`](Self::read_text_file), with options (skip malformed lines, …).
    pub fn read_text_file_with(
        &self,
        path: impl Into<PathBuf>,
        options: TextFileOptions,
    ) -> DataStream<String> {
        let path = path.into();
        let node = self.inner.with_graph(|g| {
            g.add_source::<String, _, _>("read_text_file", move |ctx| {
                TextFileSource::open(&path, options.clone(), ctx)
            })
        });
        self.stream(node)
    }

    /// As [`read_text_file_with`](Self::read_text_file_with), each line with its file (an index
    /// into [`list_input_files`](crate::source::text_file::list_input_files)'s order) and byte
    /// offset: for jobs that report bad lines by file and line.
    pub fn read_text_file_located(
        &self,
        path: impl Into<PathBuf>,
        options: TextFileOptions,
    ) -> DataStream<crate::source::text_file::Line> {
        let path = path.into();
        let node = self.inner.with_graph(|g| {
            g.add_source::<crate::source::text_file::Line, _, _>("read_text_file", move |ctx| {
                TextFileSource::open(&path, options.clone(), ctx)
            })
        });
        self.stream(node)
    }

    /// Lines read from a TCP server (`nc -lk 9999` for a try). Like Flink's, this source is not
    /// parallel: shard 0 connects and reads, and a `rebalance` or `key_by` spreads the records.
    pub fn socket_text_stream(&self, host: &str, port: u16) -> DataStream<String> {
        let address = format!("{host}:{port}");
        let node = self.inner.with_graph(|g| {
            g.add_source::<String, _, _>("socket_text_stream", move |ctx| {
                Ok(SocketTextSource::new(
                    address.clone(),
                    ctx.runtime.shard == 0,
                    ctx.clone(),
                ))
            })
        });
        self.stream(node)
    }

    /// Adds a user-defined source: `make` builds one shard's share of it.
    pub fn add_source<T, S, F>(&self, name: &str, make: F) -> DataStream<T>
    where
        T: Data,
        S: shardflow_core::source::Source<T>,
        F: Fn(&shardflow_core::operator::OperatorContext) -> Result<S, JobError>
            + Send
            + Sync
            + 'static,
    {
        let node = self
            .inner
            .with_graph(|g| g.add_source::<T, S, F>(name, make));
        self.stream(node)
    }

    /// Runs the job built so far and waits for it to finish (bounded input) or fail.
    ///
    /// The environment can run one job: its graph is consumed.
    pub fn execute(&mut self, job_name: &str) -> Result<JobResult, JobError> {
        let graph = self
            .inner
            .graph
            .borrow_mut()
            .take()
            .ok_or_else(|| JobError::Graph("this environment already ran its job".into()))?;
        let mut noop = |_: &MetricsSnapshot, _: Duration| {};
        let progress: &mut dyn FnMut(&MetricsSnapshot, Duration) = match self.progress.as_mut() {
            Some(p) => p.as_mut(),
            None => &mut noop,
        };
        let mut config = self.config.clone();
        // On a task manager, the job runs its part of the deployment: the job manager chose the
        // parallelism and this process's shards, and cancels through its own control.
        if let Some(d) = shardflow_core::cluster::deployed() {
            config.parallelism = d.parallelism;
            config.cluster = Some(d.part);
            config.control = Some(d.control);
            if d.restore_from.is_some() {
                config.restore_from = d.restore_from;
            }
        }
        shardflow_core::execute(graph, config, job_name, progress)
    }
}

pub(crate) fn forward(heads: &[NodeId]) -> InputRef {
    InputRef::Forward(heads.to_vec())
}
