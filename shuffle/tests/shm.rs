//! The shared-memory ring against what was sent: in one thread, across threads that park, and
//! across two processes (this test binary re-run as the sender); damaged bookkeeping and bad
//! attachments are errors naming the file.

mod common;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{block_on, buffer, receive_all, send_all};

use shardflow_shuffle::bell::Bell;
use shardflow_shuffle::frame::FrameReader;
use shardflow_shuffle::shm::{ShmConfig, attach_sender, create_receiver};
use shardflow_shuffle::{Buffer, ChannelError, RingReceiver, RingSender};

fn shm_dir() -> tempfile::TempDir {
    if Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm").expect("a directory in /dev/shm")
    } else {
        tempfile::tempdir().expect("a temporary directory")
    }
}

fn pair(dir: &Path, channel: u32, config: ShmConfig) -> (RingSender, RingReceiver, Arc<Bell>) {
    let bell = Arc::new(Bell::create(&dir.join("me.bell")).unwrap());
    let path = dir.join(format!("ring-{channel}"));
    let rx = create_receiver(&path, channel, config, bell.clone()).unwrap();
    let tx = attach_sender(&path, channel, bell.clone()).unwrap();
    (tx, rx, bell)
}

const SMALL: ShmConfig = ShmConfig {
    slots: 4,
    slot_bytes: 4096,
};

#[test]
fn buffers_arrive_whole_in_order_read_in_place() {
    let dir = shm_dir();
    let (tx, rx, _bell) = pair(dir.path(), 3, SMALL);
    let seed = 0x5eed;
    let n = 2_000u64;
    let (mut sent, mut received, mut in_place) = (0u64, 0u64, 0u64);
    let mut expected: VecDeque<Buffer> = VecDeque::new();
    while received < n {
        while sent < n {
            let Some(mut b) = tx.try_take_buffer().unwrap() else {
                break;
            };
            let want = buffer(seed, sent, 3);
            b.extend_from_slice(&want);
            expected.push_back(want);
            tx.send(b);
            sent += 1;
        }
        while let Some(b) = rx.try_recv().unwrap() {
            let want = expected.pop_front().expect("nothing extra arrives");
            assert_eq!(&b[..], &want[..], "buffer {received}");
            assert_eq!(b.as_ptr() as usize % 16, 0, "payloads stay aligned");
            for f in FrameReader::new(&b, 3).require_crc(true) {
                f.unwrap();
            }
            in_place += b.in_place() as u64;
            assert_eq!(b.in_place(), want.len() <= 4096, "buffer {received}");
            rx.release(b);
            received += 1;
        }
    }
    assert!(
        in_place > n / 2 && in_place < n,
        "{in_place} of {n} in place"
    );
    drop(tx);
    assert!(matches!(
        rx.try_recv(),
        Err(ChannelError::Closed { channel: 3 })
    ));
}

#[test]
fn parked_ends_are_woken_by_the_bell() {
    // Both ends park whenever they must wait (no credit, nothing to read): only the doorbell
    // wakes them, so a lost wake-up hangs this test.
    let dir = shm_dir();
    let (tx, rx, _bell) = pair(dir.path(), 8, SMALL);
    let n = 5_000;
    let sender = std::thread::spawn(move || block_on(send_all(tx, 42, n, 8)));
    assert_eq!(block_on(receive_all(&rx, 42, 8)), n);
    sender.join().unwrap();
}

const CHILD_RING: &str = "SHARDFLOW_TEST_SHM_RING";
const CHILD_BELL: &str = "SHARDFLOW_TEST_SHM_BELL";

/// The sending process of `two_processes_share_a_ring` (runs only when re-run by it).
#[test]
#[ignore = "the child half of two_processes_share_a_ring"]
fn child_sender() {
    let (Ok(ring), Ok(bell)) = (std::env::var(CHILD_RING), std::env::var(CHILD_BELL)) else {
        return;
    };
    let bell = Arc::new(Bell::create(&PathBuf::from(bell)).unwrap());
    // The parent makes the ring before it starts us; attach as soon as it is there.
    let tx = attach_sender(Path::new(&ring), 21, bell).unwrap();
    block_on(send_all(tx, 7, 3_000, 21));
}

#[test]
fn two_processes_share_a_ring() {
    let dir = shm_dir();
    let bell = Arc::new(Bell::create(&dir.path().join("parent.bell")).unwrap());
    let path = dir.path().join("ring-21");
    let rx = create_receiver(&path, 21, ShmConfig::default(), bell).unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "child_sender", "--nocapture"])
        .env(CHILD_RING, &path)
        .env(CHILD_BELL, dir.path().join("child.bell"))
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert_eq!(block_on(receive_all(&rx, 7, 21)), 3_000);
    assert!(child.wait().unwrap().success());
    assert!(
        !path.exists(),
        "the ring's file is unlinked once both ends hold it"
    );
}

#[test]
fn a_slot_length_past_the_slot_is_an_error_naming_file_and_slot() {
    let dir = shm_dir();
    let (tx, rx, _bell) = pair(dir.path(), 5, SMALL);
    let mut b = tx.try_take_buffer().unwrap().unwrap();
    b.extend_from_slice(&buffer(1, 0, 5));
    tx.send(b);
    // A peer that writes what no sender writes: slot 0 claims more than a slot holds.
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.path().join("ring-5"))
        .unwrap();
    file.write_all_at(&100_000u64.to_le_bytes(), 1024).unwrap();
    let err = rx.try_recv().err().expect("an error");
    let msg = err.to_string();
    assert!(
        matches!(err, ChannelError::Malformed { channel: 5, .. }),
        "{msg}"
    );
    assert!(
        msg.contains("ring-5") && msg.contains("slot 0") && msg.contains("100000"),
        "{msg}"
    );
}

#[test]
fn attaching_to_the_wrong_ring_is_refused_with_its_name() {
    let dir = shm_dir();
    let (_tx, _rx, bell) = pair(dir.path(), 9, SMALL);
    let path = dir.path().join("ring-9");
    let second = attach_sender(&path, 9, bell.clone()).err().unwrap();
    assert!(second.to_string().contains("attached already"), "{second}");
    let dir2 = shm_dir();
    let rx = create_receiver(&dir2.path().join("r"), 9, SMALL, bell.clone()).unwrap();
    let wrong = attach_sender(&dir2.path().join("r"), 10, bell.clone())
        .err()
        .unwrap();
    assert!(
        wrong.to_string().contains("channel 9, not 10") && wrong.to_string().contains("/r"),
        "{wrong}"
    );
    drop(rx);
    std::fs::write(dir2.path().join("junk"), vec![7u8; 8192]).unwrap();
    let junk = attach_sender(&dir2.path().join("junk"), 9, bell)
        .err()
        .unwrap();
    assert!(
        junk.to_string().contains("junk") && junk.to_string().contains("no ring header"),
        "{junk}"
    );
}

#[test]
fn a_receiver_gone_stops_the_sender() {
    let dir = shm_dir();
    let (tx, rx, _bell) = pair(dir.path(), 4, SMALL);
    drop(rx);
    assert!(matches!(
        tx.try_take_buffer(),
        Err(ChannelError::Closed { channel: 4 })
    ));
}
