//! Logs: error counts per host in one-minute event-time windows, from log lines of the form
//! `<RFC 3339 timestamp> <host> <LEVEL> <message>`.
//!
//! ```text
//! lines ─parse─▶ events ─filter(ERROR)─▶ timestamps ─key_by(host)─▶ window(1 min) ─count─▶ sink
//!          └──▶ malformed lines (side output: file and offset, reported with line numbers)
//! ```
//!
//! A line that does not parse is not dropped: it goes to a side output with its file, offset and
//! the reason, and the CLI reports each by file and line number after the job.

use std::time::Duration;

use shardflow_core::operator::process::UserError;
use shardflow_core::operator::{Collector, OutputTag, ProcessFunction, RuntimeContext};
use shardflow_core::time::WatermarkStrategy;
use shardflow_core::window::{Count, TimeWindow, TumblingWindows, WindowContext};

use crate::source::text_file::Line;
use crate::stream::DataStream;

/// A parsed log line.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct LogEvent {
    /// Milliseconds since the Unix epoch.
    pub ts: i64,
    pub host: String,
    pub level: String,
}

/// A line that did not parse, and why.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct Malformed {
    pub file: u32,
    pub offset: u64,
    pub reason: String,
}

/// Errors of one host in one window.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize,
)]
pub struct HostErrors {
    pub window_start: i64,
    pub window_end: i64,
    pub host: String,
    pub errors: u64,
}

/// Parses `<RFC 3339 timestamp> <host> <LEVEL> <message>`; the message may be empty or hold
/// spaces. Levels are compared as written (`ERROR`, not `error`).
pub fn parse_line(line: &str) -> Result<LogEvent, String> {
    let mut parts = line.splitn(4, ' ');
    let (Some(ts), Some(host), Some(level)) = (parts.next(), parts.next(), parts.next()) else {
        return Err("expected `<timestamp> <host> <LEVEL> <message>`".into());
    };
    if ts.is_empty() || host.is_empty() || level.is_empty() {
        return Err("expected `<timestamp> <host> <LEVEL> <message>` (an empty field)".into());
    }
    let t = time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("timestamp {ts:?} is not RFC 3339: {e}"))?;
    let ms = t.unix_timestamp_nanos() / 1_000_000;
    Ok(LogEvent {
        ts: ms as i64,
        host: host.to_string(),
        level: level.to_string(),
    })
}

/// Formats milliseconds since the epoch as RFC 3339 (UTC).
pub fn format_ms(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{ms} ms"))
}

/// Parses each line; malformed ones go to the side output.
#[derive(Clone)]
pub struct ParseLogs {
    pub malformed: OutputTag<Malformed>,
}

impl ProcessFunction<Line, LogEvent> for ParseLogs {
    fn process_element(
        &mut self,
        line: Line,
        _ctx: &RuntimeContext,
        out: &mut Collector<LogEvent>,
    ) -> Result<(), UserError> {
        match parse_line(&line.text) {
            Ok(e) => out.collect(e),
            Err(reason) => out.output(
                &self.malformed,
                Malformed {
                    file: line.file,
                    offset: line.offset,
                    reason,
                },
            ),
        }
        Ok(())
    }
}

// The key is the window function's `&K`, and the key is a `String`.
#[allow(clippy::ptr_arg)]
fn host_errors(
    host: &String,
    ctx: &WindowContext<TimeWindow>,
    counts: &[u64],
    out: &mut Collector<HostErrors>,
) -> Result<(), UserError> {
    for &errors in counts {
        out.collect(HostErrors {
            window_start: ctx.window.start,
            window_end: ctx.window.end,
            host: host.clone(),
            errors,
        });
    }
    Ok(())
}

/// How the logs job treats time.
#[derive(Debug, Clone)]
pub struct LogsSettings {
    pub window: Duration,
    /// How far out of order lines may be (in event time) before they are late.
    pub out_of_orderness: Duration,
    /// How long after its end a window still takes late lines (and fires again).
    pub allowed_lateness: Duration,
}

impl Default for LogsSettings {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(60),
            out_of_orderness: Duration::from_secs(5),
            allowed_lateness: Duration::ZERO,
        }
    }
}

/// The job's dataflow: errors per host and window, and the malformed lines.
pub fn error_counts(
    lines: &DataStream<Line>,
    settings: &LogsSettings,
) -> (DataStream<HostErrors>, DataStream<Malformed>) {
    let parse = ParseLogs {
        malformed: OutputTag::new("malformed lines"),
    };
    let events = lines.process(parse.clone()).name("parse");
    let malformed = events.get_side_output(&parse.malformed);
    let counts = events
        .filter(|e: &LogEvent| e.level == "ERROR")
        .name("errors")
        .assign_timestamps_and_watermarks(
            WatermarkStrategy::for_bounded_out_of_orderness(settings.out_of_orderness)
                .with_timestamp_assigner(|e: &LogEvent| e.ts),
        )
        .key_by(|e: &LogEvent| e.host.clone())
        .window(TumblingWindows::event_time(settings.window))
        .allowed_lateness(settings.allowed_lateness)
        .aggregate_with(Count, host_errors)
        .name("errors per host");
    (counts, malformed)
}

/// Writes `lines` sample log lines to `path`: a few hosts, levels INFO/WARN/ERROR, timestamps
/// advancing about 100 ms a line and pulled back by up to 2 s, and one line in
/// `malformed_every` malformed (0: none). Returns the bytes written.
pub fn write_sample(
    path: &std::path::Path,
    lines: u64,
    malformed_every: u64,
    seed: u64,
) -> std::io::Result<u64> {
    use std::io::Write;
    let mut rng = shardflow_core::rng::SplitMix64::new(seed);
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    let hosts = ["web-1", "web-2", "db-1", "cache-1", "batch-7"];
    let start = 1_795_600_800_000i64; // 2026-11-25T10:00:00Z
    for i in 0..lines {
        if malformed_every > 0 && i % malformed_every == malformed_every - 1 {
            writeln!(out, "garbled line {i} without a timestamp")?;
            continue;
        }
        let ts = start + i as i64 * 100 - rng.below(2_000) as i64;
        let host = hosts[rng.below(hosts.len() as u64) as usize];
        let level = match rng.below(10) {
            0 | 1 => "ERROR",
            2 | 3 => "WARN",
            _ => "INFO",
        };
        writeln!(out, "{} {host} {level} request {i} handled", format_ms(ts))?;
    }
    out.flush()?;
    Ok(std::fs::metadata(path)?.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_or_say_why_not() {
        let e = parse_line("2026-11-25T10:00:01.250Z web-1 ERROR disk full on /var").unwrap();
        assert_eq!(e.host, "web-1");
        assert_eq!(e.level, "ERROR");
        assert_eq!(e.ts, 1_795_600_801_250);
        assert_eq!(format_ms(e.ts), "2026-11-25T10:00:01.25Z");
        let e = parse_line("2026-11-25T11:00:00+01:00 db INFO").unwrap();
        assert_eq!(e.ts, 1_795_600_800_000);
        assert!(parse_line("").is_err());
        assert!(parse_line("2026-11-25T10:00:00Z web-1").is_err());
        let err = parse_line("yesterday web-1 ERROR x").unwrap_err();
        assert!(err.contains("yesterday"), "{err}");
    }
}
