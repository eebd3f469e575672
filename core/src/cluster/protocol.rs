//! The control RPC of a cluster: rkyv-encoded messages in frames (with their crc), over TCP
//! connections that open with the cluster secret's handshake
//! ([`shardflow_shuffle::link`]), as data links do.
//!
//! Control traffic is small and rare (registration, deployment, heartbeats, results), so a
//! connection is plain blocking std I/O on a thread of its own; the data path never sees it.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use rkyv::{Archive, Deserialize, Serialize};
use shardflow_shuffle::frame::{Checksum, FrameKind, FrameReader, HEADER_BYTES, align_up};
use shardflow_shuffle::link;

/// The largest control message (a deployment names every task manager: small).
pub const MESSAGE_BYTES_MAX: usize = 16 << 20;
/// How long the handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A task manager's share of a job's shards, and how to reach it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub task_manager: u32,
    pub first_shard: u32,
    pub shards: u32,
    /// The task manager's cores (`0..` the cores it offers) its shards are pinned to, the
    /// k-th shard to `cores[k % cores.len()]`: fewer than `shards` when the job asked for more
    /// shards than there were free cores. No other job's part takes them meanwhile.
    pub cores: Vec<u32>,
    /// Which host it is on (shared memory between task managers of one host, TCP otherwise).
    pub host: String,
    /// Its data listener.
    pub data_addr: String,
    /// Its shared-memory directory (for rings from task managers of its host).
    pub shm_dir: String,
    /// Its process id: names its ring files, so that a task manager can remove those of dead
    /// ones.
    pub pid: u32,
}

/// One attempt of a job, as the job manager deploys it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    pub job: u64,
    pub attempt: u32,
    /// The job's name, as `shardflow list` shows it.
    pub name: String,
    /// The job's command line (what `shardflow run` was given after `run`).
    pub args: Vec<String>,
    pub parallelism: u32,
    pub parts: Vec<Part>,
    /// Tells this deployment's channels from those of every other deployment on the TCP links
    /// it uses (a number the job manager gives each deployment once).
    pub tag: u32,
    /// The checkpoint directory to resume from (its newest complete checkpoint): a restart
    /// after a failure.
    pub restore_from: Option<String>,
}

/// A running job, as `shardflow list` shows it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct JobInfo {
    pub job: u64,
    pub name: String,
    pub attempt: u32,
    pub parallelism: u32,
    /// The task managers its attempt runs on.
    pub task_managers: Vec<u32>,
}

impl std::fmt::Display for JobInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}\t{}\tP = {}\tattempt {}\ttask managers {:?}",
            self.job, self.name, self.parallelism, self.attempt, self.task_managers
        )
    }
}

/// Every message of the control protocol.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Message {
    // Task manager → job manager.
    /// A task manager offers `cores` shards; `host` identifies its machine and network.
    Register {
        cores: u32,
        host: String,
        /// The machine (its boot id): task managers of one machine pin to different CPUs,
        /// whatever their hosts (network namespaces are hosts of one machine).
        machine: String,
        shm_dir: String,
        pid: u32,
    },
    /// Its data listener is up (after `Registered`: the id names its links).
    DataAddress {
        addr: String,
    },
    Heartbeat,
    /// Its part of an attempt ended; `error` says why it failed.
    AttemptEnded {
        job: u64,
        attempt: u32,
        error: Option<String>,
    },
    /// Its shards are built and take checkpoints into `dir` (shared by every task manager),
    /// whose newest complete one is `base`.
    CheckpointsReady {
        job: u64,
        attempt: u32,
        dir: String,
        base: u64,
        interval_ms: u64,
        retain: u32,
    },
    /// Its part of checkpoint `id`: its operators' snapshots (an rkyv `Vec<OperatorSnapshot>`).
    CheckpointPart {
        job: u64,
        attempt: u32,
        id: u64,
        acks: Vec<u8>,
        bytes_added: u64,
        bytes_total: u64,
    },
    /// The job's last output is committed (after `CommitJobEnd`), or why not.
    JobEndCommitted {
        job: u64,
        attempt: u32,
        error: Option<String>,
    },
    CheckpointDeclined {
        job: u64,
        attempt: u32,
        id: u64,
        reason: String,
    },
    // Job manager → task manager.
    /// `savepoint`: the checkpoint is also a savepoint (always aligned).
    TriggerCheckpoint {
        job: u64,
        attempt: u32,
        id: u64,
        savepoint: bool,
    },
    /// Every part of the attempt finished: commit the sinks' last output.
    CommitJobEnd {
        job: u64,
        attempt: u32,
    },
    /// Checkpoint `id`'s metadata is written: sinks may commit up to it.
    CheckpointComplete {
        job: u64,
        attempt: u32,
        id: u64,
    },
    /// Its id, and the first of this host's CPUs its shards take (task managers of one host
    /// pin their shards to different cores).
    Registered {
        id: u32,
        first_cpu: u32,
    },
    Deploy(Deployment),
    CancelAttempt {
        job: u64,
        attempt: u32,
    },
    // Client → job manager.
    Submit {
        name: String,
        args: Vec<String>,
        parallelism: Option<u32>,
    },
    ListJobs,
    /// A savepoint of the running job `name` (its name, or its id) into a new directory under
    /// `dir` (a path the job manager can write); `cancel`: stop the job once it is taken.
    SavepointJob {
        name: String,
        dir: String,
        cancel: bool,
    },
    /// Cancels the running job `name` (its name, or its id).
    CancelJob {
        name: String,
    },
    // Job manager → client.
    /// No core is free for the job yet: it waits (`reason`), then `Accepted` or `Refused`.
    Waiting {
        reason: String,
    },
    Accepted {
        job: u64,
        parallelism: u32,
    },
    JobEnded {
        error: Option<String>,
        task_managers: u32,
        /// Attempts it took (restarts after failures, plus one).
        attempts: u32,
        /// Shards of its last attempt.
        parallelism: u32,
    },
    SavepointTaken {
        path: String,
    },
    Jobs {
        running: Vec<JobInfo>,
    },
    Cancelled {
        job: u64,
    },
    Refused {
        reason: String,
    },
}

/// An authenticated control connection.
pub struct Connection {
    stream: TcpStream,
    peer: String,
    buf: rkyv::util::AlignedVec<16>,
}

impl Connection {
    /// Connects to `addr` and proves the secret (as `process`: 0 for a client or a task
    /// manager not yet registered).
    pub fn connect(addr: &str, process: u32, secret: &[u8]) -> std::io::Result<Self> {
        let sock: SocketAddr = addr
            .parse()
            .or_else(|_| {
                std::net::ToSocketAddrs::to_socket_addrs(addr)
                    .map_err(|e| e.to_string())
                    .and_then(|mut a| a.next().ok_or_else(|| "no address".to_string()))
            })
            .map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("job manager address {addr}: {e}"),
                )
            })?;
        let mut stream = TcpStream::connect_timeout(&sock, HANDSHAKE_TIMEOUT)
            .map_err(|e| std::io::Error::new(e.kind(), format!("cannot connect to {addr}: {e}")))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
        link::client_handshake(&mut stream, process, secret)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{addr}: {e}")))?;
        stream.set_read_timeout(None)?;
        Ok(Self {
            stream,
            peer: addr.to_string(),
            buf: rkyv::util::AlignedVec::new(),
        })
    }

    /// Runs the server side of the handshake on an accepted connection; returns the peer's
    /// claimed process id with the connection.
    pub fn accept(mut stream: TcpStream, me: u32, secret: &[u8]) -> Result<(Self, u32), String> {
        let peer = stream
            .peer_addr()
            .map_or_else(|_| "an unknown address".to_string(), |a| a.to_string());
        let io = |e: std::io::Error| format!("{peer}: handshake: {e}");
        stream.set_nodelay(true).map_err(io)?;
        stream
            .set_read_timeout(Some(HANDSHAKE_TIMEOUT))
            .map_err(io)?;
        let client =
            link::server_handshake(&mut stream, me, secret).map_err(|e| format!("{peer}: {e}"))?;
        stream.set_read_timeout(None).map_err(io)?;
        Ok((
            Self {
                stream,
                peer,
                buf: rkyv::util::AlignedVec::new(),
            },
            client.process,
        ))
    }

    /// This end's address (the interface that reaches the peer).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.stream.local_addr()
    }

    /// Who is at the other end (its address).
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// A second handle on the connection (one thread reads, another writes).
    pub fn try_clone(&self) -> std::io::Result<Self> {
        Ok(Self {
            stream: self.stream.try_clone()?,
            peer: self.peer.clone(),
            buf: rkyv::util::AlignedVec::new(),
        })
    }

    pub fn set_read_timeout(&self, t: Option<Duration>) -> std::io::Result<()> {
        self.stream.set_read_timeout(t)
    }

    pub fn set_write_timeout(&self, t: Option<Duration>) -> std::io::Result<()> {
        self.stream.set_write_timeout(t)
    }

    /// Closes both directions (the reader on the other end sees the end at once).
    pub fn shutdown(&self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
    }

    pub fn send(&mut self, m: &Message) -> std::io::Result<()> {
        let payload = rkyv::to_bytes::<rkyv::rancor::Error>(m)
            .map_err(|e| std::io::Error::other(format!("cannot encode {m:?}: {e}")))?;
        self.buf.clear();
        shardflow_shuffle::frame::write_frame(
            &mut self.buf,
            FrameKind::Data,
            0,
            &payload,
            Checksum::Compute,
        )
        .map_err(std::io::Error::other)?;
        self.stream.write_all(&self.buf)
    }

    /// The next message; an error names the peer and what was wrong with its bytes.
    pub fn recv(&mut self) -> std::io::Result<Message> {
        let bad = |what: String| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("control connection from {}: {what}", self.peer),
            )
        };
        self.buf.clear();
        self.buf.resize(HEADER_BYTES, 0);
        self.stream.read_exact(&mut self.buf[..HEADER_BYTES])?;
        let length = u32::from_le_bytes(self.buf[0..4].try_into().expect("4 bytes")) as usize;
        if length > MESSAGE_BYTES_MAX {
            return Err(bad(format!(
                "a message of {length} bytes (the limit is {MESSAGE_BYTES_MAX})"
            )));
        }
        let total = align_up(HEADER_BYTES + length);
        self.buf.resize(total, 0);
        self.stream.read_exact(&mut self.buf[HEADER_BYTES..total])?;
        let frame = FrameReader::new(&self.buf, 0)
            .require_crc(true)
            .next()
            .expect("a whole frame was read")
            .map_err(|e| bad(e.to_string()))?;
        let mut aligned = rkyv::util::AlignedVec::<16>::new();
        aligned.extend_from_slice(frame.payload);
        rkyv::from_bytes::<Message, rkyv::rancor::Error>(&aligned)
            .map_err(|e| bad(format!("not a control message: {e}")))
    }
}

/// This machine: its boot id.
pub fn machine_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown-boot".into())
}

/// This machine and network namespace: task managers with the same host id share memory;
/// others talk TCP. The boot id tells machines apart, the network namespace's inode tells
/// apart the "hosts" of one machine that tests make with `ip netns`.
pub fn host_id() -> String {
    let boot = machine_id();
    let net = std::fs::read_link("/proc/self/ns/net")
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown-net".into());
    format!("{boot}/{net}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_damage_is_refused() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = std::thread::spawn(move || {
            let (s, _) = listener.accept().unwrap();
            let (mut c, process) = Connection::accept(s, 0, b"k").unwrap();
            assert_eq!(process, 7);
            let m = c.recv().unwrap();
            c.send(&m).unwrap();
            // A damaged frame: the crc fails, and the error names the peer.
            let e = c.recv().unwrap_err();
            assert!(e.to_string().contains("crc"), "{e}");
        });
        let mut c = Connection::connect(&addr, 7, b"k").unwrap();
        let m = Message::Deploy(Deployment {
            job: 3,
            attempt: 1,
            name: "wordcount".into(),
            args: vec!["wordcount".into(), "--lines".into(), "10".into()],
            parallelism: 4,
            parts: vec![Part {
                task_manager: 1,
                first_shard: 0,
                shards: 2,
                cores: vec![1, 3],
                host: host_id(),
                data_addr: "127.0.0.1:1".into(),
                shm_dir: "/dev/shm".into(),
                pid: 42,
            }],
            tag: 9,
            restore_from: Some("/ck".into()),
        });
        c.send(&m).unwrap();
        assert_eq!(c.recv().unwrap(), m);
        let mut raw = rkyv::util::AlignedVec::<16>::new();
        shardflow_shuffle::frame::write_frame(
            &mut raw,
            FrameKind::Data,
            0,
            &rkyv::to_bytes::<rkyv::rancor::Error>(&Message::Heartbeat).unwrap(),
            Checksum::Compute,
        )
        .unwrap();
        raw[HEADER_BYTES] ^= 1;
        c.stream.write_all(&raw).unwrap();
        server.join().unwrap();
        assert!(
            Connection::connect(&addr, 7, b"k").is_err(),
            "nobody listens"
        );
    }
}
