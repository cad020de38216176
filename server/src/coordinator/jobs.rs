//! Jobs as the operator sees them: create (building the initial global model), list, get,
//! cancel and export; and rebuilding a stored job when the coordinator restarts.

use std::ops::Bound;
use std::sync::Arc;

use fedcsg_core::tensor::StateDict;
use fedcsg_ml::model::Model;
use fedcsg_ml::ops::ConvBackend;
use tracing::{info, warn};

use super::privacy;
use super::state::JobEntry;
use super::{Coordinator, JobEvent, JobView};
use crate::error::{Result, ServerError};
use crate::ids::JobId;
use crate::job::{JobSpec, JobState, RoundRecord};
use crate::store::PersistedJob;
use crate::strategy::ServerState;

impl Coordinator {
    /// Creates a job: builds its initial global model from the spec and seed (CPU work: call
    /// from a blocking thread).
    pub fn create_job(&self, spec: JobSpec) -> Result<JobView> {
        spec.validate().map_err(ServerError::invalid)?;
        let model = Model::new(&spec.model, spec.seed, ConvBackend::Reference)
            .map_err(|source| ServerError::UnbuildableModel { source })?;
        let inventory = model.inventory(spec.bn_stats);
        let full = Model::new(&spec.model.full_filter(), spec.seed, ConvBackend::Reference)?
            .inventory(spec.bn_stats);
        let global = model.state()?;
        let spec_clip_norm = match &spec.privacy {
            Some(dp) => privacy::next_clip_norm(dp, &[]),
            None => spec.clipping.map(|c| c.initial_norm()),
        };
        let accountant = privacy::replay_accountant(&spec, &[]).map_err(ServerError::invalid)?;
        let id = match &self.store {
            Some(store) => {
                let id = JobId::new(format!("job-{}", store.next_id("job")?));
                // Durable before it is visible: the initial model file, then the job row.
                store.insert_job(id.as_str(), &spec, &global)?;
                id
            }
            None => {
                let mut st = self.lock();
                st.next_job += 1;
                JobId::new(format!("job-{}", st.next_job))
            }
        };
        let exchanged_names: Vec<String> = inventory
            .exchanged_names()
            .into_iter()
            .map(String::from)
            .collect();
        let exchanged = exchanged_part(&global, &exchanged_names);
        let mut st = self.lock();
        let entry = JobEntry {
            id: id.clone(),
            global_sha256: global.fingerprint(),
            global: Arc::new(global),
            exchanged,
            exchanged_names,
            exchanged_values: inventory.exchanged_value_count() as u64,
            full_filter_exchanged_values: full.exchanged_value_count() as u64,
            spec,
            state: JobState::Pending,
            message: "waiting for workers".into(),
            records: Vec::new(),
            active: None,
            retries: 0,
            round_retries: 0,
            strategy_state: Default::default(),
            clip_norm: spec_clip_norm,
            accountant,
            download: Default::default(),
        };
        let view = view_of(&entry, RoundsWanted::None);
        info!(job_id = %id, model = %entry.spec.model, rounds = entry.spec.rounds, "job created");
        st.jobs.insert(id, entry);
        drop(st);
        self.wake.notify_one();
        Ok(view)
    }

    /// Up to `limit` jobs after `after` in id order, without rounds, and whether more follow.
    pub fn list_jobs(&self, after: Option<&JobId>, limit: usize) -> (Vec<JobView>, bool) {
        let st = self.lock();
        let mut page: Vec<JobView> = st
            .jobs
            .range::<JobId, _>((
                after.map_or(Bound::Unbounded, Bound::Excluded),
                Bound::Unbounded,
            ))
            .take(limit + 1)
            .map(|(_, j)| view_of(j, RoundsWanted::None))
            .collect();
        let more = page.len() > limit;
        page.truncate(limit);
        (page, more)
    }

    pub fn get_job(&self, job: &JobId, rounds: RoundsWanted) -> Result<JobView> {
        self.lock()
            .jobs
            .get(job)
            .map(|j| view_of(j, rounds))
            .ok_or_else(|| ServerError::UnknownJob { job: job.clone() })
    }

    /// Up to `limit` of the job's committed rounds from round `first` (1-based) on, and the
    /// job's state.
    pub fn list_rounds(
        &self,
        job: &JobId,
        first: u64,
        limit: usize,
    ) -> Result<(Vec<RoundRecord>, JobState, u64)> {
        let st = self.lock();
        let j = st
            .jobs
            .get(job)
            .ok_or_else(|| ServerError::UnknownJob { job: job.clone() })?;
        let from = usize::try_from(first.max(1) - 1).unwrap_or(usize::MAX);
        let records = j.records.iter().skip(from).take(limit).cloned().collect();
        Ok((records, j.state, j.rounds_completed()))
    }

    pub fn cancel_job(&self, job: &JobId) -> Result<JobView> {
        // Durable first, then in memory; the write happens outside the state lock.
        let _order = self.store_writes.lock().unwrap_or_else(|p| p.into_inner());
        let finished = self
            .lock()
            .jobs
            .get(job)
            .map(|j| j.state.is_finished())
            .ok_or_else(|| ServerError::UnknownJob { job: job.clone() })?;
        let message = "cancelled by an operator";
        if !finished && let Some(store) = &self.store {
            store.set_job_state(job.as_str(), JobState::Cancelled, message)?;
        }
        let mut st = self.lock();
        let j = st
            .jobs
            .get_mut(job)
            .ok_or_else(|| ServerError::UnknownJob { job: job.clone() })?;
        // A job that finished meanwhile (it failed) keeps its state, here and, once its queued
        // write lands after ours, in the store.
        if !j.state.is_finished() {
            j.state = JobState::Cancelled;
            j.message = message.into();
            j.active = None;
        }
        let view = view_of(j, RoundsWanted::Last(1));
        for w in st.workers.values_mut() {
            if w.assignment.as_ref().is_some_and(|a| &a.job == job) {
                w.assignment = None;
            }
        }
        drop(st);
        let _ = self.events.send(JobEvent {
            job: job.clone(),
            state: view.state,
            record: None,
        });
        warn!(job_id = %job, "job cancelled");
        Ok(view)
    }

    /// The full global model of a job (every variable).
    pub fn export(&self, job: &JobId) -> Result<(u64, Arc<StateDict>, String)> {
        let st = self.lock();
        let j = st
            .jobs
            .get(job)
            .ok_or_else(|| ServerError::UnknownJob { job: job.clone() })?;
        Ok((
            j.rounds_completed(),
            Arc::clone(&j.global),
            j.global_sha256.clone(),
        ))
    }
}

/// Rebuilds a job's in-memory entry from the store; an unfinished job resumes with the round
/// after its last committed one.
pub(super) fn resume_job(p: PersistedJob) -> Result<JobEntry> {
    let model = Model::new(&p.spec.model, p.spec.seed, ConvBackend::Reference)?;
    let inventory = model.inventory(p.spec.bn_stats);
    let full = Model::new(
        &p.spec.model.full_filter(),
        p.spec.seed,
        ConvBackend::Reference,
    )?
    .inventory(p.spec.bn_stats);
    model
        .check_state(&p.global, true)
        .map_err(|source| ServerError::StoredModel {
            job: p.id.clone(),
            source,
        })?;
    let strategy_state = match p.strategy_state {
        Some(state) => ServerState::from_state_dict(state).map_err(|why| {
            crate::store::StoreError::Corrupt {
                what: format!("strategy state of {}", p.id),
                why,
            }
        })?,
        None => ServerState::default(),
    };
    // The clipping bound is a function of the committed rounds: replay it.
    let clip_norm = match &p.spec.privacy {
        Some(dp) => privacy::next_clip_norm(dp, &p.records),
        None => p.spec.clipping.map(|c| {
            p.records
                .last()
                .map_or_else(|| c.initial_norm(), |r| r.next_clip_norm(&c))
        }),
    };
    // So is the privacy spent.
    let accountant = privacy::replay_accountant(&p.spec, &p.records).map_err(|why| {
        crate::store::StoreError::Corrupt {
            what: format!("privacy of {}", p.id),
            why,
        }
    })?;
    let exchanged_names: Vec<String> = inventory
        .exchanged_names()
        .into_iter()
        .map(String::from)
        .collect();
    Ok(JobEntry {
        id: JobId::new(p.id),
        global_sha256: p
            .records
            .last()
            .map(|r| r.model_sha256.clone())
            .unwrap_or(p.global_file_sha256),
        exchanged: exchanged_part(&p.global, &exchanged_names),
        global: Arc::new(p.global),
        exchanged_names,
        exchanged_values: inventory.exchanged_value_count() as u64,
        full_filter_exchanged_values: full.exchanged_value_count() as u64,
        message: p.message,
        state: p.state,
        spec: p.spec,
        records: p.records,
        active: None,
        retries: 0,
        round_retries: 0,
        strategy_state: Arc::new(strategy_state),
        clip_norm,
        accountant,
        download: Default::default(),
    })
}

/// The tensors of `global` named in `names`.
pub(super) fn exchanged_part(global: &StateDict, names: &[String]) -> Arc<StateDict> {
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    Arc::new(global.restricted_to(&names))
}

/// Which of a job's committed rounds a [`JobView`] carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoundsWanted {
    None,
    /// The last this many.
    Last(usize),
    All,
}

fn view_of(j: &JobEntry, rounds: RoundsWanted) -> JobView {
    let skip = match rounds {
        RoundsWanted::None => j.records.len(),
        RoundsWanted::Last(n) => j.records.len().saturating_sub(n),
        RoundsWanted::All => 0,
    };
    JobView {
        id: j.id.clone(),
        spec: j.spec.clone(),
        state: j.state,
        message: j.message.clone(),
        records: j.records[skip..].to_vec(),
        rounds_completed: j.rounds_completed(),
        latest_test_accuracy: j.records.last().and_then(|r| r.test_accuracy),
        exchanged_values: j.exchanged_values,
        full_filter_exchanged_values: j.full_filter_exchanged_values,
    }
}
