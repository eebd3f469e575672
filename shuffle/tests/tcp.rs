//! The TCP transport between two networks on loopback: buffers arrive whole and in order on
//! every channel with credit flowing back; jobs sharing a link keep their channels apart, and
//! a retired job's buffers reach no one; a peer without the secret is refused; a peer that
//! sends a damaged frame, or disappears, fails its rings with an error naming it.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{block_on, buffer, receive_all, send_all};
use shardflow_shuffle::frame::FrameReader;
use shardflow_shuffle::link::{self, LinkChannel};
use shardflow_shuffle::tcp::{NetConfig, Network};
use shardflow_shuffle::{ChannelError, RingConfig};

fn net(process: u32, secret: &str) -> Network {
    Network::start(NetConfig {
        process,
        bind: "127.0.0.1:0".parse().unwrap(),
        secret: secret.as_bytes().to_vec(),
    })
    .unwrap()
}

/// Channel `id` of the one job these tests run (tag 0).
fn ch(id: u32) -> LinkChannel {
    LinkChannel::new(0, id)
}

const SMALL: RingConfig = RingConfig {
    buffers: 2,
    buffer_bytes: 32 << 10,
};

#[test]
fn channels_in_both_directions_share_one_link() {
    let (a, b) = (net(1, "s3cret"), net(2, "s3cret"));
    a.connect(2, b.local_addr()).unwrap();
    // Three channels 1 → 2 and one 2 → 1, two credits each: the senders outrun the receivers
    // and wait for credit from across the link, thousands of times.
    let mut senders = Vec::new();
    for channel in [10u32, 11, 12] {
        let tx = a.sender(2, ch(channel), SMALL);
        assert!(tx.is_foreign());
        senders.push(std::thread::spawn(move || {
            block_on(send_all(tx, channel as u64, 2_000, channel))
        }));
    }
    let back = b.sender(1, ch(20), SMALL);
    senders.push(std::thread::spawn(move || {
        block_on(send_all(back, 99, 2_000, 20))
    }));
    let mut receivers = Vec::new();
    for channel in [10u32, 11, 12] {
        let rx = b.receiver(1, ch(channel), SMALL);
        assert!(rx.is_foreign());
        receivers.push(std::thread::spawn(move || {
            block_on(receive_all(&rx, channel as u64, channel))
        }));
    }
    let rx = a.receiver(2, ch(20), SMALL);
    assert_eq!(block_on(receive_all(&rx, 99, 20)), 2_000);
    for r in receivers {
        assert_eq!(r.join().unwrap(), 2_000);
    }
    for s in senders {
        s.join().unwrap();
    }
    assert_eq!(a.failure(2), None);
    assert_eq!(b.failure(1), None);
}

#[test]
fn jobs_on_one_link_keep_their_channels_apart() {
    // Two jobs (tags 1 and 2) use the same channel ids over one link, at once, each with its
    // own seeded stream: every receiver gets its own job's stream whole and in order.
    let (a, b) = (net(1, "tags"), net(2, "tags"));
    a.connect(2, b.local_addr()).unwrap();
    let mut threads = Vec::new();
    for tag in [1u32, 2] {
        for id in [10u32, 11] {
            let seed = (tag as u64) << 32 | id as u64;
            let tx = a.sender(2, LinkChannel::new(tag, id), SMALL);
            threads.push(std::thread::spawn(move || {
                block_on(send_all(tx, seed, 500, id));
                0
            }));
            let rx = b.receiver(1, LinkChannel::new(tag, id), SMALL);
            threads.push(std::thread::spawn(move || {
                block_on(receive_all(&rx, seed, id))
            }));
        }
    }
    let received: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(received, 4 * 500);
    assert_eq!(a.failure(2), None);
    assert_eq!(b.failure(1), None);
}

#[test]
fn deployments_that_connect_at_once_share_one_connection() {
    // Two jobs deploying at once each ask for the link to process 2. Two connections would
    // race: each end may keep a different one and drop the other, failing the link. The
    // second caller waits for the first one's connection.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = std::thread::spawn(move || {
        let mut kept = Vec::new();
        listener.set_nonblocking(true).unwrap();
        let start = Instant::now();
        // Every connection that comes within the test's time, each through the handshake.
        while start.elapsed() < Duration::from_secs(2) {
            match listener.accept() {
                Ok((mut s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    link::server_handshake(&mut s, 2, b"once").unwrap();
                    kept.push(s);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        kept.len()
    });
    let a = net(1, "once");
    std::thread::scope(|s| {
        let calls: Vec<_> = (0..4).map(|_| s.spawn(|| a.connect(2, addr))).collect();
        for c in calls {
            c.join().unwrap().unwrap();
        }
    });
    assert_eq!(
        accepted.join().unwrap(),
        1,
        "one connection for every caller"
    );
}

#[test]
fn a_retired_tags_buffers_never_reach_the_next_attempt() {
    // An attempt (tag 1) fails while its peer's buffers are on the wire: they wait for a
    // receiver that never comes. Retiring the tag drops them, and what comes for it later;
    // the next attempt (tag 2, the same channel id) receives only its own stream.
    let b = net(2, "retire");
    let mut s = raw_client(b.local_addr(), 9, b"retire");
    let (old, new) = (LinkChannel::new(1, 20), LinkChannel::new(2, 20));
    let stale = buffer(1, 0, 20);
    let mut wire = Vec::new();
    link::buffer_envelope(&mut wire, old, stale.len());
    wire.extend_from_slice(&stale);
    s.write_all(&wire).unwrap();
    eventually("the stale buffer waits for a receiver", || {
        b.early_bytes() == stale.len() as u64
    });
    b.retire(1);
    eventually("retiring drops it", || b.early_bytes() == 0);
    let rx = b.receiver(9, new, SMALL);
    // After the retirement, another of tag 1, then the next attempt's own buffer: in stream
    // order, so by the time the second arrives the first was read and dropped.
    let fresh = buffer(2, 0, 20);
    let mut wire = Vec::new();
    link::buffer_envelope(&mut wire, old, stale.len());
    wire.extend_from_slice(&stale);
    link::buffer_envelope(&mut wire, new, fresh.len());
    wire.extend_from_slice(&fresh);
    s.write_all(&wire).unwrap();
    let got = recv_one(&rx).unwrap();
    assert_eq!(&got[..], &fresh[..], "the next attempt's own buffer");
    assert_eq!(b.early_bytes(), 0, "nothing of the retired tag is held");
    assert_eq!(
        b.failure(9),
        None,
        "a retired tag's buffers are no protocol error"
    );
}

#[test]
fn a_receiving_only_process_grants_credit() {
    // The receiving network has nothing of its own to send: only its shard's releases may wake
    // its writer to grant credit (a lost wake-up here hung the first version after 8 buffers).
    let (a, b) = (net(1, "one-way"), net(2, "one-way"));
    a.connect(2, b.local_addr()).unwrap();
    let tx = a.sender(2, ch(3), SMALL);
    let sender = std::thread::spawn(move || block_on(send_all(tx, 3, 500, 3)));
    let rx = b.receiver(1, ch(3), SMALL);
    assert_eq!(block_on(receive_all(&rx, 3, 3)), 500);
    sender.join().unwrap();
}

/// The next buffer `rx` receives (waiting for it), or its channel's failure.
fn recv_one(
    rx: &shardflow_shuffle::RingReceiver,
) -> Result<shardflow_shuffle::ring::Received, ChannelError> {
    block_on(std::future::poll_fn(|cx| match rx.try_recv() {
        Ok(Some(b)) => std::task::Poll::Ready(Ok(b)),
        Ok(None) => {
            rx.register(cx);
            if rx.is_ready() {
                cx.waker().wake_by_ref();
            }
            std::task::Poll::Pending
        }
        Err(e) => std::task::Poll::Ready(Err(e)),
    }))
}

/// Waits (bounded) for `f` to hold: an event on the network thread, not a timing.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < Duration::from_secs(20), "never: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_peer_without_the_secret_is_refused() {
    let b = net(2, "right");
    let c = net(3, "wrong");
    let err = c.connect(2, b.local_addr()).unwrap_err();
    assert!(
        err.to_string().contains("process 2") && err.to_string().contains("secret"),
        "{err}"
    );
    eventually("the refusal is counted", || b.refused() == 1);
    // Not even a greeting: refused too.
    let mut raw = std::net::TcpStream::connect(b.local_addr()).unwrap();
    raw.write_all(&[0u8; link::HELLO_BYTES]).unwrap();
    let mut rest = Vec::new();
    let _ = raw.read_to_end(&mut rest);
    assert!(rest.len() <= link::HELLO_BYTES + link::PROOF_BYTES);
    eventually("the second refusal is counted", || b.refused() == 2);
}

/// Connects to `addr` as process `me` by hand, through the handshake.
fn raw_client(addr: SocketAddr, me: u32, secret: &[u8]) -> std::net::TcpStream {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    link::client_handshake(&mut s, me, secret).unwrap();
    s
}

#[test]
fn a_damaged_frame_disconnects_the_peer_naming_it() {
    let b = net(2, "k");
    let rx = b.receiver(9, ch(20), SMALL);
    let mut s = raw_client(b.local_addr(), 9, b"k");
    // One good buffer, then one whose frame fails its crc.
    let good = buffer(5, 0, 20);
    let mut wire = Vec::new();
    link::buffer_envelope(&mut wire, ch(20), good.len());
    wire.extend_from_slice(&good);
    let mut bad = buffer(5, 1, 20);
    let last = bad.len() - 20;
    bad[last] ^= 0x40;
    link::buffer_envelope(&mut wire, ch(20), bad.len());
    wire.extend_from_slice(&bad);
    s.write_all(&wire).unwrap();
    let first = recv_one(&rx).expect("the good buffer arrives");
    assert_eq!(&first[..], &good[..]);
    rx.release(first);
    eventually("the peer is dropped", || b.failure(9).is_some());
    let err = loop {
        match rx.try_recv() {
            Err(e) => break e,
            Ok(Some(_)) => panic!("a damaged buffer reached the receiver"),
            Ok(None) => std::thread::sleep(Duration::from_millis(1)),
        }
    };
    let msg = err.to_string();
    assert!(
        matches!(err, ChannelError::Disconnected { channel: 20, .. }),
        "{msg}"
    );
    assert!(
        msg.contains("peer process 9") && msg.contains("channel 20") && msg.contains("crc"),
        "{msg}"
    );
    // The peer's connection is closed.
    let mut rest = Vec::new();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    assert_eq!(s.read_to_end(&mut rest).unwrap_or(0), 0);
}

#[test]
fn a_peer_that_goes_away_fails_its_rings() {
    let (a, b) = (net(1, "x"), net(2, "x"));
    a.connect(2, b.local_addr()).unwrap();
    let rx = b.receiver(1, ch(7), SMALL);
    let tx = b.sender(1, ch(8), SMALL);
    drop(a);
    let err = loop {
        match rx.try_recv() {
            Err(e) => break e,
            Ok(_) => std::thread::sleep(Duration::from_millis(1)),
        }
    };
    assert!(err.to_string().contains("peer process 1"), "{err}");
    eventually("the sender fails too", || tx.try_take_buffer().is_err());
    assert!(b.failure(1).unwrap().contains("peer process 1"));
}

#[test]
fn random_and_truncated_streams_into_a_receiver_never_reach_it() {
    // 40 peers, each sending (after a proper handshake) a valid buffer, then random bytes or a
    // damaged or truncated valid stream: the receiving shard gets only buffers whose every
    // frame passes its checks, then an error naming the peer; the network thread survives
    // them all (a clean link works afterwards).
    let b = net(2, "fuzz");
    let mut seed = 0xf00d_u64;
    for round in 0..40u32 {
        let peer = 100 + round;
        let rx = b.receiver(peer, ch(20), SMALL);
        let mut s = raw_client(b.local_addr(), peer, b"fuzz");
        let mut wire = Vec::new();
        let good = buffer(round as u64, 0, 20);
        link::buffer_envelope(&mut wire, ch(20), good.len());
        wire.extend_from_slice(&good);
        let mut tail = Vec::new();
        let next_buffer = buffer(round as u64, 1, 20);
        link::buffer_envelope(&mut tail, ch(20), next_buffer.len());
        tail.extend_from_slice(&next_buffer);
        match common::next(&mut seed) % 3 {
            0 => {
                let n = (common::next(&mut seed) % 5000) as usize;
                tail = (0..n).map(|_| common::next(&mut seed) as u8).collect();
            }
            1 => {
                let at = (common::next(&mut seed) as usize) % tail.len();
                tail[at] ^= 1 << (common::next(&mut seed) % 8);
            }
            _ => tail.truncate((common::next(&mut seed) as usize) % tail.len()),
        }
        wire.extend_from_slice(&tail);
        let _ = s.write_all(&wire);
        drop(s); // the stream ends: truncated, or after the damage
        let mut delivered = 0;
        let outcome = loop {
            match rx.try_recv() {
                Ok(Some(buf)) => {
                    assert!(
                        FrameReader::new(&buf, 20)
                            .require_crc(true)
                            .all(|f| f.is_ok()),
                        "round {round}: a damaged buffer reached the receiver"
                    );
                    delivered += 1;
                    rx.release(buf);
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(1)),
                Err(e) => break e,
            }
        };
        assert!(
            delivered >= 1,
            "round {round}: the good buffer arrives first"
        );
        assert!(
            outcome
                .to_string()
                .contains(&format!("peer process {peer}")),
            "round {round}: {outcome}"
        );
    }
    // The network is still whole.
    let a = net(1, "fuzz");
    a.connect(2, b.local_addr()).unwrap();
    let tx = a.sender(2, ch(5), SMALL);
    let sender = std::thread::spawn(move || block_on(send_all(tx, 1, 50, 5)));
    let rx = b.receiver(1, ch(5), SMALL);
    assert_eq!(block_on(receive_all(&rx, 1, 5)), 50);
    sender.join().unwrap();
}

#[test]
fn a_lone_channel_gets_the_links_whole_window() {
    use shardflow_shuffle::tcp::{LINK_WINDOW_BUFFERS, link_channel_buffers};
    // The window is the link's: a lone channel takes it all, many share it, none gets less
    // than the engine's default, and no ring more than a ring may hold.
    assert_eq!(link_channel_buffers(16, 1), LINK_WINDOW_BUFFERS);
    assert_eq!(link_channel_buffers(16, 4), LINK_WINDOW_BUFFERS / 4);
    assert_eq!(link_channel_buffers(16, 1_000), 16);
    assert_eq!(
        link_channel_buffers(10_000, 1),
        shardflow_shuffle::ring::RING_BUFFERS_MAX
    );
    let config = RingConfig {
        buffers: link_channel_buffers(16, 1),
        buffer_bytes: 32 << 10,
    };
    let (a, b) = (net(1, "w"), net(2, "w"));
    a.connect(2, b.local_addr()).unwrap();
    let tx = a.sender(2, ch(7), config);
    let rx = b.receiver(1, ch(7), config);
    // The whole window crosses while the receiver releases nothing: the peer's ring holds it
    // and its network thread took every buffer as within credit.
    for i in 0..LINK_WINDOW_BUFFERS as u64 {
        let mut buf = block_on(std::future::poll_fn(|cx| tx.poll_take_buffer(cx))).unwrap();
        buf.extend_from_slice(&buffer(7, i, 7));
        tx.send(buf);
    }
    let mut held = Vec::new();
    while held.len() < LINK_WINDOW_BUFFERS {
        let got = recv_one(&rx).unwrap();
        let want = buffer(7, held.len() as u64, 7);
        assert_eq!(&got[..], &want[..], "buffer {} arrives whole", held.len());
        held.push(got);
    }
    // One more waits for a release.
    let noop = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(noop);
    assert!(tx.poll_take_buffer(&mut cx).is_pending());
    for b in held {
        rx.release(b);
    }
    let mut buf = block_on(std::future::poll_fn(|cx| tx.poll_take_buffer(cx))).unwrap();
    buf.extend_from_slice(&buffer(7, 999, 7));
    tx.send(buf);
    assert_eq!(a.failure(2), None);
    assert_eq!(b.failure(1), None);
}
