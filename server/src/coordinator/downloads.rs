//! The global model a worker downloads for its task, in the job's download encoding. Each
//! version of the global model is encoded once, on the blocking pool, by the first download that
//! needs it; every other download of that version (late joiners included) streams the very same
//! bytes. The coordinator's own evaluation and the exported model never go through here: they
//! use the exact f32 model.

use std::sync::Arc;

use bytes::Bytes;
use fedcsg_core::tensor::StateDict;
use fedcsg_wire::{Compression, TensorMeta, encode_state_with};
use tokio::sync::OnceCell;
use tracing::{info, warn};

use super::Coordinator;
use super::seeds::download_rounding_seed;
use crate::error::{Result, ServerError};
use crate::ids::{JobId, WorkerId};

/// One version of a job's global model, encoded for download.
#[derive(Debug)]
pub struct EncodedModel {
    pub metas: Vec<TensorMeta>,
    /// Reference-counted: every stream sends these without copying them.
    pub chunks: Vec<Bytes>,
}

/// Where a job keeps the encoding of its current global model (a fresh cell per version).
pub type DownloadCell = Arc<OnceCell<Arc<EncodedModel>>>;

/// What a download streams: the global model version, its checksum, and its encoding.
pub struct DownloadSource {
    /// Rounds committed when this version became the global model.
    pub round: u64,
    pub model_sha256: String,
    cell: DownloadCell,
    global: Arc<StateDict>,
    names: Vec<String>,
    compression: Compression,
    seed: u64,
}

impl DownloadSource {
    /// The encoded model: built by the first caller for this version (off the async runtime),
    /// shared with every other.
    pub async fn encoded(&self) -> Result<Arc<EncodedModel>> {
        let encoded = self
            .cell
            .get_or_try_init(|| {
                let (global, compression, seed) =
                    (Arc::clone(&self.global), self.compression, self.seed);
                let names = self.names.clone();
                let round = self.round;
                async move {
                    tokio::task::spawn_blocking(move || {
                        let names: Vec<&str> = names.iter().map(String::as_str).collect();
                        let e = encode_state_with(&global.restricted_to(&names), compression, seed)?;
                        if e.saturated > 0 {
                            warn!(round, values = e.saturated, encoding = %compression, "global model values beyond the download encoding's range were saturated");
                        }
                        info!(round, encoding = %compression, data_bytes = e.data_bytes(), "global model encoded for download");
                        Ok::<_, ServerError>(Arc::new(EncodedModel {
                            metas: e.metas,
                            chunks: e.chunks.into_iter().map(Bytes::from).collect(),
                        }))
                    })
                    .await?
                }
            })
            .await?;
        Ok(Arc::clone(encoded))
    }
}

impl Coordinator {
    /// The exchanged part of the global model for the worker's current task.
    pub fn model_for_download(
        &self,
        worker: &WorkerId,
        job: &JobId,
        token: &str,
    ) -> Result<DownloadSource> {
        let st = self.lock();
        let entry = st
            .workers
            .get(worker)
            .ok_or_else(|| ServerError::UnknownWorker {
                worker: worker.clone(),
            })?;
        let j = st
            .jobs
            .get(job)
            .ok_or_else(|| ServerError::UnknownJob { job: job.clone() })?;
        match &entry.assignment {
            Some(a) if &a.job == job && a.token.as_str() == token => {}
            _ => {
                return Err(ServerError::precondition(format!(
                    "round token {token:?} is not a task of worker {worker} in job {job} (round closed or never issued): ask for a new task"
                )));
            }
        }
        crate::fault::hit("download", j.rounds_completed() + 1);
        Ok(DownloadSource {
            round: j.rounds_completed(),
            model_sha256: j.global_sha256.clone(),
            cell: Arc::clone(&j.download),
            global: Arc::clone(&j.global),
            names: j.exchanged_names.clone(),
            compression: Compression::dense(j.spec.exchange.download),
            seed: download_rounding_seed(j.spec.seed, j.rounds_completed()),
        })
    }

    /// Counts a download of `bytes` (header and data messages) towards the worker's round.
    pub fn record_download(&self, job: &JobId, token: &str, worker: &WorkerId, bytes: u64) {
        let mut st = self.lock();
        if let Some(active) = st
            .jobs
            .get_mut(job)
            .and_then(|j| j.active.as_mut())
            .filter(|a| a.token.as_str() == token)
        {
            *active.bytes_down.entry(worker.clone()).or_default() += bytes;
            active.downloads += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use fedcsg_core::tensor::NamedTensor;
    use fedcsg_wire::TensorEncoding;

    use super::*;

    fn source(cell: &DownloadCell, global: &Arc<StateDict>) -> DownloadSource {
        DownloadSource {
            round: 3,
            model_sha256: String::new(),
            cell: Arc::clone(cell),
            global: Arc::clone(global),
            names: vec!["a.weight".into()],
            compression: Compression::dense(TensorEncoding::Int8Scaled),
            seed: 11,
        }
    }

    /// Downloads of one model version share one encoding (the same allocation, not an equal
    /// copy), restricted to the exchanged tensors; a new version (a fresh cell) is encoded anew.
    #[tokio::test]
    async fn one_encoding_per_version_is_shared() {
        let global = Arc::new(
            StateDict::new(vec![
                NamedTensor {
                    name: "a.weight".into(),
                    shape: vec![1000],
                    values: (0..1000).map(|i| i as f32 / 1000.0).collect(),
                },
                NamedTensor {
                    name: "b.running_var".into(),
                    shape: vec![4],
                    values: vec![1.0; 4],
                },
            ])
            .unwrap(),
        );
        let cell = DownloadCell::default();
        let (first, second) = tokio::join!(
            async { source(&cell, &global).encoded().await.unwrap() },
            async { source(&cell, &global).encoded().await.unwrap() }
        );
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(first.metas.len(), 1, "only the exchanged tensors");
        assert_eq!(first.metas[0].encoding, TensorEncoding::Int8Scaled);
        assert_eq!(first.metas[0].byte_length, 1000 + 4 * 4);
        let next = source(&DownloadCell::default(), &global)
            .encoded()
            .await
            .unwrap();
        assert!(!Arc::ptr_eq(&first, &next));
        assert_eq!(
            first.chunks, next.chunks,
            "the same version encodes the same bytes"
        );
    }
}
