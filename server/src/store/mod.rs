//! Durable coordinator state: SQLite (jobs, rounds, workers, id counters) under `--state-dir`,
//! with versioned migrations, and every round's global model as a safetensors file written
//! atomically *before* the round record naming it (with its SHA-256) commits. A coordinator
//! killed at any moment restarts from its last committed round.

mod migrations;
pub mod model_file;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use fedcsg_core::tensor::StateDict;
use rusqlite::{Connection, OptionalExtension, params};
use thiserror::Error;

use crate::job::{JobSpec, JobState, RoundRecord};

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("state store {path}: {why}")]
    Io { path: String, why: String },
    #[error("state database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("state {what} is corrupt: {why}")]
    Corrupt { what: String, why: String },
}

/// A job as the store holds it, ready to be resumed.
#[derive(Debug)]
pub struct PersistedJob {
    pub id: String,
    pub spec: JobSpec,
    pub state: JobState,
    pub message: String,
    pub records: Vec<RoundRecord>,
    /// The global model of the last committed round (or the initial model).
    pub global: StateDict,
    pub global_file_sha256: String,
    /// The strategy's state after the last committed round, when it keeps one.
    pub strategy_state: Option<StateDict>,
}

/// The files a round commits, each as (path relative to the state directory, SHA-256).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoundFiles {
    pub model: (String, String),
    /// The strategy's state after the round (absent for stateless strategies).
    pub strategy: Option<(String, String)>,
}

pub struct Store {
    conn: Mutex<Connection>,
    dir: PathBuf,
}

fn state_name(s: JobState) -> &'static str {
    match s {
        JobState::Pending => "pending",
        JobState::Running => "running",
        JobState::Succeeded => "succeeded",
        JobState::Failed => "failed",
        JobState::Cancelled => "cancelled",
    }
}

fn parse_state(s: &str) -> Result<JobState, StoreError> {
    Ok(match s {
        "pending" => JobState::Pending,
        "running" => JobState::Running,
        "succeeded" => JobState::Succeeded,
        "failed" => JobState::Failed,
        "cancelled" => JobState::Cancelled,
        other => {
            return Err(StoreError::Corrupt {
                what: "job state".into(),
                why: format!("unknown state {other:?}"),
            });
        }
    })
}

fn now_unix() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Store {
    /// Opens (creating if needed) the store in `dir` and applies pending migrations.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir.join("models")).map_err(|e| StoreError::Io {
            path: dir.display().to_string(),
            why: e.to_string(),
        })?;
        let mut conn = Connection::open(dir.join("state.db"))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrations::apply(&mut conn)?;
        Ok(Self {
            conn: Mutex::new(conn),
            dir: dir.to_path_buf(),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The next value of a durable counter (`job`, `worker`), so ids are never reused.
    pub fn next_id(&self, counter: &str) -> Result<u64, StoreError> {
        let conn = self.conn();
        let current: Option<i64> = conn
            .query_row(
                "SELECT value FROM counters WHERE name = ?1",
                [counter],
                |r| r.get(0),
            )
            .optional()?;
        let next = current.unwrap_or(0) + 1;
        conn.execute("INSERT INTO counters(name, value) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE SET value = ?2", params![counter, next])?;
        Ok(next as u64)
    }

    fn model_path(&self, job: &str, round: u64) -> (String, PathBuf) {
        let rel = format!("models/{job}/round-{round:06}.safetensors");
        let abs = self.dir.join(&rel);
        (rel, abs)
    }

    /// Writes a round's global model file (atomically); returns (relative path, SHA-256).
    /// Nothing refers to the file until [`Store::commit_round`] commits.
    pub fn write_model(
        &self,
        job: &str,
        round: u64,
        state: &StateDict,
    ) -> Result<(String, String), StoreError> {
        let (rel, abs) = self.model_path(job, round);
        let sha = model_file::write_atomic(&abs, state)?;
        Ok((rel, sha))
    }

    /// Writes a round's strategy state file (atomically); returns (relative path, SHA-256).
    /// Like the model file, nothing refers to it until [`Store::commit_round`] commits.
    pub fn write_strategy_state(
        &self,
        job: &str,
        round: u64,
        state: &StateDict,
    ) -> Result<(String, String), StoreError> {
        let rel = format!("models/{job}/round-{round:06}.strategy.safetensors");
        let sha = model_file::write_atomic(&self.dir.join(&rel), state)?;
        Ok((rel, sha))
    }

    /// Records a new job with its initial model (written first, as round 0).
    pub fn insert_job(
        &self,
        id: &str,
        spec: &JobSpec,
        initial: &StateDict,
    ) -> Result<(), StoreError> {
        let (rel, sha) = self.write_model(id, 0, initial)?;
        let spec_json = serde_json::to_string(spec).map_err(|e| StoreError::Corrupt {
            what: "job spec".into(),
            why: e.to_string(),
        })?;
        self.conn().execute(
            "INSERT INTO jobs(id, spec_json, state, message, initial_model, initial_sha256, created_unix) VALUES (?1, ?2, 'pending', 'waiting for workers', ?3, ?4, ?5)",
            params![id, spec_json, rel, sha, now_unix()],
        )?;
        Ok(())
    }

    /// Commits a round: its record (naming the model file, the strategy state file and their
    /// SHA-256s) and the job's state, in one transaction.
    pub fn commit_round(
        &self,
        job: &str,
        record: &RoundRecord,
        files: &RoundFiles,
        state: JobState,
        message: &str,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(record).map_err(|e| StoreError::Corrupt {
            what: "round record".into(),
            why: e.to_string(),
        })?;
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let (model_file, file_sha256) = &files.model;
        let (strategy_file, strategy_sha256) = files.strategy.clone().unzip();
        tx.execute(
            "INSERT INTO rounds(job_id, round, record_json, model_file, file_sha256, committed_unix, strategy_file, strategy_sha256) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![job, record.round as i64, json, model_file, file_sha256, now_unix(), strategy_file, strategy_sha256],
        )?;
        tx.execute(
            "UPDATE jobs SET state = ?2, message = ?3 WHERE id = ?1",
            params![job, state_name(state), message],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Updates a committed round's metrics (e.g. federated accuracy that arrives later).
    pub fn update_round_record(&self, job: &str, record: &RoundRecord) -> Result<(), StoreError> {
        let json = serde_json::to_string(record).map_err(|e| StoreError::Corrupt {
            what: "round record".into(),
            why: e.to_string(),
        })?;
        self.conn().execute(
            "UPDATE rounds SET record_json = ?3 WHERE job_id = ?1 AND round = ?2",
            params![job, record.round as i64, json],
        )?;
        Ok(())
    }

    pub fn set_job_state(
        &self,
        job: &str,
        state: JobState,
        message: &str,
    ) -> Result<(), StoreError> {
        self.conn().execute(
            "UPDATE jobs SET state = ?2, message = ?3 WHERE id = ?1",
            params![job, state_name(state), message],
        )?;
        Ok(())
    }

    pub fn record_worker(&self, id: &str, name: &str, num_samples: u64) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO workers(id, name, num_samples, joined_unix) VALUES (?1, ?2, ?3, ?4) ON CONFLICT(id) DO UPDATE SET name = ?2, num_samples = ?3",
            params![id, name, num_samples as i64, now_unix()],
        )?;
        Ok(())
    }

    /// Deletes the rows of workers the coordinator no longer remembers.
    pub fn forget_workers(&self, ids: &[&str]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        {
            let mut delete = tx.prepare("DELETE FROM workers WHERE id = ?1")?;
            for id in ids {
                delete.execute(params![id])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Deletes the rows of workers that joined more than `age` ago (at start: every stored
    /// session ended with the previous process).
    pub fn forget_workers_joined_before(
        &self,
        age: std::time::Duration,
    ) -> Result<u64, StoreError> {
        let cutoff = now_unix() - age.as_secs_f64();
        let n = self.conn().execute(
            "DELETE FROM workers WHERE joined_unix < ?1",
            params![cutoff],
        )?;
        Ok(n as u64)
    }

    /// How many workers the store remembers.
    pub fn worker_count(&self) -> Result<u64, StoreError> {
        let n: i64 = self
            .conn()
            .query_row("SELECT COUNT(*) FROM workers", [], |r| r.get(0))?;
        Ok(n as u64)
    }

    /// Every job with its committed rounds and the verified model of its last one.
    pub fn load_jobs(&self) -> Result<Vec<PersistedJob>, StoreError> {
        let conn = self.conn();
        let mut jobs_stmt = conn.prepare("SELECT id, spec_json, state, message, initial_model, initial_sha256 FROM jobs ORDER BY created_unix, id")?;
        let rows: Vec<(String, String, String, String, String, String)> = jobs_stmt
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })?
            .collect::<Result<_, _>>()?;
        let mut out = Vec::new();
        for (id, spec_json, state, message, initial_model, initial_sha) in rows {
            let spec: JobSpec =
                serde_json::from_str(&spec_json).map_err(|e| StoreError::Corrupt {
                    what: format!("spec of {id}"),
                    why: e.to_string(),
                })?;
            let mut stmt = conn.prepare("SELECT round, record_json, model_file, file_sha256, strategy_file, strategy_sha256 FROM rounds WHERE job_id = ?1 ORDER BY round")?;
            type Row = (i64, String, String, String, Option<String>, Option<String>);
            let rounds: Vec<Row> = stmt
                .query_map([&id], |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                    ))
                })?
                .collect::<Result<_, _>>()?;
            let mut records = Vec::new();
            for (i, (round, json, ..)) in rounds.iter().enumerate() {
                if *round != i as i64 + 1 {
                    return Err(StoreError::Corrupt {
                        what: format!("rounds of {id}"),
                        why: format!("round {round} follows round {i}"),
                    });
                }
                records.push(serde_json::from_str(json).map_err(|e| StoreError::Corrupt {
                    what: format!("round {round} of {id}"),
                    why: e.to_string(),
                })?);
            }
            let (file, sha) = rounds
                .last()
                .map(|(_, _, f, s, ..)| (f.clone(), s.clone()))
                .unwrap_or((initial_model, initial_sha));
            let global = model_file::read_verified(&self.dir.join(&file), &sha)?;
            let strategy_state = match rounds.last() {
                Some((_, _, _, _, Some(f), Some(s))) => {
                    Some(model_file::read_verified(&self.dir.join(f), s)?)
                }
                _ => None,
            };
            out.push(PersistedJob {
                id,
                spec,
                state: parse_state(&state)?,
                message,
                records,
                global,
                global_file_sha256: sha,
                strategy_state,
            });
        }
        Ok(out)
    }

    /// (model file, SHA-256) of a committed round.
    pub fn round_model(
        &self,
        job: &str,
        round: u64,
    ) -> Result<Option<(PathBuf, String)>, StoreError> {
        let row: Option<(String, String)> = self
            .conn()
            .query_row(
                "SELECT model_file, file_sha256 FROM rounds WHERE job_id = ?1 AND round = ?2",
                params![job, round as i64],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        Ok(row.map(|(f, s)| (self.dir.join(f), s)))
    }
}
