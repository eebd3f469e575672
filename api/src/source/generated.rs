//! A source of generated lines ([`ZipfText`]): each shard generates its contiguous share of
//! lines `0..lines`.

use std::ops::Range;
use std::sync::Arc;

use shardflow_core::JobError;
use shardflow_core::source::{Source, SourceStatus};

use crate::datagen::ZipfText;

pub struct GeneratedTextSource {
    text: Arc<ZipfText>,
    lines: Range<u64>,
}

impl GeneratedTextSource {
    pub fn new(text: Arc<ZipfText>, lines: Range<u64>) -> Self {
        Self { text, lines }
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
}
