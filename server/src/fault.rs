//! Fault injection for crash and supervision tests:
//! `FEDCSG_FAULT=point@round[:panic][,point@round[:panic]...]` makes the coordinator abort (no
//! cleanup, like SIGKILL), or with `:panic` panic, the first time it reaches `point` in `round`
//! or a later one.
//! Points: `download`, `upload`, `tick` (the round driver's pass over a job whose next or
//! current round is `round`), `aggregate`, `after-model-write`, `after-commit`. Unset in
//! production; read once.

use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Abort,
    Panic,
}

fn parse(plan: &str) -> Vec<(String, u64, Action)> {
    plan.split(',')
        .filter_map(|item| {
            let (point, rest) = item.trim().split_once('@')?;
            let (round, action) = match rest.split_once(':') {
                Some((round, "panic")) => (round, Action::Panic),
                Some(_) => return None,
                None => (rest, Action::Abort),
            };
            Some((point.to_string(), round.parse().ok()?, action))
        })
        .collect()
}

fn plan() -> &'static Vec<(String, u64, Action)> {
    static PLAN: OnceLock<Vec<(String, u64, Action)>> = OnceLock::new();
    PLAN.get_or_init(|| parse(&std::env::var("FEDCSG_FAULT").unwrap_or_default()))
}

/// Aborts the process (or panics) if the plan names this point for this round or an earlier one.
pub fn hit(point: &str, round: u64) {
    for (p, r, action) in plan() {
        if p == point && round >= *r {
            match action {
                Action::Abort => {
                    eprintln!("FEDCSG_FAULT: crashing at {point}@{round}");
                    std::process::abort();
                }
                Action::Panic => panic!("FEDCSG_FAULT: injected panic at {point}@{round}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_name_points_rounds_and_actions() {
        assert_eq!(
            parse("upload@2, tick@3:panic,bad,aggregate@x,after-commit@1:explode"),
            vec![
                ("upload".to_string(), 2, Action::Abort),
                ("tick".to_string(), 3, Action::Panic),
            ]
        );
        assert!(parse("").is_empty());
    }
}
