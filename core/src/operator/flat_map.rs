//! `flat_map`: each record becomes zero or more records, emitted through a [`Collector`].

use super::{Batch, BoxPush, Collector, OUTPUT_BATCH_RECORDS_MAX, OperatorContext, Push};
use crate::error::JobError;

pub struct FlatMap<T, U, F> {
    f: F,
    out: Batch<U>,
    down: BoxPush<U>,
    ctx: OperatorContext,
    _in: std::marker::PhantomData<fn(T)>,
}

impl<T, U, F: FnMut(T, &mut Collector<U>)> FlatMap<T, U, F> {
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

impl<T: 'static, U: 'static, F: FnMut(T, &mut Collector<U>) + 'static> Push<T>
    for FlatMap<T, U, F>
{
    fn push(&mut self, batch: &mut Batch<T>) -> Result<(), JobError> {
        self.ctx.enter();
        self.ctx.counters.add_in(batch.len());
        for (x, ts) in batch.drain() {
            (self.f)(x, &mut Collector::new(&mut self.out, ts));
            if self.out.len() >= OUTPUT_BATCH_RECORDS_MAX {
                self.ctx.counters.add_out(self.out.len());
                self.down.push(&mut self.out)?;
                // Downstream operators ran user code: this operator runs it again now.
                self.ctx.enter();
            }
        }
        self.ctx.counters.add_out(self.out.len());
        self.down.push(&mut self.out)
    }
    forward_flow_control!();
    fn finish(&mut self) -> Result<(), JobError> {
        self.down.finish()
    }
}
