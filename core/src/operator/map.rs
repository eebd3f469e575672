//! `map`: one record in, one record out.

use super::{Batch, BoxPush, OperatorContext, Push};
use crate::error::JobError;

pub struct Map<T, U, F> {
    f: F,
    out: Batch<U>,
    down: BoxPush<U>,
    ctx: OperatorContext,
    _in: std::marker::PhantomData<fn(T)>,
}

impl<T, U, F: FnMut(T) -> U> Map<T, U, F> {
    pub fn new(f: F, down: BoxPush<U>, ctx: OperatorContext) -> Self {
        Self {
            f,
            out: Batch::new(),
            down,
            ctx,
            _in: std::marker::PhantomData,
        }
    }
}

impl<T: 'static, U: 'static, F: FnMut(T) -> U + 'static> Push<T> for Map<T, U, F> {
    fn push(&mut self, batch: &mut Batch<T>) -> Result<(), JobError> {
        self.ctx.enter();
        self.ctx.counters.add_in(batch.len());
        self.ctx.counters.add_out(batch.len());
        self.out
            .records
            .extend(batch.records.drain(..).map(&mut self.f));
        // Each record keeps its timestamp: the lane moves over whole.
        std::mem::swap(&mut self.out.timestamps, &mut batch.timestamps);
        self.down.push(&mut self.out)
    }
    forward_flow_control!();
    fn finish(&mut self) -> Result<(), JobError> {
        self.down.finish()
    }
}
