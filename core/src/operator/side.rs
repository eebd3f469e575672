//! Side outputs: streams an operator feeds besides its main output, each named by an
//! [`OutputTag`] and read with `get_side_output(&tag)`.
//!
//! The types of side outputs are the user's, so an operator holds its side outputs erased
//! ([`SideOutputSet`]); a function emitting to one (`Collector::output`) names its tag, whose type
//! finds the buffer again. Side records are buffered per batch and pushed on with the main output;
//! watermarks, flushes and the end of input reach every side output as they reach the main one.

use std::any::Any;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};

use super::{Batch, BoxPush};
use crate::error::JobError;

static NEXT_TAG: AtomicU32 = AtomicU32::new(1);

/// Names a side output of records `X`.
pub struct OutputTag<X> {
    id: u32,
    name: Arc<str>,
    _x: PhantomData<fn() -> X>,
}

impl<X> Clone for OutputTag<X> {
    fn clone(&self) -> Self {
        Self {
            id: self.id,
            name: self.name.clone(),
            _x: PhantomData,
        }
    }
}

impl<X> std::fmt::Debug for OutputTag<X> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OutputTag({:?}, {})", self.name, self.id)
    }
}

impl<X> OutputTag<X> {
    pub fn new(name: &str) -> Self {
        Self {
            id: NEXT_TAG.fetch_add(1, Ordering::Relaxed),
            name: name.into(),
            _x: PhantomData,
        }
    }

    /// The tag's number, unique in the process.
    pub fn id(&self) -> u32 {
        self.id
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

/// One side output, its type erased.
pub trait SideOut {
    /// The `Batch<X>` records go to before they are pushed on.
    fn buffer(&mut self) -> &mut dyn Any;
    fn push_buffered(&mut self) -> Result<(), JobError>;
    fn watermark(&mut self, watermark: i64) -> Result<(), JobError>;
    fn watermark_status(&mut self, idle: bool) -> Result<(), JobError>;
    fn tick(&mut self, now_ms: i64) -> Result<(), JobError>;
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), JobError>>;
    fn flush(&mut self) -> Result<(), JobError>;
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), JobError>>;
    fn finish(&mut self) -> Result<(), JobError>;
    fn barrier(&mut self, barrier: crate::checkpoint::Barrier) -> Result<(), JobError>;
}

/// The side output of records `X` feeding `down`.
pub struct SidePort<X> {
    down: BoxPush<X>,
    buffer: Batch<X>,
}

impl<X: 'static> SidePort<X> {
    pub fn new(down: BoxPush<X>) -> Self {
        Self {
            down,
            buffer: Batch::new(),
        }
    }
}

impl<X: 'static> SideOut for SidePort<X> {
    fn buffer(&mut self) -> &mut dyn Any {
        &mut self.buffer
    }
    fn push_buffered(&mut self) -> Result<(), JobError> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        self.down.push(&mut self.buffer)
    }
    fn watermark(&mut self, watermark: i64) -> Result<(), JobError> {
        self.push_buffered()?;
        self.down.watermark(watermark)
    }
    fn tick(&mut self, now_ms: i64) -> Result<(), JobError> {
        self.down.tick(now_ms)
    }
    fn watermark_status(&mut self, idle: bool) -> Result<(), JobError> {
        self.push_buffered()?;
        self.down.watermark_status(idle)
    }
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), JobError>> {
        self.down.poll_ready(cx)
    }
    fn flush(&mut self) -> Result<(), JobError> {
        self.push_buffered()?;
        self.down.flush()
    }
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), JobError>> {
        self.down.poll_flush(cx)
    }
    fn finish(&mut self) -> Result<(), JobError> {
        self.push_buffered()?;
        self.down.finish()
    }
    fn barrier(&mut self, barrier: crate::checkpoint::Barrier) -> Result<(), JobError> {
        self.push_buffered()?;
        self.down.barrier(barrier)
    }
}

/// The side outputs of one operator on one shard.
#[derive(Default)]
pub struct SideOutputSet {
    ports: Vec<(u32, Box<dyn SideOut>)>,
}

impl SideOutputSet {
    pub fn new(ports: Vec<(u32, Box<dyn SideOut>)>) -> Self {
        Self { ports }
    }

    pub fn is_empty(&self) -> bool {
        self.ports.is_empty()
    }

    /// Buffers a record for side output `tag`. A tag nobody reads drops it (as Flink does).
    #[inline]
    pub fn output<X: 'static>(&mut self, tag: &OutputTag<X>, value: X, timestamp: Option<i64>) {
        self.output_by_id(tag.id, value, timestamp);
    }

    /// As [`output`](Self::output), by the tag's number (for operators that keep the tag erased).
    #[inline]
    pub fn output_by_id<X: 'static>(&mut self, tag: u32, value: X, timestamp: Option<i64>) {
        if let Some((_, port)) = self.ports.iter_mut().find(|(id, _)| *id == tag)
            && let Some(batch) = port.buffer().downcast_mut::<Batch<X>>()
        {
            batch.push(value, timestamp);
        }
    }

    pub fn push_buffered(&mut self) -> Result<(), JobError> {
        self.ports
            .iter_mut()
            .try_for_each(|(_, p)| p.push_buffered())
    }
    pub fn watermark(&mut self, watermark: i64) -> Result<(), JobError> {
        self.ports
            .iter_mut()
            .try_for_each(|(_, p)| p.watermark(watermark))
    }
    pub fn watermark_status(&mut self, idle: bool) -> Result<(), JobError> {
        self.ports
            .iter_mut()
            .try_for_each(|(_, p)| p.watermark_status(idle))
    }
    pub fn tick(&mut self, now_ms: i64) -> Result<(), JobError> {
        self.ports.iter_mut().try_for_each(|(_, p)| p.tick(now_ms))
    }
    pub fn barrier(&mut self, barrier: crate::checkpoint::Barrier) -> Result<(), JobError> {
        self.ports
            .iter_mut()
            .try_for_each(|(_, p)| p.barrier(barrier))
    }
    pub fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), JobError>> {
        for (_, p) in &mut self.ports {
            match p.poll_ready(cx) {
                Poll::Ready(Ok(())) => {}
                other => return other,
            }
        }
        Poll::Ready(Ok(()))
    }
    pub fn flush(&mut self) -> Result<(), JobError> {
        self.ports.iter_mut().try_for_each(|(_, p)| p.flush())
    }
    pub fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), JobError>> {
        for (_, p) in &mut self.ports {
            match p.poll_flush(cx) {
                Poll::Ready(Ok(())) => {}
                other => return other,
            }
        }
        Poll::Ready(Ok(()))
    }
    pub fn finish(&mut self) -> Result<(), JobError> {
        self.ports.iter_mut().try_for_each(|(_, p)| p.finish())
    }
}
