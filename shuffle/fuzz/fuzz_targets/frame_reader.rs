//! The frame reader over arbitrary bytes: frames or an error, never a panic, never a payload
//! outside the buffer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shardflow_shuffle::frame::FrameReader;

fuzz_target!(|data: &[u8]| {
    for f in FrameReader::new(data, 1).require_crc(true).flatten() {
        assert!(f.payload.len() <= data.len());
    }
});
