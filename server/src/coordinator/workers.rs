//! Workers: joining with the enrollment token, session authentication, heartbeats, leaving,
//! handing out the current task, and the operator's worker list.

use std::time::{Duration, Instant};

use fedcsg_core::secret::Secret;
use fedcsg_wire::proto::PROTOCOL_VERSION;
use tracing::info;

use super::seeds::local_training_seed;
use super::state::{TaskKind, WorkerEntry};
use super::{Coordinator, JoinInfo, Joined, Task, TrainTask, WorkerView, constant_time_eq};
use crate::error::{Result, ServerError};
use crate::ids::{WorkerId, random_hex};

impl Coordinator {
    pub fn join(&self, info: JoinInfo, enrollment_token: Option<&str>) -> Result<Joined> {
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
        if info.protocol_version != PROTOCOL_VERSION {
            return Err(ServerError::ProtocolVersion {
                got: info.protocol_version,
                supported: PROTOCOL_VERSION,
            });
        }
        if info.name.is_empty() || info.name.len() > 128 {
            return Err(ServerError::invalid("worker_name must be 1..=128 bytes"));
        }
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
        let mut st = self.lock();
        // A rejoin under the same name replaces the old entry (the process restarted).
        let old: Vec<WorkerId> = st
            .workers
            .values()
            .filter(|w| w.name == info.name)
            .map(|w| w.id.clone())
            .collect();
        for id in old {
            st.workers.remove(&id);
        }
        st.next_worker += 1;
        let seq = match &self.store {
            Some(store) => store.next_id("worker")?,
            None => st.next_worker,
        };
        let id = WorkerId::new(format!("w-{seq}"));
        if let Some(store) = &self.store {
            store.record_worker(id.as_str(), &info.name, info.num_samples)?;
        }
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
                assignment: None,
                rounds_contributed: 0,
                busy: false,
            },
        );
        drop(st);
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

    pub fn leave(&self, worker: &WorkerId) {
        let mut st = self.lock();
        if let Some(w) = st.workers.get_mut(worker) {
            w.gone = true;
            w.assignment = None;
            info!(worker_id = %worker, "worker left");
        }
    }

    pub fn next_task(&self, worker: &WorkerId) -> Result<Task> {
        let st = self.lock();
        if st.shutting_down {
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

    pub fn list_workers(&self) -> Vec<WorkerView> {
        let now = Instant::now();
        self.lock()
            .workers
            .values()
            .map(|w| WorkerView {
                id: w.id.clone(),
                name: w.name.clone(),
                num_samples: w.num_samples,
                state: if w.gone {
                    "gone"
                } else {
                    match w.assignment.as_ref().map(|a| &a.kind) {
                        Some(TaskKind::Train) => "training",
                        Some(TaskKind::Evaluate) => "evaluating",
                        None => "idle",
                    }
                },
                seconds_since_heartbeat: now.duration_since(w.last_seen).as_secs_f64(),
                rounds_contributed: w.rounds_contributed,
            })
            .collect()
    }
}
