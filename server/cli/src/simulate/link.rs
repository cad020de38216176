//! The link model of a simulation: each client's bandwidth, latency and compute speed, which
//! turn the exact bytes and training seconds the coordinator records into the time a round
//! would take on real links and machines.
//!
//! Spelling: `BANDWIDTH/LATENCY[/xSLOWDOWN][*WEIGHT]`, several separated by commas, e.g.
//! `10mbit/25ms` (every client), or `10mbit/25ms*0.9,1mbit/200ms/x4*0.1` (one client in ten on
//! a slow link and a machine four times slower: stragglers). Bandwidth in `kbit`, `mbit` or
//! `gbit` (per second); latency in `ms` or `s`.

use std::fmt;
use std::str::FromStr;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// One kind of client link.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Link {
    pub bits_per_second: f64,
    /// One way, added to each transfer (the download and the upload).
    pub latency_seconds: f64,
    /// Local training takes this many times what it took here.
    pub slowdown: f64,
}

impl Link {
    /// Seconds to move `bytes` over this link.
    pub fn transfer_seconds(&self, bytes: u64) -> f64 {
        self.latency_seconds + bytes as f64 * 8.0 / self.bits_per_second
    }

    /// A client's part of a round: download, train (scaled), upload.
    pub fn round_seconds(&self, bytes_down: u64, train_seconds: f64, bytes_up: u64) -> f64 {
        self.transfer_seconds(bytes_down)
            + train_seconds * self.slowdown
            + self.transfer_seconds(bytes_up)
    }
}

impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}mbit/{}ms",
            self.bits_per_second / 1e6,
            self.latency_seconds * 1e3
        )?;
        if self.slowdown != 1.0 {
            write!(f, "/x{}", self.slowdown)?;
        }
        Ok(())
    }
}

/// A mix of links dealt to clients in proportion to their weights.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkMix {
    links: Vec<(Link, f64)>,
}

impl LinkMix {
    /// Each of `clients` clients' link: deterministic for `seed`; every link of the mix gets its
    /// share of the clients (largest remainder), dealt in a seeded random order.
    pub fn assign(&self, clients: usize, seed: u64) -> Vec<Link> {
        let total: f64 = self.links.iter().map(|(_, w)| w).sum();
        let exact: Vec<f64> = self
            .links
            .iter()
            .map(|(_, w)| w / total * clients as f64)
            .collect();
        let mut counts: Vec<usize> = exact.iter().map(|e| e.floor() as usize).collect();
        let mut by_remainder: Vec<usize> = (0..exact.len()).collect();
        by_remainder.sort_by(|&a, &b| {
            (exact[b] - exact[b].floor()).total_cmp(&(exact[a] - exact[a].floor()))
        });
        let short = clients - counts.iter().sum::<usize>();
        for &i in by_remainder.iter().take(short) {
            counts[i] += 1;
        }
        let mut dealt: Vec<Link> = counts
            .iter()
            .zip(&self.links)
            .flat_map(|(&n, (link, _))| std::iter::repeat_n(*link, n))
            .collect();
        let mut rng = StdRng::seed_from_u64(seed ^ 0x4c49_4e4b); // "LINK"
        for i in (1..dealt.len()).rev() {
            dealt.swap(i, rng.random_range(0..=i));
        }
        dealt
    }
}

impl fmt::Display for LinkMix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (link, weight)) in self.links.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{link}")?;
            if self.links.len() > 1 {
                write!(f, "*{weight}")?;
            }
        }
        Ok(())
    }
}

fn positive(text: &str, what: &str) -> Result<f64, String> {
    text.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v > 0.0)
        .ok_or_else(|| format!("{what} {text:?} must be a positive number"))
}

fn with_unit<'a>(text: &'a str, units: &[(&str, f64)]) -> Option<(&'a str, f64)> {
    units
        .iter()
        .find_map(|(unit, scale)| text.strip_suffix(unit).map(|n| (n, *scale)))
}

impl FromStr for Link {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split('/').collect();
        let (bandwidth, latency, slowdown) = match parts.as_slice() {
            [b, l] => (*b, *l, None),
            [b, l, x] => (*b, *l, Some(*x)),
            _ => {
                return Err(format!(
                    "link {s:?}: expected BANDWIDTH/LATENCY[/xSLOWDOWN], e.g. 10mbit/25ms"
                ));
            }
        };
        let (number, scale) = with_unit(
            &bandwidth.to_ascii_lowercase(),
            &[("kbit", 1e3), ("mbit", 1e6), ("gbit", 1e9)],
        )
        .map(|(n, scale)| (n.to_string(), scale))
        .ok_or_else(|| format!("link {s:?}: bandwidth needs a unit: kbit, mbit or gbit"))?;
        let bits_per_second = positive(&number, "bandwidth")? * scale;
        let latency = latency.to_ascii_lowercase();
        let (number, scale) = with_unit(&latency, &[("ms", 1e-3), ("s", 1.0)])
            .ok_or_else(|| format!("link {s:?}: latency needs a unit: ms or s"))?;
        let latency_seconds = if number == "0" {
            0.0
        } else {
            positive(number, "latency")? * scale
        };
        let slowdown = match slowdown {
            None => 1.0,
            Some(x) => {
                let n = x
                    .strip_prefix('x')
                    .ok_or_else(|| format!("link {s:?}: a slowdown is spelled xFACTOR, e.g. x4"))?;
                positive(n, "slowdown")?
            }
        };
        Ok(Link {
            bits_per_second,
            latency_seconds,
            slowdown,
        })
    }
}

impl FromStr for LinkMix {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let links = s
            .split(',')
            .map(|part| {
                let (link, weight) = match part.split_once('*') {
                    Some((link, weight)) => (link, positive(weight, "link weight")?),
                    None => (part, 1.0),
                };
                Ok((link.trim().parse::<Link>()?, weight))
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(LinkMix { links })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_turns_bytes_into_seconds() {
        let link: Link = "10mbit/25ms".parse().unwrap();
        assert_eq!(link.bits_per_second, 10e6);
        assert_eq!(link.latency_seconds, 0.025);
        // 1.25 MB is 10 Mbit: one second plus the latency.
        assert!((link.transfer_seconds(1_250_000) - 1.025).abs() < 1e-12);
        assert!(
            (link.round_seconds(1_250_000, 2.0, 625_000) - (1.025 + 2.0 + 0.525)).abs() < 1e-12
        );
        let slow: Link = "1mbit/0ms/x3".parse().unwrap();
        assert_eq!(slow.round_seconds(0, 2.0, 0), 6.0);
        assert_eq!(slow.to_string(), "1mbit/0ms/x3");
    }

    #[test]
    fn a_mix_deals_links_in_proportion_and_by_seed() {
        let mix: LinkMix = "10mbit/25ms*0.9,1mbit/200ms/x4*0.1".parse().unwrap();
        let links = mix.assign(100, 7);
        assert_eq!(links.len(), 100);
        let slow = links.iter().filter(|l| l.slowdown == 4.0).count();
        assert_eq!(slow, 10);
        assert_eq!(
            links,
            mix.assign(100, 7),
            "the same seed deals the same links"
        );
        assert_ne!(links, mix.assign(100, 8));
        // Three equal links over 10 clients: 4, 3, 3 in some order.
        let three: LinkMix = "1mbit/1ms,2mbit/1ms,3mbit/1ms".parse().unwrap();
        let mut counts = [0; 3];
        for l in three.assign(10, 0) {
            counts[(l.bits_per_second / 1e6) as usize - 1] += 1;
        }
        counts.sort();
        assert_eq!(counts, [3, 3, 4]);
    }

    #[test]
    fn bad_links_say_what_is_wrong() {
        for (bad, says) in [
            ("10/25ms", "bandwidth needs a unit"),
            ("10mbit", "expected BANDWIDTH/LATENCY"),
            ("10mbit/25", "latency needs a unit"),
            ("-1mbit/25ms", "must be a positive number"),
            ("10mbit/25ms/4", "xFACTOR"),
            ("10mbit/25ms*0", "link weight"),
        ] {
            let err = bad.parse::<LinkMix>().unwrap_err();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }
}
