//! PULL_MESSAGE (11). Placeholder: owned and implemented by the engine owner.

use std::sync::Arc;

use crate::broker::Broker;
use crate::remoting::codes::response;
use crate::remoting::{ConnectionContext, RemotingCommand};

/// Handles one PULL_MESSAGE request (main port only).
pub async fn handle(
    broker: &Arc<Broker>,
    ctx: &ConnectionContext,
    request: RemotingCommand,
) -> Option<RemotingCommand> {
    let _ = (broker, ctx, request);
    Some(RemotingCommand::response_with_remark(
        response::SYSTEM_ERROR,
        "pull not implemented yet",
    ))
}
