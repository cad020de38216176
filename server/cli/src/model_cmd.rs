//! `fedcsg model`: the parameter inventory of a model in a filter mode.

use clap::Args;
use std::collections::BTreeMap;

use fedcsg_ml::model::{BnStatsPolicy, CsgMode, Inventory, Model, ModelSpec};
use fedcsg_ml::ops::ConvBackend;

#[derive(Args)]
pub struct ModelArgs {
    /// resnet20/32/44/56/110 or densenetDEPTHkGROWTH (e.g. densenet40k36).
    #[arg(long, default_value = "resnet20")]
    model: String,
    /// none | S-C (e.g. 12-72) | seeded:S-C.
    #[arg(long, default_value = "12-72")]
    csg: String,
    #[arg(long, default_value_t = 1)]
    in_channels: usize,
    #[arg(long, default_value_t = 10)]
    classes: usize,
    /// averaged | local: whether batch-norm running statistics travel.
    #[arg(long, default_value = "averaged")]
    bn_stats: String,
    /// List every tensor.
    #[arg(long)]
    verbose: bool,
    /// Print the inventory as JSON instead.
    #[arg(long)]
    json: bool,
}

pub fn run(args: ModelArgs) -> anyhow::Result<()> {
    let csg: CsgMode = args.csg.parse()?;
    let bn: BnStatsPolicy = args.bn_stats.parse().map_err(anyhow::Error::msg)?;
    let spec = ModelSpec::new(args.model.parse()?, csg, args.in_channels, args.classes);
    let inv = Model::new(&spec, 0, ConvBackend::Reference)?.inventory(bn);
    let full = Model::new(&spec.full_filter(), 0, ConvBackend::Reference)?.inventory(bn);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&inventory_json(&spec, &inv, &full))?
        );
    } else {
        print!("{}", inventory_text(&spec, &inv, &full, args.verbose));
    }
    Ok(())
}

/// The `--json` output: counts of `inv`, with `full` (the same architecture with full filters)
/// as the reference.
pub fn inventory_json(spec: &ModelSpec, inv: &Inventory, full: &Inventory) -> serde_json::Value {
    serde_json::json!({
        "spec": spec,
        "parameters": inv.parameter_count(),
        "trainable": inv.trainable_count(),
        "exchanged_parameters": inv.exchanged_parameter_count(),
        "exchanged_values": inv.exchanged_value_count(),
        "full_filter_parameters": full.parameter_count(),
        "full_filter_exchanged_values": full.exchanged_value_count(),
        "by_role": inv.by_role().into_iter().map(|(r, n)| (r.to_string(), n)).collect::<BTreeMap<_, _>>(),
        "entries": inv.entries,
    })
}

/// The table a person reads: parameters per role, exchanged values, the full-filter reference.
pub fn inventory_text(
    spec: &ModelSpec,
    inv: &Inventory,
    full: &Inventory,
    verbose: bool,
) -> String {
    let mut out = String::new();
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    line(format!("{spec}"));
    line(format!("{:<12} {:>12}", "role", "parameters"));
    for (role, n) in inv.by_role() {
        line(format!("{:<12} {:>12}", role.to_string(), group(n)));
    }
    let ratio = full.parameter_count() as f64 / inv.parameter_count() as f64;
    line(format!(
        "parameters (weights + BN affine):   {:>12}",
        group(inv.parameter_count())
    ));
    line(format!(
        "trainable:                          {:>12}",
        group(inv.trainable_count())
    ));
    line(format!(
        "exchanged per round:                {:>12}  (+{} BN statistics = {} values, {} bytes as f32)",
        group(inv.exchanged_parameter_count()),
        group(inv.exchanged_value_count() - inv.exchanged_parameter_count()),
        group(inv.exchanged_value_count()),
        group(inv.exchanged_value_count() * 4)
    ));
    line(format!(
        "full-filter equivalent:             {:>12}  ({ratio:.2}x the parameters of this model)",
        group(full.parameter_count())
    ));
    line(format!(
        "exchanged vs full-filter exchange:  {:>12}  of {} values ({:.1}%)",
        group(inv.exchanged_value_count()),
        group(full.exchanged_value_count()),
        100.0 * inv.exchanged_value_count() as f64 / full.exchanged_value_count() as f64
    ));
    if verbose {
        for e in &inv.entries {
            line(format!(
                "  {:<40} {:<12} {:>9} {:?} trained={} exchanged={}",
                e.name,
                e.role.to_string(),
                e.numel(),
                e.shape,
                e.trained,
                e.exchanged
            ));
        }
    }
    out
}

/// 347162 -> "347,162".
pub fn group(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::{Cli, Command};

    fn parse(args: &[&str]) -> ModelArgs {
        match Cli::try_parse_from([&["fedcsg", "model"], args].concat()) {
            Ok(Cli {
                command: Command::Model(a),
            }) => a,
            Ok(_) => panic!("parsed into another command"),
            Err(e) => panic!("{e}"),
        }
    }

    /// Flags left out take the documented defaults (README: `fedcsg model` shows ResNet-20 12-72
    /// on one input channel).
    #[test]
    fn defaults_are_resnet20_csg_12_72_one_channel() {
        let a = parse(&[]);
        assert_eq!(
            (a.model.as_str(), a.csg.as_str(), a.in_channels, a.classes),
            ("resnet20", "12-72", 1, 10)
        );
        assert_eq!(a.bn_stats, "averaged");
        assert!(!a.verbose && !a.json);
        let a = parse(&[
            "--model",
            "resnet56",
            "--csg",
            "16-128",
            "--in-channels",
            "3",
            "--json",
        ]);
        assert_eq!(
            (a.model.as_str(), a.csg.as_str(), a.in_channels),
            ("resnet56", "16-128", 3)
        );
        assert!(a.json);
    }

    #[test]
    fn numbers_that_are_not_numbers_are_refused_by_flag_name() {
        let err = Cli::try_parse_from(["fedcsg", "model", "--in-channels", "three"])
            .err()
            .expect("refused");
        assert!(err.to_string().contains("--in-channels"), "{err}");
    }

    fn inventories(csg: &str, channels: usize) -> (ModelSpec, Inventory, Inventory) {
        let spec = ModelSpec::new(
            "resnet20".parse().unwrap(),
            csg.parse().unwrap(),
            channels,
            10,
        );
        let bn = BnStatsPolicy::Averaged;
        let inv = Model::new(&spec, 0, ConvBackend::Reference)
            .unwrap()
            .inventory(bn);
        let full = Model::new(&spec.full_filter(), 0, ConvBackend::Reference)
            .unwrap()
            .inventory(bn);
        (spec, inv, full)
    }

    /// The text table carries the exact counts of DESIGN §1.3 (3 channels: 115,426 CSG 12-72 vs
    /// 269,722 full) with thousands separators, and `--verbose` adds one line per tensor.
    #[test]
    fn text_output_shows_exact_counts_and_the_full_filter_reference() {
        let (spec, inv, full) = inventories("12-72", 3);
        let text = inventory_text(&spec, &inv, &full, false);
        assert!(
            text.starts_with("resnet20 csg=12-72 in=3 classes=10\n"),
            "{text}"
        );
        assert!(
            text.contains("parameters (weights + BN affine):        115,426"),
            "{text}"
        );
        assert!(
            text.contains("full-filter equivalent:                  269,722  (2.34x"),
            "{text}"
        );
        let verbose = inventory_text(&spec, &inv, &full, true);
        assert_eq!(
            verbose.lines().count(),
            text.lines().count() + inv.entries.len()
        );
    }

    /// The JSON output is what scripts read: its counts equal the inventory's, for the one-channel
    /// model of README (115,138 exchanged parameters vs 269,434).
    #[test]
    fn json_output_has_the_inventory_counts() {
        let (spec, inv, full) = inventories("12-72", 1);
        let json = inventory_json(&spec, &inv, &full);
        assert_eq!(json["parameters"], 115_138);
        assert_eq!(json["full_filter_parameters"], 269_434);
        assert_eq!(json["exchanged_values"], inv.exchanged_value_count());
        assert_eq!(json["spec"]["in_channels"], 1);
        assert_eq!(
            json["entries"].as_array().map(Vec::len),
            Some(inv.entries.len())
        );
    }

    #[test]
    fn group_puts_a_comma_every_three_digits() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1_000), "1,000");
        assert_eq!(group(347_162), "347,162");
        assert_eq!(group(12_345_678), "12,345,678");
    }
}
