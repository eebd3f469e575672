//! The shared-memory transport: the ring of [`ring`](mod@crate::ring), laid out in a file under
//! `/dev/shm` that two processes on one host map, for shards in different processes.
//!
//! ```text
//! offset 0      magic "SFSHMRG1" (written last by the creator: a reader of a half-made
//!               file sees no magic), u32 version, u32 channel, u32 slots, u32 slot_bytes
//! offset 64     u64 head: slots published by the sender          (its own cache line)
//! offset 128    u64 tail: slots released by the receiver        (its own cache line)
//! offset 192    u32 rx_parked, u32 tx_parked: "ring my bell when you move"
//! offset 256    u32 sender_attached, u32 sender_gone, u32 receiver_gone
//! offset 512    the receiver's doorbell path (u32 length, bytes); offset 768 the sender's
//! offset 1024   per slot, u64: the bytes it holds, bit 63 set when the buffer continues
//!               in the next slot
//! data_start    the slots, page aligned, `slot_bytes` each (a multiple of 64)
//! ```
//!
//! The receiver creates the ring (its slots are the credits it grants), the sender attaches.
//! A buffer of frames is copied once, into the next free slot (or several, when it is larger
//! than a slot); the receiver reads it in place, zero-copy, and releasing it hands the slot back
//! (the credit). Ownership passes with a release store of `head` (sender to receiver) and of
//! `tail` (receiver to sender); the slot lengths travel under the same fences.
//!
//! The bytes come from another process, so every frame carries a crc, which the receiver checks,
//! and records get rkyv's full bytecheck before anything reads them. A slot length that does not
//! fit is an error naming the ring's file and the slot. The ring does not defend against a
//! hostile process that may write the shared file while it is read: the peers of a cluster are
//! authenticated (DESIGN.md), and the file is created with mode 0600.
//!
//! Waking: a receiver about to park sets `rx_parked` and rechecks; a sender that publishes and
//! finds it set clears it and rings the receiver process's [`Bell`]. The same goes for credits
//! (`tx_parked`, rung by the receiver on release). A shard that busy-polls never sets the flags,
//! and a busy ring rings nothing: the cost per buffer is a fence and a load.

use std::cell::{Cell, OnceCell, RefCell};
use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};

use memmap2::{MmapOptions, MmapRaw};

use crate::bell::{Bell, with_path};
use crate::error::ChannelError;
use crate::ring::{Buffer, Shared};

const MAGIC: u64 = u64::from_le_bytes(*b"SFSHMRG1");
const VERSION: u32 = 1;
const OFF_VERSION: usize = 8;
const OFF_CHANNEL: usize = 12;
const OFF_SLOTS: usize = 16;
const OFF_SLOT_BYTES: usize = 20;
const OFF_HEAD: usize = 64;
const OFF_TAIL: usize = 128;
const OFF_RX_PARKED: usize = 192;
const OFF_TX_PARKED: usize = 196;
const OFF_SENDER_ATTACHED: usize = 256;
const OFF_SENDER_GONE: usize = 260;
const OFF_RECEIVER_GONE: usize = 264;
const OFF_RECEIVER_BELL: usize = 512;
const OFF_SENDER_BELL: usize = 768;
const BELL_PATH_BYTES_MAX: usize = 252;
const OFF_LENGTHS: usize = 1024;
const PAGE_BYTES: usize = 4096;
/// Bit 63 of a slot's length word: the buffer goes on in the next slot.
const CONTINUES: u64 = 1 << 63;

/// Slots of a shared-memory ring (its credits) and their size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShmConfig {
    pub slots: usize,
    /// Bytes of one slot (rounded up to 64). A buffer larger than a slot takes several.
    pub slot_bytes: usize,
}

impl Default for ShmConfig {
    /// Four slots of 64 KiB: room for a 32 KiB batch and the strings it points to.
    fn default() -> Self {
        Self {
            slots: 4,
            slot_bytes: 64 << 10,
        }
    }
}

/// The most slots, and the largest slot, a ring may have.
pub const SHM_SLOTS_MAX: usize = 1024;
pub const SHM_SLOT_BYTES_MAX: usize = 16 << 20;

/// One mapped ring file.
pub(crate) struct RingMap {
    map: MmapRaw,
    path: PathBuf,
    channel: u32,
    slots: u64,
    slot_bytes: usize,
    data_start: usize,
}

fn data_start(slots: usize) -> usize {
    (OFF_LENGTHS + slots * 8).div_ceil(PAGE_BYTES) * PAGE_BYTES
}

impl RingMap {
    fn u32_at(&self, off: usize) -> &AtomicU32 {
        debug_assert!(off.is_multiple_of(4) && off < OFF_LENGTHS);
        // SAFETY: `off` is a 4-aligned offset inside the header of a live mapping; every
        // process touches these words only atomically.
        unsafe { &*(self.map.as_ptr().add(off) as *const AtomicU32) }
    }

    fn u64_at(&self, off: usize) -> &AtomicU64 {
        debug_assert!(off.is_multiple_of(8) && off < self.data_start);
        // SAFETY: as above, 8-aligned (the mapping is page aligned).
        unsafe { &*(self.map.as_ptr().add(off) as *const AtomicU64) }
    }

    fn head(&self) -> &AtomicU64 {
        self.u64_at(OFF_HEAD)
    }

    fn tail(&self) -> &AtomicU64 {
        self.u64_at(OFF_TAIL)
    }

    fn length(&self, slot: u64) -> &AtomicU64 {
        self.u64_at(OFF_LENGTHS + (slot % self.slots) as usize * 8)
    }

    fn slot_offset(&self, slot: u64) -> usize {
        self.data_start + (slot % self.slots) as usize * self.slot_bytes
    }

    fn flag(&self, off: usize) -> bool {
        self.u32_at(off).load(Ordering::Acquire) != 0
    }

    fn bell_path(&self, off: usize) -> Option<PathBuf> {
        let len = self.u32_at(off).load(Ordering::Acquire) as usize;
        if len == 0 || len > BELL_PATH_BYTES_MAX {
            return None;
        }
        // SAFETY: the path bytes follow their length inside the header; written once, before
        // the flag that makes them visible (magic or sender_attached), and never again.
        let bytes = unsafe { std::slice::from_raw_parts(self.map.as_ptr().add(off + 4), len) };
        Some(PathBuf::from(std::str::from_utf8(bytes).ok()?.to_string()))
    }

    fn write_bell_path(&self, off: usize, path: &Path) -> std::io::Result<()> {
        let bytes = path.as_os_str().as_encoded_bytes();
        if bytes.is_empty() || bytes.len() > BELL_PATH_BYTES_MAX || path.to_str().is_none() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "doorbell path {} must be UTF-8 of 1 to {BELL_PATH_BYTES_MAX} bytes",
                    path.display()
                ),
            ));
        }
        // SAFETY: inside the header; no one reads these bytes before the flag published after.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.map.as_mut_ptr().add(off + 4),
                bytes.len(),
            )
        };
        self.u32_at(off)
            .store(bytes.len() as u32, Ordering::Release);
        Ok(())
    }

    fn malformed(&self, detail: String) -> ChannelError {
        ChannelError::Malformed {
            channel: self.channel,
            detail: format!("shared-memory ring {}: {detail}", self.path.display()),
        }
    }
}

/// Creates the ring file at `path` (under `/dev/shm`), ready for a sender to attach; `bell` is
/// this process's doorbell. Returns the receiving end.
pub fn create_receiver(
    path: &Path,
    channel: u32,
    config: ShmConfig,
    bell: Arc<Bell>,
) -> std::io::Result<crate::RingReceiver> {
    if config.slots == 0 || config.slots > SHM_SLOTS_MAX || config.slot_bytes == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "shared-memory ring {}: {} slots of {} bytes (1 to {SHM_SLOTS_MAX} slots of 1 to {SHM_SLOT_BYTES_MAX} bytes)",
                path.display(),
                config.slots,
                config.slot_bytes
            ),
        ));
    }
    let slot_bytes = config.slot_bytes.div_ceil(64) * 64;
    if slot_bytes > SHM_SLOT_BYTES_MAX {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "shared-memory ring {}: slots of {slot_bytes} bytes exceed {SHM_SLOT_BYTES_MAX}",
                path.display()
            ),
        ));
    }
    let start = data_start(config.slots);
    let total = start + config.slots * slot_bytes;
    let _ = std::fs::remove_file(path);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| with_path(e, "cannot create the shared-memory ring", path))?;
    file.set_len(total as u64)
        .map_err(|e| with_path(e, "cannot size the shared-memory ring", path))?;
    let map = MmapOptions::new()
        .len(total)
        .map_raw(&file)
        .map_err(|e| with_path(e, "cannot map the shared-memory ring", path))?;
    let ring = RingMap {
        map,
        path: path.to_path_buf(),
        channel,
        slots: config.slots as u64,
        slot_bytes,
        data_start: start,
    };
    ring.u32_at(OFF_VERSION).store(VERSION, Ordering::Relaxed);
    ring.u32_at(OFF_CHANNEL).store(channel, Ordering::Relaxed);
    ring.u32_at(OFF_SLOTS)
        .store(config.slots as u32, Ordering::Relaxed);
    ring.u32_at(OFF_SLOT_BYTES)
        .store(slot_bytes as u32, Ordering::Relaxed);
    ring.write_bell_path(OFF_RECEIVER_BELL, bell.path())?;
    ring.u64_at(0).store(MAGIC, Ordering::Release);
    let shared = Shared::new(channel);
    bell.watch(&shared);
    Ok(crate::RingReceiver::from_shm(
        shared,
        ShmRx {
            map: Arc::new(ring),
            own: bell,
            peer: OnceCell::new(),
            next: Cell::new(0),
            tail: Cell::new(0),
            assembling: RefCell::new(None),
            unlinked: Cell::new(false),
        },
    ))
}

/// Attaches to the ring a receiver created at `path`, as its one sender; `bell` is this
/// process's doorbell. Fails (naming the file) if it is not a ring of `channel`, or is being
/// made still (retry), or has a sender already.
pub fn attach_sender(
    path: &Path,
    channel: u32,
    bell: Arc<Bell>,
) -> std::io::Result<crate::RingSender> {
    let invalid = |what: String| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("shared-memory ring {}: {what}", path.display()),
        )
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| with_path(e, "cannot open the shared-memory ring", path))?;
    let len = file
        .metadata()
        .map_err(|e| with_path(e, "cannot read the shared-memory ring", path))?
        .len() as usize;
    if len < PAGE_BYTES {
        return Err(invalid(format!("{len} bytes, not yet a ring")));
    }
    let map = MmapOptions::new()
        .len(len)
        .map_raw(&file)
        .map_err(|e| with_path(e, "cannot map the shared-memory ring", path))?;
    let mut ring = RingMap {
        map,
        path: path.to_path_buf(),
        channel,
        slots: 1,
        slot_bytes: 0,
        data_start: PAGE_BYTES,
    };
    if ring.u64_at(0).load(Ordering::Acquire) != MAGIC {
        return Err(invalid(
            "no ring header (not made yet, or not a ring)".into(),
        ));
    }
    let version = ring.u32_at(OFF_VERSION).load(Ordering::Relaxed);
    let found = ring.u32_at(OFF_CHANNEL).load(Ordering::Relaxed);
    let slots = ring.u32_at(OFF_SLOTS).load(Ordering::Relaxed) as usize;
    let slot_bytes = ring.u32_at(OFF_SLOT_BYTES).load(Ordering::Relaxed) as usize;
    if version != VERSION {
        return Err(invalid(format!(
            "version {version}, this build reads {VERSION}"
        )));
    }
    if found != channel {
        return Err(invalid(format!("a ring of channel {found}, not {channel}")));
    }
    if slots == 0
        || slots > SHM_SLOTS_MAX
        || slot_bytes == 0
        || slot_bytes > SHM_SLOT_BYTES_MAX
        || !slot_bytes.is_multiple_of(64)
        || data_start(slots) + slots * slot_bytes != len
    {
        return Err(invalid(format!(
            "{slots} slots of {slot_bytes} bytes do not fit its {len} bytes"
        )));
    }
    ring.slots = slots as u64;
    ring.slot_bytes = slot_bytes;
    ring.data_start = data_start(slots);
    if ring
        .u32_at(OFF_SENDER_ATTACHED)
        .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return Err(invalid("a sender is attached already".into()));
    }
    ring.write_bell_path(OFF_SENDER_BELL, bell.path())?;
    let peer_path = ring
        .bell_path(OFF_RECEIVER_BELL)
        .ok_or_else(|| invalid("no receiver doorbell named".into()))?;
    let peer = Bell::open(&peer_path)?;
    let head = ring.head().load(Ordering::Acquire);
    let tail = ring.tail().load(Ordering::Acquire);
    let shared = Shared::new(channel);
    bell.watch(&shared);
    Ok(crate::RingSender::from_shm(
        shared,
        ShmTx {
            map: Arc::new(ring),
            own: bell,
            peer,
            head: Cell::new(head),
            tail_cached: Cell::new(tail),
            taken: Cell::new(0),
            pool: RefCell::new(Vec::new()),
            pending: RefCell::new(VecDeque::new()),
        },
    ))
}

/// The sending end's state.
pub(crate) struct ShmTx {
    map: Arc<RingMap>,
    /// Kept so this process's bell outlives the rings it wakes.
    #[allow(dead_code)]
    own: Arc<Bell>,
    peer: Bell,
    /// Slots published (our copy of `head`: we are its only writer).
    head: Cell<u64>,
    tail_cached: Cell<u64>,
    /// Buffers handed out and not yet sent: each holds one slot's credit.
    taken: Cell<u64>,
    pool: RefCell<Vec<Buffer>>,
    /// Buffers sent that did not fit yet (a buffer larger than the free slots), in order, with
    /// the bytes of each already copied.
    pending: RefCell<VecDeque<(Buffer, usize)>>,
}

impl ShmTx {
    fn free_slots(&self) -> u64 {
        let map = &self.map;
        let used = self.head.get() - self.tail_cached.get() + self.taken.get();
        if used < map.slots {
            return map.slots - used;
        }
        self.tail_cached.set(map.tail().load(Ordering::Acquire));
        map.slots
            .saturating_sub(self.head.get() - self.tail_cached.get() + self.taken.get())
    }

    fn check_open(&self, shared: &Shared) -> Result<(), ChannelError> {
        if shared.receiver_gone.load(Ordering::Acquire) || self.map.flag(OFF_RECEIVER_GONE) {
            return Err(shared.closed());
        }
        Ok(())
    }

    pub(crate) fn try_take(&self, shared: &Shared) -> Result<Option<Buffer>, ChannelError> {
        self.check_open(shared)?;
        self.pump();
        if !self.pending.borrow().is_empty() || self.free_slots() == 0 {
            return Ok(None);
        }
        self.taken.set(self.taken.get() + 1);
        let mut buf = self
            .pool
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| Buffer::with_capacity(self.map.slot_bytes));
        buf.clear();
        Ok(Some(buf))
    }

    /// Says "ring me when a slot frees" (before the caller's last look).
    pub(crate) fn park(&self) {
        self.map.u32_at(OFF_TX_PARKED).store(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
    }

    pub(crate) fn send(&self, buf: Buffer) {
        self.taken.set(self.taken.get().saturating_sub(1));
        self.pending.borrow_mut().push_back((buf, 0));
        self.pump();
    }

    /// Whether every buffer sent is in the ring.
    pub(crate) fn all_sent(&self) -> bool {
        self.pump();
        self.pending.borrow().is_empty()
    }

    /// Copies pending buffers into free slots, in order; publishes what it copied.
    ///
    /// Budget: one memcpy of the buffer (32 KiB at ~10 GB/s: ~3 µs), one release store, one
    /// fence; a syscall only when the receiver parked.
    fn pump(&self) {
        let mut pending = self.pending.borrow_mut();
        let map = &self.map;
        let mut published = false;
        while let Some((buf, done)) = pending.front_mut() {
            let mut complete = false;
            // A slot held by a taken buffer is not ours to fill.
            while self.free_slots() > 0 {
                let head = self.head.get();
                let chunk = (buf.len() - *done).min(map.slot_bytes);
                // SAFETY: slot `head` is free (fewer than `slots` published and unreleased):
                // the receiver reads it only after the head store below.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        buf.as_ptr().add(*done),
                        map.map.as_mut_ptr().add(map.slot_offset(head)),
                        chunk,
                    )
                };
                *done += chunk;
                let more = *done < buf.len();
                map.length(head).store(
                    chunk as u64 | if more { CONTINUES } else { 0 },
                    Ordering::Relaxed,
                );
                self.head.set(head + 1);
                published = true;
                if !more {
                    complete = true;
                    break;
                }
            }
            if !complete {
                break;
            }
            let (buf, _) = pending.pop_front().expect("the front was there");
            let mut pool = self.pool.borrow_mut();
            if pool.len() < map.slots as usize {
                pool.push(buf);
            }
        }
        if published {
            map.head().store(self.head.get(), Ordering::Release);
            fence(Ordering::SeqCst);
            let parked = map.u32_at(OFF_RX_PARKED);
            if parked.load(Ordering::Relaxed) != 0 && parked.swap(0, Ordering::AcqRel) != 0 {
                self.peer.ring();
            }
        }
    }
}

impl Drop for ShmTx {
    fn drop(&mut self) {
        self.map.u32_at(OFF_SENDER_GONE).store(1, Ordering::SeqCst);
        self.peer.ring();
    }
}

/// The receiving end's state.
pub(crate) struct ShmRx {
    map: Arc<RingMap>,
    #[allow(dead_code)]
    own: Arc<Bell>,
    /// The sender's bell, opened once a sender attached and named it.
    peer: OnceCell<Option<Bell>>,
    /// The next slot to read.
    next: Cell<u64>,
    /// Slots released (our copy of `tail`: we are its only writer). Slots in [tail, next) are
    /// buffers handed out and not yet released.
    tail: Cell<u64>,
    /// A buffer larger than a slot, gathered from its slots.
    assembling: RefCell<Option<Buffer>>,
    unlinked: Cell<bool>,
}

/// A buffer read in place from a shared-memory slot; valid until released.
pub struct MappedSlot {
    map: Arc<RingMap>,
    slot: u64,
    offset: usize,
    len: usize,
}

impl MappedSlot {
    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: the slot is the receiver's until released (the sender writes only slots past
        // `tail + slots`), inside the mapping, which `self.map` keeps alive.
        unsafe { std::slice::from_raw_parts(self.map.map.as_ptr().add(self.offset), self.len) }
    }
}

impl ShmRx {
    fn peer(&self) -> Option<&Bell> {
        self.peer
            .get_or_init(|| {
                self.map
                    .bell_path(OFF_SENDER_BELL)
                    .and_then(|p| Bell::open(&p).ok())
            })
            .as_ref()
    }

    fn sender_gone(&self, shared: &Shared) -> bool {
        shared.sender_gone.load(Ordering::Acquire) || self.map.flag(OFF_SENDER_GONE)
    }

    /// Once the sender has attached, the file's name is no longer needed: unlinking it now
    /// leaves nothing behind in `/dev/shm` if either process dies.
    fn unlink_once_attached(&self) {
        if !self.unlinked.get() && self.map.flag(OFF_SENDER_ATTACHED) {
            self.unlinked.set(true);
            let _ = std::fs::remove_file(&self.map.path);
        }
    }

    pub(crate) fn is_ready(&self, shared: &Shared) -> bool {
        self.map.head().load(Ordering::Acquire) > self.next.get() || self.sender_gone(shared)
    }

    pub(crate) fn park(&self) {
        self.map.u32_at(OFF_RX_PARKED).store(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
    }

    pub(crate) fn try_recv(&self, shared: &Shared) -> Result<Option<Recv>, ChannelError> {
        let map = &self.map;
        loop {
            let head = map.head().load(Ordering::Acquire);
            let next = self.next.get();
            if head == next {
                if self.sender_gone(shared) && map.head().load(Ordering::Acquire) == next {
                    return Err(shared.closed());
                }
                self.unlink_once_attached();
                return Ok(None);
            }
            if head < next || head - self.tail.get() > map.slots {
                return Err(map.malformed(format!(
                    "head {head} is not between the next slot {next} and the released {} plus {} slots",
                    self.tail.get(),
                    map.slots
                )));
            }
            let word = map.length(next).load(Ordering::Relaxed);
            let len = (word & !CONTINUES) as usize;
            let continues = word & CONTINUES != 0;
            if len > map.slot_bytes {
                return Err(map.malformed(format!(
                    "slot {} claims {len} bytes, slots hold {}",
                    next % map.slots,
                    map.slot_bytes
                )));
            }
            let mut assembling = self.assembling.borrow_mut();
            if assembling.is_none() && !continues {
                self.next.set(next + 1);
                return Ok(Some(Recv::Mapped(MappedSlot {
                    map: map.clone(),
                    slot: next,
                    offset: map.slot_offset(next),
                    len,
                })));
            }
            // A buffer spread over slots: gathered into memory of our own, slot by slot, each
            // released as soon as it is copied (so a ring smaller than the buffer still moves).
            // That needs every earlier slot released: in-order release.
            if next != self.tail.get() {
                return Ok(None);
            }
            let buf = assembling.get_or_insert_with(Buffer::new);
            if buf.len() + len > crate::ring::RING_BUFFER_BYTES_MAX {
                return Err(map.malformed(format!(
                    "a buffer continues past {} bytes",
                    crate::ring::RING_BUFFER_BYTES_MAX
                )));
            }
            // SAFETY: slot `next` is published and unreleased: ours to read.
            buf.extend_from_slice(unsafe {
                std::slice::from_raw_parts(map.map.as_ptr().add(map.slot_offset(next)), len)
            });
            self.next.set(next + 1);
            self.release_slots(1);
            if !continues {
                return Ok(Some(Recv::Owned(assembling.take().expect("gathered"))));
            }
        }
    }

    fn release_slots(&self, n: u64) {
        let tail = self.tail.get() + n;
        debug_assert!(tail <= self.next.get());
        self.tail.set(tail);
        let map = &self.map;
        map.tail().store(tail, Ordering::Release);
        fence(Ordering::SeqCst);
        let parked = map.u32_at(OFF_TX_PARKED);
        if parked.load(Ordering::Relaxed) != 0
            && parked.swap(0, Ordering::AcqRel) != 0
            && let Some(peer) = self.peer()
        {
            peer.ring();
        }
    }

    pub(crate) fn release(&self, slot: MappedSlot) {
        assert_eq!(
            slot.slot,
            self.tail.get(),
            "shared-memory ring {}: buffers are released in the order received",
            self.map.path.display()
        );
        self.release_slots(1);
    }
}

impl Drop for ShmRx {
    fn drop(&mut self) {
        self.map
            .u32_at(OFF_RECEIVER_GONE)
            .store(1, Ordering::SeqCst);
        if let Some(peer) = self.peer() {
            peer.ring();
        }
        if !self.unlinked.get() {
            let _ = std::fs::remove_file(&self.map.path);
        }
    }
}

/// What a shared-memory receiver hands out.
pub(crate) enum Recv {
    Mapped(MappedSlot),
    Owned(Buffer),
}
