//! FedAvg's aggregation throughput: updates the size of ResNet-20's exchanged tensors (full
//! filters, and CSG 12-72) folded into the round's running weighted sum, 10 to 1,000 updates a
//! round. Criterion reports GB/s of update data (f32 values) folded.
//!
//! `cargo bench -p fedcsg-server --bench aggregation` (add `-- --quick` for a short run).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fedcsg_core::spec::ModelSpec;
use fedcsg_core::tensor::{NamedTensor, StateDict};
use fedcsg_ml::model::{BnStatsPolicy, Model};
use fedcsg_ml::ops::ConvBackend;
use fedcsg_server::aggregate::WeightedMean;
use rand::{Rng, SeedableRng, rngs::StdRng};

/// The exchanged tensors of ResNet-20 in `csg` mode, as the coordinator keeps them.
fn exchanged(csg: &str) -> StateDict {
    let spec = ModelSpec::new("resnet20".parse().unwrap(), csg.parse().unwrap(), 1, 10);
    Model::new(&spec, 0, ConvBackend::Reference)
        .unwrap()
        .exchanged_state(BnStatsPolicy::Averaged)
        .unwrap()
}

/// `n` updates shaped like `template`, with random values.
fn updates(template: &StateDict, n: usize) -> Vec<StateDict> {
    let mut rng = StdRng::seed_from_u64(7);
    (0..n)
        .map(|_| {
            let tensors = template
                .tensors()
                .iter()
                .map(|t| NamedTensor {
                    name: t.name.clone(),
                    shape: t.shape.clone(),
                    values: (0..t.values.len())
                        .map(|_| rng.random_range(-0.01..0.01))
                        .collect(),
                })
                .collect();
            StateDict::new(tensors).unwrap()
        })
        .collect()
}

fn fold(c: &mut Criterion) {
    let mut group = c.benchmark_group("fedavg_fold");
    group.sample_size(10);
    for csg in ["full", "12-72"] {
        let template = exchanged(csg);
        let values: usize = template.tensors().iter().map(|t| t.values.len()).sum();
        let pool = updates(&template, 1000);
        for n in [10usize, 100, 1000] {
            group.throughput(Throughput::Bytes((n * values * 4) as u64));
            group.bench_with_input(BenchmarkId::new(csg, n), &n, |b, &n| {
                b.iter(|| {
                    let mut mean = WeightedMean::new(&template);
                    for (i, u) in pool[..n].iter().enumerate() {
                        mean.add(u, 100.0 + i as f64).unwrap();
                    }
                    mean.mean_values().unwrap()
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, fold);
criterion_main!(benches);
