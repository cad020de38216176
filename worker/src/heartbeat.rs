//! Liveness: a task that sends a heartbeat every interval, whatever training is doing, naming the
//! round token the worker is busy with; when the coordinator answers that the task no longer
//! matters, it raises that task's abandon flag, which training polls between steps.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fedcsg_wire::proto::v1 as pb;
use tokio::task::JoinHandle;
use tracing::{Instrument, debug, info, warn};

use crate::client::CoordinatorClient;

/// Bounds on the coordinator's heartbeat interval (0 means "unset": the default is used).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
const MIN_INTERVAL: Duration = Duration::from_millis(100);
const MAX_INTERVAL: Duration = Duration::from_secs(60);

/// The interval to use for a `heartbeat_interval_ms` from a JoinResponse.
pub fn interval_from_ms(ms: u32) -> Duration {
    match ms {
        0 => DEFAULT_INTERVAL,
        ms => Duration::from_millis(u64::from(ms)).clamp(MIN_INTERVAL, MAX_INTERVAL),
    }
}

/// A task in progress: its round token and its abandon flag.
type BusyTask = (String, Arc<AtomicBool>);

/// The task in progress, shared between the task loop and the heartbeat.
#[derive(Debug, Clone, Default)]
pub struct BusySlot {
    current: Arc<Mutex<Option<BusyTask>>>,
}

impl BusySlot {
    /// Marks the worker busy with `round_token` until the guard is dropped.
    pub fn start(&self, round_token: &str) -> BusyGuard {
        let abandon = Arc::new(AtomicBool::new(false));
        *self.lock() = Some((round_token.to_string(), Arc::clone(&abandon)));
        BusyGuard {
            slot: self.clone(),
            abandon,
        }
    }

    /// The round token in progress and its abandon flag. The flag belongs to that task alone,
    /// so a late answer about an earlier task cannot stop a later one.
    fn current(&self) -> Option<BusyTask> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<BusyTask>> {
        // The data is a plain value: a panic elsewhere cannot leave it half-written.
        self.current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Held while a task runs; clears the slot when dropped.
#[derive(Debug)]
pub struct BusyGuard {
    slot: BusySlot,
    abandon: Arc<AtomicBool>,
}

impl BusyGuard {
    /// The flag the heartbeat raises when the coordinator says this task no longer matters.
    pub fn abandon_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.abandon)
    }

    pub fn abandoned(&self) -> bool {
        self.abandon.load(Ordering::Relaxed)
    }
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        let mut current = self.slot.lock();
        if current
            .as_ref()
            .is_some_and(|(_, flag)| Arc::ptr_eq(flag, &self.abandon))
        {
            *current = None;
        }
    }
}

/// The running heartbeat task; dropping this stops it.
#[derive(Debug)]
pub struct Heartbeat {
    handle: JoinHandle<()>,
}

impl Heartbeat {
    pub fn spawn(
        client: CoordinatorClient,
        worker_id: String,
        interval: Duration,
        busy: BusySlot,
    ) -> Self {
        let span = tracing::info_span!("heartbeat", worker_id = %worker_id);
        let handle = tokio::spawn(beat(client, worker_id, interval, busy).instrument(span));
        Self { handle }
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

async fn beat(client: CoordinatorClient, worker_id: String, interval: Duration, busy: BusySlot) {
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failures = 0u32;
    loop {
        ticker.tick().await;
        let current = busy.current();
        let request = pb::HeartbeatRequest {
            worker_id: worker_id.clone(),
            busy_with_round_token: current
                .as_ref()
                .map(|(token, _)| token.clone())
                .unwrap_or_default(),
        };
        // An answer that arrives after the next heartbeat is due is worthless: bound each call by
        // the interval (but give a slow link at least a second).
        match client
            .heartbeat(request, interval.max(Duration::from_secs(1)))
            .await
        {
            Ok(response) => {
                if failures > 0 {
                    info!(
                        after_failures = failures,
                        "heartbeats are getting through again"
                    );
                }
                failures = 0;
                if let (true, Some((token, flag))) = (response.abandon_current_task, current)
                    && !flag.swap(true, Ordering::Relaxed)
                {
                    info!(round_token = %token, "the coordinator says the current task no longer matters; abandoning it");
                }
            }
            Err(status) => {
                failures += 1;
                // The task loop sees the same failure on its next call and reacts there; here
                // it is only worth a line when it persists.
                if failures == 3 {
                    warn!(code = ?status.code(), message = status.message(), "heartbeats are failing");
                } else {
                    debug!(code = ?status.code(), message = status.message(), "heartbeat failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Zero means the default; other values are bounded.
    #[test]
    fn intervals_are_bounded() {
        assert_eq!(interval_from_ms(0), DEFAULT_INTERVAL);
        assert_eq!(interval_from_ms(1), MIN_INTERVAL);
        assert_eq!(interval_from_ms(2_000), Duration::from_secs(2));
        assert_eq!(interval_from_ms(u32::MAX), MAX_INTERVAL);
    }

    /// The slot names the task in progress, forgets it when the task ends, and a finished
    /// task's guard cannot clear a newer task.
    #[test]
    fn busy_slot_tracks_the_current_task() {
        let slot = BusySlot::default();
        assert!(slot.current().is_none());
        let first = slot.start("r1");
        let (token, flag) = slot.current().unwrap();
        assert_eq!(token, "r1");
        flag.store(true, Ordering::Relaxed);
        assert!(first.abandoned());
        let second = slot.start("r2");
        assert!(!second.abandoned(), "a new task starts with a fresh flag");
        drop(first);
        assert_eq!(slot.current().unwrap().0, "r2");
        drop(second);
        assert!(slot.current().is_none());
    }
}
