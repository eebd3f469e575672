//! A source of generated lines ([`ZipfText`]): each shard generates its contiguous share of
//! lines `0..lines`.

use std::ops::Range;
use std::sync::Arc;

use shardflow_core::JobError;
use shardflow_core::source::{Source, SourceStatus};

use crate::datagen::ZipfText;

pub struct GeneratedTextSource {
    text: Arc<ZipfText>,
    /// The shard's share, and what of it is left.
    share: Range<u64>,
    lines: Range<u64>,
}

impl GeneratedTextSource {
    pub fn new(text: Arc<ZipfText>, lines: Range<u64>) -> Self {
        Self {
            text,
            share: lines.clone(),
            lines,
        }
    }
}

impl Source<String> for GeneratedTextSource {
    async fn next_batch(
        &mut self,
        out: &mut Vec<String>,
        max_records: usize,
    ) -> Result<SourceStatus, JobError> {
        for _ in 0..max_records {
            let Some(j) = self.lines.next() else { break };
            let mut line = String::with_capacity(96);
            self.text.line(j, &mut line);
            out.push(line);
        }
        Ok(if self.lines.is_empty() {
            SourceStatus::End
        } else {
            SourceStatus::More
        })
    }

    /// A checkpoint records the next line; a restore goes on from it.
    fn initialize_state(
        &mut self,
        state: &mut shardflow_core::state::OperatorStateStore,
    ) -> Result<(), JobError> {
        let (start, end) = (self.share.start, self.share.end);
        if let Some(next) = super::restored_position(state, "generated text", start, end)? {
            self.lines = next.clamp(start, end)..end;
        }
        Ok(())
    }

    fn snapshot_state(
        &mut self,
        state: &mut shardflow_core::state::OperatorStateStore,
    ) -> Result<(), JobError> {
        super::save_position(state, self.share.start, self.share.end, self.lines.start)
    }
}
