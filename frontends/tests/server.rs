//! Remoting server and client over real sockets: pipelining, oneway,
//! bad frames, server → client requests, disconnect hooks, shutdown.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use frontends::remoting::codes::response;
use frontends::remoting::frame::encode_to_bytes;
use frontends::remoting::{
    ClientConfig, ConnectionContext, RemotingClient, RemotingCommand, RemotingError,
    RequestHandler, Server, ServerConfig, ServerHandle,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

const T: Duration = Duration::from_secs(10);

const ECHO_AFTER_MS: i32 = 1; // body = decimal delay in ms; echoes body
const RECORD_ONEWAY: i32 = 2;
const CALL_BACK: i32 = 3; // asks the client for code 40 and returns its body
const PANIC: i32 = 4;

#[derive(Default)]
struct TestHandler {
    oneways: AtomicUsize,
    closed: AtomicUsize,
}

impl RequestHandler for TestHandler {
    async fn handle(
        &self,
        ctx: &ConnectionContext,
        req: RemotingCommand,
    ) -> Option<RemotingCommand> {
        match req.code {
            ECHO_AFTER_MS => {
                let ms: u64 = std::str::from_utf8(&req.body).ok()?.parse().ok()?;
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Some(RemotingCommand::response(response::SUCCESS).with_body(req.body.clone()))
            }
            RECORD_ONEWAY => {
                self.oneways.fetch_add(1, Ordering::SeqCst);
                Some(RemotingCommand::response(response::SUCCESS))
            }
            CALL_BACK => {
                let answer = ctx
                    .request(
                        RemotingCommand::request(40).with_ext("consumerGroup", "G"),
                        T,
                    )
                    .await
                    .ok()?;
                Some(RemotingCommand::response(response::SUCCESS).with_body(answer.body))
            }
            PANIC => panic!("boom"),
            _ => None,
        }
    }

    fn on_closed(&self, _ctx: &ConnectionContext) {
        self.closed.fetch_add(1, Ordering::SeqCst);
    }
}

async fn start(handler: Arc<TestHandler>) -> ServerHandle {
    Server::start("127.0.0.1:0", ServerConfig::default(), handler)
        .await
        .expect("bind")
}

#[tokio::test]
async fn sixty_four_pipelined_requests_are_answered_out_of_order() {
    let server = start(Arc::default()).await;
    let mut s = TcpStream::connect(server.local_addr()).await.unwrap();
    // All 64 in one write; request i waits (64 − i) × 3 ms.
    let mut out = BytesMut::new();
    for i in 0..64 {
        let mut req = RemotingCommand::request(ECHO_AFTER_MS).with_body(((64 - i) * 3).to_string());
        req.opaque = i;
        out.extend_from_slice(&encode_to_bytes(&req).unwrap());
    }
    s.write_all(&out).await.unwrap();
    let mut buf = BytesMut::new();
    let mut order = Vec::new();
    for _ in 0..64 {
        let resp = common::read_frame(&mut s, &mut buf)
            .await
            .expect("response");
        assert!(resp.is_response());
        assert_eq!(resp.code, response::SUCCESS);
        assert_eq!(resp.body, ((64 - resp.opaque) * 3).to_string());
        order.push(resp.opaque);
    }
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(sorted, (0..64).collect::<Vec<_>>());
    assert_ne!(
        order, sorted,
        "answers come as they complete, not in request order"
    );
    // The slowest (opaque 0) is answered last.
    assert_eq!(order.last(), Some(&0));
    server.shutdown().await;
}

#[tokio::test]
async fn client_keeps_many_requests_in_flight_on_one_connection() {
    let server = start(Arc::default()).await;
    let addr = server.local_addr().to_string();
    let client = RemotingClient::new(ClientConfig::default());
    let mut tasks = Vec::new();
    for i in 0..64u64 {
        let client = client.clone();
        let addr = addr.clone();
        tasks.push(tokio::spawn(async move {
            let req = RemotingCommand::request(ECHO_AFTER_MS).with_body((i % 7).to_string());
            client.invoke(&addr, req, T).await
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let resp = t.await.unwrap().expect("answer");
        assert_eq!(resp.body, ((i as u64) % 7).to_string());
    }
    // One shared connection.
    let c1 = client.connection(&addr).await.unwrap();
    let c2 = client.connection(&addr).await.unwrap();
    assert_eq!(c1.id(), c2.id());
    server.shutdown().await;
}

#[tokio::test]
async fn oneway_requests_get_no_answer() {
    let handler = Arc::new(TestHandler::default());
    let server = start(handler.clone()).await;
    let mut s = TcpStream::connect(server.local_addr()).await.unwrap();
    let mut oneway = RemotingCommand::request(RECORD_ONEWAY).oneway();
    oneway.opaque = 100;
    let mut normal = RemotingCommand::request(RECORD_ONEWAY);
    normal.opaque = 101;
    let mut out = BytesMut::new();
    out.extend_from_slice(&encode_to_bytes(&oneway).unwrap());
    out.extend_from_slice(&encode_to_bytes(&normal).unwrap());
    s.write_all(&out).await.unwrap();
    let mut buf = BytesMut::new();
    let resp = common::read_frame(&mut s, &mut buf).await.unwrap();
    assert_eq!(resp.opaque, 101, "only the two-way request is answered");
    assert_eq!(handler.oneways.load(Ordering::SeqCst), 2);
    // Nothing else arrives.
    let mut more = [0u8; 1];
    assert!(timeout(Duration::from_millis(200), s.read(&mut more))
        .await
        .is_err());
    server.shutdown().await;
}

#[tokio::test]
async fn a_garbage_frame_closes_only_its_connection() {
    let handler = Arc::new(TestHandler::default());
    let server = start(handler.clone()).await;
    let good = RemotingClient::connect(&server.local_addr().to_string())
        .await
        .unwrap();
    let mut bad = TcpStream::connect(server.local_addr()).await.unwrap();
    let mut frame = BytesMut::new();
    frame.put_i32(8);
    frame.put_u32(0x0500_0004); // serialization type 5
    frame.put_slice(b"junk");
    bad.write_all(&frame).await.unwrap();
    let mut rest = Vec::new();
    let n = timeout(T, bad.read_to_end(&mut rest))
        .await
        .expect("closed in time");
    assert!(
        n.is_ok_and(|n| n == 0) || rest.is_empty(),
        "no answer to garbage"
    );

    // An oversized declaration also closes, without waiting for the bytes.
    let mut big = TcpStream::connect(server.local_addr()).await.unwrap();
    big.write_all(&(64 * 1024 * 1024i32).to_be_bytes())
        .await
        .unwrap();
    let mut rest = Vec::new();
    let _ = timeout(T, big.read_to_end(&mut rest))
        .await
        .expect("closed in time");

    // The well-behaved connection still works.
    let resp = good
        .request(RemotingCommand::request(ECHO_AFTER_MS).with_body("0"), T)
        .await
        .unwrap();
    assert_eq!(resp.code, response::SUCCESS);
    assert!(!good.is_closed());
    server.shutdown().await;
}

#[tokio::test]
async fn a_panicking_handler_answers_system_error() {
    let server = start(Arc::default()).await;
    let c = RemotingClient::connect(&server.local_addr().to_string())
        .await
        .unwrap();
    let resp = c.request(RemotingCommand::request(PANIC), T).await.unwrap();
    assert_eq!(resp.code, response::SYSTEM_ERROR);
    assert_eq!(resp.remark.as_deref(), Some("boom"));
    // The connection survives.
    let resp = c
        .request(RemotingCommand::request(ECHO_AFTER_MS).with_body("0"), T)
        .await
        .unwrap();
    assert_eq!(resp.code, response::SUCCESS);
    server.shutdown().await;
}

/// A client that answers the server's code-40 requests.
struct Consumer;
impl RequestHandler for Consumer {
    async fn handle(
        &self,
        _ctx: &ConnectionContext,
        req: RemotingCommand,
    ) -> Option<RemotingCommand> {
        assert_eq!(req.code, 40);
        Some(RemotingCommand::response(0).with_body(format!("hello {}", req.ext("consumerGroup")?)))
    }
}

#[tokio::test]
async fn server_calls_the_client_and_sees_it_disconnect() {
    let handler = Arc::new(TestHandler::default());
    let server = start(handler.clone()).await;
    let conn = RemotingClient::connect_with(
        &server.local_addr().to_string(),
        ClientConfig::default(),
        Arc::new(Consumer),
    )
    .await
    .unwrap();
    let resp = conn
        .request(RemotingCommand::request(CALL_BACK), T)
        .await
        .unwrap();
    assert_eq!(resp.body, "hello G");

    conn.close();
    timeout(T, conn.closed()).await.expect("client side closed");
    assert!(matches!(
        conn.request(RemotingCommand::request(1), T).await,
        Err(frontends::remoting::RemotingError::ConnectionClosed)
    ));
    // The server's close hook runs.
    timeout(T, async {
        while handler.closed.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("on_closed called");
    server.shutdown().await;
}

#[tokio::test]
async fn requests_time_out_and_the_client_reconnects() {
    let server = start(Arc::default()).await;
    let addr = server.local_addr().to_string();
    let client = RemotingClient::default();
    // Code 99 is never answered.
    let err = client
        .invoke(
            &addr,
            RemotingCommand::request(99),
            Duration::from_millis(50),
        )
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        frontends::remoting::RemotingError::Timeout { .. }
    ));
    let first = client.connection(&addr).await.unwrap();
    assert_eq!(first.pending_requests(), 0, "timed-out waiter removed");
    first.close();
    timeout(T, first.closed()).await.unwrap();
    let resp = client
        .invoke(
            &addr,
            RemotingCommand::request(ECHO_AFTER_MS).with_body("0"),
            T,
        )
        .await
        .unwrap();
    assert_eq!(resp.code, 0);
    assert_ne!(client.connection(&addr).await.unwrap().id(), first.id());
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_finishes_in_flight_requests_then_closes() {
    let server = start(Arc::default()).await;
    let conn = RemotingClient::connect(&server.local_addr().to_string())
        .await
        .unwrap();
    let c2 = conn.clone();
    let slow = tokio::spawn(async move {
        c2.request(RemotingCommand::request(ECHO_AFTER_MS).with_body("300"), T)
            .await
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    timeout(T, server.shutdown())
        .await
        .expect("shutdown completes");
    let resp = slow.await.unwrap().expect("in-flight request answered");
    assert_eq!(resp.body, "300");
    timeout(T, conn.closed())
        .await
        .expect("connection closed by shutdown");
}

#[tokio::test]
async fn answers_use_the_request_serialization() {
    use frontends::remoting::SerializeType;
    let server = start(Arc::default()).await;
    let mut s = TcpStream::connect(server.local_addr()).await.unwrap();
    let mut req = RemotingCommand::request(ECHO_AFTER_MS)
        .with_body("0")
        .with_serialization(SerializeType::RocketMq);
    req.opaque = 5;
    s.write_all(&encode_to_bytes(&req).unwrap()).await.unwrap();
    let mut buf = BytesMut::new();
    let resp = common::read_frame(&mut s, &mut buf).await.unwrap();
    assert_eq!(resp.serialization, SerializeType::RocketMq);
    assert_eq!(resp.opaque, 5);
    assert_eq!(resp.version, 409);
    server.shutdown().await;
}

// --- Per-connection limits: idle timeout, connection cap, in-flight and
// output caps. Each test's server lives on the test's runtime: if the test
// panics, the runtime is dropped and with it the listener and every
// connection task, so nothing outlives a failing test.

const BIG_ANSWER: i32 = 5; // body = decimal size of the answer body
const WAIT_FOR_GATE: i32 = 6; // answers once the test opens the gate

struct LimitsHandler {
    /// Requests handed to the handler (admitted by the connection).
    started: AtomicUsize,
    /// BIG_ANSWER answers built (their handler futures ran to completion).
    big_answers: AtomicUsize,
    /// WAIT_FOR_GATE requests wait for a permit each.
    gate: tokio::sync::Semaphore,
    closed: AtomicUsize,
}

impl Default for LimitsHandler {
    fn default() -> Self {
        LimitsHandler {
            started: AtomicUsize::new(0),
            big_answers: AtomicUsize::new(0),
            gate: tokio::sync::Semaphore::new(0),
            closed: AtomicUsize::new(0),
        }
    }
}

impl RequestHandler for LimitsHandler {
    async fn handle(
        &self,
        _ctx: &ConnectionContext,
        req: RemotingCommand,
    ) -> Option<RemotingCommand> {
        self.started.fetch_add(1, Ordering::SeqCst);
        match req.code {
            ECHO_AFTER_MS => {
                let ms: u64 = std::str::from_utf8(&req.body).ok()?.parse().ok()?;
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Some(RemotingCommand::response(response::SUCCESS).with_body(req.body.clone()))
            }
            BIG_ANSWER => {
                let size: usize = std::str::from_utf8(&req.body).ok()?.parse().ok()?;
                self.big_answers.fetch_add(1, Ordering::SeqCst);
                Some(RemotingCommand::response(response::SUCCESS).with_body(vec![7u8; size]))
            }
            WAIT_FOR_GATE => {
                self.gate.acquire().await.ok()?.forget();
                Some(RemotingCommand::response(response::SUCCESS))
            }
            _ => None,
        }
    }

    fn on_closed(&self, _ctx: &ConnectionContext) {
        self.closed.fetch_add(1, Ordering::SeqCst);
    }
}

async fn start_limited(handler: Arc<LimitsHandler>, config: ServerConfig) -> ServerHandle {
    Server::start("127.0.0.1:0", config, handler)
        .await
        .expect("bind")
}

fn with_idle_timeout(idle: Duration) -> ServerConfig {
    let mut config = ServerConfig::default();
    config.connection.idle_timeout = Some(idle);
    config
}

fn request_frame(code: i32, opaque: i32, body: &str) -> BytesMut {
    let mut req = RemotingCommand::request(code).with_body(body.to_string());
    req.opaque = opaque;
    BytesMut::from(&encode_to_bytes(&req).unwrap()[..])
}

/// Waits (at most `T`) until `cond` holds.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    timeout(T, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

/// Reads until the peer closes; panics if that takes longer than `T`.
async fn expect_closed_by_server(s: &mut TcpStream) {
    let mut rest = Vec::new();
    let res = timeout(T, s.read_to_end(&mut rest))
        .await
        .expect("server closed the connection in time");
    assert!(
        res.is_err() || rest.is_empty(),
        "no data expected before the close"
    );
}

#[tokio::test]
async fn idle_and_stalled_connections_are_closed_after_the_idle_timeout() {
    let idle = Duration::from_secs(1);
    let handler = Arc::new(LimitsHandler::default());
    let server = start_limited(handler.clone(), with_idle_timeout(idle)).await;
    let started = tokio::time::Instant::now();
    let mut silent = TcpStream::connect(server.local_addr()).await.unwrap();
    let mut half_frame = TcpStream::connect(server.local_addr()).await.unwrap();
    // A frame of 1000 bytes announced, two sent, then nothing.
    half_frame
        .write_all(&[0, 0, 0x03, 0xE8, 0, 0])
        .await
        .unwrap();
    expect_closed_by_server(&mut silent).await;
    expect_closed_by_server(&mut half_frame).await;
    assert!(
        started.elapsed() >= idle - Duration::from_millis(100),
        "closed after {:?}, before the idle timeout",
        started.elapsed()
    );
    eventually("both close hooks", || {
        handler.closed.load(Ordering::SeqCst) == 2
    })
    .await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_connection_waiting_for_an_answer_or_talking_is_not_idle() {
    let server = start_limited(
        Arc::default(),
        with_idle_timeout(Duration::from_millis(500)),
    )
    .await;
    let conn = RemotingClient::connect(&server.local_addr().to_string())
        .await
        .unwrap();
    // Like a long-polling pull: nothing moves for 4 idle periods.
    let resp = conn
        .request(RemotingCommand::request(ECHO_AFTER_MS).with_body("2000"), T)
        .await
        .expect("answer to the slow request");
    assert_eq!(resp.body, "2000");
    // Short requests every 200 ms keep it open well past the idle timeout.
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let resp = conn
            .request(RemotingCommand::request(ECHO_AFTER_MS).with_body("0"), T)
            .await
            .expect("connection still open");
        assert_eq!(resp.code, response::SUCCESS);
    }
    server.shutdown().await;
}

#[tokio::test]
async fn connections_over_the_cap_are_served_once_idle_ones_are_closed() {
    let mut config = with_idle_timeout(Duration::from_secs(1));
    config.max_connections = 1;
    let server = start_limited(Arc::default(), config).await;
    let mut idle = TcpStream::connect(server.local_addr()).await.unwrap();
    // The kernel completes the handshake; the server does not serve it yet.
    let mut waiting = TcpStream::connect(server.local_addr()).await.unwrap();
    waiting
        .write_all(&request_frame(ECHO_AFTER_MS, 9, "0"))
        .await
        .unwrap();
    let mut buf = BytesMut::new();
    assert!(
        timeout(Duration::from_millis(300), waiting.read_buf(&mut buf))
            .await
            .is_err(),
        "second connection served despite max_connections = 1"
    );
    expect_closed_by_server(&mut idle).await;
    let resp = common::read_frame(&mut waiting, &mut buf)
        .await
        .expect("served once the idle connection's slot came back");
    assert_eq!(resp.opaque, 9);
    server.shutdown().await;
}

#[tokio::test]
async fn frames_beyond_max_in_flight_wait_undecoded_until_there_is_room() {
    let mut config = ServerConfig::default();
    config.connection.max_in_flight = 2;
    let handler = Arc::new(LimitsHandler::default());
    let server = start_limited(handler.clone(), config).await;
    let mut s = TcpStream::connect(server.local_addr()).await.unwrap();
    let mut frames = BytesMut::new();
    for opaque in 0..10 {
        frames.extend_from_slice(&request_frame(WAIT_FOR_GATE, opaque, ""));
    }
    // All ten arrive in one read.
    s.write_all(&frames).await.unwrap();
    eventually("two requests started", || {
        handler.started.load(Ordering::SeqCst) == 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        handler.started.load(Ordering::SeqCst),
        2,
        "requests started beyond max_in_flight"
    );
    // Open the gate: the eight buffered frames are started with no further
    // bytes from the client, and all ten are answered.
    handler.gate.add_permits(10);
    let mut buf = BytesMut::new();
    let mut answered: Vec<i32> = Vec::new();
    for _ in 0..10 {
        answered.push(
            common::read_frame(&mut s, &mut buf)
                .await
                .expect("answer")
                .opaque,
        );
    }
    answered.sort();
    assert_eq!(answered, (0..10).collect::<Vec<_>>());
    server.shutdown().await;
}

#[tokio::test]
async fn a_peer_that_does_not_read_gets_bounded_output_and_others_are_served() {
    const ANSWER_SIZE: usize = 1 << 20;
    const REQUESTS: usize = 128;
    let mut config = with_idle_timeout(Duration::from_secs(2));
    config.connection.max_pending_output = ANSWER_SIZE;
    let handler = Arc::new(LimitsHandler::default());
    let server = start_limited(handler.clone(), config).await;

    // A small receive buffer, so the kernel holds few answers for us.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut greedy = socket.connect(server.local_addr()).await.unwrap();
    let mut frames = BytesMut::new();
    for opaque in 0..REQUESTS as i32 {
        frames.extend_from_slice(&request_frame(BIG_ANSWER, opaque, &ANSWER_SIZE.to_string()));
    }
    greedy.write_all(&frames).await.unwrap();

    // Wait until the server stops building answers (no change for 500 ms).
    let mut last = usize::MAX;
    timeout(T, async {
        loop {
            let now = handler.big_answers.load(Ordering::SeqCst);
            if now == last {
                break;
            }
            last = now;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
    .await
    .expect("answer building settles");
    // Unbounded, all 128 MiB of answers would be built and queued. Bounded:
    // what the kernel's socket buffers take (a few MiB on loopback), the one
    // answer being written and one answer over the 1 MiB output cap.
    let built = handler.big_answers.load(Ordering::SeqCst);
    assert!(
        built <= 24,
        "{built} answers of 1 MiB built for a peer that reads nothing"
    );

    let other = RemotingClient::connect(&server.local_addr().to_string())
        .await
        .unwrap();
    let resp = other
        .request(RemotingCommand::request(ECHO_AFTER_MS).with_body("0"), T)
        .await
        .expect("another connection is served");
    assert_eq!(resp.code, response::SUCCESS);

    // Answers left unread for the idle timeout do not keep the connection
    // open, although requests are still in flight. (`greedy` never reads.)
    other.close();
    eventually("both connections closed", || {
        handler.closed.load(Ordering::SeqCst) == 2
    })
    .await;
    drop(greedy);
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_is_not_held_up_by_a_peer_that_does_not_read() {
    const ANSWER_SIZE: usize = 1 << 20;
    let mut config = ServerConfig::default();
    config.connection.max_pending_output = ANSWER_SIZE;
    config.connection.shutdown_grace = Duration::from_millis(200);
    let handler = Arc::new(LimitsHandler::default());
    let server = start_limited(handler.clone(), config).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let greedy = socket.connect(server.local_addr()).await.unwrap();
    let mut frames = BytesMut::new();
    for opaque in 0..32 {
        frames.extend_from_slice(&request_frame(BIG_ANSWER, opaque, &ANSWER_SIZE.to_string()));
    }
    let (_rd, mut wr) = greedy.into_split();
    wr.write_all(&frames).await.unwrap();
    eventually("answers queued", || {
        handler.big_answers.load(Ordering::SeqCst) > 0
    })
    .await;
    timeout(T, server.shutdown())
        .await
        .expect("shutdown completes although the peer reads nothing");
}

/// Keeps the context of the last connection, so the test can call the peer.
#[derive(Default)]
struct KeepsContext {
    ctx: parking_lot::Mutex<Option<ConnectionContext>>,
}

impl RequestHandler for KeepsContext {
    async fn handle(&self, _: &ConnectionContext, _: RemotingCommand) -> Option<RemotingCommand> {
        None
    }

    fn on_connected(&self, ctx: &ConnectionContext) {
        *self.ctx.lock() = Some(ctx.clone());
    }
}

#[tokio::test]
async fn our_requests_to_a_peer_that_does_not_read_are_capped_and_it_can_still_be_closed() {
    const BODY: usize = 256 << 10;
    let mut config = ServerConfig::default();
    config.connection.max_pending_output = 1 << 20;
    config.connection.max_queued_requests = 16;
    let handler = Arc::new(KeepsContext::default());
    let server = Server::start("127.0.0.1:0", config, handler.clone())
        .await
        .expect("bind");
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let _greedy = socket.connect(server.local_addr()).await.unwrap();
    eventually("connection registered", || handler.ctx.lock().is_some()).await;
    let ctx = handler.ctx.lock().clone().expect("context");

    // Like the broker's transaction checks with message bodies. Each send
    // leaves the connection task time to encode what it may: without the
    // output cap on our requests none would ever wait, and none would fail.
    let mut sent = 0;
    let refused = loop {
        match ctx.send_oneway(RemotingCommand::request(39).with_body(vec![1u8; BODY])) {
            Ok(()) => sent += 1,
            Err(e) => break e,
        }
        assert!(
            sent < 400,
            "{sent} requests of 256 KiB queued for a peer that reads nothing"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    assert!(
        matches!(refused, RemotingError::TooManyRequests { queued: 16 }),
        "{refused}"
    );

    // Closing does not wait for the peer to read what is queued.
    ctx.close();
    timeout(T, ctx.closed())
        .await
        .expect("closed although the peer reads nothing");
    server.shutdown().await;
}
