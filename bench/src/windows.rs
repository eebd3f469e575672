//! Windows: generated sensor readings (10,000 sensors, disorder up to 50 ms, watermarks 100 ms
//! behind) in tumbling 1 s event-time windows of count/sum/max, through the engine at P = 1 and
//! 2, beside a single-threaded loop computing the same windows.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shardflow::jobs::telemetry::{self, Digest, TelemetrySettings, WindowStats};
use shardflow::prelude::*;
use shardflow_core::operator::sink::SinkFunction;

/// What one run measured.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    pub elapsed: Duration,
    pub digest: Digest,
}

impl Run {
    pub fn events_per_second(&self) -> f64 {
        self.digest.readings as f64 / self.elapsed.as_secs_f64()
    }
}

struct DigestSink {
    mine: Digest,
    total: Arc<Mutex<Digest>>,
}

impl SinkFunction<WindowStats> for DigestSink {
    fn write(&mut self, batch: &mut Vec<WindowStats>) -> Result<(), JobError> {
        for w in batch.drain(..) {
            self.mine.add(&w);
        }
        Ok(())
    }
    fn finish(&mut self) -> Result<(), JobError> {
        self.total.lock().unwrap().merge(&self.mine);
        Ok(())
    }
}

/// The engine: the telemetry job's dataflow, windows digested by the sink.
pub fn engine(settings: &TelemetrySettings, parallelism: u32) -> Run {
    engine_checkpointed(settings, parallelism, None, false).0
}

/// As [`engine`], taking a checkpoint every `interval` into a temporary directory when given
/// (unaligned if asked); with the checkpoints it completed.
pub fn engine_checkpointed(
    settings: &TelemetrySettings,
    parallelism: u32,
    interval: Option<Duration>,
    unaligned: bool,
) -> (Run, Vec<shardflow_core::checkpoint::CheckpointStats>) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut env = StreamExecutionEnvironment::local();
    env.set_parallelism(parallelism);
    if let Some(i) = interval {
        let mut c = shardflow_core::checkpoint::CheckpointConfig::new(dir.path(), i);
        c.unaligned = unaligned;
        env.config_mut().checkpoints = Some(c);
    }
    let total = Arc::new(Mutex::new(Digest::default()));
    let t = total.clone();
    let readings = telemetry::readings(&env, settings);
    telemetry::window_stats(&readings, settings).sink_to("digest", move |_| {
        Ok(DigestSink {
            mine: Digest::default(),
            total: t.clone(),
        })
    });
    let t0 = Instant::now();
    let result = env.execute("windows").expect("windows job");
    let elapsed = t0.elapsed();
    let digest = *total.lock().unwrap();
    (Run { elapsed, digest }, result.checkpoints)
}

/// The baseline: the same windows by a loop on one thread.
pub fn baseline(settings: &TelemetrySettings) -> Run {
    let t0 = Instant::now();
    let mut digest = Digest::default();
    telemetry::window_stats_loop(settings, |w| digest.add(&w));
    Run {
        elapsed: t0.elapsed(),
        digest,
    }
}
