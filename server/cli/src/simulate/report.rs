//! What a simulation adds to a round's figures: the time the round would have taken over the
//! clients' links (from the exact bytes and training seconds the coordinator recorded), and the
//! bytes one participating client moved, per round and summed over the job.

use std::collections::HashMap;

use fedcsg_wire::proto::v1 as pb;

use super::Plan;
use super::link::Link;
use super::tasks::TaskCounts;

/// A round's simulated duration.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoundTime {
    /// The slowest participant's download, training and upload, plus the aggregation.
    pub seconds: f64,
    /// The longest time any participant spent on its two transfers.
    pub transfer_seconds: f64,
}

/// A link that costs nothing: without `--link`, rounds take the training time.
const NO_LINK: Link = Link {
    bits_per_second: f64::INFINITY,
    latency_seconds: 0.0,
    slowdown: 1.0,
};

pub fn simulated_round_time(e: &pb::RoundEvent, links: &HashMap<String, Link>) -> RoundTime {
    let mut time = RoundTime {
        seconds: 0.0,
        transfer_seconds: 0.0,
    };
    for w in &e.workers {
        let link = links.get(&w.worker_id).unwrap_or(&NO_LINK);
        time.seconds =
            time.seconds
                .max(link.round_seconds(w.bytes_down, w.train_seconds, w.bytes_up));
        time.transfer_seconds = time
            .transfer_seconds
            .max(link.transfer_seconds(w.bytes_down) + link.transfer_seconds(w.bytes_up));
    }
    time.seconds += e.aggregation_seconds;
    time
}

/// Bytes (down and up) one participant of the round moved, on average.
pub fn bytes_per_client(e: &pb::RoundEvent) -> f64 {
    let total: u64 = e.workers.iter().map(|w| w.bytes_up + w.bytes_down).sum();
    total as f64 / e.workers.len().max(1) as f64
}

/// Adds the simulation's settings and per-round simulated figures to a summary JSON.
pub(super) fn add_simulation(
    summary: &mut serde_json::Value,
    rounds: &[pb::RoundEvent],
    links: &HashMap<String, Link>,
    plan: &Plan,
    tasks: &TaskCounts,
    partition: &str,
    label: Option<&str>,
) {
    summary["label"] = label.into();
    summary["simulation"] = serde_json::json!({
        "clients": plan.clients,
        "clients_per_round": plan.min_workers,
        "concurrency": plan.concurrency,
        "threads_per_client": plan.threads,
        "partition": partition,
        "links": plan.links.as_ref().map(|l| l.to_string()),
        "evaluated_on": if plan.holdout > 0 {
            format!("validation: {} training images held out", plan.holdout)
        } else {
            "test set".to_string()
        },
        "train_tasks": tasks.trained,
        "evaluation_tasks": tasks.evaluated,
        "failed_tasks": tasks.failed,
    });
    let (mut elapsed, mut bytes) = (0.0, 0.0);
    if let Some(out) = summary["rounds"].as_array_mut() {
        for (json, e) in out.iter_mut().zip(rounds) {
            let time = simulated_round_time(e, links);
            elapsed += time.seconds;
            bytes += bytes_per_client(e);
            json["simulated_seconds"] = time.seconds.into();
            json["simulated_transfer_seconds"] = time.transfer_seconds.into();
            json["simulated_elapsed_seconds"] = elapsed.into();
            json["bytes_per_client"] = bytes_per_client(e).into();
            json["cumulative_bytes_per_client"] = bytes.into();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(id: &str, down: u64, train: f64, up: u64) -> pb::WorkerRoundStats {
        pb::WorkerRoundStats {
            worker_id: id.into(),
            bytes_down: down,
            train_seconds: train,
            bytes_up: up,
            ..Default::default()
        }
    }

    /// The slowest participant sets the round's time; bytes per client are the participants'
    /// mean.
    #[test]
    fn the_slowest_client_sets_the_round_time() {
        let e = pb::RoundEvent {
            workers: vec![
                stats("w-1", 1_250_000, 1.0, 1_250_000),
                stats("w-2", 1_250_000, 2.0, 0),
            ],
            aggregation_seconds: 0.5,
            ..Default::default()
        };
        let links = HashMap::from([
            ("w-1".to_string(), "10mbit/0ms".parse::<Link>().unwrap()),
            ("w-2".to_string(), "10mbit/0ms/x2".parse::<Link>().unwrap()),
        ]);
        let t = simulated_round_time(&e, &links);
        // w-1: 1 + 1 + 1 = 3 s; w-2: 1 + 4 + 0 = 5 s; plus 0.5 s of aggregation.
        assert_eq!(t.seconds, 5.5);
        assert_eq!(t.transfer_seconds, 2.0);
        assert_eq!(bytes_per_client(&e), 1_875_000.0);
        // Without links, only training and aggregation count.
        assert_eq!(simulated_round_time(&e, &HashMap::new()).seconds, 2.5);
    }
}
