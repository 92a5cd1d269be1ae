//! The simulator's flags as text: durations, ranges, rates, sizes, partitions, crashes.

use super::*;

/// A partition of the network into two halves, from `at` for `lasting`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    /// When it starts (simulated time since the start).
    pub at: Duration,
    /// How long it lasts.
    pub lasting: Duration,
}

impl FromStr for Partition {
    type Err = String;

    /// Parses `halves@120s+60s`.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("bad partition {s:?}: want halves@START+LENGTH, e.g. halves@120s+60s");
        let rest = s.strip_prefix("halves@").ok_or_else(bad)?;
        let (at, lasting) = rest.split_once('+').ok_or_else(bad)?;
        Ok(Partition {
            at: parse_duration(at).map_err(|_| bad())?,
            lasting: parse_duration(lasting).map_err(|_| bad())?,
        })
    }
}

/// One node's crash: it dies at `at` without closing its connections and starts again on
/// its store after `down`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Crash {
    /// The node (0-based).
    pub node: usize,
    /// When it dies (simulated time since the start).
    pub at: Duration,
    /// How long it stays down.
    pub down: Duration,
}

/// Crashes at given times, `3@60s+20s,7@90s+10s`: node 3 dies at 60 s for 20 s, node 7 at
/// 90 s for 10 s. A node's crashes may not overlap.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Crashes(pub Vec<Crash>);

impl FromStr for Crashes {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let mut crashes: Vec<Crash> = Vec::new();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let bad = || {
                format!(
                    "bad crash {item:?}: want NODE@START+LENGTH, e.g. 3@60s+20s (several: a comma list)"
                )
            };
            let (node, times) = item.split_once('@').ok_or_else(bad)?;
            let (at, down) = times.split_once('+').ok_or_else(bad)?;
            let crash = Crash {
                node: node.trim().parse().map_err(|_| bad())?,
                at: parse_duration(at).map_err(|_| bad())?,
                down: parse_duration(down).map_err(|_| bad())?,
            };
            if crash.down.is_zero() {
                return Err(format!(
                    "bad crash {item:?}: a node stays down for some time"
                ));
            }
            if let Some(other) = crashes.iter().find(|c| {
                c.node == crash.node && c.at < crash.at + crash.down && crash.at < c.at + c.down
            }) {
                return Err(format!(
                    "crashes of node {} overlap ({}s+{}s and {item})",
                    crash.node,
                    other.at.as_secs_f64(),
                    other.down.as_secs_f64()
                ));
            }
            crashes.push(crash);
        }
        if crashes.is_empty() {
            return Err("no crash given: want NODE@START+LENGTH, e.g. 3@60s+20s".into());
        }
        crashes.sort_by_key(|c| (c.at, c.node));
        Ok(Crashes(crashes))
    }
}

/// Parses `250ms`, `10s`, `2m` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = number
        .parse()
        .map_err(|_| format!("bad duration {s:?}: want e.g. 250ms, 10s or 2m"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" | "min" => n * 60.0,
        _ => return Err(format!("bad duration {s:?}: the unit is ms, s or m")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("bad duration {s:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses a latency range `20ms..300ms` (or one value).
pub fn parse_latency(s: &str) -> Result<(Duration, Duration), String> {
    parse_range(s, "latency", parse_duration)
}

/// Parses `LOW..HIGH` (or one value for both) with `parse`.
pub(super) fn parse_range<T: PartialOrd>(
    s: &str,
    what: &str,
    parse: fn(&str) -> Result<T, String>,
) -> Result<(T, T), String> {
    let (lo, hi) = s.split_once("..").unwrap_or((s, s));
    let (lo, hi) = (parse(lo)?, parse(hi)?);
    if lo > hi {
        return Err(format!(
            "bad {what} {s:?}: the low end is above the high end"
        ));
    }
    Ok((lo, hi))
}

/// Reads a data rate such as `10Mbit`, `1.5Gbit`, `800kbit` or `100000bit` (bits per
/// second); returns bytes per second.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let (num, unit) = lower.split_at(
        lower
            .find(|c: char| c.is_ascii_alphabetic())
            .unwrap_or(lower.len()),
    );
    let scale = match unit {
        "bit" | "bps" => 1.0,
        "kbit" | "kbps" => 1e3,
        "mbit" | "mbps" => 1e6,
        "gbit" | "gbps" => 1e9,
        _ => {
            return Err(format!(
                "bad rate {s:?}: want a number and bit, kbit, Mbit or Gbit (e.g. 10Mbit)"
            ));
        }
    };
    let n: f64 = num.trim().parse().map_err(|_| format!("bad rate {s:?}"))?;
    if !n.is_finite() || n <= 0.0 {
        return Err(format!("bad rate {s:?}: it must be above zero"));
    }
    Ok(n * scale / 8.0)
}

/// Reads a range of per-node capacities, `LOW..HIGH` or one value for every node
/// (`10Mbit..100Mbit`, `50Mbit`); returns bytes per second.
pub fn parse_bandwidth(s: &str) -> Result<(f64, f64), String> {
    parse_range(s, "bandwidth", parse_rate)
}

/// Reads a size in bytes: `250`, `100KB`, `1MB`, `4MB` (decimal units, as block sizes are
/// quoted), or `1MiB` (binary).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let scale: f64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        _ => {
            return Err(format!(
                "bad size {s:?}: want bytes, KB, MB, KiB or MiB (e.g. 1MB)"
            ));
        }
    };
    let n: f64 = num.trim().parse().map_err(|_| format!("bad size {s:?}"))?;
    if !n.is_finite() || n < 0.0 {
        return Err(format!("bad size {s:?}"));
    }
    Ok((n * scale).round() as usize)
}

/// Largest block the simulator makes (`--block-size`, after scaling with the interval).
pub const MAX_SIM_BLOCK: usize = 64_000_000;

/// `--block-size`: a fixed size, or a size per span of block interval (`535KB/10m`) that
/// scales every block with the interval, so a sweep of intervals keeps the throughput
/// (bytes per second of chain) constant, as Gervais et al. (2016) sweep it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BlockSize {
    /// This many bytes of data in every block.
    Bytes(usize),
    /// `bytes` for every `per` of block interval.
    PerInterval {
        /// Bytes of data at a block interval of `per`.
        bytes: usize,
        /// The interval at which a block holds `bytes`.
        per: Duration,
    },
}

impl BlockSize {
    /// The bytes of data in a block at this mean block interval.
    pub fn at(self, interval: Duration) -> usize {
        match self {
            BlockSize::Bytes(n) => n,
            BlockSize::PerInterval { bytes, per } => {
                (bytes as f64 * interval.as_secs_f64() / per.as_secs_f64()).round() as usize
            }
        }
    }
}

/// Reads `--block-size`: `100KB`, or `535KB/10m` (535 KB at a 10-minute interval, half
/// that at 5 minutes).
pub fn parse_block_size(s: &str) -> Result<BlockSize, String> {
    let Some((size, per)) = s.split_once('/') else {
        return Ok(BlockSize::Bytes(parse_size(s)?));
    };
    let bytes = parse_size(size)?;
    let per = parse_duration(per)?;
    if per.is_zero() {
        return Err(format!(
            "bad block size {s:?}: the interval after / must be above zero"
        ));
    }
    Ok(BlockSize::PerInterval { bytes, per })
}
