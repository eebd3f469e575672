//! `socket_text_stream`: lines from a TCP server, read by shard 0 (the source is not parallel,
//! as Flink's is not). The stream ends when the server closes the connection.

use std::net::ToSocketAddrs;

use futures_lite::AsyncReadExt;
use glommio::net::TcpStream;
use shardflow_core::JobError;
use shardflow_core::operator::OperatorContext;
use shardflow_core::source::{Source, SourceStatus};

const READ_BYTES: usize = 64 << 10;
/// The longest line accepted from a socket.
pub const SOCKET_LINE_BYTES_MAX: usize = 16 << 20;

pub struct SocketTextSource {
    address: String,
    active: bool,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
    carry: Vec<u8>,
    line: u64,
    ctx: OperatorContext,
}

impl SocketTextSource {
    /// `active`: whether this shard reads the socket (the others end at once).
    pub fn new(address: String, active: bool, ctx: OperatorContext) -> Self {
        Self {
            address,
            active,
            stream: None,
            buf: vec![0; READ_BYTES],
            carry: Vec::new(),
            line: 0,
            ctx,
        }
    }

    fn error(&self, message: &'static str, source: std::io::Error) -> JobError {
        JobError::Socket {
            address: self.address.clone(),
            message,
            source,
        }
    }

    fn emit(&mut self, out: &mut Vec<String>) -> Result<(), JobError> {
        self.line += 1;
        let mut bytes: &[u8] = &self.carry;
        if bytes.last() == Some(&b'\r') {
            bytes = &bytes[..bytes.len() - 1];
        }
        match std::str::from_utf8(bytes) {
            Ok(s) => out.push(s.to_owned()),
            Err(_) => match self.ctx.config.on_malformed {
                shardflow_core::OnMalformed::SkipAndCount => self.ctx.counters.add_skipped(1),
                shardflow_core::OnMalformed::Fail => {
                    return Err(JobError::Socket {
                        address: self.address.clone(),
                        message: "line is not valid UTF-8",
                        source: std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            format!("line {} of the stream", self.line),
                        ),
                    });
                }
            },
        }
        self.carry.clear();
        Ok(())
    }
}

impl Source<String> for SocketTextSource {
    async fn next_batch(
        &mut self,
        out: &mut Vec<String>,
        _max_records: usize,
    ) -> Result<SourceStatus, JobError> {
        if !self.active {
            return Ok(SourceStatus::End);
        }
        if self.stream.is_none() {
            let addr = self
                .address
                .to_socket_addrs()
                .map_err(|e| self.error("cannot resolve", e))?
                .next()
                .ok_or_else(|| {
                    self.error(
                        "cannot resolve",
                        std::io::Error::new(std::io::ErrorKind::NotFound, "no address"),
                    )
                })?;
            let stream = TcpStream::connect(addr)
                .await
                .map_err(|e| self.error("cannot connect", e.into()))?;
            self.stream = Some(stream);
        }
        loop {
            let stream = self.stream.as_mut().expect("connected above");
            let n = stream
                .read(&mut self.buf)
                .await
                .map_err(|e| JobError::Socket {
                    address: self.address.clone(),
                    message: "cannot read",
                    source: e,
                })?;
            if n == 0 {
                if !self.carry.is_empty() {
                    self.emit(out)?;
                }
                return Ok(SourceStatus::End);
            }
            let mut rest = 0;
            let data = std::mem::take(&mut self.buf);
            for i in memchr::memchr_iter(b'\n', &data[..n]) {
                self.carry.extend_from_slice(&data[rest..i]);
                rest = i + 1;
                self.emit(out)?;
            }
            self.carry.extend_from_slice(&data[rest..n]);
            self.buf = data;
            if self.carry.len() > SOCKET_LINE_BYTES_MAX {
                return Err(JobError::Socket {
                    address: self.address.clone(),
                    message: "line too long",
                    source: std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!(
                            "line {} exceeds {SOCKET_LINE_BYTES_MAX} bytes",
                            self.line + 1
                        ),
                    ),
                });
            }
            // Hand on what a read brought: the next read may wait for a long time.
            // (At most one read's lines, READ_BYTES worth, whatever `max_records` says.)
            if !out.is_empty() {
                return Ok(SourceStatus::More);
            }
        }
    }
}
