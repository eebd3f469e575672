//! Shuffle transports, bytes only: how fast framed 32 KiB batches move from one thread to
//! another through each transport, beside the raw limits measured in the same run.
//!
//! Each batch is what an exchange ships: the sender takes a buffer (a credit), frames a
//! payload into it (one copy: it stands in for archiving the records, and is the same for
//! every transport), and sends it; the receiver validates every frame (the crc, for bytes from
//! another process) and releases the buffer. Both ends busy-poll, as shards in latency mode.
//!
//! Raw limits: `memcpy`, one thread copying the same batches into a few rotating destination
//! buffers (what one copy of the data costs); `socketpair`, plain blocking writes and reads of
//! the same bytes over a TCP connection on loopback (what the kernel's TCP path costs).

use std::time::{Duration, Instant};

use shardflow_shuffle::frame::{Checksum, FrameKind, FrameReader, write_frame};
use shardflow_shuffle::{RingReceiver, RingSender};

/// A payload of `bytes` (less the frame header), deterministic.
pub fn payload(bytes: usize) -> Vec<u8> {
    (0..bytes.saturating_sub(16))
        .map(|i| (i as u64).wrapping_mul(0x9e37_79b9) as u8)
        .collect()
}

/// One thread copying `batches` batches of `batch_bytes` into four rotating buffers.
pub fn memcpy(batches: u64, batch_bytes: usize) -> Duration {
    let src = payload(batch_bytes + 16);
    let mut dst = vec![0u8; src.len() * 4];
    let start = Instant::now();
    for i in 0..batches as usize {
        let at = (i % 4) * src.len();
        dst[at..at + src.len()].copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&mut dst);
    }
    start.elapsed()
}

/// The raw limit of any shared-memory transport: one thread copies each batch into one of
/// four shared slots, another copies it out; a bare counter pair hands the slots over.
pub fn handoff(batches: u64, batch_bytes: usize) -> Duration {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    struct Slots {
        bytes: Vec<std::cell::UnsafeCell<Vec<u8>>>,
        head: AtomicU64,
        tail: AtomicU64,
    }
    // SAFETY: a slot is written only by the sender while in [tail + 4, ...) and read only by
    // the receiver while in [tail, head): the counters hand it over.
    unsafe impl Sync for Slots {}
    let src = payload(batch_bytes + 16);
    let slots = Arc::new(Slots {
        bytes: (0..4)
            .map(|_| std::cell::UnsafeCell::new(vec![0u8; src.len()]))
            .collect(),
        head: AtomicU64::new(0),
        tail: AtomicU64::new(0),
    });
    let start = Instant::now();
    let s = slots.clone();
    let sender = std::thread::spawn(move || {
        for i in 0..batches {
            while i - s.tail.load(Ordering::Acquire) >= 4 {
                std::hint::spin_loop();
            }
            // SAFETY: slot i % 4 is free (see above).
            unsafe { (*s.bytes[(i % 4) as usize].get()).copy_from_slice(&src) };
            s.head.store(i + 1, Ordering::Release);
        }
    });
    let mut out = vec![0u8; batch_bytes];
    for i in 0..batches {
        while slots.head.load(Ordering::Acquire) <= i {
            std::hint::spin_loop();
        }
        // SAFETY: slot i % 4 is published and not yet released.
        out.copy_from_slice(unsafe { &*slots.bytes[(i % 4) as usize].get() });
        std::hint::black_box(&mut out);
        slots.tail.store(i + 1, Ordering::Release);
    }
    let elapsed = start.elapsed();
    sender.join().expect("the sender finishes");
    elapsed
}

/// Moves `batches` batches through a ring (either transport), sender on a thread of its own.
pub fn ring(tx: RingSender, rx: RingReceiver, batches: u64, batch_bytes: usize) -> Duration {
    let channel = tx.channel();
    let checksum = if tx.is_foreign() {
        Checksum::Compute
    } else {
        Checksum::Skip
    };
    let src = payload(batch_bytes);
    let expected = src.len() * batches as usize;
    let start = Instant::now();
    let sender = std::thread::spawn(move || {
        for i in 0..batches {
            let mut b = loop {
                if let Some(b) = tx.try_take_buffer().expect("the receiver stays") {
                    break b;
                }
                std::hint::spin_loop();
            };
            write_frame(&mut b, FrameKind::Data, channel, &src, checksum).expect("fits");
            if i + 1 == batches {
                write_frame(&mut b, FrameKind::End, channel, &[], checksum).expect("fits");
            }
            tx.send(b);
        }
        while std::future::Future::poll(
            std::pin::pin!(std::future::poll_fn(|cx| tx.poll_sent(cx))),
            &mut std::task::Context::from_waker(std::task::Waker::noop()),
        )
        .is_pending()
        {
            std::hint::spin_loop();
        }
    });
    let foreign = rx.is_foreign();
    let mut bytes = 0usize;
    'recv: loop {
        let Some(b) = rx.try_recv().expect("the sender stays until its end") else {
            std::hint::spin_loop();
            continue;
        };
        let mut end = false;
        for f in FrameReader::new(&b, channel).require_crc(foreign) {
            let f = f.expect("frames arrive whole");
            bytes += f.payload.len();
            end |= f.kind == FrameKind::End;
        }
        rx.release(b);
        if end {
            break 'recv;
        }
    }
    let elapsed = start.elapsed();
    sender.join().expect("the sender finishes");
    assert_eq!(bytes, expected, "every byte arrived");
    elapsed
}

/// A minimal executor: polls `f` on this thread, parking until its waker is called (the ends
/// of a TCP ring wait like parked shards: spinning would take the network threads' CPU).
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let std::task::Poll::Ready(r) = f.as_mut().poll(&mut cx) {
            return r;
        }
        std::thread::park();
    }
}

/// Moves `batches` batches over a TCP link between two networks of this process (each with
/// its thread), the ends parking while they wait.
pub fn tcp(batches: u64, batch_bytes: usize, buffers: usize) -> std::io::Result<Duration> {
    use shardflow_shuffle::tcp::{NetConfig, Network};
    let start_net = |process| {
        Network::start(NetConfig {
            process,
            bind: "127.0.0.1:0".parse().expect("an address"),
            secret: b"bench".to_vec(),
        })
    };
    let (a, b) = (start_net(1)?, start_net(2)?);
    a.connect(2, b.local_addr())?;
    let config = shardflow_shuffle::RingConfig {
        buffers,
        buffer_bytes: batch_bytes + 64,
    };
    let channel = shardflow_shuffle::link::LinkChannel::new(0, 5);
    let tx = a.sender(2, channel, config);
    let rx = b.receiver(1, channel, config);
    let src = payload(batch_bytes);
    let expected = src.len() * batches as usize;
    let start = Instant::now();
    let sender = std::thread::spawn(move || {
        block_on(async {
            for i in 0..batches {
                let mut b = std::future::poll_fn(|cx| tx.poll_take_buffer(cx))
                    .await
                    .expect("the receiver stays");
                write_frame(&mut b, FrameKind::Data, 5, &src, Checksum::Compute).expect("fits");
                if i + 1 == batches {
                    write_frame(&mut b, FrameKind::End, 5, &[], Checksum::Compute).expect("fits");
                }
                tx.send(b);
            }
        });
        tx
    });
    let bytes = block_on(async {
        let mut bytes = 0;
        loop {
            let b = std::future::poll_fn(|cx| match rx.try_recv() {
                Ok(Some(b)) => std::task::Poll::Ready(b),
                Ok(None) => {
                    rx.register(cx);
                    if rx.is_ready() {
                        cx.waker().wake_by_ref();
                    }
                    std::task::Poll::Pending
                }
                Err(e) => panic!("{e}"),
            })
            .await;
            let mut end = false;
            for f in FrameReader::new(&b, 5).require_crc(true) {
                let f = f.expect("frames arrive whole");
                bytes += f.payload.len();
                end |= f.kind == FrameKind::End;
            }
            rx.release(b);
            if end {
                return bytes;
            }
        }
    });
    let elapsed = start.elapsed();
    drop(sender.join().expect("the sender finishes"));
    assert_eq!(bytes, expected, "every byte arrived");
    Ok(elapsed)
}

/// Plain blocking TCP on loopback: one thread writes the batches, one reads them.
pub fn socketpair(batches: u64, batch_bytes: usize) -> std::io::Result<Duration> {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let src = payload(batch_bytes + 16);
    let start = Instant::now();
    let writer = std::thread::spawn(move || -> std::io::Result<()> {
        let mut s = std::net::TcpStream::connect(addr)?;
        s.set_nodelay(true)?;
        for _ in 0..batches {
            s.write_all(&src)?;
        }
        Ok(())
    });
    let (mut s, _) = listener.accept()?;
    let mut buf = vec![0u8; batch_bytes];
    for _ in 0..batches {
        s.read_exact(&mut buf)?;
    }
    let elapsed = start.elapsed();
    writer.join().expect("the writer finishes")?;
    Ok(elapsed)
}
