//! `fedcsg model`: the parameter inventory of a model in a filter mode.

use clap::Args;
use fedcsg_ml::model::{BnStatsPolicy, CsgMode, Model, ModelSpec};
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
        let out = serde_json::json!({
            "spec": spec,
            "parameters": inv.parameter_count(),
            "trainable": inv.trainable_count(),
            "exchanged_parameters": inv.exchanged_parameter_count(),
            "exchanged_values": inv.exchanged_value_count(),
            "full_filter_parameters": full.parameter_count(),
            "full_filter_exchanged_values": full.exchanged_value_count(),
            "by_role": inv.by_role().into_iter().map(|(r, n)| (r.to_string(), n)).collect::<std::collections::BTreeMap<_, _>>(),
            "entries": inv.entries,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("{spec}");
    println!("{:<12} {:>12}", "role", "parameters");
    for (role, n) in inv.by_role() {
        println!("{:<12} {:>12}", role.to_string(), group(n));
    }
    let ratio = full.parameter_count() as f64 / inv.parameter_count() as f64;
    println!(
        "parameters (weights + BN affine):   {:>12}",
        group(inv.parameter_count())
    );
    println!(
        "trainable:                          {:>12}",
        group(inv.trainable_count())
    );
    println!(
        "exchanged per round:                {:>12}  (+{} BN statistics = {} values, {} bytes as f32)",
        group(inv.exchanged_parameter_count()),
        group(inv.exchanged_value_count() - inv.exchanged_parameter_count()),
        group(inv.exchanged_value_count()),
        group(inv.exchanged_value_count() * 4)
    );
    println!(
        "full-filter equivalent:             {:>12}  ({ratio:.2}x the parameters of this model)",
        group(full.parameter_count())
    );
    println!(
        "exchanged vs full-filter exchange:  {:>12}  of {} values ({:.1}%)",
        group(inv.exchanged_value_count()),
        group(full.exchanged_value_count()),
        100.0 * inv.exchanged_value_count() as f64 / full.exchanged_value_count() as f64
    );
    if args.verbose {
        for e in &inv.entries {
            println!(
                "  {:<40} {:<12} {:>9} {:?} trained={} exchanged={}",
                e.name,
                e.role.to_string(),
                e.numel(),
                e.shape,
                e.trained,
                e.exchanged
            );
        }
    }
    Ok(())
}

/// 347162 -> "347,162".
pub fn group(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}
