//! The receiving side of an exchange: a task on each shard that reads the rings from every other
//! shard and the local channel, and pushes the records into the receiving chain.
//!
//! Budget per 32 KiB buffer: frame validation (a header check; a crc pass at ~10 GB/s only for
//! frames that carry one, ~3 µs), then one deserialize per record into a reused batch vector.
//!
//! The task takes input only while its chain is ready (backpressure passes upstream because
//! buffers are returned, and credits granted, only as fast as the chain takes records). When no
//! input is waiting it flushes its chain (the flush policy of DESIGN.md) and then, by scheduling
//! mode, parks until a sender wakes it or yields and polls again.

use std::task::Poll;

use shardflow_shuffle::{FrameKind, FrameReader, RingReceiver};

use super::ExchangeName;
use super::local::{LocalChannel, LocalMessage};
use crate::config::{FlushPolicy, SchedulingMode};
use crate::data::{Data, unarchive_batch};
use crate::error::JobError;
use crate::operator::{Batch, BoxPush, ValveOutput, WatermarkValve, flushed, ready, wait};
use crate::runtime::CancelToken;

/// What the reader task needs besides its inputs and chain.
pub struct ReaderSettings {
    pub shard: u32,
    pub scheduling: SchedulingMode,
    pub flush: FlushPolicy,
    pub name: ExchangeName,
    pub cancel: CancelToken,
    /// Ticks the chain with processing time (when the job has operators acting on it).
    pub ticker: crate::time::Ticker,
    /// With checkpoints: how the reader takes part (it acks every checkpoint; an unaligned
    /// one with the records in flight on its inputs).
    pub checkpoint: Option<ReaderCheckpoint>,
}

/// An exchange reader's part in checkpoints: it acks each one under the id
/// `<consumer uid>/in-flight/<input>`, with the records an unaligned barrier overtook (none
/// for an aligned one), and replays the ones restored before reading its inputs.
pub struct ReaderCheckpoint {
    pub coordinator: std::sync::Arc<crate::checkpoint::Coordinator>,
    pub node: u32,
    pub operator: String,
    pub uid: String,
    pub shard: u32,
    /// The in-flight records of the checkpoint the job resumed from.
    pub restored: Option<std::sync::Arc<[u8]>>,
}

/// In-flight records of an unaligned checkpoint: per batch, its timestamps (empty: none) and
/// the batch archived.
pub type InFlight = Vec<(Vec<i64>, Vec<u8>)>;

/// An unaligned barrier passed on, waiting for the inputs that have not delivered it: what
/// they deliver meanwhile belongs to the checkpoint.
struct Capture {
    barrier: crate::checkpoint::Barrier,
    pending: Vec<bool>,
    data: InFlight,
}

impl ReaderCheckpoint {
    fn snapshot(&self, state: Vec<u8>) -> crate::checkpoint::OperatorSnapshot {
        crate::checkpoint::OperatorSnapshot {
            node: self.node,
            operator: self.operator.clone(),
            uid: self.uid.clone(),
            shard: self.shard,
            segments: Vec::new(),
            state,
        }
    }

    /// Acks checkpoint `id` with `data` (off the shard: the ack may complete the checkpoint
    /// and write its metadata).
    fn ack(&self, id: u64, data: &InFlight) -> Result<(), JobError> {
        let state = if data.is_empty() {
            Vec::new()
        } else {
            rkyv::to_bytes::<rkyv::rancor::Error>(data)
                .map(|b| b.to_vec())
                .map_err(|e| JobError::Operator {
                    operator: self.operator.clone(),
                    shard: self.shard,
                    message: format!("cannot archive in-flight records: {e}"),
                })?
        };
        let snapshot = self.snapshot(state);
        let c = self.coordinator.clone();
        crate::checkpoint::run_off_shard(Box::new(move || {
            if let Err(e) = c.ack(id, snapshot, 0, 0) {
                c.decline(id, e.to_string());
            }
        }));
        Ok(())
    }
}

enum Link<T> {
    Remote { from: u32, ring: RingReceiver },
    Local(LocalChannel<T>),
}

struct Input<T> {
    link: Link<T>,
    ended: bool,
}

/// Hands on what the valve says, in order with the data.
fn apply<T>(chain: &mut BoxPush<T>, out: ValveOutput) -> Result<(), JobError> {
    if let Some(w) = out.watermark {
        chain.watermark(w)?;
    }
    if let Some(idle) = out.status {
        chain.watermark_status(idle)?;
    }
    Ok(())
}

/// Runs until every input has sent end of input; then finishes the chain.
pub async fn run_reader<T: Data>(
    remote: Vec<Option<RingReceiver>>,
    local: LocalChannel<T>,
    mut chain: BoxPush<T>,
    mut settings: ReaderSettings,
) -> Result<(), JobError> {
    let mut local = Some(local);
    let mut inputs: Vec<Input<T>> = remote
        .into_iter()
        .enumerate()
        .map(|(from, r)| Input {
            link: match r {
                Some(ring) => Link::Remote {
                    from: from as u32,
                    ring,
                },
                None => Link::Local(local.take().expect("one local input")),
            },
            ended: false,
        })
        .collect();
    let mut open = inputs.len();
    let mut batch: Batch<T> = Batch::new();
    // Timestamps read from a TIMESTAMPS frame, for the DATA frame that follows it.
    let mut timestamps: Vec<i64> = Vec::new();
    // The watermark handed to the chain: the minimum over the active inputs, never going back.
    let mut valve = WatermarkValve::new(inputs.len());
    // Checkpoint barriers, aligned across the inputs: a channel that delivered one is not read
    // again (its ring fills, its sender waits) until every open channel has.
    let mut barriers = Barriers {
        aligner: crate::checkpoint::BarrierAligner::new(inputs.len()),
        capture: None,
        last_unaligned: 0,
        checkpoint: settings.checkpoint.take(),
    };
    let mut cooperate = crate::operator::Cooperate::new();
    let shard = settings.shard;
    let name = &settings.name;
    let cancel = &settings.cancel;
    let channel_error = |from: u32, e| {
        if cancel.is_cancelled() {
            JobError::Cancelled
        } else {
            JobError::Channel {
                channel: name.describe(from, shard),
                source: e,
            }
        }
    };

    // The records an unaligned checkpoint overtook come first, as they did before it.
    if let Some(bytes) = barriers
        .checkpoint
        .as_ref()
        .and_then(|c| c.restored.as_deref())
        .filter(|b| !b.is_empty())
    {
        let what = |message: String| JobError::Operator {
            operator: barriers
                .checkpoint
                .as_ref()
                .map_or_else(String::new, |c| c.operator.clone()),
            shard,
            message,
        };
        let data: InFlight = crate::checkpoint::decode_state(bytes)
            .map_err(|e| what(format!("the checkpoint's in-flight records: {e}")))?;
        for (ts, bytes) in data {
            let mut aligned = rkyv::util::AlignedVec::<16>::new();
            aligned.extend_from_slice(&bytes);
            unarchive_batch(&aligned, false, &mut batch.records)
                .map_err(|e| what(format!("the checkpoint's in-flight records: {e}")))?;
            if !ts.is_empty() {
                batch.timestamps = ts;
            }
            chain.push(&mut batch)?;
        }
    }

    while open > 0 {
        ready(chain.as_mut(), settings.scheduling).await?;
        let mut progressed = false;
        let mut i = 0;
        while i < inputs.len() {
            if inputs[i].ended || barriers.aligner.blocked(i) {
                i += 1;
                continue;
            }
            let mut ended = false;
            match &inputs[i].link {
                Link::Remote { from, ring } => {
                    let from = *from;
                    if let Some(buf) = ring.try_recv().map_err(|e| channel_error(from, e))? {
                        progressed = true;
                        let foreign = ring.is_foreign();
                        for frame in FrameReader::new(&buf, ring.channel()).require_crc(foreign) {
                            let frame = frame.map_err(|source| JobError::Frame {
                                channel: name.describe(from, shard),
                                source,
                            })?;
                            if barriers.aligner.blocked(i) && frame.kind != FrameKind::End {
                                // Writers end a buffer at a barrier; a frame past it would
                                // belong to the next checkpoint before this one is aligned.
                                return Err(JobError::Decode {
                                    channel: name.describe(from, shard),
                                    offset: frame.payload.as_ptr() as usize - buf.as_ptr() as usize,
                                    message: format!(
                                        "a {:?} frame after a barrier in one buffer",
                                        frame.kind
                                    ),
                                });
                            }
                            // Where the frame's payload lies: errors name it.
                            let offset = frame.payload.as_ptr() as usize - buf.as_ptr() as usize;
                            let decode_error = |message: String| JobError::Decode {
                                channel: name.describe(from, shard),
                                offset,
                                message,
                            };
                            match frame.kind {
                                FrameKind::Data => {
                                    // An in-process ring carries our own bytes, read as they are;
                                    // a frame that carries a crc came (or is made to look as if it
                                    // came) from outside, and gets rkyv's full bytecheck too.
                                    if let Some(c) = barriers.capture.as_mut()
                                        && c.pending[i]
                                    {
                                        c.data.push((timestamps.clone(), frame.payload.to_vec()));
                                    }
                                    let trusted = !foreign
                                        && frame.flags & shardflow_shuffle::frame::FLAG_CRC_UNSET
                                            != 0;
                                    unarchive_batch(frame.payload, trusted, &mut batch.records)
                                        .map_err(|e| decode_error(e.to_string()))?;
                                    if !timestamps.is_empty() {
                                        if timestamps.len() != batch.records.len() {
                                            return Err(decode_error(format!(
                                                "{} timestamps for a batch of {} records",
                                                timestamps.len(),
                                                batch.records.len()
                                            )));
                                        }
                                        std::mem::swap(&mut batch.timestamps, &mut timestamps);
                                    }
                                    chain.push(&mut batch)?;
                                }
                                FrameKind::Timestamps => {
                                    if frame.payload.len() % 8 != 0 {
                                        return Err(decode_error(format!(
                                            "a timestamps frame of {} bytes (not whole i64s)",
                                            frame.payload.len()
                                        )));
                                    }
                                    timestamps.clear();
                                    timestamps.extend(frame.payload.chunks_exact(8).map(|c| {
                                        i64::from_le_bytes(c.try_into().expect("8 bytes"))
                                    }));
                                }
                                FrameKind::Watermark => {
                                    let w: [u8; 8] = frame.payload.try_into().map_err(|_| {
                                        decode_error(format!(
                                            "a watermark frame of {} bytes (not 8)",
                                            frame.payload.len()
                                        ))
                                    })?;
                                    apply(&mut chain, valve.watermark(i, i64::from_le_bytes(w)))?;
                                }
                                FrameKind::Status => {
                                    let idle = match frame.payload {
                                        [0] => false,
                                        [1] => true,
                                        other => {
                                            return Err(decode_error(format!(
                                                "a status frame of {} bytes (not one 0 or 1)",
                                                other.len()
                                            )));
                                        }
                                    };
                                    apply(&mut chain, valve.status(i, idle))?;
                                }
                                FrameKind::End => ended = true,
                                FrameKind::Barrier => {
                                    let p: [u8; 17] = frame
                                        .payload
                                        .try_into()
                                        .ok()
                                        .filter(|p: &[u8; 17]| p[16] <= 3)
                                        .ok_or_else(|| {
                                            decode_error(format!(
                                                "a barrier frame of {} bytes (not 16 and flags 0 to 3)",
                                                frame.payload.len()
                                            ))
                                        })?;
                                    let b = crate::checkpoint::Barrier {
                                        id: u64::from_le_bytes(p[..8].try_into().expect("8")),
                                        timestamp_ms: i64::from_le_bytes(
                                            p[8..16].try_into().expect("8"),
                                        ),
                                        at_least_once: p[16] & 1 != 0,
                                        alignment_us: 0,
                                        unaligned: p[16] & 2 != 0,
                                    };
                                    barriers.on_barrier(i, b, &inputs_open(&inputs), &mut chain)?;
                                }
                                // Credits travel by hand in process.
                                FrameKind::Credit => {}
                            }
                        }
                        ring.release(buf);
                    }
                }
                Link::Local(ch) => {
                    if let Some(msg) = ch.try_recv() {
                        progressed = true;
                        match msg {
                            LocalMessage::Batch(mut b) => {
                                if let Some(c) = barriers.capture.as_mut()
                                    && c.pending[i]
                                {
                                    let bytes = crate::data::archive_batch(
                                        &b.records,
                                        rkyv::util::AlignedVec::new(),
                                    )
                                    .map_err(|e| JobError::Operator {
                                        operator: name.describe(shard, shard),
                                        shard,
                                        message: format!("cannot archive in-flight records: {e}"),
                                    })?;
                                    c.data.push((b.timestamps.clone(), bytes.to_vec()));
                                }
                                chain.push(&mut b)?;
                                ch.release(b);
                            }
                            LocalMessage::Watermark(w) => {
                                apply(&mut chain, valve.watermark(i, w))?;
                            }
                            LocalMessage::Status(idle) => {
                                apply(&mut chain, valve.status(i, idle))?;
                            }
                            LocalMessage::Barrier(b) => {
                                barriers.on_barrier(i, b, &inputs_open(&inputs), &mut chain)?;
                            }
                            LocalMessage::End => ended = true,
                        }
                    }
                }
            }
            if ended {
                inputs[i].ended = true;
                open -= 1;
                apply(&mut chain, valve.remove(i))?;
                barriers.on_end(i, &mut chain)?;
            }
            i += 1;
        }
        if open == 0 {
            break;
        }
        if let Some(now) = settings.ticker.due() {
            chain.tick(now)?;
        }
        if progressed {
            cooperate.tick().await;
            continue;
        }
        // Nothing waiting on any input.
        if cancel.is_cancelled() {
            return Err(JobError::Cancelled);
        }
        let flush = settings.flush == FlushPolicy::WhenFullOrIdle;
        if flush {
            chain.flush()?;
        }
        // Throughput: park until a sender wakes the task. Latency: poll the rings again after a
        // cooperative yield; a wake across cores (an eventfd write and a syscall on each side,
        // 7 µs at p50 here even when the receiver spins in glommio's poll loop) is never needed.
        let mut timer = settings
            .ticker
            .resolution()
            .map(|r| Box::pin(glommio::timer::Timer::new(r)));
        wait(settings.scheduling, |cx| {
            if flush && let Poll::Ready(Err(e)) = chain.poll_flush(cx) {
                return Poll::Ready(Err(e));
            }
            // Processing time goes on while the inputs are quiet: wake for the next tick.
            if let Some(t) = timer.as_mut()
                && t.as_mut().poll(cx).is_ready()
            {
                return Poll::Ready(Ok(()));
            }
            // A channel blocked by a barrier alignment is not read: it does not wake the task.
            let readable =
                |(j, input): &(usize, &Input<T>)| !input.ended && !barriers.aligner.blocked(*j);
            for (_, input) in inputs.iter().enumerate().filter(readable) {
                match &input.link {
                    Link::Remote { ring, .. } => ring.register(cx),
                    Link::Local(ch) => ch.register(cx),
                }
            }
            let any = inputs
                .iter()
                .enumerate()
                .filter(readable)
                .any(|(_, input)| match &input.link {
                    Link::Remote { ring, .. } => ring.is_ready(),
                    Link::Local(ch) => ch.is_ready(),
                });
            if any || cancel.is_cancelled() {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            }
        })
        .await?;
    }
    chain.finish()?;
    // Every input ended: no record will be in flight here again; later checkpoints take this.
    if let Some(c) = &barriers.checkpoint {
        c.coordinator.finished(c.snapshot(Vec::new()), 0, 0)?;
    }
    flushed(chain.as_mut(), settings.scheduling).await
}

/// Which inputs are still open.
fn inputs_open<T>(inputs: &[Input<T>]) -> Vec<bool> {
    inputs.iter().map(|x| !x.ended).collect()
}

/// A reader's barriers: aligned ones through the aligner; an unaligned one passed on at once,
/// with what the other inputs deliver before theirs captured; and its part in checkpoints.
struct Barriers {
    aligner: crate::checkpoint::BarrierAligner,
    capture: Option<Capture>,
    last_unaligned: u64,
    checkpoint: Option<ReaderCheckpoint>,
}

impl Barriers {
    /// Input `i` delivered barrier `b`. Aligned: the aligner passes it on once every open
    /// input has, and the reader acks it (nothing in flight). Unaligned: the first input to
    /// deliver it passes it on at once; what the other open inputs deliver before theirs is
    /// recorded, and the reader acks with it when the last has.
    fn on_barrier<T>(
        &mut self,
        i: usize,
        b: crate::checkpoint::Barrier,
        open: &[bool],
        chain: &mut BoxPush<T>,
    ) -> Result<(), JobError> {
        if !b.unaligned {
            if let Some(b) = self.aligner.barrier(i, b) {
                self.pass_aligned(b, chain)?;
            }
            return Ok(());
        }
        match self.capture.as_mut() {
            Some(c) if c.barrier.id == b.id => c.pending[i] = false,
            // An older one is stale; a newer one starts over (the older was abandoned).
            Some(c) if c.barrier.id > b.id => return Ok(()),
            _ => {
                if b.id <= self.last_unaligned {
                    return Ok(());
                }
                self.last_unaligned = b.id;
                chain.barrier(b)?;
                let mut pending = open.to_vec();
                pending[i] = false;
                self.capture = Some(Capture {
                    barrier: b,
                    pending,
                    data: Vec::new(),
                });
            }
        }
        self.complete_capture()
    }

    /// Input `i` ended: it holds no barrier back any more.
    fn on_end<T>(&mut self, i: usize, chain: &mut BoxPush<T>) -> Result<(), JobError> {
        if let Some(b) = self.aligner.remove(i) {
            self.pass_aligned(b, chain)?;
        }
        if let Some(c) = self.capture.as_mut() {
            c.pending[i] = false;
        }
        self.complete_capture()
    }

    fn pass_aligned<T>(
        &mut self,
        b: crate::checkpoint::Barrier,
        chain: &mut BoxPush<T>,
    ) -> Result<(), JobError> {
        chain.barrier(b)?;
        match &self.checkpoint {
            Some(c) => c.ack(b.id, &Vec::new()),
            None => Ok(()),
        }
    }

    /// Acks an unaligned barrier once every open input delivered it.
    fn complete_capture(&mut self) -> Result<(), JobError> {
        if self
            .capture
            .as_ref()
            .is_some_and(|c| c.pending.iter().all(|p| !p))
        {
            let c = self.capture.take().expect("checked");
            if let Some(k) = &self.checkpoint {
                k.ack(c.barrier.id, &c.data)?;
            }
        }
        Ok(())
    }
}
