//! Shared set-up for broker tests: an embedded name server and a broker on
//! run-time loopback ports, stopped by the test.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener};
use std::path::Path;

use frontends::broker::{Broker, BrokerHandle, BrokerSettings};
use frontends::namesrv::NameServer;
use frontends::remoting::RemotingClient;

/// A port P with P and P−2 both free on 127.0.0.1.
pub fn free_port_pair() -> u16 {
    for _ in 0..200 {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let p = l.local_addr().unwrap().port();
        if p < 1026 {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", p - 2)).is_ok() {
            return p;
        }
    }
    panic!("no free port pair found");
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

impl Env {
    pub async fn stop(self) {
        self.client.close_all();
        self.broker.shutdown().await;
        self.ns.shutdown().await;
    }
}
