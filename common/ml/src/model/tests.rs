//! Model tests with reference numbers: exact parameter counts of DESIGN §1.3 (computed there from
//! the paper's formula and checked against a PyTorch implementation), shapes, state exchange and
//! materialisation.

use candle_core::{Device, Tensor};

use super::*;

fn spec(arch: &str, csg: &str, in_channels: usize) -> ModelSpec {
    ModelSpec::new(arch.parse().unwrap(), csg.parse().unwrap(), in_channels, 10)
}

fn counts(arch: &str, csg: &str, in_channels: usize) -> Inventory {
    Model::new(&spec(arch, csg, in_channels), 0, ConvBackend::Reference)
        .unwrap()
        .inventory(BnStatsPolicy::Averaged)
}

/// DESIGN §1.3, 3 input channels, 10 classes: full / CSG 12-72 / CSG 16-128, exactly.
#[test]
fn parameter_counts_match_the_paper_table() {
    let table = [
        ("resnet20", [269_722, 115_426, 312_218]),
        ("resnet56", [853_018, 160_450, 347_162]),
        ("resnet110", [1_727_962, 227_986, 399_578]),
        ("densenet40k36", [1_542_682, 842_842, 1_059_994]),
    ];
    for (arch, want) in table {
        for (csg, want) in ["none", "12-72", "16-128"].into_iter().zip(want) {
            let got = counts(arch, csg, 3).parameter_count();
            assert_eq!(got, want, "{arch} --csg {csg}");
        }
    }
}

/// The Fashion-MNIST reference (1 input channel): 269,434 / 115,138 / 21,826 trainable.
#[test]
fn one_channel_trainable_counts_match_the_reference_implementation() {
    assert_eq!(counts("resnet20", "none", 1).trainable_count(), 269_434);
    assert_eq!(counts("resnet20", "12-72", 1).trainable_count(), 115_138);
    let seeded = counts("resnet20", "seeded:12-72", 1);
    assert_eq!(seeded.trainable_count(), 21_826);
    // The seeded generator exists on every node but neither trains nor travels.
    assert_eq!(seeded.by_role()[&ParamRole::Generator], 72 * 144 * 9);
    assert_eq!(seeded.exchanged_parameter_count(), 21_826);
}

/// What travels: CSG sends generator + codes + stem conv + fc + BN, never generated filters;
/// local BN statistics are not sent; full mode sends everything.
#[test]
fn exchanged_sets_follow_the_mode() {
    let csg = counts("resnet20", "12-72", 1);
    let names = csg.exchanged_names();
    assert!(names.contains(&"generator.weight"));
    assert!(names.contains(&"layer1.0.conv1.codes"));
    assert!(names.contains(&"conv1.weight"));
    assert!(names.contains(&"layer3.2.bn2.running_var"));
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("layer") && n.ends_with("conv1.weight"))
    );
    let bn_values = 2 * (16 + 6 * 16 + 6 * 32 + 6 * 64);
    assert_eq!(csg.exchanged_value_count(), 115_138 + bn_values);
    let model = Model::new(&spec("resnet20", "12-72", 1), 0, ConvBackend::Reference).unwrap();
    let local = model.inventory(BnStatsPolicy::Local);
    assert_eq!(local.exchanged_value_count(), 115_138);
    let full = counts("resnet20", "none", 1);
    assert_eq!(full.exchanged_value_count(), 269_434 + bn_values);
}

/// The same spec and seed give bit-identical weights; another seed does not.
#[test]
fn initialisation_is_deterministic_for_a_seed() {
    let s = spec("resnet20", "12-72", 1);
    let a = Model::new(&s, 3, ConvBackend::Reference)
        .unwrap()
        .state()
        .unwrap();
    let b = Model::new(&s, 3, ConvBackend::Reference)
        .unwrap()
        .state()
        .unwrap();
    let c = Model::new(&s, 4, ConvBackend::Reference)
        .unwrap()
        .state()
        .unwrap();
    assert_eq!(a.fingerprint(), b.fingerprint());
    assert_ne!(a.fingerprint(), c.fingerprint());
}

/// Logits have shape [batch, classes] for 28x28 and 32x32 inputs in every mode and architecture.
#[test]
fn forward_shapes() {
    for (arch, csg, c, hw) in [
        ("resnet20", "none", 1, 28),
        ("resnet20", "seeded:12-72", 3, 32),
        ("densenet40k12", "12-72", 1, 28),
        ("densenet40k12", "16-128", 3, 32),
    ] {
        let model = Model::new(&spec(arch, csg, c), 0, ConvBackend::Reference).unwrap();
        let x = Tensor::randn(0f32, 1.0, (2, c, hw, hw), &Device::Cpu).unwrap();
        for train in [true, false] {
            let y = model.forward_t(&x, train).unwrap();
            assert_eq!(y.dims(), &[2, 10], "{arch} {csg}");
        }
    }
}

/// A state with a wrong shape, an unknown name or a NaN is refused and changes nothing.
#[test]
fn bad_state_is_refused_and_changes_nothing() {
    let model = Model::new(&spec("resnet20", "12-72", 1), 0, ConvBackend::Reference).unwrap();
    let before = model.state().unwrap();
    let mut tensors = before.clone().into_tensors();
    // a valid change first, so a partial apply would be visible
    tensors[0].values[0] += 1.0;
    let fc = tensors.iter().position(|t| t.name == "fc.weight").unwrap();
    for (case, edit) in [
        (
            "shape",
            Box::new(|t: &mut Vec<fedcsg_core::tensor::NamedTensor>| t[fc].shape = vec![64, 10])
                as Box<dyn Fn(&mut Vec<_>)>,
        ),
        (
            "name",
            Box::new(|t: &mut Vec<fedcsg_core::tensor::NamedTensor>| {
                t[fc].name = "fc.nonexistent".into()
            }),
        ),
        (
            "nan",
            Box::new(|t: &mut Vec<fedcsg_core::tensor::NamedTensor>| t[fc].values[5] = f32::NAN),
        ),
    ] {
        let mut bad = tensors.clone();
        edit(&mut bad);
        let state = fedcsg_core::tensor::StateDict::new(bad).unwrap();
        let err = model.load_state(&state).unwrap_err().to_string();
        assert!(err.contains("fc."), "{case}: {err}");
        assert_eq!(
            model.state().unwrap().fingerprint(),
            before.fingerprint(),
            "{case} changed the model"
        );
    }
}

/// save/load round-trips every variable, batch-norm statistics included.
#[test]
fn safetensors_round_trip() {
    let s = spec("resnet20", "12-72", 1);
    let a = Model::new(&s, 1, ConvBackend::Reference).unwrap();
    let x = Tensor::randn(0f32, 1.0, (4, 1, 28, 28), &Device::Cpu).unwrap();
    a.forward_t(&x, true).unwrap(); // moves the running statistics off their initial values
    let path = std::env::temp_dir().join(format!(
        "fedcsg-roundtrip-{}.safetensors",
        std::process::id()
    ));
    a.save(&path).unwrap();
    let b = Model::new(&s, 2, ConvBackend::Reference).unwrap();
    b.load(&path).unwrap();
    std::fs::remove_file(&path).ok();
    assert_eq!(
        a.state().unwrap().fingerprint(),
        b.state().unwrap().fingerprint()
    );
}

/// `/fanin` codes make every generated filter start at the He scale sqrt(2 / (c_in k²)) of a
/// full filter, for a trained and a seeded generator; reference codes start 12-24x (trained)
/// and 36-72x (seeded) larger, the more the wider the layer.
#[test]
fn fan_in_codes_start_generated_filters_at_the_he_scale() {
    let std_of = |t: &Tensor| {
        let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        let mean = v.iter().map(|x| *x as f64).sum::<f64>() / v.len() as f64;
        (v.iter().map(|x| (*x as f64 - mean).powi(2)).sum::<f64>() / v.len() as f64).sqrt()
    };
    for (csg, ratio_range) in [
        ("12-72/fanin", 0.85..1.15),
        ("seeded:12-72/fanin", 0.85..1.15),
        ("16-128/fanin", 0.85..1.15),
        ("12-72", 8.0..30.0),
        ("seeded:12-72", 25.0..80.0),
    ] {
        let model = Model::new(&spec("resnet20", csg, 1), 3, ConvBackend::Reference).unwrap();
        for conv in model.convs().into_iter().filter(|c| c.is_generated()) {
            let w = conv.kernel().unwrap();
            let c_in = w.dims()[1];
            let he = (2.0 / (c_in * 9) as f64).sqrt();
            let ratio = std_of(&w) / he;
            assert!(
                ratio_range.contains(&ratio),
                "{csg} {}: std {ratio:.2}x He",
                conv.path()
            );
        }
    }
}
