//! `filter`: keeps the records a predicate accepts, in place (no copy of the batch).

use super::{Batch, BoxPush, OperatorContext, Push};
use crate::error::JobError;

pub struct Filter<T, F> {
    f: F,
    down: BoxPush<T>,
    ctx: OperatorContext,
}

impl<T, F: FnMut(&T) -> bool> Filter<T, F> {
    pub fn new(f: F, down: BoxPush<T>, ctx: OperatorContext) -> Self {
        Self { f, down, ctx }
    }
}

impl<T: 'static, F: FnMut(&T) -> bool + 'static> Push<T> for Filter<T, F> {
    fn push(&mut self, batch: &mut Batch<T>) -> Result<(), JobError> {
        self.ctx.enter();
        self.ctx.counters.add_in(batch.len());
        batch.retain(|x| (self.f)(x));
        self.ctx.counters.add_out(batch.len());
        self.down.push(batch)
    }
    forward_flow_control!();
    fn finish(&mut self) -> Result<(), JobError> {
        self.down.finish()
    }
}
