//! Workers: joining with the enrollment token, session authentication, heartbeats, leaving,
//! handing out the current task, and the operator's worker list.

use std::ops::Bound;
use std::time::Duration;

use tokio::time::Instant;

use fedcsg_core::secret::Secret;
use fedcsg_wire::proto::PROTOCOL_VERSION;
use tracing::info;

use super::seeds::local_training_seed;
use super::state::{TaskKind, WorkerEntry};
use super::{Coordinator, JoinInfo, Joined, Task, TrainTask, WorkerView, constant_time_eq};
use crate::error::{Result, ServerError};
use crate::ids::{WorkerId, random_hex};

impl Coordinator {
    /// Checks the enrollment token a Join presents (before anything else of the request).
    pub fn check_enrollment(&self, enrollment_token: Option<&str>) -> Result<()> {
        if let Some(expected) = &self.settings.enrollment_token {
            match enrollment_token {
                Some(t) if constant_time_eq(t, expected.expose()) => {}
                Some(_) => {
                    return Err(ServerError::unauthenticated("enrollment token is wrong"));
                }
                None => {
                    return Err(ServerError::unauthenticated(
                        "enrollment token missing: send authorization: Bearer <token>",
                    ));
                }
            }
        }
        Ok(())
    }

    /// Joins a worker under its name. A name held by a live session is taken over only with
    /// that session's token (the same worker rejoining); a name of a gone or departed worker is
    /// free.
    pub fn join(&self, info: JoinInfo, enrollment_token: Option<&str>) -> Result<Joined> {
        self.check_enrollment(enrollment_token)?;
        if info.protocol_version != PROTOCOL_VERSION {
            return Err(ServerError::ProtocolVersion {
                got: info.protocol_version,
                supported: PROTOCOL_VERSION,
            });
        }
        if info.name.is_empty() {
            return Err(ServerError::invalid("worker_name is missing"));
        }
        crate::ids::check_display_name(&info.name, "worker_name").map_err(ServerError::invalid)?;
        if info.num_samples == 0 {
            return Err(ServerError::invalid(
                "num_samples must be positive: a worker without data cannot train",
            ));
        }
        if info.num_samples > self.settings.max_worker_samples {
            return Err(ServerError::invalid(format!(
                "num_samples {} exceeds the {} a worker may declare (the coordinator's --max-worker-samples)",
                info.num_samples, self.settings.max_worker_samples
            )));
        }
        if info.in_channels == 0
            || info.in_channels > 64
            || info.num_classes < 2
            || info.num_classes > 10_000
        {
            return Err(ServerError::invalid(format!(
                "in_channels {} / num_classes {} out of range",
                info.in_channels, info.num_classes
            )));
        }
        // Ids stay unique across restarts through the store's counter (a write: before the lock).
        let stored_seq = match &self.store {
            Some(store) => Some(store.next_id("worker")?),
            None => None,
        };
        let mut st = self.lock();
        let holders: Vec<(WorkerId, bool, bool)> = st
            .workers
            .values()
            .filter(|w| w.name == info.name)
            .map(|w| {
                let own = info
                    .previous_session_token
                    .as_deref()
                    .is_some_and(|t| constant_time_eq(t, w.session_token.expose()));
                (w.id.clone(), w.is_present(), own)
            })
            .collect();
        if let Some((live, ..)) = holders.iter().find(|(_, present, own)| *present && !own) {
            let silent = Instant::now().duration_since(st.workers[live].last_seen);
            return Err(ServerError::NameInUse {
                name: info.name,
                holder: live.clone(),
                silent_for: silent,
                released_after: self.settings.heartbeat_timeout.saturating_sub(silent),
            });
        }
        // The same worker rejoining, or a gone one's name: the old entry (and any task it
        // held) is replaced.
        for (id, ..) in &holders {
            st.workers.remove(id);
        }
        st.next_worker += 1;
        let id = WorkerId::new(format!("w-{}", stored_seq.unwrap_or(st.next_worker)));
        let session_token = random_hex();
        st.workers.insert(
            id.clone(),
            WorkerEntry {
                id: id.clone(),
                name: info.name.clone(),
                session_token: Secret::new(session_token.clone()),
                num_samples: info.num_samples,
                in_channels: info.in_channels,
                num_classes: info.num_classes,
                last_seen: Instant::now(),
                gone: false,
                gone_at: None,
                left: false,
                told_done: false,
                assignment: None,
                rounds_contributed: 0,
                busy: false,
            },
        );
        drop(st);
        // The workers table is a record of sessions: written after the fact, outside the lock.
        if let Some(store) = &self.store {
            let replaced: Vec<&str> = holders.iter().map(|(id, ..)| id.as_str()).collect();
            let written = store
                .forget_workers(&replaced)
                .and_then(|()| store.record_worker(id.as_str(), &info.name, info.num_samples));
            if let Err(e) = written {
                tracing::warn!(worker_id = %id, error = %e, "cannot record the worker in the state store");
            }
        }
        info!(worker_id = %id, name = %info.name, samples = info.num_samples, "worker joined");
        self.wake.notify_one();
        Ok(Joined {
            worker_id: id,
            session_token,
            heartbeat_interval: self.settings.heartbeat_interval,
        })
    }

    /// Checks a worker's session token and marks it alive.
    pub fn authenticate_worker(&self, worker: &WorkerId, token: Option<&str>) -> Result<()> {
        let mut st = self.lock();
        let entry = st.workers.get_mut(worker).ok_or_else(|| {
            ServerError::unauthenticated(format!("unknown worker {worker}: join again"))
        })?;
        if entry.left {
            return Err(ServerError::unauthenticated(format!(
                "worker {worker} left: its session is closed; join again"
            )));
        }
        match token {
            Some(t) if constant_time_eq(t, entry.session_token.expose()) => {}
            Some(_) => {
                return Err(ServerError::unauthenticated(format!(
                    "session token of worker {worker} is wrong"
                )));
            }
            None => {
                return Err(ServerError::unauthenticated(
                    "session token missing: send authorization: Bearer <token>",
                ));
            }
        }
        entry.last_seen = Instant::now();
        if entry.gone {
            info!(worker_id = %worker, "worker is back");
            entry.gone = false;
            entry.gone_at = None;
        }
        Ok(())
    }

    /// Records a heartbeat; returns true when the worker should abandon its current task.
    pub fn heartbeat(&self, worker: &WorkerId, busy_with: Option<&str>) -> Result<bool> {
        let mut st = self.lock();
        let entry = st
            .workers
            .get_mut(worker)
            .ok_or_else(|| ServerError::UnknownWorker {
                worker: worker.clone(),
            })?;
        entry.last_seen = Instant::now();
        entry.busy = busy_with.is_some();
        Ok(match busy_with {
            None => false,
            Some(token) => entry
                .assignment
                .as_ref()
                .is_none_or(|a| a.token.as_str() != token),
        })
    }

    /// Ends a worker's session: its token is refused from now on and its name is free.
    pub fn leave(&self, worker: &WorkerId) {
        let mut st = self.lock();
        if let Some(w) = st.workers.get_mut(worker) {
            w.mark_gone(Instant::now());
            w.left = true;
            info!(worker_id = %worker, "worker left");
        }
        drop(st);
        self.wake.notify_one();
    }

    pub fn next_task(&self, worker: &WorkerId) -> Result<Task> {
        let mut st = self.lock();
        if st.shutting_down {
            if let Some(w) = st.workers.get_mut(worker) {
                w.told_done = true;
            }
            return Ok(Task::Done {
                reason: "coordinator is shutting down".into(),
            });
        }
        let entry = st
            .workers
            .get(worker)
            .ok_or_else(|| ServerError::UnknownWorker {
                worker: worker.clone(),
            })?;
        let wait = |reason: &str| Task::Wait {
            retry_after: Duration::from_millis(500),
            reason: reason.into(),
        };
        let Some(a) = &entry.assignment else {
            return Ok(wait("no task for this worker now"));
        };
        let Some(job) = st.jobs.get(&a.job) else {
            return Ok(wait("job is gone"));
        };
        let Some(active) = &job.active else {
            return Ok(wait("round is closing"));
        };
        let deadline_seconds = active
            .deadline
            .saturating_duration_since(Instant::now())
            .as_secs()
            .max(1);
        Ok(match a.kind {
            TaskKind::Train => Task::Train(TrainTask {
                job: job.id.clone(),
                round: a.round,
                token: a.token.clone(),
                model: job.spec.model,
                training: job.spec.training_for_round(a.round),
                seed: local_training_seed(job.spec.seed, a.round, worker),
                bn_stats: job.spec.bn_stats,
                deadline_seconds,
                upload: job.spec.exchange.upload_compression(),
                error_feedback: job.spec.exchange.error_feedback,
                proximal_mu: job.spec.strategy.proximal_mu(),
                local_privacy: job.spec.privacy.and_then(|p| p.local()),
            }),
            TaskKind::Evaluate => Task::Evaluate {
                job: job.id.clone(),
                round: a.round,
                token: a.token.clone(),
                model: job.spec.model,
                batch_size: job.spec.training.batch_size.max(64),
            },
        })
    }

    /// Forgets workers gone (or left) for longer than the retention period, in memory and in
    /// the store.
    pub(super) fn forget_gone_workers(&self, st: &mut super::state::State, now: Instant) {
        let retention = self.settings.gone_worker_retention;
        let expired: Vec<WorkerId> = st
            .workers
            .values()
            .filter(|w| w.gone_at.is_some_and(|t| now.duration_since(t) > retention))
            .map(|w| w.id.clone())
            .collect();
        if expired.is_empty() {
            return;
        }
        for id in &expired {
            st.workers.remove(id);
        }
        info!(workers = expired.len(), retention = ?retention, "forgot gone workers");
        st.queued_writes
            .push(super::store_writes::QueuedWrite::ForgetWorkers(
                expired.iter().map(WorkerId::to_string).collect(),
            ));
    }

    /// Present workers that have not been told "done" since shutdown began.
    pub fn workers_not_yet_told_done(&self) -> usize {
        self.lock()
            .workers
            .values()
            .filter(|w| w.is_present() && !w.told_done)
            .count()
    }

    /// Up to `limit` workers after `after` in id order, and whether more follow.
    pub fn list_workers(&self, after: Option<&WorkerId>, limit: usize) -> (Vec<WorkerView>, bool) {
        let now = Instant::now();
        let st = self.lock();
        let mut page: Vec<WorkerView> = st
            .workers
            .range::<WorkerId, _>((
                after.map_or(Bound::Unbounded, Bound::Excluded),
                Bound::Unbounded,
            ))
            .take(limit + 1)
            .map(|(_, w)| WorkerView {
                id: w.id.clone(),
                name: w.name.clone(),
                num_samples: w.num_samples,
                state: w.state_name(),
                seconds_since_heartbeat: now.duration_since(w.last_seen).as_secs_f64(),
                rounds_contributed: w.rounds_contributed,
            })
            .collect();
        let more = page.len() > limit;
        page.truncate(limit);
        (page, more)
    }
}
