//! END_TRANSACTION (37) (remoting.md §7.9, semantics.md §5.2): the producer
//! ends a half message — commit writes it to its real topic, rollback does
//! not — and either way an op record marks the half message resolved.
//!
//! Path: read the header → (slave: SLAVE_NOT_AVAILABLE, normally already
//! answered by the dispatcher; UNKNOWN or any other
//! value: no response at all, as Java) → find the half record at
//! `commitLogOffset` and check producer group and both offsets → commit:
//! build the real message and append it (unless this transaction was
//! already committed, see `transaction`'s deviation note), map the store
//! status; rollback: nothing to store → write the op record.
//!
//! Java producers send this request oneway; the server then drops whatever
//! is answered here.

use engine::record::{self, sysflag, Decoded};
use engine::{PutStatus, StoreError};

use super::{error, java_bool, now_ms, required, required_i32, required_i64, success};
use crate::broker::transaction::{self, HalfError};
use crate::broker::Broker;
use crate::remoting::codes::response;
use crate::remoting::RemotingCommand;

/// EndTransactionRequestHeader.
#[derive(Debug, Clone)]
pub struct EndTransactionHeader {
    pub producer_group: String,
    pub tran_state_table_offset: i64,
    pub commit_log_offset: i64,
    pub commit_or_rollback: i32,
    pub from_transaction_check: bool,
    pub msg_id: String,
    pub transaction_id: Option<String>,
}

impl EndTransactionHeader {
    pub fn parse(req: &RemotingCommand) -> Result<Self, RemotingCommand> {
        Ok(EndTransactionHeader {
            producer_group: required(req, "producerGroup")?.to_string(),
            tran_state_table_offset: required_i64(req, "tranStateTableOffset")?,
            commit_log_offset: required_i64(req, "commitLogOffset")?,
            commit_or_rollback: required_i32(req, "commitOrRollback")?,
            from_transaction_check: java_bool(req, "fromTransactionCheck"),
            msg_id: required(req, "msgId")?.to_string(),
            transaction_id: super::optional(req, "transactionId").map(str::to_string),
        })
    }
}

/// Handles one END_TRANSACTION; `None` means no response (UNKNOWN state).
pub async fn handle(broker: &Broker, req: &RemotingCommand) -> Option<RemotingCommand> {
    if broker.is_slave() {
        tracing::warn!("message store is slave mode, so end transaction is forbidden");
        return Some(RemotingCommand::response(response::SLAVE_NOT_AVAILABLE));
    }
    let h = match EndTransactionHeader::parse(req) {
        Ok(h) => h,
        Err(e) => return Some(e),
    };
    let commit = match h.commit_or_rollback {
        sysflag::TRANSACTION_COMMIT => true,
        sysflag::TRANSACTION_ROLLBACK => false,
        other => {
            if other == sysflag::TRANSACTION_NOT {
                tracing::debug!(
                    group = %h.producer_group,
                    msg_id = %h.msg_id,
                    from_check = h.from_transaction_check,
                    remark = req.remark.as_deref().unwrap_or(""),
                    "transaction state unknown: nothing to do"
                );
            }
            return None;
        }
    };
    tracing::debug!(
        group = %h.producer_group,
        msg_id = %h.msg_id,
        transaction_id = h.transaction_id.as_deref().unwrap_or(""),
        commit,
        from_check = h.from_transaction_check,
        "end transaction"
    );
    Some(end(broker, &h, commit).await.unwrap_or_else(|e| e))
}

async fn end(
    broker: &Broker,
    h: &EndTransactionHeader,
    commit: bool,
) -> Result<RemotingCommand, RemotingCommand> {
    let half_error = |e: HalfError| error(response::SYSTEM_ERROR, e.to_string());
    let bytes = transaction::find_half(
        &broker.store,
        h.commit_log_offset,
        &h.producer_group,
        h.tran_state_table_offset,
    )
    .await
    .map_err(half_error)?;
    let Decoded::Message(half) = record::decode(&bytes, false) else {
        return Err(half_error(HalfError::NotFound));
    };
    if commit {
        let mut msg = transaction::committed_message(&half).map_err(half_error)?;
        let Some(guard) = broker.transactions.begin_commit(&half) else {
            // Another commit of this transaction is being stored. If it
            // fails, this half message must stay unresolved (no op record),
            // so that a check-back asks again.
            return Err(error(
                response::SYSTEM_BUSY,
                "a commit of this transaction is in progress; it will be checked back",
            ));
        };
        if transaction::already_committed(&broker.store, &half) {
            tracing::info!(
                group = %h.producer_group,
                msg_id = %h.msg_id,
                "transaction already committed; not delivered again"
            );
        } else {
            // A committed message with DELAY is delayed, as Java's store does.
            if let Some(level) = broker.schedule.delay_level(&msg.properties, msg.sys_flag) {
                broker.schedule.divert(&mut msg, level);
            }
            let end = store_committed(broker, &msg).await?;
            // The next commit of this transaction looks for this one in the
            // index: keep the guard until dispatch has put it there.
            if !broker
                .store
                .wait_dispatched(end, transaction::DISPATCH_WAIT)
                .await
            {
                tracing::warn!(
                    msg_id = %h.msg_id,
                    "committed message not yet indexed; a repeated commit could deliver it again"
                );
            }
        }
        drop(guard);
    }
    write_op(broker, &half).await;
    Ok(success())
}

/// Appends the committed message; store outcome → response (Java
/// `sendFinalMessage`: every stored status is SUCCESS). Returns the commit
/// log offset after the stored record.
async fn store_committed(
    broker: &Broker,
    msg: &engine::MessageToStore,
) -> Result<u64, RemotingCommand> {
    let max = broker.store.config().max_message_size as usize;
    let illegal = || {
        error(
            response::MESSAGE_ILLEGAL,
            "The message is illegal, maybe msg body or properties length not matched. msg body length limit 128k, msg properties length limit 32k.",
        )
    };
    msg.validate(max).map_err(|_| illegal())?;
    match broker.store.put_message_async(msg).await {
        Ok(r) => match r.status {
            PutStatus::PutOk
            | PutStatus::FlushDiskTimeout
            | PutStatus::FlushSlaveTimeout
            | PutStatus::SlaveNotAvailable => Ok(r
                .messages
                .last()
                .map_or(0, |m| m.physical_offset + u64::from(m.size))),
        },
        Err(StoreError::InvalidArgument(_)) => Err(illegal()),
        Err(
            StoreError::ReadOnly(_)
            | StoreError::ShutDown
            | StoreError::DiskFull(_)
            | StoreError::DispatchStalled(_),
        ) => Err(error(
            response::SERVICE_NOT_AVAILABLE,
            "service not available now.",
        )),
        Err(e) => Err(error(response::SYSTEM_ERROR, e.to_string())),
    }
}

/// Records that the half message is resolved. A failure is logged only, as
/// in Java: the check service will ask the producer again.
async fn write_op(broker: &Broker, half: &record::RecordView<'_>) {
    let op = transaction::op_message(
        half.queue_id,
        half.queue_offset,
        broker.store_host,
        now_ms(),
    );
    if let Err(e) = broker.store.put_message_async(&op).await {
        tracing::error!(
            half_offset = half.queue_offset,
            "cannot write the transaction op record: {e}"
        );
    }
}
