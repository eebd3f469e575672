//! A source of generated lines ([`ZipfText`]): each shard generates its contiguous share of
//! lines `0..lines`.

use std::ops::Range;
use std::sync::Arc;

use shardflow_core::JobError;
use shardflow_core::source::{Source, SourceStatus};

use crate::datagen::ZipfText;

pub struct GeneratedTextSource {
    text: Arc<ZipfText>,
    /// The lines the shard has left.
    remaining: super::Remaining,
}

impl GeneratedTextSource {
    pub fn new(text: Arc<ZipfText>, lines: Range<u64>) -> Self {
        Self {
            text,
            remaining: super::Remaining::new(lines.start, lines.end - lines.start),
        }
    }
}

impl Source<String> for GeneratedTextSource {
    async fn next_batch(
        &mut self,
        out: &mut Vec<String>,
        max_records: usize,
    ) -> Result<SourceStatus, JobError> {
        if let Some((first, n)) = self.remaining.take(max_records as u64) {
            for j in first..first + n {
                let mut line = String::with_capacity(96);
                self.text.line(j, &mut line);
                out.push(line);
            }
        }
        Ok(self.remaining.status())
    }

    /// A checkpoint records the lines left; a restore goes on with them (after a rescale, with
    /// the earlier shards' ranges dealt to this one).
    fn initialize_state(
        &mut self,
        state: &mut shardflow_core::state::OperatorStateStore,
    ) -> Result<(), JobError> {
        self.remaining.restore(state)
    }

    fn snapshot_state(
        &mut self,
        state: &mut shardflow_core::state::OperatorStateStore,
    ) -> Result<(), JobError> {
        self.remaining.save(state)
    }
}
