//! Durable writes stay out from under the state lock: a SQLite write with `synchronous=FULL`
//! waits for an fsync, and every heartbeat, task and upload waits for the state lock.
//!
//! Two kinds of write:
//! - writes that must be durable before memory changes (a round commit, a cancellation) take
//!   the `store_writes` lock, look at the state under a short state lock, write without it, and
//!   apply the change under a second short state lock;
//! - writes that record what memory already says (a job failed, a federated evaluation's
//!   figures, forgotten workers) are queued in the state and flushed by the round driver with
//!   `store_writes` held, in the order they were queued.
//!
//! Lock order: `store_writes` before the state lock, never the other way round.

use tracing::warn;

use super::Coordinator;
use crate::job::{JobState, RoundRecord};

/// A write that records what memory already holds.
#[derive(Debug)]
pub enum QueuedWrite {
    JobState {
        job: String,
        state: JobState,
        message: String,
    },
    RoundRecord {
        job: String,
        record: Box<RoundRecord>,
    },
    ForgetWorkers(Vec<String>),
}

impl Coordinator {
    /// Performs the queued writes, without the state lock. A failed write is logged: memory
    /// stays right and the next restart reads the last durable state.
    pub(super) fn flush_store_writes(&self) {
        let Some(store) = &self.store else {
            self.lock().queued_writes.clear();
            return;
        };
        let _order = self.store_writes.lock().unwrap_or_else(|p| p.into_inner());
        let queued = std::mem::take(&mut self.lock().queued_writes);
        for write in queued {
            let writing = std::time::Instant::now();
            let result = match &write {
                QueuedWrite::JobState {
                    job,
                    state,
                    message,
                } => store.set_job_state(job, *state, message),
                QueuedWrite::RoundRecord { job, record } => store.update_round_record(job, record),
                QueuedWrite::ForgetWorkers(ids) => {
                    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
                    store.forget_workers(&ids)
                }
            };
            self.metrics.store_committed(writing.elapsed());
            if let Err(e) = result {
                warn!(error = %e, write = ?write, "cannot write to the state store");
            }
        }
    }
}
