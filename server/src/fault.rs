//! Fault injection for crash tests: `FEDCSG_FAULT=point@round[,point@round...]` makes the
//! coordinator abort (no cleanup, like SIGKILL) the first time it reaches `point` in `round` or
//! a later one.
//! Points: `download`, `upload`, `aggregate`, `after-model-write`, `after-commit`. Unset in
//! production; read once.

use std::sync::OnceLock;

fn plan() -> &'static Vec<(String, u64)> {
    static PLAN: OnceLock<Vec<(String, u64)>> = OnceLock::new();
    PLAN.get_or_init(|| {
        std::env::var("FEDCSG_FAULT")
            .unwrap_or_default()
            .split(',')
            .filter_map(|item| {
                let (point, round) = item.trim().split_once('@')?;
                Some((point.to_string(), round.parse().ok()?))
            })
            .collect()
    })
}

/// Aborts the process if the plan names this point for this round or an earlier one.
pub fn hit(point: &str, round: u64) {
    if plan().iter().any(|(p, r)| p == point && round >= *r) {
        eprintln!("FEDCSG_FAULT: crashing at {point}@{round}");
        std::process::abort();
    }
}
