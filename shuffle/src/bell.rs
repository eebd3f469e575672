//! Doorbells: how a process wakes a task parked in another process on a shared-memory ring.
//!
//! Every process that receives or sends on shared-memory rings owns one bell: a 4 KiB file under
//! `/dev/shm` whose first word is a futex. A peer rings it by bumping the word and calling
//! `FUTEX_WAKE` (a shared futex: the kernel keys it by file and offset, so it works across
//! processes that map the same file). The owner keeps one thread asleep in `FUTEX_WAIT` on the
//! word; when it changes, the thread wakes every task registered with the bell, and those tasks
//! look at their rings again.
//!
//! Bells are rung only when a ring's reader (or writer) said it was going to sleep (a flag in the
//! ring's header, set before parking and cleared by whoever rings), so a busy ring costs no
//! syscall; a shard that busy-polls never parks and never makes a peer ring. One thread per
//! process, asleep unless woken, is the price of parking: glommio's executors must not block in
//! a futex themselves.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use memmap2::{MmapOptions, MmapRaw};

use crate::ring::Shared;

const BELL_BYTES: u64 = 4096;
/// How long the bell's thread sleeps before it checks whether its bell was dropped.
const WAIT_MS_MAX: u64 = 200;

struct Core {
    map: MmapRaw,
    /// Rings whose tasks this bell wakes (this process's ends of shared-memory rings).
    watched: Mutex<Vec<Weak<Shared>>>,
    stop: AtomicBool,
}

impl Core {
    fn word(&self) -> &AtomicU32 {
        // SAFETY: the mapping is BELL_BYTES long, page aligned, and lives as long as `self`; the
        // word is only ever accessed atomically, by every process that maps the file.
        unsafe { &*(self.map.as_ptr() as *const AtomicU32) }
    }

    fn ring(&self) {
        self.word().fetch_add(1, Ordering::SeqCst);
        futex_wake(self.word());
    }
}

/// A process's doorbell (owned: it wakes this process's tasks), or a peer's (opened: this
/// process rings it).
pub struct Bell {
    core: Arc<Core>,
    path: PathBuf,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Bell {
    /// Creates this process's bell at `path` and starts its thread. A stale file of a process
    /// that died is replaced.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// use shardflow_shuffle::bell::Bell;
    /// let own = Bell::create(&dir.path().join("me.bell"))?;
    /// let peer_view = Bell::open(own.path())?;
    /// peer_view.ring(); // wakes whatever `own` watches
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn create(path: &Path) -> std::io::Result<Self> {
        let _ = std::fs::remove_file(path);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| with_path(e, "cannot create the doorbell", path))?;
        file.set_len(BELL_BYTES)
            .map_err(|e| with_path(e, "cannot size the doorbell", path))?;
        let core = Arc::new(Core {
            map: map(&file, path)?,
            watched: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let waiter = core.clone();
        let thread = std::thread::Builder::new()
            .name("shardflow-bell".into())
            .spawn(move || wait_loop(&waiter))
            .map_err(|e| with_path(e, "cannot start the doorbell's thread", path))?;
        Ok(Self {
            core,
            path: path.to_path_buf(),
            thread: Some(thread),
        })
    }

    /// Opens a peer's bell, to ring it.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| with_path(e, "cannot open the peer's doorbell", path))?;
        let len = file
            .metadata()
            .map_err(|e| with_path(e, "cannot read the peer's doorbell", path))?
            .len();
        if len != BELL_BYTES {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "doorbell {}: {len} bytes, a doorbell has {BELL_BYTES}",
                    path.display()
                ),
            ));
        }
        Ok(Self {
            core: Arc::new(Core {
                map: map(&file, path)?,
                watched: Mutex::new(Vec::new()),
                stop: AtomicBool::new(false),
            }),
            path: path.to_path_buf(),
            thread: None,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Wakes the tasks the bell's owner watches (one syscall).
    pub fn ring(&self) {
        self.core.ring();
    }

    /// Has this (owned) bell wake `ring`'s tasks whenever it rings.
    pub(crate) fn watch(&self, ring: &Arc<Shared>) {
        debug_assert!(self.thread.is_some(), "only an owned bell wakes tasks");
        let mut w = self.core.watched.lock().unwrap_or_else(|e| e.into_inner());
        w.retain(|s| s.strong_count() > 0);
        w.push(Arc::downgrade(ring));
    }
}

impl Drop for Bell {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.core.stop.store(true, Ordering::SeqCst);
            self.core.ring();
            let _ = thread.join();
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn wait_loop(core: &Core) {
    loop {
        let seen = core.word().load(Ordering::SeqCst);
        if core.stop.load(Ordering::SeqCst) {
            return;
        }
        let watched: Vec<Arc<Shared>> = core
            .watched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        for s in &watched {
            s.rx_waker.wake();
            s.tx_waker.wake();
        }
        drop(watched);
        // Returns at once if the word moved since `seen` (a ring we have not answered yet).
        futex_wait(core.word(), seen, Duration::from_millis(WAIT_MS_MAX));
    }
}

fn map(file: &std::fs::File, path: &Path) -> std::io::Result<MmapRaw> {
    MmapOptions::new()
        .len(BELL_BYTES as usize)
        .map_raw(file)
        .map_err(|e| with_path(e, "cannot map the doorbell", path))
}

pub(crate) fn with_path(e: std::io::Error, what: &str, path: &Path) -> std::io::Error {
    std::io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
}

/// Sleeps while `word` holds `expected` (or until woken, or `timeout`).
fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: the word is a live, aligned u32 in a shared mapping; FUTEX_WAIT only reads it. A
    // spurious return (EINTR, EAGAIN, timeout) is harmless: the caller loops.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// Wakes every thread waiting on `word`, in any process that maps it.
fn futex_wake(word: &AtomicU32) {
    // SAFETY: as above; FUTEX_WAKE does not touch the word's memory.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            i32::MAX,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}
