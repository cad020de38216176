//! The learning rate across rounds: a job's base rate scaled per round, sent with each train
//! task, since a short federation at a constant rate understates what its model can reach.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How the round's learning rate follows from the base rate.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum LrSchedule {
    /// The base rate every round.
    #[default]
    Constant,
    /// The base rate times `gamma` after every `every` rounds.
    Step { every: u64, gamma: f64 },
    /// Half a cosine from the base rate (round 1) down towards `floor` times it (after the last
    /// round), so that the last round still trains.
    Cosine { floor: f64 },
}

impl LrSchedule {
    /// The factor of round `round` (1-based) of a job of `rounds` rounds.
    pub fn factor(&self, round: u64, rounds: u64) -> f64 {
        let done = round.saturating_sub(1);
        match *self {
            LrSchedule::Constant => 1.0,
            LrSchedule::Step { every, gamma } => gamma.powi((done / every.max(1)) as i32),
            LrSchedule::Cosine { floor } => {
                let progress = done as f64 / rounds.max(1) as f64;
                floor + (1.0 - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
        }
    }

    /// The learning rate of `round`.
    pub fn rate(&self, base: f64, round: u64, rounds: u64) -> f64 {
        base * self.factor(round, rounds)
    }
}

impl FromStr for LrSchedule {
    type Err = String;

    /// `constant` | `step:EVERY:GAMMA` | `cosine` | `cosine:FLOOR`.
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.trim().split(':').collect();
        let number = |text: &str, what: &str| -> Result<f64, String> {
            text.parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| format!("{what} {text:?} is not a number"))
        };
        match parts.as_slice() {
            ["constant"] | [""] => Ok(LrSchedule::Constant),
            ["step", every, gamma] => {
                let every: u64 =
                    every.parse().ok().filter(|e| *e >= 1).ok_or_else(|| {
                        format!("step every {every:?} must be a whole number >= 1")
                    })?;
                let gamma = number(gamma, "step gamma")?;
                if !(gamma > 0.0 && gamma <= 1.0) {
                    return Err(format!("step gamma must be in (0, 1], got {gamma}"));
                }
                Ok(LrSchedule::Step { every, gamma })
            }
            ["cosine"] => Ok(LrSchedule::Cosine { floor: 0.0 }),
            ["cosine", floor] => {
                let floor = number(floor, "cosine floor")?;
                if !(0.0..=1.0).contains(&floor) {
                    return Err(format!("cosine floor must be in [0, 1], got {floor}"));
                }
                Ok(LrSchedule::Cosine { floor })
            }
            _ => Err(format!(
                "unknown learning-rate schedule {s:?}: expected constant, step:EVERY:GAMMA, cosine or cosine:FLOOR"
            )),
        }
    }
}

impl fmt::Display for LrSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LrSchedule::Constant => write!(f, "constant"),
            LrSchedule::Step { every, gamma } => write!(f, "step:{every}:{gamma}"),
            LrSchedule::Cosine { floor } if *floor == 0.0 => write!(f, "cosine"),
            LrSchedule::Cosine { floor } => write!(f, "cosine:{floor}"),
        }
    }
}

impl TryFrom<String> for LrSchedule {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<LrSchedule> for String {
    fn from(s: LrSchedule) -> String {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_scale_the_rate_per_round() {
        let c = LrSchedule::Constant;
        assert_eq!(c.rate(0.1, 1, 30), 0.1);
        assert_eq!(c.rate(0.1, 30, 30), 0.1);

        let s: LrSchedule = "step:10:0.5".parse().unwrap();
        assert_eq!(s.factor(1, 30), 1.0);
        assert_eq!(s.factor(10, 30), 1.0);
        assert_eq!(s.factor(11, 30), 0.5);
        assert_eq!(s.factor(21, 30), 0.25);

        let cos: LrSchedule = "cosine".parse().unwrap();
        assert_eq!(cos.factor(1, 10), 1.0);
        assert!((cos.factor(6, 10) - 0.5).abs() < 1e-12, "half-way is half");
        let last = cos.factor(10, 10);
        assert!(
            last > 0.0 && last < 0.03,
            "the last round still trains: {last}"
        );
        let floored: LrSchedule = "cosine:0.1".parse().unwrap();
        assert!((floored.factor(6, 10) - 0.55).abs() < 1e-12);
        let mut previous = f64::INFINITY;
        for r in 1..=10 {
            let f = floored.factor(r, 10);
            assert!(f < previous && f > 0.1, "round {r}: {f}");
            previous = f;
        }
    }

    #[test]
    fn spellings_round_trip_and_bad_ones_say_why() {
        for s in ["constant", "step:5:0.3", "cosine", "cosine:0.05"] {
            let parsed: LrSchedule = s.parse().unwrap();
            assert_eq!(parsed.to_string(), s);
            let json = serde_json::to_string(&parsed).unwrap();
            assert_eq!(serde_json::from_str::<LrSchedule>(&json).unwrap(), parsed);
        }
        assert_eq!("".parse::<LrSchedule>().unwrap(), LrSchedule::Constant);
        for (bad, says) in [
            ("linear", "unknown learning-rate schedule"),
            ("step:0:0.5", "every"),
            ("step:3:1.5", "gamma must be in (0, 1]"),
            ("step:3:nan", "not a number"),
            ("cosine:2", "floor must be in [0, 1]"),
        ] {
            let err = bad.parse::<LrSchedule>().unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
