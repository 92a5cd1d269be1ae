//! The network of a simulated node: turmoil's TCP with loss, bandwidth (uplinks and
//! downlinks as FIFOs at their rate) and counted traffic.

use super::*;

// ---------------------------------------------------------------------------------------
// The environment of a simulated node.

/// Counts what a node sends: bytes and frames.
#[derive(Debug, Default)]
pub(super) struct Traffic {
    pub(super) bytes: AtomicU64,
    pub(super) frames: AtomicU64,
}

/// Every host's upload and download capacity, and when each is next free.
///
/// A write of `n` bytes from A to B starts when A's uplink is free and takes `n / up(A)`
/// on it; it reaches B when B's downlink, free from that start on, has taken it at
/// `down(B)` too, and no sooner than the last byte left A. The writer waits for that, then
/// turmoil adds the message's latency. So a node sending one block to eight peers sends
/// them one after another, and a node that many send to at once receives them one after
/// another. TCP's slow start, its fair sharing of a link between flows and congestion in
/// the network's core are not modelled: a link is a FIFO at its full rate.
#[derive(Debug)]
pub(super) struct Pipes {
    pub(super) state: Mutex<PipeState>,
    /// Waits shorter than half a tick are not slept (they would round up to a whole
    /// tick); they are still booked, so many of them add up to a wait.
    pub(super) min_wait: Duration,
}

#[derive(Debug, Default)]
pub(super) struct PipeState {
    pub(super) index: std::collections::HashMap<IpAddr, usize>,
    /// Bytes per second of each node.
    pub(super) rate: Vec<f64>,
    pub(super) up_free: Vec<Duration>,
    pub(super) down_free: Vec<Duration>,
}

impl Pipes {
    pub(super) fn new(rate: Vec<f64>, tick: Duration) -> Self {
        let n = rate.len();
        Pipes {
            state: Mutex::new(PipeState {
                index: Default::default(),
                rate,
                up_free: vec![Duration::ZERO; n],
                down_free: vec![Duration::ZERO; n],
            }),
            min_wait: tick / 2,
        }
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, PipeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records that node `i` is at `ip`.
    pub(super) fn place(&self, i: usize, ip: IpAddr) {
        self.lock().index.insert(ip, i);
    }

    /// Books `bytes` from `from` to `to`; returns how long the writer waits, if worth a
    /// sleep.
    pub(super) fn book(&self, from: IpAddr, to: IpAddr, bytes: usize) -> Option<Duration> {
        let now = now();
        let mut s = self.lock();
        let (&a, &b) = (s.index.get(&from)?, s.index.get(&to)?);
        if a == b {
            return None;
        }
        let n = bytes as f64;
        let start = now.max(s.up_free[a]);
        let sent = start + Duration::from_secs_f64(n / s.rate[a]);
        s.up_free[a] = sent;
        let taken = start.max(s.down_free[b]) + Duration::from_secs_f64(n / s.rate[b]);
        let done = sent.max(taken);
        s.down_free[b] = done;
        let wait = done.saturating_sub(now);
        (wait >= self.min_wait).then_some(wait)
    }
}

/// Where a simulated stream's bytes go, for the bandwidth model.
#[derive(Debug, Clone)]
pub(super) struct Route {
    pub(super) pipes: Arc<Pipes>,
    pub(super) from: IpAddr,
    pub(super) to: IpAddr,
}

/// turmoil's TCP as a [`Net`], for the host at `ip`.
#[derive(Debug)]
pub(super) struct SimNet {
    pub(super) ip: IpAddr,
    pub(super) traffic: Arc<Traffic>,
    pub(super) lossy: Lossy,
    pub(super) pipes: Option<Arc<Pipes>>,
}

/// How writes are lost (and retransmitted later).
#[derive(Debug, Clone)]
pub(super) struct Lossy {
    pub(super) rate: f64,
    pub(super) rto: Duration,
    pub(super) rng: Arc<Mutex<StdRng>>,
}

impl Net for SimNet {
    fn connect(&self, addr: &str) -> BoxFuture<'static, io::Result<Conn>> {
        let addr = addr.to_owned();
        let (traffic, lossy) = (self.traffic.clone(), self.lossy.clone());
        let (pipes, from) = (self.pipes.clone(), self.ip);
        Box::pin(async move {
            let stream = turmoil::net::TcpStream::connect(addr.as_str()).await?;
            let route = match (pipes, stream.peer_addr()) {
                (Some(pipes), Ok(to)) => Some(Route {
                    pipes,
                    from,
                    to: to.ip(),
                }),
                _ => None,
            };
            Ok(Conn::Other(Box::new(Counted::new(
                stream, traffic, lossy, route,
            ))))
        })
    }

    fn is_local_ip(&self, ip: IpAddr) -> bool {
        ip.is_loopback() || ip == self.ip
    }
}

/// turmoil's listener as a [`Listener`].
pub(super) struct SimListener {
    pub(super) inner: turmoil::net::TcpListener,
    pub(super) traffic: Arc<Traffic>,
    pub(super) lossy: Lossy,
    /// The bandwidth model and this host's address in it.
    pub(super) pipes: Option<(Arc<Pipes>, IpAddr)>,
}

impl Listener for SimListener {
    type Stream = Counted<turmoil::net::TcpStream>;

    async fn accept(&mut self) -> io::Result<(Self::Stream, SocketAddr)> {
        let (stream, addr) = self.inner.accept().await?;
        let route = self.pipes.as_ref().map(|(pipes, from)| Route {
            pipes: pipes.clone(),
            from: *from,
            to: addr.ip(),
        });
        Ok((
            Counted::new(stream, self.traffic.clone(), self.lossy.clone(), route),
            addr,
        ))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// A stream that counts the frames and bytes written, delays lost writes by a
/// retransmission timeout, and writes at the rate its route's links allow.
pub(super) struct Counted<S> {
    pub(super) inner: S,
    pub(super) traffic: Arc<Traffic>,
    pub(super) lossy: Lossy,
    pub(super) route: Option<Route>,
    /// A write waiting for its links, and whether the write pending now has been booked.
    pub(super) transmit: Option<Pin<Box<tokio::time::Sleep>>>,
    pub(super) booked: bool,
    /// Header bytes of the frame being written, or the payload bytes still to come.
    pub(super) header: Vec<u8>,
    pub(super) payload_left: u64,
    /// A lost write waiting for its retransmission.
    pub(super) retransmit: Option<Pin<Box<tokio::time::Sleep>>>,
    pub(super) retransmitted: bool,
}

impl<S> Counted<S> {
    pub(super) fn new(inner: S, traffic: Arc<Traffic>, lossy: Lossy, route: Option<Route>) -> Self {
        Counted {
            inner,
            traffic,
            lossy,
            route,
            transmit: None,
            booked: false,
            header: Vec::with_capacity(HEADER_LEN),
            payload_left: 0,
            retransmit: None,
            retransmitted: false,
        }
    }

    /// Follows the framing of written bytes to count frames.
    pub(super) fn count(&mut self, mut buf: &[u8]) {
        self.traffic
            .bytes
            .fetch_add(buf.len() as u64, Ordering::Relaxed);
        while !buf.is_empty() {
            if self.payload_left > 0 {
                let n = (self.payload_left as usize).min(buf.len());
                self.payload_left -= n as u64;
                buf = &buf[n..];
                continue;
            }
            let n = (HEADER_LEN - self.header.len()).min(buf.len());
            self.header.extend_from_slice(&buf[..n]);
            buf = &buf[n..];
            if self.header.len() == HEADER_LEN {
                self.traffic.frames.fetch_add(1, Ordering::Relaxed);
                self.payload_left = parse_header(&self.header).unwrap_or(0);
                self.header.clear();
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.retransmit.is_none() && !this.retransmitted && this.lossy.rate > 0.0 {
            let lost = this
                .lossy
                .rng
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .random_bool(this.lossy.rate.min(1.0));
            if lost {
                this.retransmit = Some(Box::pin(tokio::time::sleep(this.lossy.rto)));
            }
        }
        if let Some(timer) = &mut this.retransmit {
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.retransmit = None;
            this.retransmitted = true;
        }
        if !this.booked
            && let Some(route) = &this.route
        {
            this.booked = true;
            if let Some(wait) = route.pipes.book(route.from, route.to, buf.len()) {
                this.transmit = Some(Box::pin(tokio::time::sleep(wait)));
            }
        }
        if let Some(timer) = &mut this.transmit {
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.transmit = None;
        }
        let written = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = written {
            this.retransmitted = false;
            this.booked = false;
            this.count(&buf[..n]);
        }
        written
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
