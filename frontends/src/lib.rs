//! Network frontends: RocketMQ 4.x remoting protocol, name server, broker.

pub mod broker;
pub mod cli;
pub mod ha;
pub mod namesrv;
pub mod ports;
pub mod remoting;
