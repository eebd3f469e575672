//! `map`: one record in, one record out.

use super::{BoxPush, OperatorContext, Push};
use crate::error::JobError;

pub struct Map<T, U, F> {
    f: F,
    out: Vec<U>,
    down: BoxPush<U>,
    ctx: OperatorContext,
    _in: std::marker::PhantomData<fn(T)>,
}

impl<T, U, F: FnMut(T) -> U> Map<T, U, F> {
    pub fn new(f: F, down: BoxPush<U>, ctx: OperatorContext) -> Self {
        Self {
            f,
            out: Vec::new(),
            down,
            ctx,
            _in: std::marker::PhantomData,
        }
    }
}

impl<T: 'static, U: 'static, F: FnMut(T) -> U + 'static> Push<T> for Map<T, U, F> {
    fn push(&mut self, batch: &mut Vec<T>) -> Result<(), JobError> {
        self.ctx.enter();
        self.ctx.counters.add_in(batch.len());
        self.ctx.counters.add_out(batch.len());
        self.out.extend(batch.drain(..).map(&mut self.f));
        self.down.push(&mut self.out)
    }
    forward_flow_control!();
    fn finish(&mut self) -> Result<(), JobError> {
        self.down.finish()
    }
}
