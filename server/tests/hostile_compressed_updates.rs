//! Hostile compressed updates, against an in-process coordinator over real gRPC, for every
//! upload encoding (f16, bf16, int8 with top-k): bytes that lie (a length that disagrees with
//! shape × encoding, a bad checksum, an int8 scale that is NaN, infinite, zero or negative, the
//! int8 code -128, an f16/bf16 infinity, a sparse index out of range or repeated, more kept
//! values than the tensor has), and headers the job does not allow (another encoding, sparsity
//! without top-k or outside a delta, a sparse running statistic, an unknown update kind) are
//! refused with INVALID_ARGUMENT naming the problem, and the global model stays bit for bit
//! unchanged. A good delta in the job's encoding is then accepted and moves the exact global
//! model by exactly what it decodes to.

use std::time::Duration;

use fedcsg_core::tensor::StateDict;
use fedcsg_wire::convert::{encoding_to_proto, meta_to_proto};
use fedcsg_wire::delta::{apply_delta, stays_plain};
use fedcsg_wire::proto::v1 as pb;
use fedcsg_wire::proto::v1::operator_service_client::OperatorServiceClient;
use fedcsg_wire::proto::v1::worker_service_client::WorkerServiceClient;
use fedcsg_wire::{Compression, EncodedState, TensorEncoding, TopK, encode_tensors};
use tonic::Code;
use tonic::transport::Channel;

mod support;
use support::{assemble, authed, export, start};

/// A hand-rolled worker: joined, with its session token.
struct Worker {
    client: WorkerServiceClient<Channel>,
    id: String,
    token: String,
}

impl Worker {
    async fn train_task(&mut self) -> pb::TrainTask {
        loop {
            let req = authed(
                pb::GetTaskRequest {
                    worker_id: self.id.clone(),
                    wait_ms: 0,
                },
                &self.token,
            );
            match self.client.get_task(req).await.unwrap().into_inner().task {
                Some(pb::get_task_response::Task::Train(t)) => return t,
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// The global model's header tensors, and the model decoded.
    async fn download(&mut self, t: &pb::TrainTask) -> (Vec<pb::TensorSpec>, StateDict) {
        let req = pb::DownloadModelRequest {
            worker_id: self.id.clone(),
            job_id: t.job_id.clone(),
            round_token: t.round_token.clone(),
        };
        let header = {
            let mut s = self
                .client
                .download_model(authed(req.clone(), &self.token))
                .await
                .unwrap()
                .into_inner();
            match s.message().await.unwrap().unwrap().part {
                Some(pb::model_chunk::Part::Header(h)) => h.tensors,
                _ => panic!("no header"),
            }
        };
        let s = self
            .client
            .download_model(authed(req, &self.token))
            .await
            .unwrap()
            .into_inner();
        (header, assemble(s).await)
    }

    async fn send(
        &mut self,
        t: &pb::TrainTask,
        kind: i32,
        (specs, payload): (Vec<pb::TensorSpec>, Vec<u8>),
    ) -> Result<pb::UploadUpdateResponse, tonic::Status> {
        let header = pb::UpdateHeader {
            worker_id: self.id.clone(),
            job_id: t.job_id.clone(),
            round: t.round,
            round_token: t.round_token.clone(),
            num_samples: 50,
            train_loss: 1.0,
            train_seconds: 1.0,
            tensors: specs,
            kind,
        };
        let msgs = vec![
            pb::UpdateChunk {
                part: Some(pb::update_chunk::Part::Header(header)),
            },
            pb::UpdateChunk {
                part: Some(pb::update_chunk::Part::Data(payload)),
            },
        ];
        self.client
            .upload_update(authed(tokio_stream::iter(msgs), &self.token))
            .await
            .map(|r| r.into_inner())
    }
}

const DELTA: i32 = pb::UpdateKind::Delta as i32;
const WEIGHTS: i32 = pb::UpdateKind::Weights as i32;

/// `update` encoded as a worker would: running statistics dense, the rest in `c`.
fn encoded(update: &StateDict, c: Compression) -> EncodedState {
    encode_tensors(update, 9, |t| {
        if stays_plain(&t.name) {
            Compression::dense(c.encoding)
        } else {
            c
        }
    })
    .unwrap()
}

type Transfer = (Vec<pb::TensorSpec>, Vec<u8>);

fn transfer(e: &EncodedState) -> Transfer {
    (
        e.metas.iter().map(meta_to_proto).collect(),
        e.chunks.concat(),
    )
}

/// `t` with tensor `name`'s spec and bytes edited; with `recrc` its checksum is recomputed, so
/// that only the edit is wrong.
fn tampered(
    t: &Transfer,
    name: &str,
    recrc: bool,
    edit: impl FnOnce(&mut pb::TensorSpec, &mut [u8]),
) -> Transfer {
    let (mut specs, mut payload) = t.clone();
    let i = specs.iter().position(|s| s.name == name).unwrap();
    let start: u64 = specs[..i].iter().map(|s| s.byte_length).sum();
    let range = start as usize..(start + specs[i].byte_length) as usize;
    edit(&mut specs[i], &mut payload[range.clone()]);
    if recrc {
        specs[i].crc32 = crc32fast::hash(&payload[range]);
    }
    (specs, payload)
}

/// Every refusal of `cases` is INVALID_ARGUMENT with `needle` in its message, and leaves the
/// exported model as `before`.
async fn assert_refused(
    w: &mut Worker,
    op: &mut OperatorServiceClient<Channel>,
    task: &pb::TrainTask,
    before: &StateDict,
    cases: Vec<(String, i32, Transfer, &str)>,
) {
    for (case, kind, t, needle) in cases {
        let err = w.send(task, kind, t).await.expect_err(&case);
        assert_eq!(
            err.code(),
            Code::InvalidArgument,
            "{case}: {}",
            err.message()
        );
        assert!(
            err.message().contains(needle),
            "{case}: message {:?} lacks {needle:?}",
            err.message()
        );
        assert_eq!(
            export(op, &task.job_id).await.fingerprint(),
            before.fingerprint(),
            "{case} changed the global model"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_compressed_updates_are_refused_and_change_nothing() {
    let (url, _stop) = start().await;
    let channel = Channel::from_shared(url).unwrap().connect().await.unwrap();
    let mut op = OperatorServiceClient::new(channel.clone());
    let mut client = WorkerServiceClient::new(channel);
    let joined = client
        .join(support::hostile::join_request("compressing"))
        .await
        .unwrap()
        .into_inner();
    let mut w = Worker {
        client,
        id: joined.worker_id,
        token: joined.session_token,
    };
    let topk = TopK::new(0.1).unwrap();
    let jobs = [
        (TensorEncoding::F16, None, TensorEncoding::Bf16),
        (TensorEncoding::Bf16, None, TensorEncoding::F16),
        (TensorEncoding::Int8Scaled, Some(topk), TensorEncoding::F16),
    ];
    for (upload, topk, other) in jobs {
        let spec = pb::JobSpec {
            upload_encoding: encoding_to_proto(upload) as i32,
            download_encoding: pb::Encoding::F16 as i32,
            upload_topk: topk.map_or(0.0, |k| k.fraction()),
            ..support::job_spec(
                &format!("hostile-{upload}"),
                support::JobShape {
                    rounds: 1,
                    min_workers: 1,
                    deadline_seconds: 600,
                    max_samples: 0,
                    seed: 5,
                },
            )
        };
        let job = op
            .create_job(pb::CreateJobRequest { spec: Some(spec) })
            .await
            .unwrap()
            .into_inner();
        let task = w.train_task().await;
        assert_eq!(task.job_id, job.job_id);
        assert_eq!(
            (task.upload_encoding, task.upload_topk, task.error_feedback),
            (
                encoding_to_proto(upload) as i32,
                topk.map_or(0.0, |k| k.fraction()),
                true
            ),
            "the task carries the job's upload settings"
        );
        let (download_specs, global) = w.download(&task).await;
        assert!(
            download_specs
                .iter()
                .all(|s| s.encoding == pb::Encoding::F16 as i32),
            "the global model comes in the job's download encoding"
        );
        let before = export(&mut op, &job.job_id).await;

        // The good delta: +0.25 on the last layer's bias, zero elsewhere, statistics plain.
        let delta = StateDict::new(
            global
                .tensors()
                .iter()
                .map(|t| {
                    let mut t = t.clone();
                    if !stays_plain(&t.name) {
                        let bump = if t.name == "fc.bias" { 0.25 } else { 0.0 };
                        t.values.iter_mut().for_each(|v| *v = bump);
                    }
                    t
                })
                .collect(),
        )
        .unwrap();
        let compression = Compression {
            encoding: upload,
            topk,
        };
        let good_encoded = encoded(&delta, compression);
        let good = transfer(&good_encoded);
        let n_fc = 640u64;
        let fc = "fc.weight";
        let mut cases = vec![
            (
                "a length that disagrees with shape x encoding".into(),
                DELTA,
                tampered(&good, fc, false, |s, _| s.byte_length += 1),
                "byte length",
            ),
            (
                "a flipped byte".into(),
                DELTA,
                tampered(&good, fc, false, |_, b| b[5] ^= 0x20),
                "checksum",
            ),
            (
                "an encoding the job does not take".into(),
                DELTA,
                transfer(&encoded(&delta, Compression::dense(other))),
                "not supported",
            ),
            (
                "an unknown update kind".into(),
                7,
                good.clone(),
                "update kind",
            ),
            (
                "the unused scale field set".into(),
                DELTA,
                tampered(&good, fc, false, |s, _| s.scale = 0.5),
                "scale",
            ),
            (
                "a NaN in an f32 delta".into(),
                DELTA,
                tampered(
                    &transfer(&encoded(&delta, Compression::PLAIN)),
                    fc,
                    true,
                    |_, b| b[0..4].copy_from_slice(&f32::NAN.to_le_bytes()),
                ),
                "non-finite",
            ),
        ];
        match (upload, topk) {
            (TensorEncoding::F16 | TensorEncoding::Bf16, _) => {
                let inf: u16 = if upload == TensorEncoding::F16 {
                    0x7c00
                } else {
                    0x7f80
                };
                cases.push((
                    "a value that decodes to infinity".into(),
                    DELTA,
                    tampered(&good, fc, true, |_, b| {
                        b[2..4].copy_from_slice(&inf.to_le_bytes())
                    }),
                    "non-finite",
                ));
                cases.push((
                    "a sparse tensor in a job without top-k".into(),
                    DELTA,
                    transfer(&encoded(
                        &delta,
                        Compression {
                            encoding: upload,
                            topk: Some(TopK::new(0.1).unwrap()),
                        },
                    )),
                    "sparse",
                ));
            }
            (TensorEncoding::Int8Scaled, Some(_)) => {
                // fc.weight is sparse: 64 indices, then one scale, then 64 codes.
                let k = 64usize;
                for (what, scale) in [
                    ("NaN", f32::NAN),
                    ("infinite", f32::INFINITY),
                    ("zero", 0.0),
                    ("negative", -1.0),
                ] {
                    cases.push((
                        format!("a {what} int8 scale"),
                        DELTA,
                        tampered(&good, fc, true, |_, b| {
                            b[4 * k..4 * k + 4].copy_from_slice(&scale.to_le_bytes())
                        }),
                        "scale 0",
                    ));
                }
                cases.push((
                    "the int8 code -128".into(),
                    DELTA,
                    tampered(&good, fc, true, |_, b| b[4 * k + 4] = 0x80),
                    "-128",
                ));
                cases.push((
                    "an index out of range".into(),
                    DELTA,
                    tampered(&good, fc, true, |_, b| {
                        b[0..4].copy_from_slice(&(n_fc as u32).to_le_bytes())
                    }),
                    "out of range",
                ));
                cases.push((
                    "a repeated index".into(),
                    DELTA,
                    tampered(&good, fc, true, |_, b| {
                        let first: [u8; 4] = b[0..4].try_into().unwrap();
                        b[4..8].copy_from_slice(&first);
                    }),
                    "strictly increase",
                ));
                cases.push((
                    "more kept values than the tensor has".into(),
                    DELTA,
                    tampered(&good, fc, false, |s, _| s.kept_values = Some(n_fc + 1)),
                    "keeps 641 values",
                ));
                cases.push((
                    "an int8 tensor without values_per_scale".into(),
                    DELTA,
                    tampered(&good, fc, false, |s, _| s.values_per_scale = 0),
                    "values_per_scale",
                ));
                cases.push((
                    "sparse plain weights".into(),
                    WEIGHTS,
                    good.clone(),
                    "dense tensors only",
                ));
                let sparse_stats = encode_tensors(&delta, 9, |_| compression).unwrap();
                cases.push((
                    "a sparse running statistic".into(),
                    DELTA,
                    transfer(&sparse_stats),
                    "running statistic",
                ));
            }
            _ => unreachable!("the jobs above"),
        }
        assert_refused(&mut w, &mut op, &task, &before, cases).await;

        // The good delta is accepted; the model becomes the exact global plus what it decodes
        // to: the checks above could have failed.
        let ok = w.send(&task, DELTA, good).await.unwrap();
        assert!(ok.accepted && !ok.duplicate);
        let mut after = export(&mut op, &job.job_id).await;
        for _ in 0..200 {
            if after.fingerprint() != before.fingerprint() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            after = export(&mut op, &job.job_id).await;
        }
        let names: Vec<&str> = delta.tensors().iter().map(|t| t.name.as_str()).collect();
        let want = apply_delta(
            &before.restricted_to(&names),
            &good_encoded.decode().unwrap(),
        )
        .unwrap();
        for t in want.tensors() {
            let got = &after.get(&t.name).unwrap().values;
            for (a, b) in got.iter().zip(&t.values) {
                assert!(
                    (a - b).abs() <= 1e-6 * b.abs().max(1.0),
                    "{upload}: {} {a} vs {b}",
                    t.name
                );
            }
        }
        let bias = &after.get("fc.bias").unwrap().values;
        let moved = bias
            .iter()
            .zip(&before.get("fc.bias").unwrap().values)
            .filter(|(a, b)| (*a - *b - 0.25).abs() < 0.01)
            .count();
        assert!(moved >= 1, "{upload}: the bias did not move by 0.25");
    }
}
