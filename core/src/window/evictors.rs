//! Evictors: drop some of a window's records before (or after) the window function sees them.
//! A window with an evictor keeps every record (it cannot pre-aggregate).

/// Drops records from a window's contents (records with their timestamps, in arrival order).
pub trait Evictor<T>: Clone + Send + Sync + 'static {
    /// Before the window function runs.
    fn evict_before(&mut self, _records: &mut Vec<(T, Option<i64>)>, _window_max_timestamp: i64) {}
    /// After the window function ran.
    fn evict_after(&mut self, _records: &mut Vec<(T, Option<i64>)>, _window_max_timestamp: i64) {}
}

/// Evicts nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoEvictor;

impl<T> Evictor<T> for NoEvictor {}

/// Keeps the last `count` records (before the function, or after it).
#[derive(Debug, Clone, Copy)]
pub struct CountEvictor {
    count: usize,
    after: bool,
}

impl CountEvictor {
    pub fn of(count: usize) -> Self {
        Self {
            count,
            after: false,
        }
    }
    pub fn of_after(count: usize) -> Self {
        Self { count, after: true }
    }
    fn evict<T>(&self, records: &mut Vec<(T, Option<i64>)>) {
        if records.len() > self.count {
            records.drain(..records.len() - self.count);
        }
    }
}

impl<T> Evictor<T> for CountEvictor {
    fn evict_before(&mut self, records: &mut Vec<(T, Option<i64>)>, _max: i64) {
        if !self.after {
            self.evict(records);
        }
    }
    fn evict_after(&mut self, records: &mut Vec<(T, Option<i64>)>, _max: i64) {
        if self.after {
            self.evict(records);
        }
    }
}

/// Keeps the records within `keep_ms` of the newest record's timestamp.
#[derive(Debug, Clone, Copy)]
pub struct TimeEvictor {
    keep_ms: i64,
    after: bool,
}

impl TimeEvictor {
    pub fn of(keep: std::time::Duration) -> Self {
        Self {
            keep_ms: keep.as_millis() as i64,
            after: false,
        }
    }
    pub fn of_after(keep: std::time::Duration) -> Self {
        Self {
            after: true,
            ..Self::of(keep)
        }
    }
    fn evict<T>(&self, records: &mut Vec<(T, Option<i64>)>) {
        let Some(newest) = records.iter().filter_map(|r| r.1).max() else {
            return;
        };
        let cut = newest - self.keep_ms;
        records.retain(|r| r.1.is_none_or(|t| t > cut));
    }
}

impl<T> Evictor<T> for TimeEvictor {
    fn evict_before(&mut self, records: &mut Vec<(T, Option<i64>)>, _max: i64) {
        if !self.after {
            self.evict(records);
        }
    }
    fn evict_after(&mut self, records: &mut Vec<(T, Option<i64>)>, _max: i64) {
        if self.after {
            self.evict(records);
        }
    }
}
