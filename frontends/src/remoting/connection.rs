//! One TCP connection, either side: read frames, run request handlers
//! concurrently, write answers as each completes, and carry requests we
//! originate (broker → client calls, client → server calls).
//!
//! Everything for a connection happens on **one task**: frames are parsed
//! from the read buffer, each request's handler future is polled in a
//! `FuturesUnordered` owned by that task (no spawn, no channel hop per
//! request), and finished answers are encoded into one output buffer that is
//! written with as few syscalls as possible — every answer that is ready by
//! the time the socket is writable goes out in the same `write`. Many
//! requests are in flight at once (pipelining) and are answered out of order.
//!
//! A frame that cannot be decoded, or that exceeds the size cap, closes this
//! connection only (with a log line), as Java does. A request marked oneway
//! never gets an answer. A panicking handler is answered with SYSTEM_ERROR,
//! like Java's uncaught-exception path.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use parking_lot::Mutex;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch, Notify};

use super::codes::response;
use super::command::{RemotingCommand, SerializeType};
use super::error::RemotingError;
use super::frame::FrameCodec;

/// Plugs request processing into a connection (the broker, the name server).
///
/// `handle` is called once per incoming request, on the connection's task;
/// the returned future runs concurrently with the connection's other
/// requests. Return the response (its opaque, response flag and serialization
/// are filled in from the request), or `None` to send nothing. Oneway
/// requests get no answer whatever is returned.
pub trait RequestHandler: Send + Sync + 'static {
    fn handle(
        &self,
        ctx: &ConnectionContext,
        request: RemotingCommand,
    ) -> impl Future<Output = Option<RemotingCommand>> + Send;

    /// Called once when a connection is established, before any request.
    fn on_connected(&self, _ctx: &ConnectionContext) {}

    /// Called once when a connection has closed (peer gone, error, shutdown).
    fn on_closed(&self, _ctx: &ConnectionContext) {}
}

/// A handler that ignores every incoming request (plain clients).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoHandler;

impl RequestHandler for NoHandler {
    async fn handle(
        &self,
        ctx: &ConnectionContext,
        request: RemotingCommand,
    ) -> Option<RemotingCommand> {
        tracing::debug!(
            conn = ctx.id(),
            code = request.code,
            "ignoring request from peer"
        );
        None
    }
}

/// Per-connection tuning.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionConfig {
    /// Frame size cap (Java's `frameMaxLength`, 16 MiB).
    pub codec: FrameCodec,
    /// At most this many requests of one connection are processed at once;
    /// further frames stay undecoded in the read buffer and we stop reading
    /// (TCP backpressure). Default 4096.
    pub max_in_flight: usize,
    /// While this many answer bytes wait to be written (a peer that does
    /// not read its answers), no further request is started, no finished
    /// handler is collected and nothing is read, so the output exceeds this
    /// by at most one answer. Default 4 MiB.
    pub max_pending_output: usize,
    /// At most this many of our own requests (to the peer) wait to be
    /// encoded; more fail at once with [`RemotingError::TooManyRequests`].
    /// They wait only while `max_pending_output` is reached (a peer that
    /// does not read), so this bounds what such a peer costs us. Java caps
    /// a server's outstanding oneway calls at 256
    /// (`serverOnewaySemaphoreValue`). Default 1024.
    pub max_queued_requests: usize,
    /// On server shutdown, how long in-flight requests may still finish.
    pub shutdown_grace: Duration,
    /// Close the connection after this long without a read or a write
    /// (Java's `serverChannelMaxIdleTimeSeconds`, IdleStateHandler
    /// ALL_IDLE). `None` (the default; servers set 120 s): never.
    pub idle_timeout: Option<Duration>,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            codec: FrameCodec::default(),
            max_in_flight: 4096,
            max_pending_output: 4 << 20,
            max_queued_requests: 1024,
            shutdown_grace: Duration::from_secs(5),
            idle_timeout: None,
        }
    }
}

/// How long the answers still queued when the shutdown grace expires may
/// take to leave.
const FINAL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

static NEXT_CONNECTION_ID: AtomicU64 = AtomicU64::new(1);

/// A handle on one live connection, cheap to clone and to keep.
///
/// Exposes who the peer is, lets any task send requests to the peer (the
/// broker calls consumers and producers this way) and to learn when the
/// connection has closed.
#[derive(Clone)]
pub struct ConnectionContext {
    inner: Arc<Shared>,
}

struct Shared {
    id: u64,
    peer_addr: SocketAddr,
    local_addr: SocketAddr,
    /// Holds `max_queued_requests` commands not yet encoded.
    outbound: mpsc::Sender<Outbound>,
    pending: Mutex<HashMap<i32, oneshot::Sender<RemotingCommand>>>,
    next_opaque: AtomicI32,
    closed: AtomicBool,
    closed_tx: watch::Sender<bool>,
    /// `close()` was called. Not a message in `outbound`, which waits while
    /// the peer does not read: closing such a peer must not wait for it.
    close_requested: Notify,
}

/// Our request to the peer. Boxed: the channel allocates its first block
/// of 32 slots up front, and every connection has one (256 bytes instead of
/// ~3 KiB).
type Outbound = Box<RemotingCommand>;

impl std::fmt::Debug for ConnectionContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionContext")
            .field("id", &self.inner.id)
            .field("peer_addr", &self.inner.peer_addr)
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl ConnectionContext {
    /// Process-unique id of this connection.
    pub fn id(&self) -> u64 {
        self.inner.id
    }

    /// The remote end's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.inner.peer_addr
    }

    /// Our end's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// True once the connection has closed; requests then fail at once.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }

    /// Resolves when the connection has closed (immediately if it has).
    pub fn closed(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.inner.closed_tx.subscribe();
        async move {
            // The sender lives as long as any context; an error cannot
            // happen while we hold one, and would mean "closed" anyway.
            let _ = rx.wait_for(|closed| *closed).await;
        }
    }

    /// Asks the connection to close (pending answers are dropped).
    pub fn close(&self) {
        self.inner.close_requested.notify_one();
    }

    /// Sends `request` oneway: sets the oneway flag and an opaque; no answer
    /// is expected. Fails if the connection is closed or too many of our
    /// requests already wait for a peer that does not read.
    pub fn send_oneway(&self, mut request: RemotingCommand) -> Result<(), RemotingError> {
        request.flag |= super::command::FLAG_ONEWAY;
        request.flag &= !super::command::FLAG_RESPONSE;
        request.opaque = self.next_opaque();
        self.push(request)
    }

    /// Sends `request` and waits up to `timeout` for the answer with the same
    /// opaque (assigned here). The timeout covers only this wait.
    pub async fn request(
        &self,
        mut request: RemotingCommand,
        timeout: Duration,
    ) -> Result<RemotingCommand, RemotingError> {
        request.flag &= !(super::command::FLAG_RESPONSE | super::command::FLAG_ONEWAY);
        let opaque = self.next_opaque();
        request.opaque = opaque;
        let code = request.code;
        let (tx, rx) = oneshot::channel();
        self.inner.pending.lock().insert(opaque, tx);
        // The connection task sets `closed` before it drains `pending`, so
        // either it drops our sender or we see the flag here.
        if self.is_closed() {
            self.inner.pending.lock().remove(&opaque);
            return Err(RemotingError::ConnectionClosed);
        }
        if let Err(e) = self.push(request) {
            self.inner.pending.lock().remove(&opaque);
            return Err(e);
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(_)) => Err(RemotingError::ConnectionClosed),
            Err(_) => {
                self.inner.pending.lock().remove(&opaque);
                Err(RemotingError::Timeout {
                    code,
                    opaque,
                    timeout,
                })
            }
        }
    }

    /// Number of our requests waiting for an answer on this connection.
    pub fn pending_requests(&self) -> usize {
        self.inner.pending.lock().len()
    }

    fn next_opaque(&self) -> i32 {
        self.inner.next_opaque.fetch_add(1, Ordering::Relaxed)
    }

    fn push(&self, cmd: RemotingCommand) -> Result<(), RemotingError> {
        if self.is_closed() {
            return Err(RemotingError::ConnectionClosed);
        }
        self.inner
            .outbound
            .try_send(Box::new(cmd))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => RemotingError::TooManyRequests {
                    queued: self.inner.outbound.max_capacity(),
                },
                mpsc::error::TrySendError::Closed(_) => RemotingError::ConnectionClosed,
            })
    }
}

/// Why a connection ended (for the log line).
enum CloseReason {
    PeerClosed,
    Requested,
    Shutdown,
    Idle(Duration),
    Io(std::io::Error),
    Codec(super::error::CodecError),
}

/// Starts serving `stream` on a new task; returns its context.
/// `shutdown` (server side) flips to true when the server stops.
pub(crate) fn spawn<H: RequestHandler>(
    stream: TcpStream,
    handler: Arc<H>,
    config: ConnectionConfig,
    shutdown: Option<watch::Receiver<bool>>,
) -> std::io::Result<(ConnectionContext, tokio::task::JoinHandle<()>)> {
    let peer_addr = stream.peer_addr()?;
    let local_addr = stream.local_addr()?;
    // Small request/response frames: don't let Nagle hold them back.
    stream.set_nodelay(true)?;
    let (tx, rx) = mpsc::channel(config.max_queued_requests.max(1));
    let (closed_tx, _) = watch::channel(false);
    let ctx = ConnectionContext {
        inner: Arc::new(Shared {
            id: NEXT_CONNECTION_ID.fetch_add(1, Ordering::Relaxed),
            peer_addr,
            local_addr,
            outbound: tx,
            pending: Mutex::new(HashMap::new()),
            next_opaque: AtomicI32::new(0),
            closed: AtomicBool::new(false),
            closed_tx,
            close_requested: Notify::new(),
        }),
    };
    let task_ctx = ctx.clone();
    let join = tokio::spawn(async move {
        handler.on_connected(&task_ctx);
        let reason = run(stream, &task_ctx, rx, &*handler, config, shutdown).await;
        match &reason {
            CloseReason::PeerClosed | CloseReason::Requested | CloseReason::Shutdown => {
                tracing::debug!(conn = task_ctx.id(), peer = %task_ctx.peer_addr(), "connection closed")
            }
            CloseReason::Idle(idle) => {
                tracing::info!(conn = task_ctx.id(), peer = %task_ctx.peer_addr(), "closing connection idle for {idle:?}")
            }
            CloseReason::Io(e) => {
                tracing::info!(conn = task_ctx.id(), peer = %task_ctx.peer_addr(), "connection closed: I/O error: {e}")
            }
            CloseReason::Codec(e) => {
                tracing::warn!(conn = task_ctx.id(), peer = %task_ctx.peer_addr(), "closing connection: bad frame: {e}")
            }
        }
        task_ctx.inner.closed.store(true, Ordering::Release);
        // Drop every waiter's sender: they see ConnectionClosed.
        task_ctx.inner.pending.lock().clear();
        task_ctx.inner.closed_tx.send_replace(true);
        handler.on_closed(&task_ctx);
    });
    Ok((ctx, join))
}

/// What the connection must remember of a request to answer it.
struct RequestMeta {
    opaque: i32,
    code: i32,
    serialization: SerializeType,
    oneway: bool,
}

type InFlight<'a> = Pin<
    Box<
        dyn Future<Output = (RequestMeta, std::thread::Result<Option<RemotingCommand>>)>
            + Send
            + 'a,
    >,
>;

/// The connection's event loop. Returns when the connection must close.
async fn run<H: RequestHandler>(
    mut stream: TcpStream,
    ctx: &ConnectionContext,
    mut outbound: mpsc::Receiver<Outbound>,
    handler: &H,
    config: ConnectionConfig,
    mut shutdown: Option<watch::Receiver<bool>>,
) -> CloseReason {
    let codec = config.codec;
    let (rd, mut wr) = stream.split();
    // Both buffers start empty, are allocated when bytes arrive or an
    // answer is encoded, grow to the frames at hand, and are dropped again
    // as soon as they drain: an idle connection holds no buffer at all, and
    // one big frame does not pin its memory for the connection's life.
    let mut inbuf = BytesMut::new();
    let mut out = BytesMut::new();
    let mut inflight: FuturesUnordered<InFlight<'_>> = FuturesUnordered::new();
    // Set once shutdown begins: stop reading, finish in-flight work until then.
    let mut grace_deadline: Option<tokio::time::Instant> = None;
    // Idle detection: reads and writes only note the time; the timer is
    // re-armed when it fires, so busy connections never touch the timer.
    let mut last_io = tokio::time::Instant::now();
    let mut idle_timer = config
        .idle_timeout
        .map(|idle| (idle, Box::pin(tokio::time::sleep(idle))));

    loop {
        // Start the requests already buffered while there is room; the rest
        // stay in `inbuf` until answers have been written or handlers have
        // finished, so a peer that pipelines many requests and does not
        // read gets no more than the caps allow, however many frames one
        // read brought. Once shutdown has begun nothing new is started:
        // frames still buffered go with the connection, like unread bytes.
        if grace_deadline.is_none() {
            while has_room(&config, inflight.len(), out.len()) {
                match codec.decode(&mut inbuf) {
                    Ok(Some(cmd)) => {
                        if cmd.is_response() {
                            complete_request(ctx, cmd);
                        } else {
                            inflight.push(start_request(ctx, handler, cmd));
                        }
                    }
                    Ok(None) => break,
                    Err(e) => return CloseReason::Codec(e),
                }
            }
        }
        if inbuf.is_empty() {
            inbuf = BytesMut::new();
        }
        if grace_deadline.is_some() && inflight.is_empty() && out.is_empty() {
            let _ = wr.flush().await;
            return CloseReason::Shutdown;
        }
        let may_read = grace_deadline.is_none() && has_room(&config, inflight.len(), out.len());
        // Finished handlers are collected only while the output is under
        // its cap; otherwise their answers would pile up in `out` (a peer
        // that does not read). Handlers do not hold async locks, so one
        // left unpolled blocks nothing but its own connection.
        let may_answer = !inflight.is_empty() && out.len() < config.max_pending_output;
        tokio::select! {
            biased;

            Some((meta, result)) = inflight.next(), if may_answer => {
                answer(&codec, meta, result, &mut out);
                // Collect every other answer that is already done, so they
                // leave in the same write.
                while out.len() < config.max_pending_output {
                    match inflight.next().now_or_never() {
                        Some(Some((meta, result))) => answer(&codec, meta, result, &mut out),
                        _ => break,
                    }
                }
            }

            res = wr.write_buf(&mut out), if !out.is_empty() => {
                match res {
                    Ok(0) => return CloseReason::PeerClosed,
                    Ok(_) => {
                        last_io = tokio::time::Instant::now();
                        if out.is_empty() {
                            out = BytesMut::new();
                        }
                    }
                    Err(e) => return CloseReason::Io(e),
                }
            }

            // Our own requests wait while the output is at its cap, like
            // answers: a peer that does not read must not grow `out`.
            msg = outbound.recv(), if out.len() < config.max_pending_output => {
                // The context holds a sender: `None` cannot happen while we run.
                let Some(mut cmd) = msg else { return CloseReason::Requested };
                loop {
                    if let Err(e) = codec.encode(&cmd, &mut out) {
                        tracing::error!(conn = ctx.id(), code = cmd.code, "cannot send request: {e}");
                        // Fail the waiter now rather than at its timeout.
                        ctx.inner.pending.lock().remove(&cmd.opaque);
                    }
                    if out.len() >= config.max_pending_output {
                        break;
                    }
                    match outbound.try_recv() {
                        Ok(m) => cmd = m,
                        Err(_) => break,
                    }
                }
            }

            _ = ctx.inner.close_requested.notified() => return CloseReason::Requested,

            res = read_some(&rd, &mut inbuf, &codec), if may_read => {
                match res {
                    Ok(0) => return CloseReason::PeerClosed,
                    Ok(_) => last_io = tokio::time::Instant::now(),
                    Err(e) => return CloseReason::Io(e),
                }
            }

            _ = wait_shutdown(&mut shutdown), if grace_deadline.is_none() => {
                grace_deadline = Some(tokio::time::Instant::now() + config.shutdown_grace);
            }

            _ = sleep_until_opt(grace_deadline), if grace_deadline.is_some() => {
                tracing::info!(conn = ctx.id(), dropped = inflight.len(), "shutdown grace expired");
                // Best effort: a peer that does not read must not hold up
                // the server's shutdown.
                let _ = tokio::time::timeout(FINAL_WRITE_TIMEOUT, wr.write_all_buf(&mut out)).await;
                return CloseReason::Shutdown;
            }

            _ = wait_timer(&mut idle_timer), if idle_timer.is_some() => {
                let Some((idle, timer)) = idle_timer.as_mut() else { continue };
                let idle = *idle;
                let now = tokio::time::Instant::now();
                // Unlike Java's ALL_IDLE, a connection waiting for an answer
                // (a long-polling pull held up to 30 s, a SYNC send waiting
                // for its flush, our own request to the peer) is not idle:
                // cutting it would fail a request the client is rightly
                // waiting for. It is idle again if those answers sit unwritten
                // in `out` for the whole period (the peer stopped reading).
                let awaiting_answer = out.is_empty()
                    && (!inflight.is_empty() || ctx.pending_requests() > 0);
                if awaiting_answer {
                    last_io = now;
                }
                if last_io + idle > now {
                    timer.as_mut().reset(last_io + idle);
                } else {
                    return CloseReason::Idle(idle);
                }
            }
        }
    }
}

/// Below both per-connection caps, so another request may be started.
fn has_room(config: &ConnectionConfig, in_flight: usize, pending_output: usize) -> bool {
    in_flight < config.max_in_flight && pending_output < config.max_pending_output
}

/// Calls the handler for `request`; the future yields what is needed to
/// answer it, and catches a panicking handler.
fn start_request<'a, H: RequestHandler>(
    ctx: &'a ConnectionContext,
    handler: &'a H,
    request: RemotingCommand,
) -> InFlight<'a> {
    let meta = RequestMeta {
        opaque: request.opaque,
        code: request.code,
        serialization: request.serialization,
        oneway: request.is_oneway(),
    };
    let fut = AssertUnwindSafe(handler.handle(ctx, request)).catch_unwind();
    Box::pin(fut.map(move |r| (meta, r)))
}

/// Reads more bytes once some are waiting. The buffer is grown only then
/// (an idle connection keeps none), and only as data arrives, never by the
/// declared size of a frame that has not been sent.
async fn read_some(
    rd: &tokio::net::tcp::ReadHalf<'_>,
    buf: &mut BytesMut,
    codec: &FrameCodec,
) -> std::io::Result<usize> {
    loop {
        rd.readable().await?;
        let want = codec.missing(buf).unwrap_or(0).clamp(16 * 1024, 256 * 1024);
        if buf.capacity() - buf.len() < want / 2 {
            buf.reserve(want);
        }
        match rd.try_read_buf(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                // Readiness can be spurious (every new socket reports it
                // once): give the buffer back before waiting again.
                if buf.is_empty() {
                    *buf = BytesMut::new();
                }
            }
            res => return res,
        }
    }
}

async fn wait_timer(timer: &mut Option<(Duration, Pin<Box<tokio::time::Sleep>>)>) {
    match timer {
        Some((_, t)) => t.as_mut().await,
        None => std::future::pending::<()>().await,
    }
}

async fn wait_shutdown(rx: &mut Option<watch::Receiver<bool>>) {
    match rx {
        Some(rx) => {
            if rx.wait_for(|v| *v).await.is_err() {
                // The server handle was dropped without a shutdown: run on.
                std::future::pending::<()>().await
            }
        }
        None => std::future::pending::<()>().await,
    }
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending::<()>().await,
    }
}

fn complete_request(ctx: &ConnectionContext, resp: RemotingCommand) {
    let waiter = ctx.inner.pending.lock().remove(&resp.opaque);
    match waiter {
        Some(tx) => {
            let _ = tx.send(resp);
        }
        None => tracing::debug!(
            conn = ctx.id(),
            opaque = resp.opaque,
            "dropping response with unknown opaque (late or duplicate)"
        ),
    }
}

/// Encodes the answer to one request into `out`.
fn answer(
    codec: &FrameCodec,
    meta: RequestMeta,
    result: std::thread::Result<Option<RemotingCommand>>,
    out: &mut BytesMut,
) {
    let resp = match result {
        Ok(resp) => resp,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "handler panicked".to_string());
            tracing::error!(code = meta.code, "request handler panicked: {what}");
            Some(RemotingCommand::response_with_remark(
                response::SYSTEM_ERROR,
                what,
            ))
        }
    };
    let Some(mut resp) = resp else { return };
    if meta.oneway {
        return;
    }
    resp.opaque = meta.opaque;
    resp.serialization = meta.serialization;
    resp.flag = (resp.flag | super::command::FLAG_RESPONSE) & !super::command::FLAG_ONEWAY;
    if let Err(e) = codec.encode(&resp, out) {
        tracing::error!(code = meta.code, "response cannot be sent: {e}");
        let mut err = RemotingCommand::response_with_remark(response::SYSTEM_ERROR, e.to_string());
        err.opaque = meta.opaque;
        err.serialization = meta.serialization;
        let _ = codec.encode(&err, out);
    }
}
