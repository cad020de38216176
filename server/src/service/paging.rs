//! Paged lists of the operator API: page sizes with a default and a maximum, page tokens, and
//! the byte budget that keeps every answer far below the message limit however many workers a
//! round had.

use prost::Message;

use crate::error::{Result, ServerError};

/// The most encoded bytes of items one answer carries (at least one item is always sent).
pub const PAGE_BYTES: usize = 512 * 1024;

/// A list's page sizes.
#[derive(Debug, Clone, Copy)]
pub struct PageSize {
    pub what: &'static str,
    pub default: usize,
    pub max: usize,
}

pub const JOBS: PageSize = PageSize {
    what: "ListJobs",
    default: 100,
    max: 1000,
};
pub const WORKERS: PageSize = PageSize {
    what: "ListWorkers",
    default: 1000,
    max: 5000,
};
pub const ROUNDS: PageSize = PageSize {
    what: "ListRounds",
    default: 20,
    max: 1000,
};
/// GetJob's `last_rounds`.
pub const LAST_ROUNDS: PageSize = PageSize {
    what: "GetJob last_rounds",
    default: 10,
    max: 1000,
};

impl PageSize {
    /// The requested size: 0 (or unset) is the default, beyond the maximum is refused.
    pub fn resolve(&self, requested: u32) -> Result<usize> {
        match requested as usize {
            0 => Ok(self.default),
            n if n > self.max => Err(ServerError::invalid(format!(
                "{} page_size {n} is more than the {} allowed",
                self.what, self.max
            ))),
            n => Ok(n),
        }
    }
}

/// The round a ListRounds page token points to: empty is round 1.
pub fn round_token(token: &str) -> Result<u64> {
    if token.is_empty() {
        return Ok(1);
    }
    token
        .strip_prefix("round-")
        .and_then(|n| n.parse::<u64>().ok())
        .filter(|n| *n >= 1)
        .ok_or_else(|| {
            ServerError::invalid(format!(
                "page_token {:?} is not one ListRounds gave",
                token.chars().take(64).collect::<String>()
            ))
        })
}

pub fn next_round_token(round: u64) -> String {
    format!("round-{round}")
}

/// Keeps items from the front of `items` while their encoded size stays within [`PAGE_BYTES`]
/// (always the first); returns how many were kept.
pub fn within_budget<M: Message>(items: &[M]) -> usize {
    let mut bytes = 0;
    for (i, m) in items.iter().enumerate() {
        bytes += m.encoded_len() + 4;
        if bytes > PAGE_BYTES && i > 0 {
            return i;
        }
    }
    items.len()
}

/// Cuts a page of items listed in id order to the byte budget; returns the next page's token
/// (the id of the last item kept) when items were cut or `more` follow, else empty.
pub fn cut_by_id<M: Message>(items: &mut Vec<M>, more: bool, id: impl Fn(&M) -> &str) -> String {
    let kept = within_budget(items);
    let next = if kept < items.len() || more {
        items
            .get(kept.wrapping_sub(1))
            .map(|m| id(m).to_string())
            .unwrap_or_default()
    } else {
        String::new()
    };
    items.truncate(kept);
    next
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedcsg_wire::proto::v1 as pb;

    #[test]
    fn page_sizes_default_and_refuse_beyond_the_maximum() {
        assert_eq!(JOBS.resolve(0).unwrap(), 100);
        assert_eq!(JOBS.resolve(7).unwrap(), 7);
        let err = ROUNDS.resolve(1001).unwrap_err().to_string();
        assert!(err.contains("ListRounds page_size 1001"), "{err}");
    }

    #[test]
    fn round_tokens_round_trip_and_strangers_are_refused() {
        assert_eq!(round_token("").unwrap(), 1);
        assert_eq!(round_token(&next_round_token(42)).unwrap(), 42);
        for bad in ["42", "round-0", "round-x", "round--1"] {
            assert!(round_token(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_budget_cuts_a_page_but_always_keeps_one_item() {
        let big = |n: usize| pb::WorkerInfo {
            worker_name: "x".repeat(n),
            ..Default::default()
        };
        let items: Vec<_> = (0..10).map(|_| big(100 * 1024)).collect();
        assert_eq!(within_budget(&items), 5);
        assert_eq!(within_budget(&[big(2 * PAGE_BYTES)]), 1);
        assert_eq!(within_budget(&items[..3]), 3);
    }
}
