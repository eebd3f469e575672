//! A progress bar on stderr for a person watching a long run, and nothing for anyone else.
//!
//! The bar is hidden when stderr is not a terminal (CI, a test, output piped to a file), when
//! the command line has `--quiet`, when the environment variable `SHARDFLOW_BENCH_QUIET` is set
//! to anything but `0` or the empty string, or after [`set_quiet`]`(true)`.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The environment variable that silences progress bars.
pub const QUIET_ENV: &str = "SHARDFLOW_BENCH_QUIET";

/// How often [`Progress::watch`] reads its counter.
pub const WATCH_INTERVAL: Duration = Duration::from_millis(100);

static QUIET: AtomicBool = AtomicBool::new(false);

/// Silences (or not) every progress bar made afterwards, e.g. from the harness's `--quiet`.
///
/// ```
/// use shardflow_bench::report::progress::{is_quiet, set_quiet};
/// use shardflow_bench::report::Progress;
///
/// set_quiet(true);
/// assert!(is_quiet());
/// assert!(Progress::new(10, "runs").is_hidden());
/// ```
pub fn set_quiet(quiet: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
}

/// Whether progress bars are hidden: see the [module docs](self).
pub fn is_quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
        || std::env::var_os(QUIET_ENV).is_some_and(|v| !v.is_empty() && v != "0")
        || std::env::args_os().skip(1).any(|arg| arg == "--quiet")
        || !std::io::stderr().is_terminal()
}

/// A progress bar of `total` steps, drawn on stderr unless [hidden](self).
///
/// ```
/// use shardflow_bench::report::Progress;
///
/// let progress = Progress::new(3, "runs");
/// for run in 0..3 {
///     progress.set_message(format!("run {run}"));
///     progress.inc(1);
/// }
/// progress.finish();
/// assert_eq!(progress.position(), 3);
/// ```
#[derive(Debug, Clone)]
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A bar of `total_steps` steps, labelled `what` (e.g. "events" or "runs").
    pub fn new(total_steps: u64, what: &str) -> Progress {
        if is_quiet() {
            return Progress::hidden(total_steps);
        }
        let bar = ProgressBar::with_draw_target(Some(total_steps), ProgressDrawTarget::stderr());
        // The template is a constant: it parses or the harness is broken.
        let style = ProgressStyle::with_template(
            "{prefix:>12} [{bar:40}] {human_pos}/{human_len} ({percent}%) eta {eta} {msg}",
        )
        .expect("progress bar template")
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(what.to_string());
        Progress { bar }
    }

    /// A bar that counts but never draws.
    pub fn hidden(total_steps: u64) -> Progress {
        let bar = ProgressBar::hidden();
        bar.set_length(total_steps);
        Progress { bar }
    }

    /// Whether this bar draws nothing.
    pub fn is_hidden(&self) -> bool {
        self.bar.is_hidden()
    }

    /// Advances by `n` steps.
    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
    }

    /// Moves to step `position`.
    pub fn set_position(&self, position: u64) {
        self.bar.set_position(position);
    }

    /// The steps done so far.
    pub fn position(&self) -> u64 {
        self.bar.position()
    }

    /// Shows `message` after the bar (e.g. which run or variant is going).
    pub fn set_message(&self, message: impl Into<String>) {
        self.bar.set_message(message.into());
    }

    /// Stops the bar, leaving it drawn as it is (at its position, not filled to the end: a run
    /// that stopped early shows where).
    pub fn finish(&self) {
        self.bar.abandon();
    }

    /// A bar of `total` steps that follows `counter` from another thread, reading it every
    /// [`WATCH_INTERVAL`], until the returned guard is dropped (or [`Watch::finish`]ed): for a
    /// job whose workers count what they did in an atomic.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// use shardflow_bench::report::Progress;
    ///
    /// let done = Arc::new(AtomicU64::new(0));
    /// let watch = Progress::watch(done.clone(), 1_000, "events");
    /// for _ in 0..1_000 {
    ///     done.fetch_add(1, Ordering::Relaxed);
    /// }
    /// let progress = watch.finish();
    /// assert_eq!(progress.position(), 1_000);
    /// ```
    pub fn watch(counter: Arc<AtomicU64>, total: u64, what: &str) -> Watch {
        let progress = Progress::new(total, what);
        // A hidden bar needs no thread: the counter is read once, when the watch ends.
        let follow = !progress.is_hidden();
        Watch::start(progress, counter, follow)
    }
}

/// A progress bar following a counter; see [`Progress::watch`]. Dropping it stops the bar at
/// the counter's last value.
#[derive(Debug)]
pub struct Watch {
    progress: Progress,
    counter: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Watch {
    /// Drives `progress` from `counter`, on a thread of its own if `follow`.
    fn start(progress: Progress, counter: Arc<AtomicU64>, follow: bool) -> Watch {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = follow.then(|| {
            let (progress, counter, stop) = (progress.clone(), counter.clone(), stop.clone());
            std::thread::Builder::new()
                .name("bench-progress".to_string())
                .spawn(move || {
                    while !stop.load(Ordering::Acquire) {
                        progress.set_position(counter.load(Ordering::Relaxed));
                        std::thread::park_timeout(WATCH_INTERVAL);
                    }
                })
                .expect("spawning the progress thread")
        });
        Watch {
            progress,
            counter,
            stop,
            thread,
        }
    }

    /// The bar being driven (e.g. to set its message).
    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// Stops following the counter, and returns the bar at its last value.
    pub fn finish(mut self) -> Progress {
        self.stop();
        self.progress.clone()
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            // The thread only reads atomics and sets the bar: it does not panic.
            let _ = thread.join();
        }
        self.progress
            .set_position(self.counter.load(Ordering::Relaxed));
        self.progress.finish();
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if !self.stop.load(Ordering::Acquire) {
            self.stop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hidden_in_tests() {
        // Test output is captured, and CI has no terminal: either way nothing is drawn.
        assert!(Progress::new(10, "steps").is_hidden() || std::io::stderr().is_terminal());
        set_quiet(true);
        assert!(is_quiet());
        assert!(Progress::new(10, "steps").is_hidden());
        set_quiet(false);
    }

    #[test]
    fn counts_steps() {
        let progress = Progress::hidden(10);
        progress.inc(3);
        progress.inc(4);
        progress.set_message("run 2");
        assert_eq!(progress.position(), 7);
        progress.set_position(10);
        progress.finish();
        assert_eq!(progress.position(), 10);
    }

    #[test]
    fn watch_ends_at_the_counters_last_value() {
        let counter = Arc::new(AtomicU64::new(0));
        let watch = Progress::watch(counter.clone(), 100, "events");
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let counter = counter.clone();
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().unwrap();
        }
        assert_eq!(watch.finish().position(), 100);

        // Dropped rather than finished: the bar still ends at the last value.
        let watch = Progress::watch(counter.clone(), 200, "events");
        let progress = watch.progress().clone();
        counter.store(150, Ordering::Relaxed);
        drop(watch);
        assert_eq!(progress.position(), 150);
    }

    #[test]
    fn watch_thread_follows_the_counter() {
        // Exercise the drawing thread itself, on a bar that is never drawn.
        let counter = Arc::new(AtomicU64::new(0));
        let progress = Progress::hidden(10);
        let mut watch = Watch::start(progress.clone(), counter.clone(), true);
        assert!(watch.thread.is_some());
        counter.store(7, Ordering::Relaxed);
        // Wait for the thread to see it: bounded, so a broken thread fails rather than hangs.
        for _ in 0..100 {
            if progress.position() == 7 {
                break;
            }
            std::thread::sleep(WATCH_INTERVAL / 4);
        }
        assert_eq!(progress.position(), 7);
        watch.stop();
        assert!(watch.thread.is_none());
    }
}
