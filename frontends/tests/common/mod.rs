//! Shared set-up for broker tests: an embedded name server and a broker on
//! run-time loopback ports, stopped by the test.
#![allow(dead_code)]

pub mod process;

use std::net::SocketAddr;
use std::path::Path;

use engine::record::{decode, Decoded};
use engine::AcceptAll;
use frontends::broker::{Broker, BrokerHandle, BrokerSettings};
use frontends::namesrv::NameServer;
use frontends::remoting::codes::request;
use frontends::remoting::{RemotingClient, RemotingCommand};
use std::time::Duration;
use tokio::time::timeout;

/// A broker's free port triple (see [`frontends::ports::free_port_pair`]).
pub fn free_port_pair() -> u16 {
    frontends::ports::free_port_pair().expect("free ports below the ephemeral range")
}

/// One free port (see [`frontends::ports::free_port`]).
pub fn free_port() -> u16 {
    frontends::ports::free_port().expect("a free port below the ephemeral range")
}

/// Broker settings for a test store, plus any `key=value` overrides.
pub fn settings(store: &Path, namesrv: SocketAddr, port: u16, extra: &[&str]) -> BrokerSettings {
    let mut s = BrokerSettings::default();
    let mut args = vec![
        format!("listenPort={port}"),
        "brokerIP1=127.0.0.1".to_string(),
        "brokerName=broker-test".to_string(),
        format!("namesrvAddr={namesrv}"),
        format!("storePathRootDir={}", store.display()),
        "mappedFileSizeCommitLog=16777216".to_string(),
        "mappedFileSizeConsumeQueue=60000".to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let props = engine::Properties::from_args(args).unwrap();
    let unknown = s.apply(&props).unwrap();
    assert!(unknown.is_empty(), "{unknown:?}");
    s
}

pub struct Env {
    pub ns: NameServer,
    pub broker: BrokerHandle,
    pub addr: String,
    pub client: RemotingClient,
}

pub async fn start(store: &Path, extra: &[&str]) -> Env {
    let ns = NameServer::start("127.0.0.1:0").await.unwrap();
    let port = free_port_pair();
    let broker = Broker::start(settings(store, ns.local_addr(), port, extra))
        .await
        .unwrap();
    let addr = broker.local_addr().to_string();
    Env {
        ns,
        broker,
        addr,
        client: RemotingClient::default(),
    }
}

/// Asserts that a broker on `store` refuses to start, with an error that
/// names `needle` (a broker that starts anyway is shut down first).
pub async fn assert_start_refused(store: &Path, namesrv: SocketAddr, needle: &str) {
    let settings = settings(store, namesrv, free_port_pair(), &[]);
    match Broker::start(settings).await {
        Err(e) => assert!(e.to_string().contains(needle), "{e}"),
        Ok(b) => {
            b.shutdown().await;
            panic!("started although {needle} is unreadable");
        }
    }
}

/// The bound for every wait in broker tests.
pub const T: Duration = Duration::from_secs(10);

impl Env {
    /// One request to the broker, bounded by `T`.
    pub async fn call(&self, req: RemotingCommand) -> RemotingCommand {
        timeout(T, self.client.invoke(&self.addr, req, T))
            .await
            .expect("bounded")
            .expect("response")
    }

    /// Stops broker and name server, each bounded by `T`.
    pub async fn stop(self) {
        self.client.close_all();
        timeout(T, self.broker.shutdown())
            .await
            .expect("broker stops");
        timeout(T, self.ns.shutdown()).await.expect("namesrv stops");
    }
}

/// A SEND_MESSAGE_V2 request as the Java client builds it.
pub fn send_v2(topic: &str, queue_id: i32, body: &[u8], props: &str) -> RemotingCommand {
    RemotingCommand::request(request::SEND_MESSAGE_V2)
        .with_ext("a", "PG")
        .with_ext("b", topic)
        .with_ext("c", "TBW102")
        .with_ext("d", 4)
        .with_ext("e", queue_id)
        .with_ext("f", 0)
        .with_ext("g", 1_700_000_000_000i64)
        .with_ext("h", 0)
        .with_ext("i", props)
        .with_ext("j", 0)
        .with_ext("k", false)
        .with_ext("m", false)
        .with_body(body.to_vec())
}

/// A PULL_MESSAGE for `group` of up to 32 messages of `topic`'s `queue`
/// from `offset`, carrying its own `*` TAG subscription (the SUBSCRIPTION
/// sys flag), committing nothing and never held (no suspension).
pub fn pull_everything(
    group: &str,
    topic: &str,
    queue: i32,
    offset: impl std::fmt::Display,
) -> RemotingCommand {
    RemotingCommand::request(request::PULL_MESSAGE)
        .with_ext("consumerGroup", group)
        .with_ext("topic", topic)
        .with_ext("queueId", queue)
        .with_ext("queueOffset", offset)
        .with_ext("maxMsgNums", 32)
        // SUBSCRIPTION bit: use this request's expression.
        .with_ext("sysFlag", 4)
        .with_ext("commitOffset", 0)
        .with_ext("suspendTimeoutMillis", 0)
        .with_ext("subscription", "*")
        .with_ext("subVersion", 0)
        .with_ext("expressionType", "TAG")
}

/// The message bodies of a pull answer's records, in order, as text.
pub fn bodies(resp: &RemotingCommand) -> Vec<String> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < resp.body.len() {
        match decode(&resp.body[at..], true) {
            Decoded::Message(v) => {
                out.push(String::from_utf8_lossy(v.body).to_string());
                at += v.total_size();
            }
            other => panic!("bad record in pull body: {other:?}"),
        }
    }
    out
}

/// The bytes of every record `topic`'s `queue` holds in the store of the
/// in-process broker, in queue order, one buffer per record read.
pub fn stored(env: &Env, topic: &str, queue: i32) -> Vec<Vec<u8>> {
    let store = &env.broker.broker().store;
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let r = store.get_messages(topic, queue, offset, 64, &AcceptAll);
        if r.messages.is_empty() {
            return out;
        }
        offset = r.next_begin_offset;
        out.extend(r.messages.iter().map(|s| s.as_bytes().to_vec()));
    }
}

/// Reads one whole frame from a raw socket (bounded by `T`); `None` if the
/// peer closed.
pub async fn read_frame(
    s: &mut tokio::net::TcpStream,
    buf: &mut bytes::BytesMut,
) -> Option<RemotingCommand> {
    use tokio::io::AsyncReadExt;
    let codec = frontends::remoting::FrameCodec::default();
    loop {
        if let Some(cmd) = codec.decode(buf).expect("valid frame") {
            return Some(cmd);
        }
        let n = timeout(T, s.read_buf(buf))
            .await
            .expect("read timed out")
            .ok()?;
        if n == 0 {
            return None;
        }
    }
}
