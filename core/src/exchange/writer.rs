//! The sending side of an exchange: routes each record to its destination shard, stages it in
//! that destination's batch, and ships a batch when it is full, when the input is idle (flush),
//! or at end of input.
//!
//! Budget: routing is one key hash and a multiply per record (~5 ns for a short string key);
//! shipping a 32 KiB batch of 16-byte records (2,000 records) is one rkyv pass (~2 µs) and one
//! ring push, so the per-record cost of the exchange is a few nanoseconds.
//!
//! A destination with no credit keeps its records staged and `poll_ready` says Pending, so the
//! driving task stops pulling input: backpressure. Staged records are bounded by one batch plus
//! one input batch's expansion per destination.

use std::collections::VecDeque;
use std::task::{Context, Poll};

use shardflow_shuffle::frame::{begin_frame, end_frame, write_frame};
use shardflow_shuffle::{Checksum, FrameKind, RingSender};

use super::local::LocalChannel;
use super::{ExchangeName, Partition, Route};
use crate::data::{Data, archive_batch};
use crate::error::JobError;
use crate::operator::{Batch, Push};

enum Link<T> {
    Remote(RingSender),
    Local(LocalChannel<T>),
}

struct Destination<T> {
    to: u32,
    link: Link<T>,
    staged: Batch<T>,
    /// Staged records before this are shipped already (remote links). A backlog of millions
    /// (a window firing every result at once) then ships batch by batch without shifting what
    /// is left at each one; the shipped prefix is dropped once it is half the vector. Shifting
    /// it every call made such a backlog quadratic: two thirds of Nexmark q5's time was that
    /// memmove.
    head: usize,
    /// Watermarks and status changes owed, each with the number of staged records that go
    /// before it. Records staged after a watermark never overtake it, so what is late downstream
    /// is exactly what was late here, whatever the credit.
    marks: VecDeque<(usize, Mark)>,
    /// Ship the partial batch too (set by flush and finish).
    flush_requested: bool,
    /// End of input is yet to be sent.
    end_pending: bool,
    /// Frames to another process always carry a crc; in process, as the job says.
    checksum: Checksum,
}

pub struct ExchangeWriter<T, P> {
    partition: P,
    dests: Vec<Destination<T>>,
    shard: u32,
    parallelism: u32,
    max_parallelism: u32,
    batch_records: usize,
    name: ExchangeName,
}

/// Where a writer runs and how it frames its batches.
pub struct WriterSettings {
    pub shard: u32,
    pub max_parallelism: u32,
    /// Target bytes of one batch.
    pub batch_bytes: usize,
    pub checksum: Checksum,
    pub name: ExchangeName,
}

/// A control event owed to a destination after some staged records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mark {
    Watermark(i64),
    Status(bool),
    Barrier(crate::checkpoint::Barrier),
}

/// What a destination owes next.
struct Owed {
    /// Records to ship now (0: none).
    records: usize,
    /// A watermark is due once those records are out.
    mark: bool,
    /// End of input is due once those records are out.
    end: bool,
}

impl<T> Destination<T> {
    /// Staged records not shipped yet (marks count their positions among these).
    #[inline]
    fn live(&self) -> usize {
        self.staged.len() - self.head
    }

    /// What is owed, `shipped` records of the live ones being out already. An in-process link
    /// takes everything owed up to the next mark as one batch (it hands the vector over, so a
    /// backlog goes in one piece rather than shifted out batch by batch); a ring, a batch at a
    /// time.
    fn owed(&self, shipped: usize, batch_records: usize) -> Owed {
        let whole = matches!(self.link, Link::Local(_));
        let left = self.live() - shipped;
        let (limit, forced) = match self.marks.front() {
            Some(&(at, _)) => (at - shipped, true),
            None => (left, self.flush_requested),
        };
        let records = match limit >= batch_records || forced {
            false => 0,
            true if whole => limit,
            true => limit.min(batch_records),
        };
        let rest = shipped + records;
        Owed {
            records,
            mark: self.marks.front().is_some_and(|&(at, _)| at == rest),
            end: self.end_pending && self.marks.len() <= 1 && rest == self.live(),
        }
    }

    /// Drops the first `n` live records (they are shipped); marks move with them.
    fn consume(&mut self, n: usize) {
        if n == 0 {
            return;
        }
        self.head += n;
        if self.head == self.staged.len() {
            self.staged.clear();
            self.head = 0;
        } else if self.head * 2 >= self.staged.len() {
            // What is left is at most what was shipped: each record moves at most once per
            // record shipped before it (amortized constant).
            self.staged.records.drain(..self.head);
            if self.staged.is_timed() {
                self.staged.timestamps.drain(..self.head);
            }
            self.head = 0;
        }
        for m in &mut self.marks {
            m.0 -= n;
        }
    }
}

impl<T: Data, P: Partition<T>> ExchangeWriter<T, P> {
    /// `remote[r]` is the ring to shard `r` (None for this shard, which gets `local`).
    pub fn new(
        mut partition: P,
        remote: Vec<Option<RingSender>>,
        local: LocalChannel<T>,
        settings: WriterSettings,
    ) -> Self {
        let WriterSettings {
            shard,
            max_parallelism,
            batch_bytes,
            checksum,
            name,
        } = settings;
        let parallelism = remote.len() as u32;
        partition.open(shard, parallelism, max_parallelism);
        let mut local = Some(local);
        let dests = remote
            .into_iter()
            .enumerate()
            .map(|(to, r)| Destination {
                to: to as u32,
                checksum: match &r {
                    Some(ring) if ring.is_foreign() => Checksum::Compute,
                    _ => checksum,
                },
                link: match r {
                    Some(ring) => Link::Remote(ring),
                    None => Link::Local(local.take().expect("one local destination")),
                },
                staged: Batch::new(),
                head: 0,
                marks: VecDeque::new(),
                flush_requested: false,
                end_pending: false,
            })
            .collect();
        // Archived records are at least their inline size; out-of-line bytes (strings) make
        // real batches somewhat larger than the target, which the buffers absorb.
        let record_bytes = std::mem::size_of::<T::Archived>().max(1);
        Self {
            partition,
            dests,
            shard,
            parallelism,
            max_parallelism,
            batch_records: (batch_bytes / record_bytes).clamp(1, 1 << 16),
            name,
        }
    }

    fn frame_error(&self, to: u32, source: shardflow_shuffle::FrameError) -> JobError {
        JobError::Frame {
            channel: self.name.describe(self.shard, to),
            source,
        }
    }

    /// Ships what `d` owes: full batches always, the partial batch if a flush was requested,
    /// the records before a pending watermark and then the watermark, and the end frame if
    /// pending. Returns true once nothing owed is left. With `cx`, a stall on credit registers
    /// the task to be woken when a credit returns.
    ///
    /// Records are archived straight from the staging vector, batch after batch, and the shipped
    /// prefix is removed once at the end: a backlog built up under backpressure is shifted once
    /// per call, not once per batch.
    fn ship(&mut self, i: usize, cx: Option<&mut Context<'_>>) -> Result<bool, JobError> {
        let mut shipped = 0;
        let result = self.ship_from(i, cx, &mut shipped);
        self.dests[i].consume(shipped);
        result
    }

    fn ship_from(
        &mut self,
        i: usize,
        mut cx: Option<&mut Context<'_>>,
        shipped: &mut usize,
    ) -> Result<bool, JobError> {
        let batch_records = self.batch_records;
        loop {
            let d = &mut self.dests[i];
            let owed = d.owed(*shipped, batch_records);
            if owed.records == 0 && !owed.mark && !owed.end {
                if d.marks.is_empty() && !d.end_pending {
                    d.flush_requested = false;
                    return Ok(true);
                }
                return Ok(false);
            }
            match &d.link {
                Link::Local(ch) => {
                    debug_assert_eq!(*shipped, 0, "local batches are handed over as they go");
                    debug_assert_eq!(d.head, 0, "a local link consumes as it sends");
                    if owed.records > 0 {
                        if !ch.try_send(&mut d.staged, owed.records, cx.as_deref_mut()) {
                            return Ok(false);
                        }
                        for m in &mut d.marks {
                            m.0 -= owed.records;
                        }
                    }
                    if owed.mark {
                        match d.marks.pop_front().expect("a mark is due").1 {
                            Mark::Watermark(w) => ch.send_watermark(w),
                            Mark::Status(idle) => ch.send_status(idle),
                            Mark::Barrier(b) => ch.send_barrier(b),
                        }
                    }
                    if owed.end && d.marks.is_empty() {
                        ch.send_end();
                        d.end_pending = false;
                    }
                }
                Link::Remote(ring) => {
                    let taken = match cx.as_deref_mut() {
                        Some(cx) => match ring.poll_take_buffer(cx) {
                            Poll::Ready(r) => Some(r),
                            Poll::Pending => None,
                        },
                        None => ring.try_take_buffer().transpose(),
                    };
                    let mut buf = match taken {
                        Some(Ok(buf)) => buf,
                        Some(Err(e)) => {
                            return Err(JobError::Channel {
                                channel: self.name.describe(self.shard, d.to),
                                source: e,
                            });
                        }
                        None => return Ok(false),
                    };
                    let channel = ring.channel();
                    let to = d.to;
                    let checksum = d.checksum;
                    let n = owed.records;
                    if n > 0 {
                        let first = d.head + *shipped;
                        let range = first..first + n;
                        if d.staged.is_timed() {
                            let start = begin_frame(&mut buf);
                            for t in &d.staged.timestamps[range.clone()] {
                                buf.extend_from_slice(&t.to_le_bytes());
                            }
                            end_frame(&mut buf, start, FrameKind::Timestamps, channel, checksum)
                                .map_err(|e| self.frame_error(to, e))?;
                        }
                        let start = begin_frame(&mut buf);
                        let batch = &self.dests[i].staged.records[range];
                        buf = archive_batch(batch, buf).map_err(|e| JobError::Decode {
                            channel: self.name.describe(self.shard, to),
                            offset: start,
                            message: format!("cannot archive a batch: {e}"),
                        })?;
                        end_frame(&mut buf, start, FrameKind::Data, channel, checksum)
                            .map_err(|e| self.frame_error(to, e))?;
                        *shipped += n;
                    }
                    let d = &mut self.dests[i];
                    if owed.mark {
                        let written = match d.marks.pop_front().expect("a mark is due").1 {
                            Mark::Watermark(w) => write_frame(
                                &mut buf,
                                FrameKind::Watermark,
                                channel,
                                &w.to_le_bytes(),
                                checksum,
                            ),
                            Mark::Status(idle) => write_frame(
                                &mut buf,
                                FrameKind::Status,
                                channel,
                                &[idle as u8],
                                checksum,
                            ),
                            // A barrier ends its buffer (nothing but end of input follows it
                            // there): a reader aligning it stops reading the channel at it.
                            Mark::Barrier(b) => write_frame(
                                &mut buf,
                                FrameKind::Barrier,
                                channel,
                                &barrier_payload(b),
                                checksum,
                            ),
                        };
                        written.map_err(|e| self.frame_error(to, e))?;
                    }
                    let d = &mut self.dests[i];
                    if owed.end && d.marks.is_empty() {
                        write_frame(&mut buf, FrameKind::End, channel, &[], checksum)
                            .map_err(|e| self.frame_error(to, e))?;
                        self.dests[i].end_pending = false;
                    }
                    match &self.dests[i].link {
                        Link::Remote(ring) => ring.send(buf),
                        Link::Local(_) => unreachable!(),
                    }
                }
            }
        }
    }

    fn poll_all(&mut self, cx: &mut Context<'_>, until_empty: bool) -> Poll<Result<(), JobError>> {
        let mut done = true;
        for i in 0..self.dests.len() {
            if until_empty && !self.dests[i].staged.is_empty() {
                self.dests[i].flush_requested = true;
            }
            if until_empty
                && let Link::Remote(ring) = &self.dests[i].link
                && let Poll::Pending = ring.poll_sent(cx).map_err(|e| JobError::Channel {
                    channel: self.name.describe(self.shard, self.dests[i].to),
                    source: e,
                })?
            {
                // A shared-memory buffer larger than the free slots is still being copied.
                done = false;
            }
            if !self.ship(i, Some(cx))? {
                // Blocked: ready only if what is left is below a full batch.
                let d = &self.dests[i];
                if until_empty
                    || d.live() >= self.batch_records
                    || d.end_pending
                    || !d.marks.is_empty()
                {
                    done = false;
                }
            }
        }
        if done {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }
}

impl<T: Data, P: Partition<T>> ExchangeWriter<T, P> {
    /// Routes one record into a staging batch whose lanes may differ from its own.
    fn route(&mut self, x: T, ts: Option<i64>) {
        let (p, m) = (self.parallelism, self.max_parallelism);
        match self.partition.route(&x, p, m) {
            Route::One(to) => self.dests[to as usize].staged.push(x, ts),
            Route::All => self.route_all(x, ts),
        }
    }

    fn route_all(&mut self, x: T, ts: Option<i64>) {
        let (last, rest) = self.dests.split_last_mut().expect("parallelism >= 1");
        for d in rest {
            d.staged.push(x.clone(), ts);
        }
        last.staged.push(x, ts);
    }
}

impl<T: Data, P: Partition<T>> Push<T> for ExchangeWriter<T, P> {
    fn push(&mut self, batch: &mut Batch<T>) -> Result<(), JobError> {
        if self.dests.len() == 1 {
            // One shard: every record goes to it, whatever the partitioning. No routing, and no
            // re-batching either: the batch is handed on whole (copied only when the channel is
            // full and it has to wait behind another).
            let d = &mut self.dests[0];
            if d.staged.is_empty() {
                std::mem::swap(&mut d.staged, batch);
            } else {
                d.staged.append(batch);
            }
            d.flush_requested = true;
            self.ship(0, None)?;
            return Ok(());
        }
        let timed = batch.is_timed();
        if self.dests.iter().all(|d| d.staged.takes(timed)) {
            // The common case: every staging batch has the lanes this batch has.
            let (p, m) = (self.parallelism, self.max_parallelism);
            if timed {
                for (x, ts) in batch.records.drain(..).zip(batch.timestamps.drain(..)) {
                    match self.partition.route(&x, p, m) {
                        Route::One(to) => {
                            let s = &mut self.dests[to as usize].staged;
                            s.records.push(x);
                            s.timestamps.push(ts);
                        }
                        Route::All => self.route_all(x, Some(ts)),
                    }
                }
            } else {
                for x in batch.records.drain(..) {
                    match self.partition.route(&x, p, m) {
                        Route::One(to) => self.dests[to as usize].staged.records.push(x),
                        Route::All => self.route_all(x, None),
                    }
                }
            }
        } else if timed {
            let mut ts = batch.timestamps.drain(..);
            for x in batch.records.drain(..) {
                self.route(x, ts.next());
            }
        } else {
            for x in batch.records.drain(..) {
                self.route(x, None);
            }
        }
        for i in 0..self.dests.len() {
            let d = &self.dests[i];
            if d.live() >= self.batch_records || !d.marks.is_empty() {
                self.ship(i, None)?;
            }
        }
        Ok(())
    }

    fn watermark(&mut self, watermark: i64) -> Result<(), JobError> {
        for i in 0..self.dests.len() {
            let d = &mut self.dests[i];
            let at = d.live();
            match d.marks.back_mut() {
                Some((pos, Mark::Watermark(w))) if *pos == at => *w = (*w).max(watermark),
                _ => d.marks.push_back((at, Mark::Watermark(watermark))),
            }
            self.ship(i, None)?;
        }
        Ok(())
    }

    fn watermark_status(&mut self, idle: bool) -> Result<(), JobError> {
        for i in 0..self.dests.len() {
            let d = &mut self.dests[i];
            let at = d.live();
            d.marks.push_back((at, Mark::Status(idle)));
            self.ship(i, None)?;
        }
        Ok(())
    }

    fn barrier(&mut self, barrier: crate::checkpoint::Barrier) -> Result<(), JobError> {
        for i in 0..self.dests.len() {
            let d = &mut self.dests[i];
            let at = d.live();
            d.marks.push_back((at, Mark::Barrier(barrier)));
            self.ship(i, None)?;
        }
        Ok(())
    }

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), JobError>> {
        self.poll_all(cx, false)
    }

    fn flush(&mut self) -> Result<(), JobError> {
        for i in 0..self.dests.len() {
            if !self.dests[i].staged.is_empty() {
                self.dests[i].flush_requested = true;
                self.ship(i, None)?;
            }
        }
        Ok(())
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), JobError>> {
        self.poll_all(cx, true)
    }

    fn finish(&mut self) -> Result<(), JobError> {
        for i in 0..self.dests.len() {
            let d = &mut self.dests[i];
            d.flush_requested = true;
            d.end_pending = true;
            self.ship(i, None)?;
        }
        Ok(())
    }
}

/// A barrier frame's payload: the checkpoint id and the trigger time, little-endian, and a
/// byte 1 for an at-least-once barrier (0: aligned).
pub fn barrier_payload(b: crate::checkpoint::Barrier) -> [u8; 17] {
    let mut p = [0; 17];
    p[..8].copy_from_slice(&b.id.to_le_bytes());
    p[8..16].copy_from_slice(&b.timestamp_ms.to_le_bytes());
    p[16] = b.flags();
    p
}

/// Which checksum frames of an in-process ring carry, from the job's policy.
pub fn in_process_checksum(policy: crate::config::ChecksumPolicy) -> Checksum {
    match policy {
        crate::config::ChecksumPolicy::Always => Checksum::Compute,
        crate::config::ChecksumPolicy::CrossProcessOnly => Checksum::Skip,
    }
}
