//! Moving models: the global model streamed down (header, then data chunks, assembled and
//! checked as they arrive, in whatever dense encoding the coordinator chose) and the update
//! streamed up in the same shape.

use std::time::Duration;

use fedcsg_core::tensor::StateDict;
use fedcsg_wire::convert::{meta_to_proto, metas_from_proto, update_kind_to_proto};
use fedcsg_wire::proto::v1 as pb;
use fedcsg_wire::proto::v1::{model_chunk, update_chunk};
use fedcsg_wire::{Accepted, EncodedState, ModelAssembler, UpdateKind, WireLimits};
use prost::Message;
use tokio::time::sleep;
use tracing::warn;

use crate::assignment::RoundRef;
use crate::backoff::Backoff;
use crate::client::CoordinatorClient;
use crate::error::{WorkerError, is_transient};

/// Attempts at sending one update while the coordinator is unreachable (the update is kept and
/// re-sent; the coordinator recognises a duplicate).
const UPLOAD_ATTEMPTS: u32 = 4;
/// How often an upload refused because the coordinator's upload budget is full
/// (RESOURCE_EXHAUSTED) is sent again; the round's close ends the tries sooner.
pub const BUSY_ATTEMPTS: u32 = 1200;

/// The pause before sending an upload the coordinator was too busy to take: short, jittered
/// and growing to at most 2 s, so a crowd of refused workers spreads out.
pub fn busy_delay(attempt: u32, rng: &mut impl rand::Rng) -> Duration {
    let base = Duration::from_millis(100) * attempt.clamp(1, 20);
    base.mul_f64(rng.random_range(0.5..=1.0))
}

/// A downloaded global model.
#[derive(Debug)]
pub struct Downloaded {
    pub state: StateDict,
    /// Encoded size of every `ModelChunk` received, header included.
    pub encoded_bytes: u64,
    pub model_sha256: String,
}

fn protocol(why: impl Into<String>) -> WorkerError {
    WorkerError::Protocol {
        what: "model stream",
        why: why.into(),
    }
}

/// Downloads the global model of `round`.
pub async fn download(
    client: &CoordinatorClient,
    worker_id: &str,
    round: &RoundRef,
) -> Result<Downloaded, WorkerError> {
    let rpc = |s| WorkerError::rpc("DownloadModel", s);
    let request = pb::DownloadModelRequest {
        worker_id: worker_id.to_string(),
        job_id: round.job_id.clone(),
        round_token: round.round_token.clone(),
    };
    let mut stream = client.download_model(request).await.map_err(rpc)?;
    let first = stream
        .message()
        .await
        .map_err(rpc)?
        .ok_or_else(|| protocol("ended before its header"))?;
    let mut encoded_bytes = first.encoded_len() as u64;
    let Some(model_chunk::Part::Header(header)) = first.part else {
        return Err(protocol("the first message is not a header"));
    };
    check_header(&header, round)?;
    let limits = WireLimits::default();
    let metas = metas_from_proto(&header.tensors, &limits)?;
    let mut assembler = ModelAssembler::accepting(metas, limits, Accepted::ANY_DENSE)?;
    while let Some(chunk) = stream.message().await.map_err(rpc)? {
        encoded_bytes += chunk.encoded_len() as u64;
        match chunk.part {
            Some(model_chunk::Part::Data(data)) => assembler.push(&data)?,
            Some(model_chunk::Part::Header(_)) => return Err(protocol("a second header")),
            None => return Err(protocol("a message with neither header nor data")),
        }
    }
    Ok(Downloaded {
        state: assembler.finish()?,
        encoded_bytes,
        model_sha256: header.model_sha256,
    })
}

/// A header that names another job or round is refused (fields left empty are not checked).
fn check_header(header: &pb::ModelHeader, round: &RoundRef) -> Result<(), WorkerError> {
    if !header.job_id.is_empty() && header.job_id != round.job_id {
        return Err(protocol(format!(
            "header is for job {:?}, the task for {:?}",
            header.job_id, round.job_id
        )));
    }
    if !header.round_token.is_empty() && header.round_token != round.round_token {
        return Err(protocol(format!(
            "header is for round token {:?}, the task has {:?}",
            header.round_token, round.round_token
        )));
    }
    Ok(())
}

/// What an update says about the training that produced it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UpdateSummary {
    pub num_samples: u64,
    pub train_loss: f64,
    pub train_seconds: f64,
}

/// The messages of an update upload (header first) and their total encoded size.
pub fn update_chunks(
    worker_id: &str,
    round: &RoundRef,
    summary: UpdateSummary,
    kind: UpdateKind,
    encoded: EncodedState,
) -> (Vec<pb::UpdateChunk>, u64) {
    let EncodedState {
        metas,
        chunks: data,
        ..
    } = encoded;
    let header = pb::UpdateHeader {
        worker_id: worker_id.to_string(),
        job_id: round.job_id.clone(),
        round: round.round,
        round_token: round.round_token.clone(),
        num_samples: summary.num_samples,
        train_loss: summary.train_loss,
        train_seconds: summary.train_seconds,
        tensors: metas.iter().map(meta_to_proto).collect(),
        kind: update_kind_to_proto(kind) as i32,
    };
    let chunks: Vec<pb::UpdateChunk> = std::iter::once(update_chunk::Part::Header(header))
        .chain(data.into_iter().map(update_chunk::Part::Data))
        .map(|part| pb::UpdateChunk { part: Some(part) })
        .collect();
    let bytes = chunks.iter().map(|c| c.encoded_len() as u64).sum();
    (chunks, bytes)
}

/// Sends an update, re-sending it while the coordinator is briefly unreachable.
pub async fn send_update(
    client: &CoordinatorClient,
    chunks: Vec<pb::UpdateChunk>,
    max_retry: Duration,
) -> Result<pb::UploadUpdateResponse, WorkerError> {
    let mut backoff = Backoff::new(max_retry);
    let mut busy = 0;
    loop {
        match client.upload_update(chunks.clone()).await {
            Ok(response) => return Ok(response),
            Err(status)
                if status.code() == tonic::Code::ResourceExhausted && busy < BUSY_ATTEMPTS =>
            {
                busy += 1;
                let delay = busy_delay(busy, &mut rand::rng());
                sleep(delay).await;
            }
            Err(status)
                if is_transient(status.code()) && backoff.failures() + 1 < UPLOAD_ATTEMPTS =>
            {
                let delay = backoff.next_delay(&mut rand::rng());
                warn!(code = ?status.code(), message = status.message(), retry_in_ms = delay.as_millis() as u64, "update upload failed; re-sending");
                sleep(delay).await;
            }
            Err(status) => return Err(WorkerError::rpc("UploadUpdate", status)),
        }
    }
}

#[cfg(test)]
mod tests {
    use fedcsg_core::tensor::NamedTensor;
    use fedcsg_wire::limits::MAX_MESSAGE_BYTES;
    use fedcsg_wire::{Compression, TensorEncoding, encode_state_with};

    use super::*;

    fn round() -> RoundRef {
        RoundRef {
            job_id: "j".into(),
            round: 4,
            round_token: "t".into(),
        }
    }

    /// An update larger than one chunk goes out as a header (saying it is a delta) and bounded
    /// data messages that a receiver reassembles into exactly what the sender encoded, in f32
    /// (bit for bit) and in int8.
    #[test]
    fn update_round_trips_through_the_codec() {
        let big = NamedTensor {
            name: "a.weight".into(),
            shape: vec![600_000],
            values: (0..600_000).map(|i| i as f32).collect(),
        };
        let small = NamedTensor {
            name: "b.bias".into(),
            shape: vec![3],
            values: vec![1.0, -2.0, 0.5],
        };
        let state = StateDict::new(vec![big, small]).unwrap();
        let summary = UpdateSummary {
            num_samples: 17,
            train_loss: 0.5,
            train_seconds: 1.5,
        };
        for compression in [
            Compression::PLAIN,
            Compression::dense(TensorEncoding::Int8Scaled),
        ] {
            let encoded = encode_state_with(&state, compression, 3).unwrap();
            let want = encoded.decode().unwrap();
            let (chunks, bytes) =
                update_chunks("w1", &round(), summary, UpdateKind::Delta, encoded);
            if compression.is_exact() {
                assert!(chunks.len() >= 4, "2.4 MB must span several chunks");
            }
            let got = receive(&chunks, bytes, summary);
            assert_eq!(got, want, "{compression}");
            if compression.is_exact() {
                assert_eq!(got, state);
            }
        }
    }

    fn receive(chunks: &[pb::UpdateChunk], bytes: u64, summary: UpdateSummary) -> StateDict {
        assert!(chunks.len() >= 2, "a header and data");
        assert!(chunks.iter().all(|c| c.encoded_len() < MAX_MESSAGE_BYTES));
        assert_eq!(
            bytes,
            chunks.iter().map(|c| c.encoded_len() as u64).sum::<u64>()
        );
        let Some(update_chunk::Part::Header(h)) = &chunks[0].part else {
            panic!("header first")
        };
        assert_eq!(
            (
                h.worker_id.as_str(),
                h.job_id.as_str(),
                h.round,
                h.round_token.as_str()
            ),
            ("w1", "j", 4, "t")
        );
        assert_eq!(
            (h.num_samples, h.train_loss, h.train_seconds),
            (
                summary.num_samples,
                summary.train_loss,
                summary.train_seconds
            )
        );
        assert_eq!(h.kind, pb::UpdateKind::Delta as i32);
        let limits = WireLimits::default();
        let metas = metas_from_proto(&h.tensors, &limits).unwrap();
        let mut a = ModelAssembler::accepting(metas, limits, Accepted::ANY).unwrap();
        for c in &chunks[1..] {
            let Some(update_chunk::Part::Data(d)) = &c.part else {
                panic!("data after the header")
            };
            a.push(d).unwrap();
        }
        a.finish().unwrap()
    }

    /// A model header for another job or round token is refused.
    #[test]
    fn foreign_headers_are_refused() {
        let header = |job: &str, token: &str| pb::ModelHeader {
            job_id: job.into(),
            round_token: token.into(),
            ..Default::default()
        };
        assert!(check_header(&header("j", "t"), &round()).is_ok());
        assert!(check_header(&header("", ""), &round()).is_ok());
        assert!(check_header(&header("k", "t"), &round()).is_err());
        assert!(check_header(&header("j", "u"), &round()).is_err());
    }
}
