//! The strategies against reference numbers: `tests/strategies/fixtures.json`, written by an
//! independent NumPy implementation of the papers' formulas (`tests/strategies/reference.py`,
//! which also emulates our f32 storage between rounds). Each case runs its rounds through the same
//! accumulator and close step the coordinator uses, on a single trained tensor.

use fedcsg_core::tensor::{NamedTensor, StateDict};
use serde_json::Value;

use super::clipping::{self, Clipping};
use super::*;

const FIXTURES: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/strategies/fixtures.json"
));

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn tensor(values: &[f64]) -> StateDict {
    StateDict::new(vec![NamedTensor {
        name: "w".into(),
        shape: vec![values.len()],
        values: values.iter().map(|&v| v as f32).collect(),
    }])
    .unwrap()
}

/// ≤ 1e-6 relative, with an absolute floor of 1e-7 for values near zero (a few f32 ulps: a
/// different f64 summation order may move one f32 rounding).
fn assert_close(what: &str, got: &[f32], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let tol = 1e-6 * w.abs() + 1e-7;
        assert!(
            (*g as f64 - w).abs() <= tol,
            "{what}[{i}]: got {g}, reference {w}"
        );
    }
}

fn strategy_of(case: &Value) -> Strategy {
    let p = &case["params"];
    let f = |k: &str| p.get(k).and_then(Value::as_f64);
    let params = StrategyParams {
        server_learning_rate: f("eta"),
        server_momentum: f("momentum"),
        beta1: f("beta1"),
        beta2: f("beta2"),
        tau: f("tau"),
        trim_fraction: f("beta"),
        krum_byzantine: f("f").map(|x| x as u32),
        krum_selected: f("m").map(|x| x as u32),
        ..StrategyParams::default()
    };
    let name = match case["strategy"].as_str().unwrap() {
        "trimmed_mean" => "trimmed-mean",
        "clip_fixed" | "clip_adaptive" => "fedavg",
        other => other,
    };
    Strategy::from_parts(name, &params).unwrap()
}

fn clipping_of(case: &Value) -> Option<Clipping> {
    let p = &case["params"];
    match case["strategy"].as_str().unwrap() {
        "clip_fixed" => Some(Clipping::Fixed {
            norm: p["c"].as_f64().unwrap(),
        }),
        "clip_adaptive" => Some(Clipping::Adaptive {
            initial_norm: p["c0"].as_f64().unwrap(),
            target_quantile: p["quantile"].as_f64().unwrap(),
            learning_rate: p["clip_lr"].as_f64().unwrap(),
        }),
        _ => None,
    }
}

#[test]
fn every_strategy_matches_the_numpy_reference() {
    let fixtures: Value = serde_json::from_str(FIXTURES).unwrap();
    let cases = fixtures["cases"].as_array().unwrap();
    assert!(cases.len() >= 15, "{} cases", cases.len());
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let strategy = strategy_of(case);
        let clip = clipping_of(case);
        let mut bound = clip.map(|c| c.initial_norm());
        let mut global = tensor(&floats(&case["x0"]));
        let mut state = ServerState::default();
        for (r, round) in case["rounds"].as_array().unwrap().iter().enumerate() {
            let what = format!("{name} round {}", r + 1);
            if let Some(c_used) = round.get("expected_c_used") {
                assert!(
                    (bound.unwrap() - c_used.as_f64().unwrap()).abs() < 1e-12,
                    "{what}: C"
                );
            }
            let mut agg = RoundAggregation::new(&strategy, &global);
            let weights = floats(&round["weights"]);
            let mut clipped = Vec::new();
            let deltas = round["deltas"].as_array().unwrap();
            for (i, (d, w)) in deltas.iter().zip(&weights).enumerate() {
                let mut tensors = tensor(&floats(d)).into_tensors();
                if let Some(b) = bound {
                    clipped.push(clipping::clip(&mut tensors, b, |_| true).1);
                    if let Some(want) = round.get("expected_clipped_deltas") {
                        assert_close(
                            &format!("{what} clipped delta {i}"),
                            &tensors[0].values,
                            &floats(&want[i]),
                        );
                    }
                }
                agg.add(&format!("w{i:02}"), StateDict::new(tensors).unwrap(), *w)
                    .unwrap();
            }
            if let Some(want) = round.get("expected_clipped") {
                let want: Vec<bool> = want
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|b| b.as_bool().unwrap())
                    .collect();
                assert_eq!(clipped, want, "{what}: clipped");
            }
            let out = agg.close(&strategy, &global, &mut state).unwrap().unwrap();
            assert_close(
                &what,
                &out.global.tensors()[0].values,
                &floats(&round["expected_x"]),
            );
            if let Some(want) = round.get("expected_selected") {
                let want: Vec<String> = want
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|i| format!("w{:02}", i.as_u64().unwrap()))
                    .collect();
                assert_eq!(out.selected.as_ref(), Some(&want), "{what}: selected");
            }
            for (slot, values) in round["expected_state"].as_object().unwrap() {
                let got = state
                    .get(slot, "w")
                    .unwrap_or_else(|| panic!("{what}: no slot {slot}"));
                assert_close(&format!("{what} state {slot}"), got, &floats(values));
            }
            if let (Some(c), Some(b)) = (clip, bound) {
                let unclipped = clipped.iter().filter(|c| !**c).count();
                bound = Some(c.next_norm(b, unclipped, clipped.len()));
                if let Some(want) = round.get("expected_c") {
                    let want = want.as_f64().unwrap();
                    assert!(
                        (bound.unwrap() - want).abs() <= 1e-12 * want,
                        "{what}: C after"
                    );
                }
            }
            global = out.global;
        }
    }
}

/// Hand-checkable: FedAvg weights by samples; the median ignores one huge value; Krum does not
/// pick the outlier; a delta within the bound is not clipped and one above is scaled to it.
#[test]
fn hand_checked_examples() {
    let zero = tensor(&[0.0, 0.0]);
    let run = |s: Strategy, ds: &[([f64; 2], f64)]| {
        let mut agg = RoundAggregation::new(&s, &zero);
        for (i, (d, w)) in ds.iter().enumerate() {
            agg.add(&format!("w{i}"), tensor(d), *w).unwrap();
        }
        agg.close(&s, &zero, &mut ServerState::default())
            .unwrap()
            .unwrap()
    };
    let avg = run(Strategy::FedAvg, &[([0.0, 4.0], 1.0), ([4.0, 0.0], 3.0)]);
    assert_eq!(avg.global.tensors()[0].values, vec![3.0, 1.0]);
    let med = run(
        Strategy::Median,
        &[([1.0, 1.0], 1.0), ([2.0, 2.0], 1.0), ([1e30, -1e30], 1e9)],
    );
    assert_eq!(med.global.tensors()[0].values, vec![2.0, 1.0]);
    let krum = run(
        Strategy::Krum(Krum::default()),
        &[
            ([0.0, 0.1], 1.0),
            ([0.1, 0.0], 1.0),
            ([50.0, 50.0], 1.0),
            ([0.1, 0.1], 1.0),
            ([0.0, 0.0], 1.0),
        ],
    );
    assert!(!krum.selected.unwrap().contains(&"w2".to_owned()));
    let mut t = tensor(&[3.0, 4.0]).into_tensors();
    assert_eq!(clipping::clip(&mut t, 5.0, |_| true), (5.0, false));
    assert_eq!(clipping::clip(&mut t, 1.0, |_| true), (5.0, true));
    assert_close("clipped", &t[0].values, &[0.6, 0.8]);
}

/// The optimisers move trained tensors only; running statistics get the plain mean delta, and
/// keep no optimiser state.
#[test]
fn running_statistics_take_the_plain_mean() {
    let global = StateDict::new(vec![
        NamedTensor {
            name: "bn.running_var".into(),
            shape: vec![1],
            values: vec![1.0],
        },
        NamedTensor {
            name: "bn.weight".into(),
            shape: vec![1],
            values: vec![1.0],
        },
    ])
    .unwrap();
    let delta = StateDict::new(vec![
        NamedTensor {
            name: "bn.running_var".into(),
            shape: vec![1],
            values: vec![0.5],
        },
        NamedTensor {
            name: "bn.weight".into(),
            shape: vec![1],
            values: vec![0.5],
        },
    ])
    .unwrap();
    let s = Strategy::from_parts("fedadam", &StrategyParams::default()).unwrap();
    let mut agg = RoundAggregation::new(&s, &global);
    agg.add("w0", delta, 10.0).unwrap();
    let mut state = ServerState::default();
    let out = agg.close(&s, &global, &mut state).unwrap().unwrap();
    assert_eq!(out.global.get("bn.running_var").unwrap().values, vec![1.5]);
    assert_ne!(out.global.get("bn.weight").unwrap().values, vec![1.5]);
    assert!(state.get("m", "bn.weight").is_some());
    assert!(state.get("m", "bn.running_var").is_none());
    let back = ServerState::from_state_dict(state.to_state_dict()).unwrap();
    assert_eq!(back, state);
}

/// Parameters are checked and named; one a strategy does not have is refused, not ignored.
#[test]
fn parameters_are_validated() {
    let bad = |name: &str, p: StrategyParams| Strategy::from_parts(name, &p).unwrap_err();
    assert!(bad("fedsgd", StrategyParams::default()).contains("unknown strategy"));
    let e = bad(
        "fedavg",
        StrategyParams {
            beta1: Some(0.9),
            ..Default::default()
        },
    );
    assert!(e.contains("beta1 does not apply to fedavg"), "{e}");
    let e = bad(
        "fedadam",
        StrategyParams {
            tau: Some(0.0),
            ..Default::default()
        },
    );
    assert!(e.contains("strategy_params.tau"), "{e}");
    let e = bad(
        "trimmed-mean",
        StrategyParams {
            trim_fraction: Some(0.5),
            ..Default::default()
        },
    );
    assert!(e.contains("trim_fraction"), "{e}");
    let e = bad(
        "krum",
        StrategyParams {
            krum_selected: Some(0),
            ..Default::default()
        },
    );
    assert!(e.contains("krum_selected"), "{e}");
    let krum = Strategy::from_parts("krum", &StrategyParams::default()).unwrap();
    assert!(krum.validate_for(4, 4).unwrap_err().contains(">= 5"));
    assert!(krum.validate_for(5, 5).is_ok());
    // Rounds that may close with 4 updates cannot run Krum with f = 1, whatever they start with.
    let e = krum.validate_for(8, 4).unwrap_err();
    assert!(e.contains("quorum") && e.contains(">= 5"), "{e}");
    assert!(
        Strategy::Median
            .validate_for(MAX_ROBUST_PARTICIPANTS + 1, 1)
            .is_err()
    );
    // Round trip through the parameters a job reports.
    for name in [
        "fedavg",
        "fedavgm",
        "fedadam",
        "fedyogi",
        "fedadagrad",
        "fedprox",
        "median",
        "trimmed-mean",
        "krum",
    ] {
        let s = Strategy::from_parts(name, &StrategyParams::default()).unwrap();
        assert_eq!(
            Strategy::from_parts(s.name(), &s.params()).unwrap(),
            s,
            "{name}"
        );
    }
    assert_eq!(
        Strategy::from_parts("fedprox", &StrategyParams::default())
            .unwrap()
            .proximal_mu(),
        0.01
    );
    for c in [
        Clipping::Fixed { norm: 0.0 },
        Clipping::Fixed { norm: f64::NAN },
        Clipping::Adaptive {
            initial_norm: 1.0,
            target_quantile: 1.0,
            learning_rate: 0.2,
        },
        Clipping::Adaptive {
            initial_norm: 1.0,
            target_quantile: 0.5,
            learning_rate: 0.0,
        },
    ] {
        assert!(c.validate().unwrap_err().starts_with("spec.clipping."));
    }
}

/// Central DP's noise goes on the mean of the trained tensors with the asked standard
/// deviation (here around a mean delta of 1), batch-norm running statistics stay exact, and a
/// robust strategy refuses noise.
#[test]
fn central_dp_noise_is_added_to_the_trained_mean_only() {
    let n = 50_000;
    let tensor = |name: &str, len: usize, v: f32| NamedTensor {
        name: name.into(),
        shape: vec![len],
        values: vec![v; len],
    };
    let global = StateDict::new(vec![
        tensor("bn.running_mean", 4, 0.0),
        tensor("conv.weight", n, 0.0),
    ])
    .unwrap();
    let delta = StateDict::new(vec![
        tensor("bn.running_mean", 4, 2.0),
        tensor("conv.weight", n, 1.0),
    ])
    .unwrap();
    let s = Strategy::from_parts("fedavg", &StrategyParams::default()).unwrap();
    let mut agg = RoundAggregation::new(&s, &global);
    agg.add("w0", delta.clone(), 1.0).unwrap();
    agg.add("w1", delta.clone(), 1.0).unwrap();
    let mut noise = fedcsg_core::privacy::GaussianNoise::from_seed_for_tests(3);
    let out = agg
        .close_with_noise(
            &s,
            &global,
            &mut ServerState::default(),
            Some((0.5, &mut noise)),
        )
        .unwrap()
        .unwrap();
    assert_eq!(
        out.global.get("bn.running_mean").unwrap().values,
        vec![2.0; 4]
    );
    let w = &out.global.get("conv.weight").unwrap().values;
    let mean = w.iter().map(|&v| f64::from(v)).sum::<f64>() / n as f64;
    let std = (w
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n as f64)
        .sqrt();
    assert!((mean - 1.0).abs() < 0.01, "mean {mean}");
    assert!((std - 0.5).abs() < 0.01, "std {std}");
    let median = Strategy::from_parts("median", &StrategyParams::default()).unwrap();
    let mut agg = RoundAggregation::new(&median, &global);
    agg.add("w0", delta, 1.0).unwrap();
    let err = agg
        .close_with_noise(
            &median,
            &global,
            &mut ServerState::default(),
            Some((0.5, &mut noise)),
        )
        .unwrap_err();
    assert!(err.contains("central DP"), "{err}");
}
