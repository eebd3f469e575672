//! The logical job graph, and its instantiation on a shard (the planner's per-shard half).
//!
//! The API adds nodes (sources, operators, sinks) and exchanges to a [`JobGraph`]; nothing runs.
//! Each node carries a typed factory that builds its operator on a shard, erased behind
//! `Box<dyn Any>` so that one graph can hold streams of every record type. Types are checked
//! when the graph is built; the downcasts at instantiation cannot fail for a graph the API built.
//!
//! Planning ([`JobGraph::instantiate`]) walks the nodes from the sinks back to the sources.
//! Every forward edge becomes a direct call (chaining: no queue, no serialization); every
//! exchange becomes a writer at the end of the upstream chain and a reader task at the head of
//! the downstream chain; a stream read by several operators becomes a fan-out; several streams
//! into one operator (a union) share it and finish it when the last of them ends.

use std::any::Any;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::config::JobConfig;
use crate::data::Data;
use crate::error::JobError;
use crate::exchange::local::LocalChannel;
use crate::exchange::reader::{ReaderSettings, run_reader};
use crate::exchange::writer::{ExchangeWriter, WriterSettings, in_process_checksum};
use crate::exchange::{ExchangeName, Partition, RemoteEnds};
use crate::key::KeyGroupRange;
use crate::operator::side::{SideOut, SidePort};
use crate::operator::{
    BoxPush, Discard, FanOut, OperatorContext, OperatorCounters, RuntimeContext, Shared,
    SideOutputSet,
};
use crate::runtime::{CancelToken, JobMetrics};
use crate::source::{Source, SourceStatus};
use crate::state::ShardState;

/// A node of the job graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub usize);

/// An exchange of the job graph.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ExchangeId(pub usize);

/// A type-erased `BoxPush<T>`.
pub type AnyPush = Box<dyn Any>;
/// A task of a shard: a source driver or an exchange reader.
pub type Task = Pin<Box<dyn Future<Output = Result<(), JobError>>>>;

/// How an operator's input arrives.
#[derive(Debug, Clone)]
pub enum InputRef {
    /// Chained directly behind these nodes (one, or several for a union).
    Forward(Vec<NodeId>),
    /// Through an exchange.
    Exchange(ExchangeId),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Target {
    /// Stream `head` of input `input` of node `node` (an input is several streams for a union).
    Node {
        node: NodeId,
        input: usize,
        head: usize,
    },
    /// Producer `producer` of exchange `exchange`.
    Exchange {
        exchange: ExchangeId,
        producer: usize,
    },
}

type MakeSource =
    Arc<dyn Fn(&OperatorContext, AnyPush, CancelToken) -> Result<Task, JobError> + Send + Sync>;
/// Builds an operator on a shard: given its output chain and side outputs, its input ports (one
/// per input: two for a two-input operator).
type MakeOperator = Arc<
    dyn Fn(&OperatorContext, AnyPush, &mut SideOutputs) -> Result<Vec<AnyPush>, JobError>
        + Send
        + Sync,
>;

enum NodeKind {
    Source(MakeSource),
    Operator {
        inputs: Vec<InputRef>,
        make: MakeOperator,
    },
    /// The side output `tag` of operator `parent`: a stream of its own, fed by the parent.
    SideOutput {
        parent: NodeId,
        tag: u32,
        port: MakeSidePort,
    },
}

/// Erases a side output's chain (a `BoxPush<X>` in an `AnyPush`) into a [`SideOut`].
type MakeSidePort = fn(AnyPush) -> Box<dyn SideOut>;

fn side_port<X: 'static>(down: AnyPush) -> Box<dyn SideOut> {
    Box::new(SidePort::new(unbox::<X>(down)))
}

/// The side outputs of one operator on one shard, by tag, as its factory finds them.
#[derive(Default)]
pub struct SideOutputs {
    ports: std::collections::HashMap<u32, (AnyPush, MakeSidePort)>,
}

impl SideOutputs {
    /// Every side output read by some stream, erased: for operators whose user functions emit to
    /// tags of any type (`Collector::output`).
    pub fn take_all(&mut self) -> SideOutputSet {
        SideOutputSet::new(
            self.ports
                .drain()
                .map(|(tag, (p, make))| (tag, make(p)))
                .collect(),
        )
    }
}

struct Node {
    name: Arc<str>,
    /// The operator's stable id ([`JobGraph::set_uid`]): its state in a checkpoint is found
    /// by it, whatever the graph around it became.
    uid: Option<Arc<str>>,
    kind: NodeKind,
    consumers: Vec<Target>,
    fan_out: fn(Vec<AnyPush>) -> AnyPush,
    discard: fn() -> AnyPush,
    /// Per input: splits its port among the streams of a union.
    split_inputs: Vec<fn(AnyPush, usize) -> Vec<AnyPush>>,
}

/// Everything an exchange needs on one shard.
pub struct ExchangeShard {
    pub remote: RemoteEnds,
    pub name: ExchangeName,
}

type MakeExchange = Arc<
    dyn Fn(
            &ShardContext,
            ExchangeShard,
            AnyPush,
            Option<crate::exchange::reader::ReaderCheckpoint>,
        ) -> Result<(AnyPush, Task), JobError>
        + Send
        + Sync,
>;

struct Exchange {
    name: Arc<str>,
    producers: Vec<NodeId>,
    consumer: Option<NodeId>,
    make: MakeExchange,
    split_writer: fn(AnyPush, usize) -> Vec<AnyPush>,
}

/// The logical graph of a job.
#[derive(Default)]
pub struct JobGraph {
    nodes: Vec<Node>,
    exchanges: Vec<Exchange>,
    /// Some operator acts on processing time: its chain is ticked.
    processing_time: bool,
    /// Watermark alignment groups, by name.
    alignment_groups: std::collections::HashMap<String, Arc<crate::time::align::AlignmentGroup>>,
}

fn unbox<T: 'static>(p: AnyPush) -> BoxPush<T> {
    *p.downcast::<BoxPush<T>>().unwrap_or_else(|_| {
        panic!(
            "job graph type mismatch: expected a Push<{}>",
            std::any::type_name::<T>()
        )
    })
}

fn erase<T: 'static>(p: BoxPush<T>) -> AnyPush {
    Box::new(p)
}

fn fan_out<T: Clone + 'static>(downs: Vec<AnyPush>) -> AnyPush {
    erase::<T>(Box::new(FanOut::new(
        downs.into_iter().map(unbox::<T>).collect(),
    )))
}

fn discard<T: 'static>() -> AnyPush {
    erase::<T>(Box::new(Discard))
}

fn split<T: 'static>(p: AnyPush, n: usize) -> Vec<AnyPush> {
    if n == 1 {
        return vec![p];
    }
    Shared::split(unbox::<T>(p), n)
        .into_iter()
        .map(erase::<T>)
        .collect()
}

/// What a shard knows of itself while it instantiates the graph.
#[derive(Clone)]
pub struct ShardContext {
    pub shard: u32,
    pub parallelism: u32,
    pub max_parallelism: u32,
    pub key_groups: KeyGroupRange,
    pub config: Arc<JobConfig>,
    pub cancel: CancelToken,
    /// Woken from the driving thread every few milliseconds (see `runtime::run_shard`).
    pub kick: Arc<crate::runtime::Kick>,
    /// How often tasks tick their chains with processing time (None: never).
    pub tick_resolution: Option<std::time::Duration>,
    /// This shard's state store directory and its budget of cached state bytes.
    pub state_dir: std::path::PathBuf,
    pub state_budget: usize,
    /// The job's checkpoint coordinator, if it takes checkpoints.
    pub checkpoints: Option<Arc<crate::checkpoint::Coordinator>>,
    /// The checkpoint the job resumes from, if it does.
    pub restore: Option<Arc<crate::checkpoint::RestorePlan>>,
}

impl JobGraph {
    pub fn new() -> Self {
        Self::default()
    }

    /// Says that an operator of the job acts on processing time (timers, processing-time
    /// windows, periodic watermarks, idleness): every task then ticks its chain.
    pub fn use_processing_time(&mut self) {
        self.processing_time = true;
    }

    pub fn uses_processing_time(&self) -> bool {
        self.processing_time
    }

    /// The watermark alignment group `name` of this job (made at its first use).
    pub fn alignment_group(&mut self, name: &str) -> Arc<crate::time::align::AlignmentGroup> {
        self.alignment_groups
            .entry(name.to_string())
            .or_default()
            .clone()
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    pub fn exchange_count(&self) -> usize {
        self.exchanges.len()
    }

    pub fn node_name(&self, id: NodeId) -> &str {
        &self.nodes[id.0].name
    }

    /// Gives a node a stable id: a checkpoint or savepoint restores the node's state by it, so
    /// a changed job (operators added, removed, renamed or moved) still finds it. Unique in
    /// the job.
    pub fn set_uid(&mut self, id: NodeId, uid: &str) {
        self.nodes[id.0].uid = Some(uid.into());
    }

    /// Per node, the id its state is checkpointed under: its uid, or else `name#k`, the
    /// k-th node of that name in the graph (so adding, removing or moving operators of other
    /// names keeps it; renaming it or adding one of the same name before it does not — that is
    /// what uids are for).
    pub fn node_uids(&self) -> Vec<Arc<str>> {
        let mut seen: std::collections::HashMap<&str, usize> = Default::default();
        self.nodes
            .iter()
            .map(|n| {
                let k = seen.entry(&n.name).or_default();
                *k += 1;
                match &n.uid {
                    Some(u) => u.clone(),
                    None => format!("{}#{}", n.name, *k - 1).into(),
                }
            })
            .collect()
    }

    /// Renames a node (its name shows in metrics, errors and summaries).
    pub fn rename_node(&mut self, id: NodeId, name: &str) {
        self.nodes[id.0].name = name.into();
    }

    pub fn exchange_name(&self, id: ExchangeId) -> &str {
        &self.exchanges[id.0].name
    }

    /// Adds a source. `make` builds one shard's share of it.
    pub fn add_source<T, S, F>(&mut self, name: &str, make: F) -> NodeId
    where
        T: Data,
        S: Source<T>,
        F: Fn(&OperatorContext) -> Result<S, JobError> + Send + Sync + 'static,
    {
        let make: MakeSource = Arc::new(move |ctx, down, cancel| {
            let source = make(ctx)?;
            let chain = unbox::<T>(down);
            Ok(Box::pin(drive_source(source, chain, ctx.clone(), cancel)) as Task)
        });
        self.push_node::<T, T>(name, NodeKind::Source(make))
    }

    /// Adds an operator reading `input` (records `I`) and emitting records `O`. `make` builds it
    /// on a shard, given the chain its output goes to.
    pub fn add_operator<I, O, F>(&mut self, name: &str, input: InputRef, make: F) -> NodeId
    where
        I: Data,
        O: Data,
        F: Fn(&OperatorContext, BoxPush<O>) -> Result<BoxPush<I>, JobError> + Send + Sync + 'static,
    {
        self.add_operator_with_side_outputs::<I, O, _>(name, input, move |ctx, down, _side| {
            make(ctx, down)
        })
    }

    /// Adds an operator that may also feed side outputs (see [`JobGraph::add_side_output`]):
    /// `make` takes them from its [`SideOutputs`] by tag.
    pub fn add_operator_with_side_outputs<I, O, F>(
        &mut self,
        name: &str,
        input: InputRef,
        make: F,
    ) -> NodeId
    where
        I: Data,
        O: Data,
        F: Fn(&OperatorContext, BoxPush<O>, &mut SideOutputs) -> Result<BoxPush<I>, JobError>
            + Send
            + Sync
            + 'static,
    {
        let make: MakeOperator = Arc::new(move |ctx, down, side| {
            Ok(vec![erase::<I>(make(ctx, unbox::<O>(down), side)?)])
        });
        let id = self.push_node::<I, O>(
            name,
            NodeKind::Operator {
                inputs: vec![input.clone()],
                make,
            },
        );
        self.connect_input(id, 0, input);
        id
    }

    /// Adds an operator with two inputs (records `I1` and `I2`) emitting records `O`: `make`
    /// builds it on a shard and returns its two input ports (see
    /// [`crate::operator::two_input`]).
    pub fn add_two_input_operator<I1, I2, O, F>(
        &mut self,
        name: &str,
        input1: InputRef,
        input2: InputRef,
        make: F,
    ) -> NodeId
    where
        I1: Data,
        I2: Data,
        O: Data,
        F: Fn(
                &OperatorContext,
                BoxPush<O>,
                &mut SideOutputs,
            ) -> Result<(BoxPush<I1>, BoxPush<I2>), JobError>
            + Send
            + Sync
            + 'static,
    {
        let make: MakeOperator = Arc::new(move |ctx, down, side| {
            let (a, b) = make(ctx, unbox::<O>(down), side)?;
            Ok(vec![erase::<I1>(a), erase::<I2>(b)])
        });
        let id = self.push_node::<I1, O>(
            name,
            NodeKind::Operator {
                inputs: vec![input1.clone(), input2.clone()],
                make,
            },
        );
        self.nodes[id.0].split_inputs = vec![split::<I1>, split::<I2>];
        self.connect_input(id, 0, input1);
        self.connect_input(id, 1, input2);
        id
    }

    /// Records that input `input` of node `id` reads `from`.
    fn connect_input(&mut self, id: NodeId, input: usize, from: InputRef) {
        match from {
            InputRef::Forward(heads) => {
                assert!(!heads.is_empty(), "an operator needs an input");
                for (head, h) in heads.iter().enumerate() {
                    self.nodes[h.0].consumers.push(Target::Node {
                        node: id,
                        input,
                        head,
                    });
                }
            }
            InputRef::Exchange(e) => {
                let ex = &mut self.exchanges[e.0];
                assert!(ex.consumer.is_none(), "an exchange feeds one operator");
                ex.consumer = Some(id);
            }
        }
    }

    /// Adds the side output `tag` (records `X`) of operator `parent`: a node whose consumers get
    /// what the parent sends to that tag.
    pub fn add_side_output<X: Data>(&mut self, parent: NodeId, tag: u32) -> NodeId {
        assert!(
            matches!(self.nodes[parent.0].kind, NodeKind::Operator { .. }),
            "only operators have side outputs"
        );
        let name = format!("{} (side output {tag})", self.nodes[parent.0].name);
        self.push_node::<X, X>(
            &name,
            NodeKind::SideOutput {
                parent,
                tag,
                port: side_port::<X>,
            },
        )
    }

    /// Adds a sink: an operator with no output.
    pub fn add_sink<I, F>(&mut self, name: &str, input: InputRef, make: F) -> NodeId
    where
        I: Data,
        F: Fn(&OperatorContext) -> Result<BoxPush<I>, JobError> + Send + Sync + 'static,
    {
        self.add_operator::<I, (), _>(name, input, move |ctx, _down| make(ctx))
    }

    /// Adds an exchange of records `T` from `producers`, routed by `partition`. The operator
    /// added next with `InputRef::Exchange` of the returned id reads it.
    pub fn add_exchange<T: Data, P: Partition<T>>(
        &mut self,
        name: &str,
        producers: &[NodeId],
        partition: P,
    ) -> ExchangeId {
        assert!(!producers.is_empty(), "an exchange needs a producer");
        let id = ExchangeId(self.exchanges.len());
        let make: MakeExchange = Arc::new(move |shard, ends, down, checkpoint| {
            let local = LocalChannel::<T>::new(shard.config.channel_buffers);
            let writer = ExchangeWriter::new(
                partition.clone(),
                ends.remote.senders,
                local.clone(),
                WriterSettings {
                    shard: shard.shard,
                    max_parallelism: shard.max_parallelism,
                    batch_bytes: shard.config.batch_bytes,
                    checksum: in_process_checksum(shard.config.checksum),
                    name: ends.name.clone(),
                },
            );
            let settings = ReaderSettings {
                shard: shard.shard,
                scheduling: shard.config.scheduling,
                flush: shard.config.flush,
                name: ends.name,
                cancel: shard.cancel.clone(),
                ticker: crate::time::Ticker::new(shard.config.clock.clone(), shard.tick_resolution),
                checkpoint,
            };
            let reader = run_reader::<T>(ends.remote.receivers, local, unbox::<T>(down), settings);
            Ok((erase::<T>(Box::new(writer)), Box::pin(reader) as Task))
        });
        for (i, p) in producers.iter().enumerate() {
            self.nodes[p.0].consumers.push(Target::Exchange {
                exchange: id,
                producer: i,
            });
        }
        self.exchanges.push(Exchange {
            name: name.into(),
            producers: producers.to_vec(),
            consumer: None,
            make,
            split_writer: split::<T>,
        });
        id
    }

    fn push_node<I: Data, O: Data>(&mut self, name: &str, kind: NodeKind) -> NodeId {
        let id = NodeId(self.nodes.len());
        self.nodes.push(Node {
            name: name.into(),
            uid: None,
            kind,
            consumers: Vec::new(),
            fan_out: fan_out::<O>,
            discard: discard::<O>,
            split_inputs: vec![split::<I>],
        });
        id
    }

    /// Checks what the builder cannot check as it goes.
    pub fn validate(&self) -> Result<(), JobError> {
        if !self
            .nodes
            .iter()
            .any(|n| matches!(n.kind, NodeKind::Source(_)))
        {
            return Err(JobError::Graph("the job has no source".into()));
        }
        let mut uids = std::collections::HashSet::new();
        for u in self.node_uids() {
            if !uids.insert(u.clone()) {
                return Err(JobError::Graph(format!(
                    "uid '{u}' is given to two operators (uids must be unique in a job)"
                )));
            }
        }
        for e in &self.exchanges {
            if e.consumer.is_none() {
                return Err(JobError::Graph(format!(
                    "exchange '{}' has no operator reading it",
                    e.name
                )));
            }
            debug_assert!(!e.producers.is_empty());
        }
        Ok(())
    }

    /// Builds this shard's tasks: the planner's per-shard half (see the module docs).
    ///
    /// `exchanges[e]` holds this shard's ring ends of exchange `e`; `counters[n]` this shard's
    /// counters of node `n`.
    pub fn instantiate(
        &self,
        shard: &ShardContext,
        exchanges: Vec<ExchangeShard>,
        counters: &[Arc<OperatorCounters>],
    ) -> Result<Vec<(Arc<str>, Task)>, JobError> {
        use std::collections::HashMap;
        let mut ports: HashMap<Target, AnyPush> = HashMap::new();
        let mut tasks = Vec::new();
        let mut exchanges: Vec<Option<ExchangeShard>> = exchanges.into_iter().map(Some).collect();
        // Side outputs are added after their parents, so built before them.
        let mut side_ports: HashMap<(usize, u32), (AnyPush, MakeSidePort)> = HashMap::new();
        let state = ShardState::new(
            shard.state_dir.clone(),
            shard.state_budget,
            shard.shard,
            shard.max_parallelism,
            shard.config.clock.clone(),
        );
        let uids = self.node_uids();
        for (idx, node) in self.nodes.iter().enumerate().rev() {
            let mut outs: Vec<AnyPush> = node
                .consumers
                .iter()
                .map(|t| {
                    ports
                        .remove(t)
                        .expect("consumers are built before producers")
                })
                .collect();
            let down = match outs.len() {
                0 => (node.discard)(),
                1 => outs.pop().unwrap(),
                _ => (node.fan_out)(outs),
            };
            let backend = state.backend(idx as u32, &node.name);
            let mut restored = None;
            let mut rescaled = None;
            match &shard.restore {
                Some(plan) if plan.parallelism() == shard.parallelism => {
                    if let Some((snap, segments)) = plan.of(idx as u32, shard.shard) {
                        if !segments.is_empty() {
                            backend.restore(&segments)?;
                        }
                        restored = Some(Arc::from(snap.state.as_slice()));
                    }
                }
                Some(plan) => {
                    if let Some(r) = plan.rescaled(
                        idx as u32,
                        shard.shard,
                        shard.parallelism,
                        shard.max_parallelism,
                    ) {
                        if !r.segments.is_empty() {
                            backend.restore_rescaled(shard.key_groups, r.segments.clone())?;
                        }
                        rescaled = Some(Arc::new(r));
                    }
                }
                None => {}
            }
            let ctx = OperatorContext {
                runtime: RuntimeContext {
                    shard: shard.shard,
                    parallelism: shard.parallelism,
                    max_parallelism: shard.max_parallelism,
                    key_groups: shard.key_groups,
                    operator: node.name.clone(),
                },
                config: shard.config.clone(),
                counters: counters[idx].clone(),
                tick_resolution: shard.tick_resolution,
                state: backend,
                node: idx as u32,
                checkpoints: shard.checkpoints.clone(),
                restored,
                restored_from: shard.restore.as_ref().map(|p| p.id()),
                rescaled,
                uid: uids[idx].clone(),
            };
            match &node.kind {
                NodeKind::Source(make) => {
                    ctx.expect_checkpoints();
                    tasks.push((node.name.clone(), make(&ctx, down, shard.cancel.clone())?));
                }
                NodeKind::SideOutput { parent, tag, port } => {
                    side_ports.insert((parent.0, *tag), (down, *port));
                }
                NodeKind::Operator { inputs, make } => {
                    let mut side = SideOutputs::default();
                    let mine: Vec<(usize, u32)> = side_ports
                        .keys()
                        .filter(|(p, _)| *p == idx)
                        .copied()
                        .collect();
                    for k in mine {
                        let port = side_ports.remove(&k).expect("listed");
                        side.ports.insert(k.1, port);
                    }
                    let made = make(&ctx, down, &mut side)?;
                    if let Some(tag) = side.ports.keys().next() {
                        return Err(JobError::Graph(format!(
                            "operator '{}' has no side output {tag}, yet a stream reads it",
                            node.name
                        )));
                    }
                    debug_assert_eq!(made.len(), inputs.len(), "a port per input");
                    for (j, (input, port)) in inputs.iter().zip(made).enumerate() {
                        match input {
                            InputRef::Forward(heads) => {
                                for (head, p) in (node.split_inputs[j])(port, heads.len())
                                    .into_iter()
                                    .enumerate()
                                {
                                    ports.insert(
                                        Target::Node {
                                            node: NodeId(idx),
                                            input: j,
                                            head,
                                        },
                                        p,
                                    );
                                }
                            }
                            InputRef::Exchange(e) => {
                                let ex = &self.exchanges[e.0];
                                let ends =
                                    exchanges[e.0].take().expect("each exchange is built once");
                                // The reader acks every checkpoint too (an unaligned one
                                // with the records it overtook), as `<uid>/in-flight/<input>`.
                                let checkpoint = match &ctx.checkpoints {
                                    Some(c) => {
                                        c.expect_ack();
                                        let uid = format!("{}/in-flight/{j}", uids[idx]);
                                        let restored = match &shard.restore {
                                            Some(p) => {
                                                p.in_flight(&uid, shard.shard, shard.parallelism)?
                                            }
                                            None => None,
                                        };
                                        Some(crate::exchange::reader::ReaderCheckpoint {
                                            coordinator: c.clone(),
                                            node: idx as u32,
                                            operator: format!("{}/in-flight", node.name),
                                            uid,
                                            shard: shard.shard,
                                            restored,
                                        })
                                    }
                                    None => None,
                                };
                                let (writer, reader) = (ex.make)(shard, ends, port, checkpoint)?;
                                tasks.push((ex.name.clone(), reader));
                                for (i, w) in (ex.split_writer)(writer, ex.producers.len())
                                    .into_iter()
                                    .enumerate()
                                {
                                    ports.insert(
                                        Target::Exchange {
                                            exchange: *e,
                                            producer: i,
                                        },
                                        w,
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
        debug_assert!(ports.is_empty(), "every port is taken by its producer");
        Ok(tasks)
    }

    /// Per-node names, for metrics.
    pub fn node_names(&self) -> Vec<Arc<str>> {
        self.nodes.iter().map(|n| n.name.clone()).collect()
    }

    /// Per-exchange names, for metrics and channel naming.
    pub fn exchange_names(&self) -> Vec<Arc<str>> {
        self.exchanges.iter().map(|e| e.name.clone()).collect()
    }

    pub(crate) fn metrics_shape(&self, parallelism: u32) -> JobMetrics {
        JobMetrics::new(self.node_names(), parallelism)
    }
}

/// Injects the barrier of the newest checkpoint triggered since `last`, if any: the source's
/// position (its operator state) goes to the checkpoint, and the barrier down the chain ahead
/// of the records that follow.
fn inject_barrier<T: Data, S: Source<T>>(
    ctx: &OperatorContext,
    source: &mut S,
    op_state: &mut crate::state::OperatorStateStore,
    chain: &mut BoxPush<T>,
    last: &mut u64,
) -> Result<(), JobError> {
    let Some(c) = &ctx.checkpoints else {
        return Ok(());
    };
    let id = c.triggered();
    if id <= *last {
        return Ok(());
    }
    *last = id;
    let barrier = crate::checkpoint::Barrier {
        id,
        timestamp_ms: crate::time::ProcessingClock::System.now_ms(),
        at_least_once: c.config().mode == crate::checkpoint::CheckpointingMode::AtLeastOnce,
        alignment_us: 0,
        unaligned: c.unaligned(id),
    };
    // A source that cannot record its position aborts the checkpoint, not the job; the
    // barrier still goes on (what follows it acks a checkpoint that no longer waits).
    let bytes = source
        .snapshot_state(op_state)
        .and_then(|()| op_state.to_bytes());
    match bytes {
        Ok(bytes) => ctx.snapshot(barrier, bytes)?,
        Err(e) => ctx.decline(barrier, e.to_string()),
    }
    chain.barrier(barrier)
}

/// Drives one shard's share of a source: pull a batch, push it down the chain, wait for credit;
/// when the source has to wait for input, flush the chain first; at the end, finish the chain
/// and wait until everything has been shipped.
async fn drive_source<T: Data, S: Source<T>>(
    mut source: S,
    mut chain: BoxPush<T>,
    ctx: OperatorContext,
    cancel: CancelToken,
) -> Result<(), JobError> {
    use std::task::Poll;
    let max_records = ctx.config.source_batch_records;
    let flush_when_idle = ctx.config.flush == crate::config::FlushPolicy::WhenFullOrIdle;
    let mode = ctx.config.scheduling;
    let mut batch: crate::operator::Batch<T> = crate::operator::Batch::with_capacity(max_records);
    let mut cooperate = crate::operator::Cooperate::new();
    let mut ticker = crate::time::Ticker::new(ctx.config.clock.clone(), ctx.tick_resolution);
    let mut source_watermark = crate::operator::WATERMARK_MIN;
    // A fresh run: nothing to restore (a restore hands the source its share here).
    let mut op_state = crate::checkpoint::restored_operator_state(&ctx)?;
    source.initialize_state(&mut op_state)?;
    // From this run's first checkpoint on, even one triggered before this task first ran.
    let mut last_barrier = ctx.checkpoints.as_ref().map_or(0, |c| c.base());
    loop {
        if cancel.is_cancelled() {
            return Err(JobError::Cancelled);
        }
        inject_barrier(
            &ctx,
            &mut source,
            &mut op_state,
            &mut chain,
            &mut last_barrier,
        )?;
        // A checkpoint triggered while the chain holds input back (an alignment pause, say)
        // gets its barrier without waiting for the chain to take input again.
        let barrier_due = || {
            ctx.checkpoints
                .as_ref()
                .is_some_and(|c| c.triggered() > last_barrier)
        };
        let ready = crate::operator::wait(mode, |cx| match chain.poll_ready(cx) {
            Poll::Pending if barrier_due() => Poll::Ready(Ok(false)),
            other => other.map(|r| r.map(|()| true)),
        })
        .await?;
        if !ready {
            continue;
        }
        ctx.enter();
        let status = {
            let mut next = std::pin::pin!(source.next_timed_batch(&mut batch, max_records));
            let mut flushed_once = false;
            let mut flush_done = false;
            let mut timer: Option<Pin<Box<glommio::timer::Timer>>> = None;
            std::future::poll_fn(|cx| {
                if let Poll::Ready(r) = next.as_mut().poll(cx) {
                    return Poll::Ready(r);
                }
                // The source waits: processing time goes on for the chain meanwhile.
                if let Some(resolution) = ticker.resolution() {
                    let t = timer
                        .get_or_insert_with(|| Box::pin(glommio::timer::Timer::new(resolution)));
                    if t.as_mut().poll(cx).is_ready() {
                        timer = None;
                        if let Some(now) = ticker.due()
                            && let Err(e) = chain.tick(now)
                        {
                            return Poll::Ready(Err(e));
                        }
                        cx.waker().wake_by_ref();
                    }
                }
                // The source is waiting for input: hand on what is staged meanwhile.
                if flush_when_idle {
                    if !flushed_once {
                        flushed_once = true;
                        if let Err(e) = chain.flush() {
                            return Poll::Ready(Err(e));
                        }
                    }
                    if !flush_done {
                        match chain.poll_flush(cx) {
                            Poll::Ready(Ok(())) => flush_done = true,
                            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                            // Latency mode never waits for a wake from another core: poll again.
                            Poll::Pending if mode == crate::config::SchedulingMode::Latency => {
                                cx.waker().wake_by_ref()
                            }
                            Poll::Pending => {}
                        }
                    }
                }
                Poll::Pending
            })
            .await?
        };
        ctx.counters.add_out(batch.len());
        if batch.is_timed() && batch.timestamps.len() != batch.records.len() {
            return Err(ctx.error(format!(
                "the source gave {} timestamps for {} records",
                batch.timestamps.len(),
                batch.records.len()
            )));
        }
        if !batch.is_empty() {
            chain.push(&mut batch)?;
        }
        if let Some(w) = source.current_watermark()
            && w > source_watermark
        {
            source_watermark = w;
            chain.watermark(w)?;
        }
        if let Some(now) = ticker.due() {
            chain.tick(now)?;
        }
        if status == SourceStatus::End {
            break;
        }
        cooperate.tick().await;
    }
    // A checkpoint triggered before the end gets its barrier now, ahead of the end of input;
    // later ones take the source's final position (everything emitted) as its ack, and go on
    // while other shards' sources run.
    if ctx.checkpoints.is_some() {
        inject_barrier(
            &ctx,
            &mut source,
            &mut op_state,
            &mut chain,
            &mut last_barrier,
        )?;
        let bytes = source
            .snapshot_state(&mut op_state)
            .and_then(|()| op_state.to_bytes())
            .map_err(|e| ctx.error(e))?;
        ctx.final_snapshot(bytes)?;
    }
    // End of input is the end of event time: every window and timer downstream fires.
    chain.watermark(crate::operator::WATERMARK_MAX)?;
    chain.finish()?;
    crate::operator::flushed(chain.as_mut(), mode).await
}
