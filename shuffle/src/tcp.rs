//! The TCP transport: one connection per pair of processes, every channel between them
//! multiplexed over it, with credit-based flow control across the network.
//!
//! A process's [`Network`] runs one thread with a glommio executor of its own that drives all
//! of the process's links. Shards never touch a socket: each channel is an ordinary in-process
//! ring between a shard and the network thread, marked foreign (its frames carry crcs and get
//! the full bytecheck), so the exchange code is the same for every transport.
//!
//! ```text
//!  shard ──ring──▶ net thread ──TCP──▶ net thread ──ring──▶ shard
//!        ◀credit──            ◀CREDIT─            ◀release─
//! ```
//!
//! Credits. The receiving ring has `buffers` buffers; the sending ring has as many, and the
//! network thread gives a sent buffer back to its shard only when the peer says (CREDIT) that
//! its shard released one. So a sender never has more buffers on the wire, in the peer's
//! kernel or in its ring than the receiver has room for, and a slow receiver stops the sender
//! on the other host exactly as it would in process: backpressure crosses the network.
//!
//! Writes gather whatever every channel has ready (buffers, credits) into one write of up to
//! 256 KiB; Nagle is off, so a lone watermark leaves at once. Reads go through a
//! [`Decoder`] that checks every envelope and every frame before a shard
//! sees it. A peer that sends a malformed envelope or frame, more than its credit, or data
//! for a channel no one receives on, is disconnected, and every ring to and from it fails with
//! an error naming the peer (process id and address) and what it sent.
//!
//! Several jobs share a link: each channel is a [`LinkChannel`], whose tag names its job's
//! deployment. When a deployment ends here, [`Network::retire`] drops what its peers still
//! send it (buffers a failed attempt's senders had on the wire), so nothing of one attempt
//! reaches the next, which reuses the channel ids under a new tag.
//!
//! Connections are authenticated by the cluster secret ([`link`]'s handshake); a
//! connection that fails it is refused, logged and counted.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::Duration;

use atomic_waker::AtomicWaker;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use glommio::{LocalExecutorBuilder, Placement};

use crate::link::{self, Decoder, Envelope, Hello, LinkChannel, Role};
use crate::ring::{Buffer, Received, RingConfig, RingReceiver, RingSender, foreign_ring};

/// One write gathers up to this much.
const WRITE_BYTES_MAX: usize = 256 << 10;
/// One read takes up to this much.
const READ_BYTES: usize = 256 << 10;
/// Bytes of buffers that may arrive for channels not registered yet (a receiver that registers
/// a moment after its sender started), per peer. More is a protocol error.
const EARLY_BYTES_MAX: usize = 64 << 20;
/// How long the network thread polls before it parks (as shards in throughput mode).
const SPIN_BEFORE_PARK: Duration = Duration::from_micros(200);
/// How long a handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Buffers of window a TCP link keeps per direction, however few channels cross it: a channel
/// gets at least `LINK_WINDOW_BUFFERS / channels` credits (see [`link_channel_buffers`]).
///
/// A link's throughput is its window over the round trip of a credit (the receiving shard
/// releases a buffer, the peer's network thread writes a CREDIT, this one reads it, the sending
/// shard takes the buffer: about 280 µs on two shared cores). With the engine's 16 buffers of
/// 32 KiB a channel, a link carrying one busy channel moved 0.55× a plain socket pair; 64
/// credits gave 0.71×, 128 about 0.8× (`shardflow-bench shuffle`). Sizing by the link rather
/// than the channel bounds the memory: 128 buffers of 40 KiB are 5 MiB a link and side, while
/// a link carrying hundreds of channels gives each the engine's default.
pub const LINK_WINDOW_BUFFERS: usize = 128;

/// The buffers (credits) of each of `channels` channels from one process to another over TCP:
/// the engine's `channel_buffers`, or more when the channels are too few to fill the link's
/// window. Both ends compute it from the same count, so the sender's credits and the
/// receiver's ring agree.
pub fn link_channel_buffers(channel_buffers: usize, channels: usize) -> usize {
    channel_buffers
        .max(LINK_WINDOW_BUFFERS.div_ceil(channels.max(1)))
        .min(crate::ring::RING_BUFFERS_MAX)
}

/// A process's place in the cluster's network.
#[derive(Clone)]
pub struct NetConfig {
    /// This process's id, unique in the cluster (a task manager's index).
    pub process: u32,
    /// Where to listen for peers (port 0: any free port).
    pub bind: SocketAddr,
    /// The cluster secret: every connection proves it knows it.
    pub secret: Vec<u8>,
}

enum Command {
    Connect {
        peer: u32,
        addr: SocketAddr,
        reply: std::sync::mpsc::Sender<std::io::Result<()>>,
    },
    Outgoing {
        peer: u32,
        channel: LinkChannel,
        rx: RingReceiver,
    },
    Incoming {
        peer: u32,
        channel: LinkChannel,
        tx: RingSender,
    },
    Retire {
        tag: u32,
    },
}

struct Control {
    commands: Mutex<VecDeque<Command>>,
    waker: AtomicWaker,
    stop: AtomicBool,
    /// Why each peer's link failed (the newest failure).
    failures: Mutex<HashMap<u32, String>>,
    /// Connections refused (failed handshakes).
    refused: AtomicU64,
    /// Bytes of buffers waiting for their receivers, over every peer.
    early_bytes: AtomicU64,
}

impl Control {
    fn send(&self, c: Command) {
        self.commands
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_back(c);
        self.waker.wake();
    }
}

/// A process's TCP transport: a listener, the links to its peers, and the thread that drives
/// them.
pub struct Network {
    control: Arc<Control>,
    local_addr: SocketAddr,
    config: NetConfig,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Network {
    /// Starts listening on `config.bind`, and the network thread.
    pub fn start(config: NetConfig) -> std::io::Result<Self> {
        if config.secret.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "a cluster needs a secret (--secret or SHARDFLOW_CLUSTER_SECRET)",
            ));
        }
        let listener = std::net::TcpListener::bind(config.bind).map_err(|e| {
            std::io::Error::new(e.kind(), format!("cannot listen on {}: {e}", config.bind))
        })?;
        let local_addr = listener.local_addr()?;
        let control = Arc::new(Control {
            commands: Mutex::new(VecDeque::new()),
            waker: AtomicWaker::new(),
            stop: AtomicBool::new(false),
            failures: Mutex::new(HashMap::new()),
            refused: AtomicU64::new(0),
            early_bytes: AtomicU64::new(0),
        });
        let (c, cfg) = (control.clone(), config.clone());
        let thread = std::thread::Builder::new()
            .name(format!("shardflow-net-{}", config.process))
            .spawn(move || {
                // Going to sleep costs glommio a membarrier (an IPI to every core of the
                // process): under a steady stream, spin briefly first.
                let ex = match LocalExecutorBuilder::new(Placement::Unbound)
                    .name("shardflow-net")
                    .spin_before_park(SPIN_BEFORE_PARK)
                    .make()
                {
                    Ok(ex) => ex,
                    Err(e) => {
                        eprintln!("shardflow: the network thread cannot start: {e}");
                        return;
                    }
                };
                ex.run(net_main(c, cfg, listener));
            })?;
        Ok(Self {
            control,
            local_addr,
            config,
            thread: Some(thread),
        })
    }

    /// Where peers reach this process.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn process(&self) -> u32 {
        self.config.process
    }

    /// Connects to process `peer` at `addr` and authenticates (blocks until done: call it
    /// while deploying, not from a shard). One end of each pair connects; the other accepts.
    /// Linked already: done at once; a connection to it under way (another job deploying):
    /// its outcome, so that a pair never has two connections.
    pub fn connect(&self, peer: u32, addr: SocketAddr) -> std::io::Result<()> {
        let (reply, answer) = std::sync::mpsc::channel();
        self.control.send(Command::Connect { peer, addr, reply });
        answer
            .recv_timeout(HANDSHAKE_TIMEOUT * 2)
            .unwrap_or_else(|_| {
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("connecting to process {peer} at {addr}: no answer"),
                ))
            })
    }

    /// The sending end of `channel` to process `peer` (its ring's buffers are the credits the
    /// peer's receiver grants: both ends use the same `config`).
    pub fn sender(&self, peer: u32, channel: LinkChannel, config: RingConfig) -> RingSender {
        let (tx, rx) = foreign_ring(channel.id, config);
        self.control.send(Command::Outgoing { peer, channel, rx });
        tx
    }

    /// The receiving end of `channel` from process `peer`.
    pub fn receiver(&self, peer: u32, channel: LinkChannel, config: RingConfig) -> RingReceiver {
        let (tx, rx) = foreign_ring(channel.id, config);
        self.control.send(Command::Incoming { peer, channel, tx });
        rx
    }

    /// Ends `tag` here: buffers of its channels that came before their receivers (or after
    /// them) are dropped, and so is whatever comes for it later. Call it once every ring of
    /// the tag on this side is dropped (its job's part here ended); a tag is not used again.
    /// (The network keeps 4 bytes a retired tag for its life.)
    pub fn retire(&self, tag: u32) {
        self.control.send(Command::Retire { tag });
    }

    /// Why the link to `peer` failed, if it did.
    pub fn failure(&self, peer: u32) -> Option<String> {
        self.control
            .failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&peer)
            .cloned()
    }

    /// Connections refused because they failed the handshake.
    pub fn refused(&self) -> u64 {
        self.control.refused.load(Ordering::Relaxed)
    }

    /// Bytes that came for channels no one receives on yet, held for their receivers.
    pub fn early_bytes(&self) -> u64 {
        self.control.early_bytes.load(Ordering::Relaxed)
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        self.control.stop.store(true, Ordering::SeqCst);
        self.control.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A channel this process sends on: the shard's buffers, and those on the wire awaiting credit.
struct Outgoing {
    rx: RingReceiver,
    /// Sent, not yet credited by the peer: given back to the shard one per credit.
    held: VecDeque<Received>,
    closed: bool,
}

/// A channel this process receives on.
struct Incoming {
    tx: RingSender,
    /// Empty buffers the peer may fill (credits granted).
    stash: Vec<Buffer>,
    closed: bool,
}

#[derive(Default)]
struct Peer {
    addr: Option<SocketAddr>,
    linked: bool,
    outgoing: HashMap<LinkChannel, Outgoing>,
    incoming: HashMap<LinkChannel, Incoming>,
    /// Buffers that came before their channel's receiver registered.
    early: VecDeque<(LinkChannel, Buffer)>,
    early_bytes: usize,
    writer: Option<Waker>,
    /// Callers of `Network::connect` waiting for the connection under way.
    connecting: Vec<std::sync::mpsc::Sender<std::io::Result<()>>>,
    failure: Option<String>,
    /// A descriptor of the link's socket of its own, to shut the socket down when the link
    /// fails (its reader stops, the peer sees the end). Owned, so that its number cannot be
    /// reused by another socket meanwhile (the reader and writer close theirs when they end).
    socket: Option<std::os::fd::OwnedFd>,
}

impl Peer {
    fn name(&self, id: u32) -> String {
        match self.addr {
            Some(a) => format!("peer process {id} at {a}"),
            None => format!("peer process {id}"),
        }
    }

    /// Holds a buffer of a channel no one receives on yet (counted here and in `control`).
    fn hold_early(&mut self, control: &Control, channel: LinkChannel, b: Buffer) {
        self.early_bytes += b.len();
        control
            .early_bytes
            .fetch_add(b.len() as u64, Ordering::Relaxed);
        self.early.push_back((channel, b));
    }

    /// Takes the held buffers of the channels `which` picks, in the order they came.
    fn take_early(
        &mut self,
        control: &Control,
        which: impl Fn(LinkChannel) -> bool,
    ) -> VecDeque<(LinkChannel, Buffer)> {
        let (taken, kept): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut self.early)
            .into_iter()
            .partition(|(ch, _)| which(*ch));
        self.early = kept;
        let bytes: usize = taken.iter().map(|(_, b)| b.len()).sum();
        self.early_bytes -= bytes;
        control
            .early_bytes
            .fetch_sub(bytes as u64, Ordering::Relaxed);
        taken
    }

    fn wake_writer(&mut self) {
        if let Some(w) = self.writer.take() {
            w.wake();
        }
    }
}

type Peers = Rc<RefCell<HashMap<u32, Peer>>>;
/// Tags retired on this side: what comes for them is dropped.
type Retired = Rc<RefCell<HashSet<u32>>>;

async fn net_main(control: Arc<Control>, config: NetConfig, listener: std::net::TcpListener) {
    let peers: Peers = Rc::new(RefCell::new(HashMap::new()));
    let retired: Retired = Rc::new(RefCell::new(HashSet::new()));
    let secret: Rc<[u8]> = config.secret.clone().into();
    // SAFETY: the std listener is ours alone; glommio takes its descriptor over.
    let listener = unsafe { TcpListener::from_raw_fd(into_raw(listener)) };
    {
        let (peers, retired, secret, control) = (
            peers.clone(),
            retired.clone(),
            secret.clone(),
            control.clone(),
        );
        let me = config.process;
        glommio::spawn_local(async move {
            loop {
                let stream = match listener.accept().await {
                    Ok(s) => s,
                    Err(e) => {
                        // Out of descriptors, say: wait rather than spin.
                        eprintln!("shardflow: accepting a peer's connection: {e}");
                        glommio::timer::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let (peers, retired, secret, control) = (
                    peers.clone(),
                    retired.clone(),
                    secret.clone(),
                    control.clone(),
                );
                glommio::spawn_local(async move {
                    let mut stream = stream;
                    let addr = stream.peer_addr().ok();
                    match accept(&mut stream, me, &secret).await {
                        Ok(peer) => start_link(&peers, &retired, &control, peer, stream, addr),
                        Err(e) => {
                            control.refused.fetch_add(1, Ordering::Relaxed);
                            eprintln!(
                                "shardflow: refused a connection from {}: {e}",
                                addr.map_or_else(|| "an unknown address".into(), |a| a.to_string())
                            );
                        }
                    }
                })
                .detach();
            }
        })
        .detach();
    }
    // Commands from other threads, until the network is dropped.
    loop {
        let batch: Vec<Command> = std::future::poll_fn(|cx| {
            let mut q = control.commands.lock().unwrap_or_else(|e| e.into_inner());
            if q.is_empty() && !control.stop.load(Ordering::SeqCst) {
                control.waker.register(cx.waker());
                if q.is_empty() && !control.stop.load(Ordering::SeqCst) {
                    return Poll::Pending;
                }
            }
            Poll::Ready(q.drain(..).collect())
        })
        .await;
        if control.stop.load(Ordering::SeqCst) {
            let mut all = peers.borrow_mut();
            for (id, p) in all.iter_mut() {
                let why = format!("{}: this process's network stopped", p.name(*id));
                fail_rings(&control, p, &why);
                p.linked = false;
                if let Some(fd) = p.socket.take() {
                    shutdown(&fd);
                }
            }
            return;
        }
        for c in batch {
            match c {
                Command::Connect { peer, addr, reply } => {
                    {
                        let mut all = peers.borrow_mut();
                        let p = all.entry(peer).or_default();
                        if p.linked {
                            let _ = reply.send(Ok(()));
                            continue;
                        }
                        p.connecting.push(reply);
                        if p.connecting.len() > 1 {
                            continue; // the connection under way answers this caller too
                        }
                    }
                    let (peers, retired, secret, control) = (
                        peers.clone(),
                        retired.clone(),
                        secret.clone(),
                        control.clone(),
                    );
                    let me = config.process;
                    glommio::spawn_local(async move {
                        let r = connect(addr, me, peer, &secret).await.map(|stream| {
                            start_link(&peers, &retired, &control, peer, stream, Some(addr))
                        });
                        let waiting = std::mem::take(
                            &mut peers.borrow_mut().entry(peer).or_default().connecting,
                        );
                        for w in waiting {
                            let _ = w.send(match &r {
                                Ok(()) => Ok(()),
                                Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
                            });
                        }
                    })
                    .detach();
                }
                Command::Retire { tag } => {
                    retired.borrow_mut().insert(tag);
                    for p in peers.borrow_mut().values_mut() {
                        p.take_early(&control, |ch| ch.tag == tag);
                    }
                }
                Command::Outgoing { peer, channel, rx } => {
                    let mut all = peers.borrow_mut();
                    let p = all.entry(peer).or_default();
                    if let Some(why) = &p.failure {
                        rx.handle().fail(why.clone());
                    }
                    p.outgoing.insert(
                        channel,
                        Outgoing {
                            rx,
                            held: VecDeque::new(),
                            closed: false,
                        },
                    );
                    p.wake_writer();
                }
                Command::Incoming { peer, channel, tx } => {
                    let mut all = peers.borrow_mut();
                    let p = all.entry(peer).or_default();
                    if let Some(why) = &p.failure {
                        tx.handle().fail(why.clone());
                    }
                    let mut incoming = Incoming {
                        tx,
                        stash: Vec::new(),
                        closed: false,
                    };
                    // Every buffer of the ring is a credit the peer starts with.
                    while let Ok(Some(b)) = incoming.tx.try_take_buffer() {
                        incoming.stash.push(b);
                    }
                    // What came before we listened: delivered now, in order (past the credit:
                    // the peer fails).
                    let result = p
                        .take_early(&control, |ch| ch == channel)
                        .iter()
                        .try_for_each(|(_, bytes)| deliver(&mut incoming, channel, bytes));
                    p.incoming.insert(channel, incoming);
                    // The writer grants this channel's credits as its shard releases buffers.
                    p.wake_writer();
                    if let Err(e) = result {
                        let why = format!("{}: {e}", p.name(peer));
                        fail_peer(&control, p, peer, &why);
                    }
                }
            }
        }
    }
}

fn into_raw(l: std::net::TcpListener) -> std::os::fd::RawFd {
    use std::os::fd::IntoRawFd;
    l.into_raw_fd()
}

/// Runs the client side of the handshake on a new connection.
async fn connect(
    addr: SocketAddr,
    me: u32,
    peer: u32,
    secret: &[u8],
) -> std::io::Result<TcpStream> {
    let mut s = TcpStream::connect(addr).await.map_err(|e| {
        std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            format!("cannot connect to process {peer} at {addr}: {e}"),
        )
    })?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
    let refused = |what: String| {
        std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("process {peer} at {addr}: {what}"),
        )
    };
    let hello = Hello::new(me)?;
    s.write_all(&hello.encode()).await?;
    let mut theirs = [0u8; link::HELLO_BYTES];
    s.read_exact(&mut theirs).await?;
    let server = Hello::decode(&theirs).map_err(refused)?;
    if server.process != peer {
        return Err(refused(format!("answered as process {}", server.process)));
    }
    let mut proof = [0u8; link::PROOF_BYTES];
    s.read_exact(&mut proof).await?;
    if !link::verify(secret, Role::Server, &hello, &server, &proof) {
        return Err(refused("does not know the cluster secret".into()));
    }
    s.write_all(&link::proof(secret, Role::Client, &hello, &server))
        .await?;
    let mut verdict = [0u8; 1];
    s.read_exact(&mut verdict)
        .await
        .map_err(|e| refused(format!("refused this process's proof of the secret ({e})")))?;
    if verdict != [1] {
        return Err(refused("refused this process's proof of the secret".into()));
    }
    s.set_read_timeout(None)?;
    Ok(s)
}

/// Runs the server side of the handshake; returns the peer's process id.
async fn accept(s: &mut TcpStream, me: u32, secret: &[u8]) -> Result<u32, String> {
    fn io(e: impl std::fmt::Display) -> String {
        format!("handshake: {e}")
    }
    s.set_nodelay(true).map_err(io)?;
    s.set_read_timeout(Some(HANDSHAKE_TIMEOUT)).map_err(io)?;
    let mut theirs = [0u8; link::HELLO_BYTES];
    s.read_exact(&mut theirs).await.map_err(io)?;
    let client = Hello::decode(&theirs)?;
    let hello = Hello::new(me).map_err(io)?;
    let mut out = hello.encode().to_vec();
    out.extend_from_slice(&link::proof(secret, Role::Server, &client, &hello));
    s.write_all(&out).await.map_err(io)?;
    let mut proof = [0u8; link::PROOF_BYTES];
    s.read_exact(&mut proof).await.map_err(io)?;
    if !link::verify(secret, Role::Client, &client, &hello, &proof) {
        return Err(format!(
            "process {} does not know the cluster secret",
            client.process
        ));
    }
    s.write_all(&[1]).await.map_err(io)?;
    s.set_read_timeout(None).map_err(io)?;
    Ok(client.process)
}

/// Shuts a link's socket down in both directions: every descriptor of it sees the end.
fn shutdown(fd: &std::os::fd::OwnedFd) {
    use std::os::fd::AsRawFd as _;
    // SAFETY: a descriptor we own, open until `fd` is dropped.
    unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_RDWR) };
}

/// A second glommio stream on the same socket (one task reads, another writes).
fn dup_stream(s: &TcpStream) -> std::io::Result<TcpStream> {
    // SAFETY: dup returns a new descriptor we own, or -1.
    let fd = unsafe { libc::dup(s.as_raw_fd()) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor of a connected TCP socket, owned by the new stream.
    Ok(unsafe { TcpStream::from_raw_fd(fd) })
}

/// Starts the reader and writer of an authenticated connection to `peer`.
fn start_link(
    peers: &Peers,
    retired: &Retired,
    control: &Arc<Control>,
    peer: u32,
    stream: TcpStream,
    addr: Option<SocketAddr>,
) {
    let writer = match dup_stream(&stream) {
        Ok(w) => w,
        Err(e) => {
            eprintln!("shardflow: link to process {peer}: {e}");
            return;
        }
    };
    {
        let mut all = peers.borrow_mut();
        let p = all.entry(peer).or_default();
        if p.linked {
            eprintln!(
                "shardflow: a second connection from process {peer} was dropped (one link per pair)"
            );
            return;
        }
        p.addr = addr.or(p.addr);
        p.linked = true;
        // SAFETY: dup returns a new descriptor (owned here) or -1.
        let own = unsafe { libc::dup(stream.as_raw_fd()) };
        // SAFETY: a fresh descriptor no one else owns.
        p.socket = (own >= 0).then(|| unsafe { std::os::fd::OwnedFd::from_raw_fd(own) });
        p.failure = None;
        control
            .failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&peer);
    }
    let (peers_r, retired, control_r) = (peers.clone(), retired.clone(), control.clone());
    glommio::spawn_local(async move {
        if let Err(why) = read_link(&peers_r, &retired, &control_r, peer, stream).await {
            let mut all = peers_r.borrow_mut();
            let p = all.entry(peer).or_default();
            let why = format!("{}: {why}", p.name(peer));
            fail_peer(&control_r, p, peer, &why);
        }
    })
    .detach();
    let (peers_w, control_w) = (peers.clone(), control.clone());
    glommio::spawn_local(async move {
        if let Err(why) = write_link(&peers_w, peer, writer).await {
            let mut all = peers_w.borrow_mut();
            let p = all.entry(peer).or_default();
            let why = format!("{}: {why}", p.name(peer));
            fail_peer(&control_w, p, peer, &why);
        }
    })
    .detach();
}

/// Fails every ring to and from a peer with `why`, and forgets its channels.
fn fail_rings(control: &Control, p: &mut Peer, why: &str) {
    for (_, o) in p.outgoing.drain() {
        o.rx.handle().fail(why.to_string());
    }
    for (_, i) in p.incoming.drain() {
        i.tx.handle().fail(why.to_string());
    }
    p.take_early(control, |_| true);
}

fn fail_peer(control: &Control, p: &mut Peer, id: u32, why: &str) {
    if p.failure.is_some() && !p.linked {
        return;
    }
    eprintln!("shardflow: link to {} failed: {why}", p.name(id));
    // The reason is on record before any ring reports the failure: whoever sees a ring fail
    // finds why in `Network::failure`.
    control
        .failures
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(id, why.to_string());
    fail_rings(control, p, why);
    p.failure = Some(why.to_string());
    p.linked = false;
    if let Some(fd) = p.socket.take() {
        shutdown(&fd);
    }
    p.wake_writer();
}

/// Copies a checked buffer into one the receiving shard granted, and hands it over.
fn deliver(i: &mut Incoming, channel: LinkChannel, bytes: &[u8]) -> Result<(), String> {
    debug_assert!(!i.closed, "buffers for a closed channel wait as early ones");
    let Some(mut buf) = i.stash.pop() else {
        return Err(format!(
            "sent a buffer on {channel} beyond the credit it was granted"
        ));
    };
    buf.clear();
    buf.extend_from_slice(bytes);
    i.tx.send(buf);
    Ok(())
}

/// Reads envelopes from a peer until the connection ends or a check fails.
async fn read_link(
    peers: &Peers,
    retired: &Retired,
    control: &Control,
    peer: u32,
    mut s: TcpStream,
) -> Result<(), String> {
    let mut d = Decoder::new();
    loop {
        let spare = d.spare(READ_BYTES);
        let n = match s.read(spare).await {
            Ok(n) => n,
            Err(e) => {
                d.filled(READ_BYTES, 0);
                if peers.borrow().get(&peer).is_some_and(|p| !p.linked) {
                    return Ok(());
                }
                return Err(format!("connection lost: {e}"));
            }
        };
        d.filled(READ_BYTES, n);
        if n == 0 {
            if peers.borrow().get(&peer).is_some_and(|p| !p.linked) {
                return Ok(());
            }
            return Err("connection closed by the peer".into());
        }
        let mut all = peers.borrow_mut();
        let p = all.entry(peer).or_default();
        if !p.linked {
            return Ok(());
        }
        loop {
            let e = d
                .next_envelope()
                .map_err(|e| format!("sent a malformed stream: {e}"))?;
            match e {
                None => break,
                Some(Envelope::Credit { channel, count }) => {
                    let Some(o) = p.outgoing.get_mut(&channel) else {
                        continue; // a channel this process is done with
                    };
                    for _ in 0..count {
                        let Some(b) = o.held.pop_front() else {
                            return Err(format!(
                                "granted more credit on {channel} than buffers in flight"
                            ));
                        };
                        o.rx.release(b);
                    }
                }
                Some(Envelope::Buffer { channel, range }) => match p
                    .incoming
                    .get_mut(&channel)
                    .filter(|i| !i.closed && i.tx.is_open())
                {
                    Some(i) => deliver(i, channel, d.bytes(range))?,
                    // Its job's part here ended (a failed attempt's senders had it on the
                    // wire): no one will take it.
                    None if retired.borrow().contains(&channel.tag) => {}
                    None => {
                        // A receiver not registered yet (or one whose shard is gone while its
                        // job's part here winds down: retiring the tag drops these).
                        let bytes = d.bytes(range);
                        if p.early_bytes + bytes.len() > EARLY_BYTES_MAX {
                            return Err(format!(
                                "sent more than {EARLY_BYTES_MAX} bytes for channels no one receives on ({channel})"
                            ));
                        }
                        let mut b = Buffer::with_capacity(bytes.len());
                        b.extend_from_slice(bytes);
                        p.hold_early(control, channel, b);
                    }
                },
            }
        }
    }
}

/// Writes what every channel to the peer has ready: buffers, and credits for buffers our
/// shards released.
async fn write_link(peers: &Peers, peer: u32, mut s: TcpStream) -> Result<(), String> {
    let mut out: Vec<u8> = Vec::with_capacity(WRITE_BYTES_MAX + (64 << 10));
    loop {
        let go_on = std::future::poll_fn(|cx| {
            let mut all = peers.borrow_mut();
            let p = all.entry(peer).or_default();
            if !p.linked {
                return Poll::Ready(false);
            }
            gather(p, &mut out);
            if !out.is_empty() {
                return Poll::Ready(true);
            }
            // Nothing to send: be woken by any shard's send or release, or a new channel.
            p.writer = Some(cx.waker().clone());
            for o in p.outgoing.values() {
                o.rx.register(cx);
            }
            for i in p.incoming.values() {
                i.tx.register(cx);
            }
            gather(p, &mut out);
            if out.is_empty() {
                Poll::Pending
            } else {
                Poll::Ready(true)
            }
        })
        .await;
        if !go_on {
            return Ok(());
        }
        s.write_all(&out)
            .await
            .map_err(|e| format!("connection lost: {e}"))?;
        out.clear();
    }
}

/// Appends to `out` the buffers the peer's channels have ready and the credits we owe.
///
/// Budget: a copy of each buffer into the write (32 KiB at ~10 GB/s: 3 µs) and a 16-byte
/// envelope; the socket write is one per 256 KiB gathered.
fn gather(p: &mut Peer, out: &mut Vec<u8>) {
    for (&channel, o) in p.outgoing.iter_mut() {
        while !o.closed && out.len() < WRITE_BYTES_MAX {
            match o.rx.try_recv() {
                Ok(Some(b)) => {
                    link::buffer_envelope(out, channel, b.len());
                    out.extend_from_slice(&b);
                    o.held.push_back(b);
                }
                Ok(None) => break,
                // The shard's sender is gone: after its END (or its job attempt failed).
                Err(_) => o.closed = true,
            }
        }
    }
    p.outgoing.retain(|_, o| !o.closed);
    for (&channel, i) in p.incoming.iter_mut() {
        let mut granted = 0u32;
        while !i.closed {
            match i.tx.try_take_buffer() {
                Ok(Some(b)) => {
                    i.stash.push(b);
                    granted += 1;
                }
                Ok(None) => break,
                Err(_) => i.closed = true,
            }
        }
        if granted > 0 {
            link::credit_envelope(out, channel, granted);
        }
    }
    p.incoming.retain(|_, i| !i.closed);
}
