//! `print`: every record to standard output as `shard> record` (shards counted from 1, as
//! Flink's task indices are printed).

use std::io::Write;

use shardflow_core::JobError;
use shardflow_core::operator::sink::SinkFunction;

pub struct PrintSink {
    prefix: u32,
    buf: Vec<u8>,
}

impl PrintSink {
    pub fn new(shard: u32) -> Self {
        Self {
            prefix: shard + 1,
            buf: Vec::new(),
        }
    }
}

impl<T: std::fmt::Debug + 'static> SinkFunction<T> for PrintSink {
    fn write(&mut self, batch: &mut Vec<T>) -> Result<(), JobError> {
        self.buf.clear();
        for r in batch.drain(..) {
            let _ = writeln!(self.buf, "{}> {r:?}", self.prefix);
        }
        // One locked write per batch keeps shards' lines whole.
        std::io::stdout()
            .lock()
            .write_all(&self.buf)
            .map_err(|e| JobError::io("<stdout>", "cannot write", e))
    }

    fn finish(&mut self) -> Result<(), JobError> {
        std::io::stdout()
            .flush()
            .map_err(|e| JobError::io("<stdout>", "cannot write", e))
    }
}
