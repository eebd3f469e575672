//! The wire format of a TCP link between two processes, without any I/O: the handshake that
//! authenticates both ends, and the envelopes that multiplex channels over one stream.
//!
//! Handshake (both ends know the cluster secret; neither sends it):
//!
//! ```text
//! client → server   hello: "SFLINK01" | u32 version | u32 process | 32-byte nonce
//! server → client   hello (its own), then HMAC-SHA256(secret, "server" | client hello | server hello)
//! client → server   HMAC-SHA256(secret, "client" | client hello | server hello)
//! server → client   one byte 1: accepted (a refused client sees the connection close)
//! ```
//!
//! Each proof covers both nonces, so a recorded exchange cannot be replayed, and is checked in
//! constant time.
//!
//! After it, each direction is a sequence of envelopes of 32 bytes, little-endian:
//!
//! ```text
//! u32 kind | u32 tag | u32 channel | u32 value | 12 zero bytes | u32 crc32 of the 28 before
//! kind 1 BUFFER: `value` bytes follow, a sender's whole buffer of frames (each with its crc)
//! kind 2 CREDIT: the receiver of (`tag`, `channel`) released `value` more buffers
//! ```
//!
//! The envelope is 32 bytes so that a buffer's bytes start where they would in its ring's
//! buffer, at a multiple of 16 in the stream: with 20-byte envelopes (a tag added to the
//! 16 bytes before) every copy on the way was misaligned and a link moved 0.66× a plain
//! socket pair instead of 0.77× (`shardflow-bench shuffle`, old and new builds side by side).
//!
//! A link carries the channels of every job its two processes run together: the `tag` says
//! whose a channel is ([`LinkChannel`]), since exchange channel ids repeat from job to job and
//! from one attempt of a job to the next.
//!
//! A buffer is as the sender's exchange writer framed it, so the receiver hands the same
//! buffers to its shard as an in-process ring would: a barrier still ends its buffer.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::FrameError;
use crate::frame::FrameReader;

pub const HELLO_BYTES: usize = 48;
pub const PROOF_BYTES: usize = 32;
pub const ENVELOPE_BYTES: usize = 32;
const MAGIC: &[u8; 8] = b"SFLINK01";
/// 2: envelopes carry a tag (1 had none: one job per link).
const VERSION: u32 = 2;
const KIND_BUFFER: u32 = 1;
const KIND_CREDIT: u32 = 2;
/// The largest buffer an envelope may carry (as the rings: a larger one is an error).
pub const BUFFER_BYTES_MAX: usize = crate::ring::RING_BUFFER_BYTES_MAX;

/// What an end says first: who it is, and a fresh nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello {
    pub process: u32,
    pub nonce: [u8; 32],
}

impl Hello {
    /// A hello with a nonce from the kernel's random source.
    pub fn new(process: u32) -> std::io::Result<Self> {
        let mut nonce = [0u8; 32];
        let mut filled = 0;
        while filled < nonce.len() {
            // SAFETY: writes at most the rest of `nonce`.
            let n = unsafe {
                libc::getrandom(
                    nonce[filled..].as_mut_ptr() as *mut libc::c_void,
                    nonce.len() - filled,
                    0,
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e);
                }
            } else {
                filled += n as usize;
            }
        }
        Ok(Self { process, nonce })
    }

    pub fn encode(&self) -> [u8; HELLO_BYTES] {
        let mut b = [0u8; HELLO_BYTES];
        b[..8].copy_from_slice(MAGIC);
        b[8..12].copy_from_slice(&VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&self.process.to_le_bytes());
        b[16..].copy_from_slice(&self.nonce);
        b
    }

    pub fn decode(b: &[u8; HELLO_BYTES]) -> Result<Self, String> {
        if &b[..8] != MAGIC {
            return Err("not a shardflow link (bad greeting)".into());
        }
        let version = u32::from_le_bytes(b[8..12].try_into().expect("4 bytes"));
        if version != VERSION {
            return Err(format!(
                "link version {version}, this build speaks {VERSION}"
            ));
        }
        Ok(Self {
            process: u32::from_le_bytes(b[12..16].try_into().expect("4 bytes")),
            nonce: b[16..].try_into().expect("32 bytes"),
        })
    }
}

/// Which end a proof is from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Client,
    Server,
}

fn mac(secret: &[u8], role: Role, client: &Hello, server: &Hello) -> Hmac<Sha256> {
    let mut m = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    m.update(match role {
        Role::Client => b"client",
        Role::Server => b"server",
    });
    m.update(&client.encode());
    m.update(&server.encode());
    m
}

/// The proof that `role` knows the secret, for this pair of hellos.
pub fn proof(secret: &[u8], role: Role, client: &Hello, server: &Hello) -> [u8; PROOF_BYTES] {
    mac(secret, role, client, server)
        .finalize()
        .into_bytes()
        .into()
}

/// Whether `proof` is `role`'s proof for this pair of hellos (constant time).
pub fn verify(
    secret: &[u8],
    role: Role,
    client: &Hello,
    server: &Hello,
    proof: &[u8; PROOF_BYTES],
) -> bool {
    mac(secret, role, client, server)
        .verify_slice(proof)
        .is_ok()
}

/// Runs the client side of the handshake on a blocking stream (a control connection, a tool);
/// returns the server's hello. An error says what failed (`PermissionDenied`: the secret).
pub fn client_handshake<S: std::io::Read + std::io::Write>(
    stream: &mut S,
    me: u32,
    secret: &[u8],
) -> std::io::Result<Hello> {
    let refused = |what: String| std::io::Error::new(std::io::ErrorKind::PermissionDenied, what);
    let hello = Hello::new(me)?;
    stream.write_all(&hello.encode())?;
    let mut theirs = [0u8; HELLO_BYTES];
    stream.read_exact(&mut theirs)?;
    let server = Hello::decode(&theirs).map_err(refused)?;
    let mut proof = [0u8; PROOF_BYTES];
    stream.read_exact(&mut proof)?;
    if !verify(secret, Role::Server, &hello, &server, &proof) {
        return Err(refused("does not know the cluster secret".into()));
    }
    stream.write_all(&self::proof(secret, Role::Client, &hello, &server))?;
    let mut verdict = [0u8; 1];
    if stream.read_exact(&mut verdict).is_err() || verdict != [1] {
        return Err(refused(
            "refused this process's proof of the cluster secret (is the secret the same?)".into(),
        ));
    }
    Ok(server)
}

/// Runs the server side of the handshake on a blocking stream; returns the client's hello, or
/// why it was refused.
pub fn server_handshake<S: std::io::Read + std::io::Write>(
    stream: &mut S,
    me: u32,
    secret: &[u8],
) -> Result<Hello, String> {
    let io = |e: std::io::Error| format!("handshake: {e}");
    let mut theirs = [0u8; HELLO_BYTES];
    stream.read_exact(&mut theirs).map_err(io)?;
    let client = Hello::decode(&theirs)?;
    let hello = Hello::new(me).map_err(io)?;
    let mut out = hello.encode().to_vec();
    out.extend_from_slice(&proof(secret, Role::Server, &client, &hello));
    stream.write_all(&out).map_err(io)?;
    let mut theirs_proof = [0u8; PROOF_BYTES];
    stream.read_exact(&mut theirs_proof).map_err(io)?;
    if !verify(secret, Role::Client, &client, &hello, &theirs_proof) {
        return Err(format!(
            "process {} does not know the cluster secret",
            client.process
        ));
    }
    stream.write_all(&[1]).map_err(io)?;
    Ok(client)
}

/// A channel of a link: `id` is the exchange channel its frames name; `tag` tells apart the
/// jobs (and attempts of a job) whose channels share the link. A cluster tags each deployment
/// with a number of its own, so no buffer of one attempt can reach the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkChannel {
    pub tag: u32,
    pub id: u32,
}

impl LinkChannel {
    pub const fn new(tag: u32, id: u32) -> Self {
        Self { tag, id }
    }
}

impl std::fmt::Display for LinkChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "channel {} of tag {}", self.id, self.tag)
    }
}

/// Appends a BUFFER envelope for `bytes` of `channel` (the bytes follow it).
pub fn buffer_envelope(out: &mut Vec<u8>, channel: LinkChannel, bytes: usize) {
    debug_assert!(bytes <= BUFFER_BYTES_MAX);
    envelope(out, KIND_BUFFER, channel, bytes as u32);
}

/// Appends a CREDIT envelope: `count` buffers of `channel` released.
pub fn credit_envelope(out: &mut Vec<u8>, channel: LinkChannel, count: u32) {
    envelope(out, KIND_CREDIT, channel, count);
}

fn envelope(out: &mut Vec<u8>, kind: u32, channel: LinkChannel, value: u32) {
    let mut e = [0u8; ENVELOPE_BYTES];
    e[..4].copy_from_slice(&kind.to_le_bytes());
    e[4..8].copy_from_slice(&channel.tag.to_le_bytes());
    e[8..12].copy_from_slice(&channel.id.to_le_bytes());
    e[12..16].copy_from_slice(&value.to_le_bytes());
    let crc = crc32fast::hash(&e[..28]);
    e[28..].copy_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&e);
}

/// One envelope read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Envelope {
    /// A buffer of `channel`: its bytes are `Decoder::bytes(range)`, every frame checked.
    Buffer {
        channel: LinkChannel,
        range: std::ops::Range<usize>,
    },
    Credit {
        channel: LinkChannel,
        count: u32,
    },
}

/// What is wrong with a stream, and where: the link drops the peer with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("envelope at stream offset {offset}: {detail}")]
    Envelope { offset: u64, detail: String },
    #[error("{channel}, buffer at stream offset {offset}: {source}")]
    Frame {
        channel: LinkChannel,
        offset: u64,
        source: FrameError,
    },
}

/// Reads envelopes from the bytes of a stream as they come, validating each: the envelope's
/// crc, kind and size, and every frame of a buffer (length, kind, crc, channel) before it is
/// handed out. Nothing it returns has failed a check; after an error it returns nothing more.
///
/// ```
/// use shardflow_shuffle::link::{Decoder, Envelope, LinkChannel, credit_envelope};
/// let mut wire = Vec::new();
/// let channel = LinkChannel::new(3, 7);
/// credit_envelope(&mut wire, channel, 2);
/// let mut d = Decoder::new();
/// d.feed(&wire[..5]);
/// assert_eq!(d.next_envelope().unwrap(), None); // half an envelope: wait for more
/// d.feed(&wire[5..]);
/// assert_eq!(d.next_envelope().unwrap(), Some(Envelope::Credit { channel, count: 2 }));
/// ```
#[derive(Default)]
pub struct Decoder {
    bytes: Vec<u8>,
    /// Where the next envelope starts in `bytes`.
    pos: usize,
    /// Stream offset of `bytes[0]`.
    base: u64,
    failed: bool,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the stream.
    pub fn feed(&mut self, bytes: &[u8]) {
        self.compact();
        self.bytes.extend_from_slice(bytes);
    }

    /// Room to read into directly: `n` bytes at the end, to be confirmed with `filled`.
    pub fn spare(&mut self, n: usize) -> &mut [u8] {
        self.compact();
        let len = self.bytes.len();
        self.bytes.resize(len + n, 0);
        &mut self.bytes[len..]
    }

    /// Keeps `n` of the bytes last offered by `spare` (the rest were not read).
    pub fn filled(&mut self, offered: usize, n: usize) {
        debug_assert!(n <= offered);
        let len = self.bytes.len();
        self.bytes.truncate(len - offered + n);
    }

    /// Drops the bytes already handed out.
    fn compact(&mut self) {
        if self.pos > 0 {
            self.bytes.drain(..self.pos);
            self.base += self.pos as u64;
            self.pos = 0;
        }
    }

    /// The bytes of a buffer returned by `next_envelope` (valid until the next `feed` or `spare`).
    pub fn bytes(&self, range: std::ops::Range<usize>) -> &[u8] {
        &self.bytes[range]
    }

    /// The next whole envelope, `None` until more bytes come, or an error.
    pub fn next_envelope(&mut self) -> Result<Option<Envelope>, LinkError> {
        if self.failed {
            return Ok(None);
        }
        let r = self.read_one();
        self.failed = r.is_err();
        r
    }

    fn read_one(&mut self) -> Result<Option<Envelope>, LinkError> {
        let rest = &self.bytes[self.pos..];
        if rest.len() < ENVELOPE_BYTES {
            return Ok(None);
        }
        let offset = self.base + self.pos as u64;
        let bad = |detail: String| LinkError::Envelope { offset, detail };
        let u32_at = |i: usize| u32::from_le_bytes(rest[i..i + 4].try_into().expect("4 bytes"));
        let (kind, value, crc) = (u32_at(0), u32_at(12), u32_at(28));
        let channel = LinkChannel::new(u32_at(4), u32_at(8));
        let actual = crc32fast::hash(&rest[..28]);
        if actual != crc {
            return Err(bad(format!(
                "crc {crc:#010x} in the envelope, {actual:#010x} over its bytes"
            )));
        }
        match kind {
            KIND_CREDIT => {
                self.pos += ENVELOPE_BYTES;
                Ok(Some(Envelope::Credit {
                    channel,
                    count: value,
                }))
            }
            KIND_BUFFER => {
                let len = value as usize;
                if len > BUFFER_BYTES_MAX {
                    return Err(bad(format!(
                        "a buffer of {len} bytes, the limit is {BUFFER_BYTES_MAX}"
                    )));
                }
                if rest.len() < ENVELOPE_BYTES + len {
                    return Ok(None);
                }
                let start = self.pos + ENVELOPE_BYTES;
                let range = start..start + len;
                if len == 0 {
                    return Err(bad(format!("an empty buffer on {channel}")));
                }
                for f in FrameReader::new(&self.bytes[range.clone()], channel.id).require_crc(true)
                {
                    if let Err(source) = f {
                        return Err(LinkError::Frame {
                            channel,
                            offset: self.base + start as u64,
                            source,
                        });
                    }
                }
                self.pos = range.end;
                Ok(Some(Envelope::Buffer { channel, range }))
            }
            other => Err(bad(format!("unknown envelope kind {other}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{Checksum, FrameKind, write_frame};

    #[test]
    fn proofs_need_the_secret_and_both_nonces() {
        let c = Hello::new(1).unwrap();
        let s = Hello::new(2).unwrap();
        assert_ne!(c.nonce, s.nonce);
        let p = proof(b"secret", Role::Client, &c, &s);
        assert!(verify(b"secret", Role::Client, &c, &s, &p));
        assert!(!verify(b"secreT", Role::Client, &c, &s, &p));
        assert!(!verify(b"secret", Role::Server, &c, &s, &p));
        let other = Hello::new(2).unwrap();
        assert!(!verify(b"secret", Role::Client, &c, &other, &p));
        assert_eq!(Hello::decode(&c.encode()).unwrap(), c);
        let mut bad = c.encode();
        bad[0] = b'X';
        assert!(Hello::decode(&bad).is_err());
    }

    #[test]
    fn envelopes_round_trip_in_any_pieces() {
        let mut wire = Vec::new();
        let mut frames = crate::Buffer::new();
        write_frame(&mut frames, FrameKind::Data, 9, b"abc", Checksum::Compute).unwrap();
        write_frame(&mut frames, FrameKind::End, 9, &[], Checksum::Compute).unwrap();
        buffer_envelope(&mut wire, LinkChannel::new(1, 9), frames.len());
        wire.extend_from_slice(&frames);
        credit_envelope(&mut wire, LinkChannel::new(2, 4), 3);
        for cut in 0..wire.len() {
            let mut d = Decoder::new();
            let mut got = Vec::new();
            for piece in [&wire[..cut], &wire[cut..]] {
                d.feed(piece);
                while let Some(e) = d.next_envelope().unwrap() {
                    got.push(match e {
                        Envelope::Buffer { channel, range } => (channel, d.bytes(range).to_vec()),
                        Envelope::Credit { channel, count } => (channel, vec![count as u8]),
                    });
                }
            }
            assert_eq!(
                got,
                vec![
                    (LinkChannel::new(1, 9), frames.to_vec()),
                    (LinkChannel::new(2, 4), vec![3])
                ],
                "cut at {cut}"
            );
        }
    }

    /// SplitMix64.
    fn next(state: &mut u64) -> u64 {
        *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Feeds `wire` in random pieces; returns the buffers and credits handed out, and whether
    /// the stream ended in an error.
    fn decode(wire: &[u8], seed: &mut u64) -> (Vec<(LinkChannel, Vec<u8>)>, bool) {
        let mut d = Decoder::new();
        let mut got = Vec::new();
        let mut at = 0;
        while at < wire.len() {
            let n = (1 + next(seed) % 700) as usize;
            let piece = &wire[at..(at + n).min(wire.len())];
            at += piece.len();
            // Half the time through `spare`, as the link reads.
            if next(seed).is_multiple_of(2) {
                d.feed(piece);
            } else {
                let room = d.spare(piece.len() + 5);
                room[..piece.len()].copy_from_slice(piece);
                d.filled(piece.len() + 5, piece.len());
            }
            loop {
                match d.next_envelope() {
                    Ok(Some(Envelope::Buffer { channel, range })) => {
                        let bytes = d.bytes(range).to_vec();
                        // Nothing handed out has a frame that fails its checks.
                        assert!(
                            FrameReader::new(&bytes, channel.id)
                                .require_crc(true)
                                .all(|f| f.is_ok())
                        );
                        got.push((channel, bytes));
                    }
                    Ok(Some(Envelope::Credit { channel, count })) => {
                        got.push((channel, count.to_le_bytes().to_vec()))
                    }
                    Ok(None) => break,
                    Err(_) => return (got, true),
                }
            }
        }
        (got, false)
    }

    #[test]
    fn random_and_damaged_streams_never_panic_and_never_pass_damage() {
        // 3,000 streams of random bytes, and 3,000 valid streams with one byte damaged or cut
        // short: the decoder errs or waits, never panics, and what it hands out before the
        // damage is exactly what was sent.
        let mut seed = 0xfeed_u64;
        for round in 0..3_000 {
            let len = (next(&mut seed) % 3_000) as usize;
            let noise: Vec<u8> = (0..len).map(|_| next(&mut seed) as u8).collect();
            decode(&noise, &mut seed);

            let mut wire = Vec::new();
            let mut sent = Vec::new();
            for _ in 0..1 + next(&mut seed) % 4 {
                let channel =
                    LinkChannel::new((next(&mut seed) % 2) as u32, (next(&mut seed) % 3) as u32);
                if next(&mut seed).is_multiple_of(3) {
                    let count = (next(&mut seed) % 5) as u32;
                    credit_envelope(&mut wire, channel, count);
                    sent.push((channel, count.to_le_bytes().to_vec()));
                } else {
                    let mut frames = crate::Buffer::new();
                    for _ in 0..1 + next(&mut seed) % 3 {
                        let payload: Vec<u8> = (0..next(&mut seed) % 300)
                            .map(|_| next(&mut seed) as u8)
                            .collect();
                        write_frame(
                            &mut frames,
                            FrameKind::Data,
                            channel.id,
                            &payload,
                            Checksum::Compute,
                        )
                        .unwrap();
                    }
                    buffer_envelope(&mut wire, channel, frames.len());
                    wire.extend_from_slice(&frames);
                    sent.push((channel, frames.to_vec()));
                }
            }
            let (clean, failed) = decode(&wire, &mut seed);
            assert!(!failed && clean == sent, "round {round}: a clean stream");
            let mut damaged = wire.clone();
            match next(&mut seed) % 3 {
                0 => damaged.truncate((next(&mut seed) as usize) % wire.len()),
                _ => {
                    let at = (next(&mut seed) as usize) % wire.len();
                    damaged[at] ^= 1 << (next(&mut seed) % 8);
                }
            }
            let (got, _) = decode(&damaged, &mut seed);
            assert!(
                got.len() <= sent.len() && got[..] == sent[..got.len()],
                "round {round}: damage passed: sent {sent:?} got {got:?}"
            );
        }
    }
}
