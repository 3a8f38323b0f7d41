//! RocketMQ 4.x remoting: the wire protocol spoken by brokers, name servers
//! and every client (remoting.md).
//!
//! Layers, bottom up:
//! * [`frame`] — the length-prefixed TCP frame and both header serializations
//!   (JSON and the binary "ROCKETMQ" form);
//! * [`command`] — [`RemotingCommand`], the decoded frame;
//! * [`codes`] — request and response codes;
//! * [`connection`] — one TCP connection: reads frames, runs handlers,
//!   writes responses batched, and carries requests in the other direction;
//! * [`server`] — the listener, one task per connection, graceful shutdown;
//! * [`client`] — [`RemotingClient`], requests matched to responses by opaque.

mod binary_header;
pub mod client;
pub mod codes;
pub mod command;
pub mod connection;
pub mod error;
pub mod frame;
pub(crate) mod json_header;
pub mod server;

pub use client::{ClientConfig, RemotingClient};
pub use command::{ExtFields, LanguageCode, RemotingCommand, SerializeType};
pub use connection::{ConnectionConfig, ConnectionContext, NoHandler, RequestHandler};
pub use error::{CodecError, RemotingError};
pub use frame::FrameCodec;
pub use server::{Server, ServerConfig, ServerHandle};
