//! `Env`: everything a node takes from its environment, in one place, so the same node code
//! runs as the `node` binary and inside a deterministic network simulation.
//!
//! | what | the `node` binary | a simulation |
//! |---|---|---|
//! | listening | a [`tokio::net::TcpListener`] ([`Listener`]) | the simulator's listener |
//! | dialling | [`TcpNet`] ([`Net`]) | the simulator's TCP |
//! | monotonic time | tokio's clock (`tokio::time`) | the same clock, driven by the simulator |
//! | wall-clock time (block timestamps, the two-hour rule) | the OS clock | [`Env::wall_clock`] |
//! | blocking work (store, long validations) | tokio's blocking threads | run in place ([`Blocking::Inline`]) |
//! | mining | threads searching nonces ([`ThreadSolver`]) | a [`Solve`] of its own |
//! | randomness (peer choice) | seeded from the OS | [`Env::seed`] |
//! | what happened (blocks, reorgs) | nothing | [`Env::observer`] |
//!
//! The data directory is a directory either way. Every default is the real one: a node
//! built with `Env::default()` is the `node` binary's. The server side is generic over its
//! listener, so the binary pays no indirection there; a dialled connection is a
//! [`Conn`], an enum whose TCP arm is tokio's stream.

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::block::Block;
use crate::pow::{MineControl, Template};

/// A byte stream the node can speak its framing over.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// Dials other nodes.
pub trait Net: fmt::Debug + Send + Sync + 'static {
    /// Opens a connection to `addr` (`host:port`).
    fn connect(&self, addr: &str) -> BoxFuture<'static, io::Result<Conn>>;
    /// Tells whether `ip` is an address of this host (dialling it could reach ourselves).
    fn is_local_ip(&self, ip: IpAddr) -> bool;
}

/// Accepts connections from other nodes and clients.
pub trait Listener: Send + 'static {
    /// The connection type accepted.
    type Stream: Stream;
    /// Waits for the next connection.
    fn accept(
        &mut self,
    ) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>> + Send + '_;
    /// Returns the address bound.
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

impl Listener for tokio::net::TcpListener {
    type Stream = tokio::net::TcpStream;

    async fn accept(&mut self) -> io::Result<(Self::Stream, SocketAddr)> {
        let (stream, addr) = tokio::net::TcpListener::accept(self).await?;
        let _ = stream.set_nodelay(true);
        Ok((stream, addr))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        tokio::net::TcpListener::local_addr(self)
    }
}

/// A dialled connection: TCP, or whatever another [`Net`] dials.
pub enum Conn {
    /// A TCP connection.
    Tcp(tokio::net::TcpStream),
    /// Another kind of stream (a simulated one).
    Other(Box<dyn Stream>),
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Conn::Tcp(s) => f.debug_tuple("Tcp").field(s).finish(),
            Conn::Other(_) => f.write_str("Other"),
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Other(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Other(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_flush(cx),
            Conn::Other(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Other(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// The operating system's TCP.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct TcpNet;

impl Net for TcpNet {
    fn connect(&self, addr: &str) -> BoxFuture<'static, io::Result<Conn>> {
        let addr = addr.to_owned();
        Box::pin(async move {
            let stream = tokio::net::TcpStream::connect(&addr).await?;
            let _ = stream.set_nodelay(true);
            Ok(Conn::Tcp(stream))
        })
    }

    fn is_local_ip(&self, ip: IpAddr) -> bool {
        // An address of this machine is one a socket can be bound to.
        ip.is_loopback() || std::net::UdpSocket::bind((ip, 0)).is_ok()
    }
}

/// Finds a block for a template: the node's mining, behind one call.
pub trait Solve: fmt::Debug + Send + Sync + 'static {
    /// Mines `template` (with `threads` threads, if it uses threads) until a block is
    /// found, or returns `None` once `control.cancel` is set. The future may be dropped
    /// instead of awaited after a cancel; the search must then stop on its own.
    fn solve(
        &self,
        template: Template,
        threads: usize,
        control: Arc<MineControl>,
        wall_clock: fn() -> i64,
    ) -> BoxFuture<'static, Option<Block>>;
}

/// Mining on threads off the runtime: [`crate::pow::mine`].
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ThreadSolver;

impl Solve for ThreadSolver {
    fn solve(
        &self,
        template: Template,
        threads: usize,
        control: Arc<MineControl>,
        wall_clock: fn() -> i64,
    ) -> BoxFuture<'static, Option<Block>> {
        let handle = tokio::task::spawn_blocking(move || {
            crate::pow::mine_with_clock(&template, threads, &control, wall_clock)
        });
        Box::pin(async move { handle.await.ok().flatten() })
    }
}

/// Where blocking work (store transactions, long validations, big parses) runs.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Blocking {
    /// On tokio's blocking threads, so the runtime keeps serving meanwhile.
    #[default]
    Threads,
    /// In place, on the task that asks: a single-threaded simulation stays deterministic.
    Inline,
}

impl Blocking {
    /// Starts `f` as configured and returns what waits for it: on a blocking thread it runs
    /// whether or not the result is awaited; in place it has run by the time this returns.
    pub(crate) fn start<T, F>(self, f: F) -> futures::future::BoxFuture<'static, Result<T, String>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        match self {
            Blocking::Threads => {
                let task = tokio::task::spawn_blocking(f);
                Box::pin(async move { task.await.map_err(|e| e.to_string()) })
            }
            Blocking::Inline => Box::pin(std::future::ready(Ok(f()))),
        }
    }

    /// Runs `f` as configured; an error only if a blocking thread panicked.
    pub async fn run<T, F>(self, f: F) -> Result<T, String>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        match self {
            Blocking::Threads => tokio::task::spawn_blocking(f)
                .await
                .map_err(|e| e.to_string()),
            Blocking::Inline => Ok(f()),
        }
    }
}

/// Something that happened to a node's chain, told to [`Env::observer`].
#[derive(Debug)]
pub enum Event<'a> {
    /// Blocks were committed on top of `fork` (an extension, or a reorg leaving `left`
    /// blocks behind).
    Committed {
        fork: u64,
        blocks: &'a [Block],
        left: usize,
    },
    /// This node mined `block` and committed it.
    Mined { block: &'a Block },
    /// A sync holds a competing branch of `blocks` blocks, `bytes` bytes, not yet adopted.
    Branch { blocks: usize, bytes: usize },
}

/// Told of every [`Event`] of a node.
pub(crate) type Observer = Arc<dyn Fn(Event<'_>) + Send + Sync>;

/// What a node takes from its environment; `Env::default()` is the real one.
#[derive(Clone)]
pub struct Env {
    /// How the node dials.
    pub net: Arc<dyn Net>,
    /// Unix seconds now: block timestamps and the two-hour rule.
    pub wall_clock: fn() -> i64,
    /// Where blocking work runs.
    pub blocking: Blocking,
    /// How the node mines.
    pub solver: Arc<dyn Solve>,
    /// Seed of the node's random choices (which peers to dial and share); `None`: the OS.
    pub seed: Option<u64>,
    /// Told of what happens to the chain.
    pub observer: Option<Observer>,
}

impl Default for Env {
    fn default() -> Self {
        Env {
            net: Arc::new(TcpNet),
            wall_clock: crate::block::unix_now,
            blocking: Blocking::Threads,
            solver: Arc::new(ThreadSolver),
            seed: None,
            observer: None,
        }
    }
}

impl fmt::Debug for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Env")
            .field("net", &self.net)
            .field("solver", &self.solver)
            .field("blocking", &self.blocking)
            .field("seed", &self.seed)
            .field("observer", &self.observer.is_some())
            .finish_non_exhaustive()
    }
}

impl Env {
    /// Tells the observer, if any, of `event`.
    pub(crate) fn tell(&self, event: Event<'_>) {
        if let Some(observer) = &self.observer {
            observer(event);
        }
    }
}
