//! Update uploads, malformed or misdirected, over real gRPC against an in-process coordinator:
//! the stream's shape, every header figure, every tensor spec field, the data chunks, and an
//! upload from a worker that holds no task in the round. Each is refused with INVALID_ARGUMENT
//! (FAILED_PRECONDITION for the worker without a task) and a message naming the field or the
//! rule, and afterwards the jobs, the workers and the global model are exactly as before; the
//! well-formed update is then accepted. Complements hostile_updates.rs (misdirected and
//! malformed update *contents*).

use fedcsg_wire::proto::v1 as pb;
use tonic::Code;

mod support;
use support::hostile::{
    Refusals, RoundInTraining, header_of, messages, round_in_training, snapshot,
};
use support::{assemble, authed};

/// Every malformed upload is refused, naming the field or rule, and changes nothing; the same
/// upload, well-formed, is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_uploads_are_refused_and_change_nothing() {
    let RoundInTraining {
        mut op,
        mut w,
        job,
        wid,
        tok,
        train,
        late,
        before,
        stop: _stop,
        ..
    } = round_in_training().await;
    let mut refused = Refusals::default();
    let ia = Code::InvalidArgument;

    let dl = |job: &str, token: &str| {
        authed(
            pb::DownloadModelRequest {
                worker_id: wid.clone(),
                job_id: job.into(),
                round_token: token.into(),
            },
            &tok,
        )
    };

    // ----- UploadUpdate: stream shape, header figures, tensor specs, chunks -----
    let global = {
        let req = dl(&job, &train.round_token);
        assemble(w.download_model(req).await.unwrap().into_inner()).await
    };
    let (header, chunks) = header_of(&global, &wid, &job, train.round, &train.round_token);
    let data: Vec<u8> = chunks.concat();
    let uploader = w.clone();
    let up = |msgs: Vec<pb::UpdateChunk>, token: &str| {
        let mut w = uploader.clone();
        let req = authed(tokio_stream::iter(msgs), token);
        async move { w.upload_update(req).await }
    };
    let h = |f: &dyn Fn(&mut pb::UpdateHeader)| {
        let mut h = header.clone();
        f(&mut h);
        Some(h)
    };
    let t = |f: &dyn Fn(&mut pb::TensorSpec)| h(&|h| f(&mut h.tensors[1]));
    let mut flipped = data.clone();
    flipped[100] ^= 0x40;
    let uploads: Vec<(&str, Vec<pb::UpdateChunk>, Code, &str)> = vec![
        ("empty stream", vec![], ia, "empty"),
        (
            "data before the header",
            messages(None, vec![data.clone()]),
            ia,
            "header",
        ),
        (
            "header twice",
            {
                let mut m = messages(Some(header.clone()), vec![]);
                m.extend(messages(Some(header.clone()), chunks.clone()));
                m
            },
            ia,
            "only data chunks",
        ),
        (
            "a message with no part",
            {
                let mut m = messages(Some(header.clone()), chunks.clone());
                m.insert(1, pb::UpdateChunk { part: None });
                m
            },
            ia,
            "only data chunks",
        ),
        (
            "empty worker_id",
            messages(h(&|h| h.worker_id.clear()), chunks.clone()),
            ia,
            "worker_id",
        ),
        (
            "empty job_id",
            messages(h(&|h| h.job_id.clear()), chunks.clone()),
            ia,
            "job_id",
        ),
        (
            "round token with a space",
            messages(h(&|h| h.round_token = "a b".into()), chunks.clone()),
            ia,
            "round_token",
        ),
        (
            "round number of another round",
            messages(h(&|h| h.round += 1), chunks.clone()),
            ia,
            "round",
        ),
        (
            "negative train_loss",
            messages(h(&|h| h.train_loss = -1.0), chunks.clone()),
            ia,
            "train_loss",
        ),
        (
            "NaN train_seconds",
            messages(h(&|h| h.train_seconds = f64::NAN), chunks.clone()),
            ia,
            "train_seconds",
        ),
        (
            "dtype unspecified",
            messages(t(&|t| t.dtype = 0), chunks.clone()),
            ia,
            "dtype",
        ),
        (
            "unknown encoding",
            messages(t(&|t| t.encoding = 42), chunks.clone()),
            ia,
            "encoding",
        ),
        (
            "f16 tensor in a job that uploads f32",
            messages(
                t(&|t| t.encoding = pb::Encoding::F16 as i32),
                chunks.clone(),
            ),
            ia,
            "not supported",
        ),
        (
            "scale on an f32 tensor",
            messages(t(&|t| t.scale = 0.5), chunks.clone()),
            ia,
            "scale",
        ),
        (
            "byte_length that disagrees with the shape",
            messages(t(&|t| t.byte_length += 4), chunks.clone()),
            ia,
            "byte length",
        ),
        (
            "rank 9",
            messages(t(&|t| t.shape = vec![1; 9]), chunks.clone()),
            ia,
            "rank",
        ),
        (
            "2^30 elements",
            messages(t(&|t| t.shape = vec![1 << 15, 1 << 15]), chunks.clone()),
            ia,
            "elements",
        ),
        (
            "dimension overflowing u64",
            messages(t(&|t| t.shape = vec![u64::MAX, 2]), chunks.clone()),
            ia,
            "elements",
        ),
        (
            "name of 257 bytes",
            messages(t(&|t| t.name = "n".repeat(257)), chunks.clone()),
            ia,
            "name",
        ),
        (
            "empty tensor name",
            messages(t(&|t| t.name.clear()), chunks.clone()),
            ia,
            "empty name",
        ),
        (
            "a tensor named twice",
            messages(
                h(&|h| {
                    let first = h.tensors[0].clone();
                    h.tensors[1] = first;
                }),
                chunks.clone(),
            ),
            ia,
            "twice",
        ),
        (
            "4097 tensors",
            messages(
                h(&|h| {
                    let x = h.tensors[0].clone();
                    h.tensors = vec![x; 4097];
                }),
                chunks.clone(),
            ),
            ia,
            "4097 tensors",
        ),
        (
            "an empty data chunk",
            messages(Some(header.clone()), vec![Vec::new(), data.clone()]),
            ia,
            "empty data chunk",
        ),
        (
            "a chunk above 2 MiB",
            messages(Some(header.clone()), vec![vec![0u8; (2 << 20) + 1]]),
            ia,
            "exceeds the limit",
        ),
        (
            "a byte more than announced",
            messages(Some(header.clone()), vec![data.clone(), vec![0]]),
            ia,
            "announces",
        ),
        (
            "a byte less than announced",
            messages(Some(header.clone()), vec![data[..data.len() - 1].to_vec()]),
            ia,
            "announces",
        ),
        (
            "a flipped bit",
            messages(Some(header.clone()), vec![flipped]),
            ia,
            "checksum",
        ),
        (
            "a wrong checksum",
            messages(t(&|t| t.crc32 ^= 1), chunks.clone()),
            ia,
            "checksum",
        ),
    ];
    for (case, msgs, code, needle) in uploads {
        refused.check(
            &format!("UploadUpdate: {case}"),
            up(msgs, &tok).await,
            code,
            needle,
        );
    }
    // The late worker holds a valid session but no task in this round.
    let (late_header, late_chunks) = header_of(
        &global,
        &late.worker_id,
        &job,
        train.round,
        &train.round_token,
    );
    refused.check(
        "UploadUpdate: a worker not sampled",
        up(
            messages(Some(late_header), late_chunks),
            &late.session_token,
        )
        .await,
        Code::FailedPrecondition,
        "was not given a task",
    );

    assert_eq!(
        snapshot(&mut op, &job).await,
        before,
        "a refused request changed the jobs, the workers or the model"
    );

    let ok = up(messages(Some(header.clone()), chunks.clone()), &tok)
        .await
        .unwrap()
        .into_inner();
    assert!(ok.accepted && !ok.duplicate);
    eprintln!(
        "hostile uploads: {} distinct malformed or misdirected requests refused",
        refused.0
    );
}
