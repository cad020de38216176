//! Per-client evaluation: what the global model is worth on each client's own held-out data,
//! summarised over the clients that reported (mean, weighted mean, worst and 10th percentile,
//! and the mean loss), since a federation's average can hide the clients it serves badly.

use serde::{Deserialize, Serialize};

/// One client's report: its held-out samples, how many the global model got right, and the
/// sum of its per-sample losses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClientReport {
    pub samples: u64,
    pub correct: u64,
    pub loss_sum: f64,
}

/// A round's per-client evaluation over the clients that reported.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClientEvaluation {
    /// Clients with at least one held-out sample.
    pub clients: usize,
    /// Accuracy over all reported samples (every sample weighs the same).
    pub weighted_accuracy: f64,
    /// The mean of the clients' accuracies (every client weighs the same).
    pub mean_accuracy: f64,
    pub worst_accuracy: f64,
    /// The 10th percentile of the clients' accuracies (nearest rank).
    pub p10_accuracy: f64,
    /// The mean per-sample loss over all reported samples.
    pub loss: f64,
}

impl ClientEvaluation {
    /// The summary of `reports`; `None` when no client had a sample. Sums are taken wide, so
    /// no count a client may report overflows them.
    pub fn from_reports(reports: impl IntoIterator<Item = ClientReport>) -> Option<Self> {
        let reports: Vec<ClientReport> = reports.into_iter().filter(|r| r.samples > 0).collect();
        if reports.is_empty() {
            return None;
        }
        let samples: u128 = reports.iter().map(|r| r.samples as u128).sum();
        let correct: u128 = reports.iter().map(|r| r.correct as u128).sum();
        let loss_sum: f64 = reports.iter().map(|r| r.loss_sum).sum();
        let mut accuracies: Vec<f64> = reports
            .iter()
            .map(|r| r.correct as f64 / r.samples as f64)
            .collect();
        accuracies.sort_by(f64::total_cmp);
        let n = accuracies.len();
        // Nearest rank: the smallest accuracy with at least 10% of the clients at or below it.
        let p10_rank = (n as f64 * 0.1).ceil().max(1.0) as usize;
        Some(Self {
            clients: n,
            weighted_accuracy: correct as f64 / samples as f64,
            mean_accuracy: accuracies.iter().sum::<f64>() / n as f64,
            worst_accuracy: accuracies[0],
            p10_accuracy: accuracies[p10_rank - 1],
            loss: loss_sum / samples as f64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(samples: u64, correct: u64, loss_sum: f64) -> ClientReport {
        ClientReport {
            samples,
            correct,
            loss_sum,
        }
    }

    #[test]
    fn summarises_the_clients() {
        // Accuracies 0.5, 0.9, 1.0 (2, 10 and 8 samples); 20 samples, 18 right.
        let e = ClientEvaluation::from_reports([
            report(10, 9, 3.0),
            report(2, 1, 2.0),
            report(8, 8, 1.0),
            report(0, 0, 0.0),
        ])
        .unwrap();
        assert_eq!(e.clients, 3, "a client without samples is not counted");
        assert_eq!(e.weighted_accuracy, 18.0 / 20.0);
        assert!((e.mean_accuracy - 2.4 / 3.0).abs() < 1e-12);
        assert_eq!(e.worst_accuracy, 0.5);
        assert_eq!(e.p10_accuracy, 0.5);
        assert_eq!(e.loss, 6.0 / 20.0);
        assert_eq!(ClientEvaluation::from_reports([report(0, 0, 0.0)]), None);
    }

    #[test]
    fn the_tenth_percentile_is_the_nearest_rank() {
        // 20 clients with accuracies 0.00, 0.05, ..., 0.95: the 2nd lowest is the 10th percentile.
        let e = ClientEvaluation::from_reports((0..20).map(|i| report(20, i, 0.0))).unwrap();
        assert_eq!(e.worst_accuracy, 0.0);
        assert_eq!(e.p10_accuracy, 1.0 / 20.0);
        // 11 clients: ceil(1.1) = 2nd lowest.
        let e =
            ClientEvaluation::from_reports((0..11).map(|i| report(10, i.min(10), 0.0))).unwrap();
        assert_eq!(e.p10_accuracy, 0.1);
    }

    #[test]
    fn huge_counts_do_not_overflow() {
        let e = ClientEvaluation::from_reports([
            report(u64::MAX, u64::MAX, 1.0),
            report(u64::MAX, 0, 1.0),
        ])
        .unwrap();
        assert_eq!(e.weighted_accuracy, 0.5);
    }
}
