//! What the transport tests share: a seeded stream of framed buffers, a sender and a receiver
//! of it that park when they must wait, and a minimal executor to run them on a thread.

#![allow(dead_code)]

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use shardflow_shuffle::frame::{Checksum, FrameKind, FrameReader, write_frame};
use shardflow_shuffle::{Buffer, RingReceiver, RingSender};

/// SplitMix64.
pub fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Buffer `i` of a seeded stream: one or two DATA frames of pseudo-random bytes; some buffers
/// are larger than a 4 KiB slot.
pub fn buffer(seed: u64, i: u64, channel: u32) -> Buffer {
    let mut s = seed ^ i.wrapping_mul(0x2545_f491_4f6c_dd1d);
    let mut buf = Buffer::new();
    for _ in 0..1 + next(&mut s) % 2 {
        let len = match next(&mut s) % 10 {
            0 => 4096 + (next(&mut s) % 12_000) as usize,
            _ => (next(&mut s) % 3000) as usize,
        };
        let payload: Vec<u8> = (0..len).map(|_| next(&mut s) as u8).collect();
        write_frame(
            &mut buf,
            FrameKind::Data,
            channel,
            &payload,
            Checksum::Compute,
        )
        .unwrap();
    }
    buf
}

/// A minimal executor: polls `f` on this thread, parking until its waker is called.
pub fn block_on<F: Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(r) = f.as_mut().poll(&mut cx) {
            return r;
        }
        std::thread::park();
    }
}

pub async fn send_all(tx: RingSender, seed: u64, n: u64, channel: u32) {
    for i in 0..n {
        let mut b = std::future::poll_fn(|cx| tx.poll_take_buffer(cx))
            .await
            .unwrap();
        b.extend_from_slice(&buffer(seed, i, channel));
        if i == n - 1 {
            write_frame(&mut b, FrameKind::End, channel, &[], Checksum::Compute).unwrap();
        }
        tx.send(b);
    }
    std::future::poll_fn(|cx| tx.poll_sent(cx)).await.unwrap();
}

/// Receives until END, checking every buffer against the seeded stream; returns how many.
pub async fn receive_all(rx: &RingReceiver, seed: u64, channel: u32) -> u64 {
    let mut i = 0;
    loop {
        let b = std::future::poll_fn(|cx| match rx.try_recv() {
            Ok(Some(b)) => Poll::Ready(b),
            Ok(None) => {
                rx.register(cx);
                if rx.is_ready() {
                    cx.waker().wake_by_ref();
                }
                Poll::Pending
            }
            Err(e) => panic!("buffer {i}: {e}"),
        })
        .await;
        let want = buffer(seed, i, channel);
        assert_eq!(&b[..want.len()], &want[..], "buffer {i}");
        let ended = FrameReader::new(&b, channel)
            .require_crc(true)
            .map(|f| f.unwrap().kind)
            .any(|k| k == FrameKind::End);
        rx.release(b);
        i += 1;
        if ended {
            return i;
        }
    }
}
