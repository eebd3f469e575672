//! A TCP link's decoder fed arbitrary bytes in arbitrary pieces: it must never panic, and
//! every buffer it hands out must consist of frames that pass every check.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardflow_shuffle::frame::FrameReader;
use shardflow_shuffle::link::{Decoder, Envelope};

fuzz_target!(|data: &[u8]| {
    let Some((&piece, bytes)) = data.split_first() else {
        return;
    };
    let piece = 1 + piece as usize;
    let mut d = Decoder::new();
    for chunk in bytes.chunks(piece) {
        d.feed(chunk);
        loop {
            match d.next_envelope() {
                Ok(Some(Envelope::Buffer { channel, range })) => {
                    let b = d.bytes(range);
                    assert!(FrameReader::new(b, channel.id).require_crc(true).all(|f| f.is_ok()));
                }
                Ok(Some(Envelope::Credit { .. })) => {}
                Ok(None) | Err(_) => break,
            }
        }
    }
});
