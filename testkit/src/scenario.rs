//! The simulator's settings: its command-line flags ([`Flags`]) and scenario files, which
//! set the same flags by name and sweep one or two of them and the seed.
//!
//! ```toml
//! # examples/scenarios/selfish.toml
//! nodes = 8
//! minutes = 120
//! block_interval = "2s"
//! latency = "10ms..50ms"
//!
//! [sweep]
//! seeds = [1, 2, 3]
//! selfish = [0.1, 0.25, 0.4]
//! ```
//!
//! A run's flags are the file's, then those given on the command line (so `--minutes 30`
//! shortens every run of a scenario), then the sweep's point and seed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, parser::ValueSource};
use serde::Deserialize;
use toml::Spanned;

use crate::sim::{self, BlockSize, Crashes, Options, Partition};

/// The flags of one simulation run.
#[derive(Debug, Clone, Parser)]
#[command(name = "simulate", args_override_self = true)]
pub struct Flags {
    /// Nodes in the network.
    #[arg(long, default_value_t = 100)]
    pub nodes: usize,
    /// Seed of every random choice (the same seed gives the same output).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Simulated minutes of mining.
    #[arg(long, default_value_t = 10.0)]
    pub minutes: f64,
    /// Mean time between blocks of the whole network (e.g. 10s).
    #[arg(long, default_value = "10s", value_parser = sim::parse_duration)]
    pub block_interval: Duration,
    /// One-way message latency range (e.g. 20ms..300ms).
    #[arg(long, default_value = "20ms..300ms", value_parser = sim::parse_latency)]
    pub latency: (Duration, Duration),
    /// Per-node upload and download capacity, drawn per node from a range or one value for
    /// all (e.g. 10Mbit..100Mbit); unlimited (latency only) when not given.
    #[arg(long, value_parser = sim::parse_bandwidth)]
    pub bandwidth: Option<(f64, f64)>,
    /// Bytes of data in each mined block (e.g. 250, 100KB, 1MB), or bytes per span of
    /// block interval (535KB/10m: 535 KB at 10-minute blocks, 8.9 KB at 10 s), which
    /// keeps the chain's bytes per second when a sweep varies the interval.
    #[arg(long, default_value = "0", value_parser = sim::parse_block_size)]
    pub block_size: BlockSize,
    /// Blocks with less data than this many bytes are pushed whole, bigger ones announced
    /// and fetched (the node's --push-below; 16384 by default). A huge value (e.g.
    /// 1000000000) pushes every block whole to every peer, as protocol version 1 nodes do.
    #[arg(long)]
    pub push_below: Option<usize>,
    /// Fraction of TCP writes lost (each is retransmitted after a timeout).
    #[arg(long, default_value_t = 0.0)]
    pub loss: f64,
    /// Split the network in two halves at a time for a while: halves@120s+60s.
    #[arg(long)]
    pub partition: Option<Partition>,
    /// Fraction of nodes that crash and restart at random times.
    #[arg(long, default_value_t = 0.0)]
    pub churn: f64,
    /// Crashes at given times: node 3 dies at 60 s and restarts on its store 20 s later
    /// (3@60s+20s); several as a comma list. Churn leaves these nodes alone.
    #[arg(long, value_name = "NODE@START+LENGTH,...")]
    pub crash: Option<Crashes>,
    /// Nodes that mine (sharing the hash power equally); all by default.
    #[arg(long)]
    pub miners: Option<usize>,
    /// A selfish miner: node 0 mines with this share of the hash power (e.g. 0.4) and
    /// withholds its blocks by Eyal and Sirer's rules; the other miners share the rest.
    #[arg(long, value_name = "ALPHA")]
    pub selfish: Option<f64>,
    /// Shares of the hash power of the first nodes, as pools (e.g. 0.3,0.2: node 0 has 0.3,
    /// node 1 0.2); the other miners share the rest equally.
    #[arg(long, value_parser = parse_shares)]
    pub shares: Option<Shares>,
    /// Fraction of the hosts that lie (the last ones): each runs no node and tells the
    /// honest nodes one lie (claimed work, invalid blocks, announcements never served,
    /// address floods, slow answers, garbage frames).
    #[arg(long, value_name = "FRACTION", default_value_t = 0.0)]
    pub byzantine: f64,
    /// An eclipse attack on node 0: an attacker with RATIO addresses per honest node fills
    /// its address book and inbound slots; node 0 restarts halfway and mines nothing. The
    /// summary's `eclipse` part says how many of its links the attacker then holds.
    #[arg(long, value_name = "RATIO")]
    pub eclipse: Option<f64>,
    /// Links each node dials.
    #[arg(long, default_value_t = 8)]
    pub max_outbound: usize,
    /// Simulation step (resolution of message delivery and timers).
    #[arg(long, default_value = "10ms", value_parser = sim::parse_duration)]
    pub tick: Duration,
    /// Proof-of-work difficulty of the simulated blocks.
    #[arg(long, default_value_t = 4)]
    pub difficulty: u32,
    /// Deadline for agreement once mining stopped and every fault healed.
    #[arg(long, default_value = "120s", value_parser = sim::parse_duration)]
    pub settle: Duration,
    /// Where the nodes' stores go (default: a temporary directory, on /dev/shm if any).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Start of the simulated wall clock, in Unix seconds (2026-01-01T00:00:00Z by default).
    #[arg(long, default_value_t = sim::EPOCH_SECS)]
    pub epoch: u64,
}

impl Flags {
    /// Checks the flags together and returns the run's options.
    pub fn options(&self) -> Result<Options, String> {
        if !(0.0..=1.0).contains(&self.loss) || !(0.0..=1.0).contains(&self.churn) {
            return Err("--loss and --churn are fractions between 0 and 1".into());
        }
        if !(0.0..0.5).contains(&self.byzantine) {
            return Err("--byzantine is a fraction of the hosts, from 0 to below 0.5".into());
        }
        if self.eclipse.is_some_and(|r| !(r > 0.0 && r <= 100.0)) {
            return Err(
                "--eclipse is the attacker's addresses per honest node, above 0 and at most 100"
                    .into(),
            );
        }
        if self.eclipse.is_some() && (self.selfish.is_some() || self.shares.is_some()) {
            return Err("--eclipse's victim is node 0, which --selfish and --shares give a pool's share: give one".into());
        }
        if self.selfish.is_some_and(|a| !(a > 0.0 && a < 1.0)) {
            return Err("--selfish is a share of the hash power, above 0 and below 1".into());
        }
        if self.tick.is_zero() || !self.minutes.is_finite() || self.minutes <= 0.0 {
            return Err("--tick and --minutes must be above zero".into());
        }
        if let Some(shares) = &self.shares {
            if self.selfish.is_some() {
                return Err("--shares and --selfish both set node 0's share: give one".into());
            }
            let pools = shares.0.len();
            let miners = self.miners.unwrap_or(self.nodes).min(self.nodes);
            if pools > miners {
                return Err(format!(
                    "--shares names {pools} pools but only {miners} nodes mine"
                ));
            }
            let sum: f64 = shares.0.iter().sum();
            if sum > 1.0 + 1e-9 || (pools == miners && (sum - 1.0).abs() > 1e-9) {
                return Err(format!(
                    "--shares add up to {sum}: they must leave the rest to the other miners \
                     (at most 1, and exactly 1 when every miner has a share)"
                ));
            }
        }
        if self.nodes == 0 {
            return Err("--nodes must be at least 1".into());
        }
        let block_size = self.block_size.at(self.block_interval);
        if block_size > sim::MAX_SIM_BLOCK {
            return Err(format!(
                "--block-size comes to {block_size} bytes at a {:?} interval; the most is {}",
                self.block_interval,
                sim::MAX_SIM_BLOCK
            ));
        }
        if let Some(c) = self
            .crash
            .iter()
            .flat_map(|c| &c.0)
            .find(|c| c.node >= self.nodes)
        {
            return Err(format!(
                "--crash names node {}, but the nodes are 0..{}",
                c.node,
                self.nodes - 1
            ));
        }
        Ok(Options {
            nodes: self.nodes,
            seed: self.seed,
            duration: Duration::from_secs_f64(self.minutes * 60.0),
            block_interval: self.block_interval,
            latency: self.latency,
            bandwidth: self.bandwidth,
            block_size,
            push_below: self.push_below,
            loss: self.loss,
            partition: self.partition,
            churn: self.churn,
            crashes: self.crash.clone().map(|c| c.0).unwrap_or_default(),
            miners: self.miners,
            selfish: self.selfish,
            shares: self.shares.clone().map(|s| s.0).unwrap_or_default(),
            byzantine: self.byzantine,
            eclipse: self.eclipse,
            max_outbound: self.max_outbound,
            tick: self.tick,
            difficulty: self.difficulty,
            settle: self.settle,
            data_dir: self.data_dir.clone(),
            epoch_secs: self.epoch,
        })
    }

    /// Returns the flags (as `(name, raw value)`, names as in a scenario file) that
    /// `matches` took from the command line, not from a default.
    pub fn given(matches: &ArgMatches) -> Vec<(String, String)> {
        Flags::command()
            .get_arguments()
            .filter_map(|arg| {
                let id = arg.get_id().as_str();
                if matches.value_source(id) != Some(ValueSource::CommandLine) {
                    return None;
                }
                let raw = matches.get_raw(id)?.next_back()?;
                Some((id.to_owned(), raw.to_string_lossy().into_owned()))
            })
            .collect()
    }

    /// Parses flags from `(name, raw value)` pairs, later ones overriding earlier ones.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = &'a (String, String)>,
    ) -> Result<Flags, String> {
        let mut argv = vec!["simulate".to_owned()];
        for (name, value) in pairs {
            argv.push(format!("--{}={value}", name.replace('_', "-")));
        }
        let matches = Flags::command()
            .try_get_matches_from(argv)
            .map_err(|e| first_line(&e.to_string()))?;
        Flags::from_arg_matches(&matches).map_err(|e| first_line(&e.to_string()))
    }
}

/// Shares of the hash power, `0.3,0.2` (each above 0 and below 1).
#[derive(Debug, Clone, PartialEq)]
pub struct Shares(pub Vec<f64>);

/// Parses `--shares 0.3,0.2`.
pub fn parse_shares(s: &str) -> Result<Shares, String> {
    let shares = s
        .split(',')
        .map(|x| {
            x.trim()
                .parse::<f64>()
                .ok()
                .filter(|v| *v > 0.0 && *v < 1.0)
                .ok_or_else(|| format!("bad share {x:?}: want a number above 0 and below 1"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Shares(shares))
}

/// The first line of a clap error, without its `error: ` prefix.
fn first_line(message: &str) -> String {
    let line = message.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_owned()
}

/// Flags that a scenario file cannot set: each run's store is its own temporary directory,
/// unless the command line gives one.
const NOT_IN_FILES: [&str; 1] = ["data_dir"];

/// Keys a scenario file may hold besides the flags.
const DESCRIPTIVE: [&str; 2] = ["name", "description"];

/// Most parameters a sweep may vary besides the seed.
pub const MAX_SWEPT: usize = 2;

/// Most runs one scenario may make.
pub const MAX_RUNS: usize = 10_000;

/// Figures a paper publishes for the scenario's sweep (`[published]`): a stale rate at
/// each of some values of the first swept flag, which the report draws and tabulates
/// beside the measured ones.
///
/// ```toml
/// [published]
/// label = "Gervais et al. (2016), their simulator"
/// block_interval = ["10s", "1m"]
/// stale_rate = [0.0477, 0.0215]
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Published {
    /// Whose figures, as the plot's legend names them.
    pub label: String,
    /// The swept flag the figures are given at.
    pub flag: String,
    /// The flag's values (raw), one per figure.
    pub at: Vec<String>,
    /// The published stale rate at each value.
    pub stale_rate: Vec<f64>,
}

/// A parsed scenario: its settings and its sweep.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The file's `name`, if any.
    pub name: Option<String>,
    /// The flags the file sets, as `(name, raw value)`.
    pub settings: Vec<(String, String)>,
    /// The swept flags, each with its values (raw), in the file's order.
    pub swept: Vec<(String, Vec<String>)>,
    /// The seeds to sweep; empty: the `seed` flag's one.
    pub seeds: Vec<u64>,
    /// Published figures to compare with, if the file gives them.
    pub published: Option<Published>,
}

/// One run of a scenario.
#[derive(Debug, Clone)]
pub struct Run {
    /// The swept flags' values of this run, as `(name, raw value)`.
    pub point: Vec<(String, String)>,
    /// The run's flags (the seed among them).
    pub flags: Flags,
}

/// A scenario file that does not parse or sets a flag wrongly: where and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioError {
    /// 1-based line of the bad field (0 when the whole file is at fault).
    pub line: usize,
    /// The field, if one is at fault.
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for ScenarioError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (&self.field, self.line) {
            (Some(field), line) if line > 0 => {
                write!(f, "line {line}: `{field}`: {}", self.message)
            }
            (Some(field), _) => write!(f, "`{field}`: {}", self.message),
            (None, line) if line > 0 => write!(f, "line {line}: {}", self.message),
            (None, _) => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for ScenarioError {}

#[derive(Deserialize)]
struct Tables {
    #[serde(default)]
    sweep: Option<BTreeMap<String, Spanned<toml::Value>>>,
    #[serde(default)]
    published: Option<BTreeMap<String, Spanned<toml::Value>>>,
}

impl Scenario {
    /// Parses a scenario file's text; every error names its line and field.
    pub fn parse(text: &str) -> Result<Scenario, ScenarioError> {
        let whole = |e: toml::de::Error| ScenarioError {
            line: e.span().map_or(0, |s| line_of(text, s.start)),
            field: None,
            message: e.message().to_owned(),
        };
        let top: BTreeMap<String, Spanned<toml::Value>> = toml::from_str(text).map_err(whole)?;
        let Tables { sweep, published } = toml::from_str::<Tables>(text).map_err(whole)?;
        let known: Vec<String> = Flags::command()
            .get_arguments()
            .map(|a| a.get_id().as_str().to_owned())
            .filter(|id| !NOT_IN_FILES.contains(&id.as_str()))
            .collect();
        let field_error =
            |key: &str, value: &Spanned<toml::Value>, message: String| ScenarioError {
                line: line_of(text, value.span().start),
                field: Some(key.to_owned()),
                message,
            };
        // The top level's fields, in the file's order.
        let mut fields: Vec<(&String, &Spanned<toml::Value>)> = top.iter().collect();
        fields.sort_by_key(|(_, v)| v.span().start);
        let mut scenario = Scenario {
            name: None,
            settings: Vec::new(),
            swept: Vec::new(),
            seeds: Vec::new(),
            published: None,
        };
        for (key, value) in fields {
            if key == "sweep" || key == "published" {
                continue;
            }
            if DESCRIPTIVE.contains(&key.as_str()) {
                match value.get_ref() {
                    toml::Value::String(s) if key == "name" => scenario.name = Some(s.clone()),
                    toml::Value::String(_) => {}
                    _ => return Err(field_error(key, value, "want a string".into())),
                }
                continue;
            }
            let raw = check_field(key, value.get_ref(), &known)
                .map_err(|m| field_error(key, value, m))?;
            scenario.settings.push((key.clone(), raw));
        }
        let Some(sweep) = sweep else {
            if let Some((key, value)) = published.as_ref().and_then(|p| p.iter().next()) {
                return Err(field_error(
                    key,
                    value,
                    "[published] gives figures at values of the swept flag; this file sweeps none"
                        .into(),
                ));
            }
            return Ok(scenario);
        };
        let mut swept: Vec<(&String, &Spanned<toml::Value>)> = sweep.iter().collect();
        swept.sort_by_key(|(_, v)| v.span().start);
        for (key, value) in swept {
            let toml::Value::Array(values) = value.get_ref() else {
                return Err(field_error(
                    key,
                    value,
                    "a swept field is a list of values".into(),
                ));
            };
            if values.is_empty() {
                return Err(field_error(
                    key,
                    value,
                    "the list of values is empty".into(),
                ));
            }
            if key == "seeds" {
                for v in values {
                    match v.as_integer().and_then(|s| u64::try_from(s).ok()) {
                        Some(s) => scenario.seeds.push(s),
                        None => {
                            return Err(field_error(
                                key,
                                value,
                                format!("{v} is not a seed (a whole number from 0)"),
                            ));
                        }
                    }
                }
                continue;
            }
            if key == "seed" {
                return Err(field_error(
                    key,
                    value,
                    "sweep seeds with `seeds = [...]`".into(),
                ));
            }
            let raws = values
                .iter()
                .map(|v| check_field(key, v, &known))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|m| field_error(key, value, m))?;
            scenario.swept.push((key.clone(), raws));
            if scenario.swept.len() > MAX_SWEPT {
                return Err(field_error(
                    key,
                    value,
                    format!("a sweep varies at most {MAX_SWEPT} fields besides the seeds"),
                ));
            }
        }
        if let Some(table) = published {
            scenario.published = Some(parse_published(text, &table, &scenario.swept, &known)?);
        }
        let runs = scenario
            .swept
            .iter()
            .map(|(_, v)| v.len())
            .product::<usize>()
            * scenario.seeds.len().max(1);
        if runs > MAX_RUNS {
            return Err(ScenarioError {
                line: 0,
                field: Some("sweep".into()),
                message: format!("{runs} runs; a scenario makes at most {MAX_RUNS}"),
            });
        }
        Ok(scenario)
    }

    /// Returns the scenario's runs: every point of its sweep with every seed, with the
    /// flags `given` on the command line over the file's settings.
    pub fn runs(&self, given: &[(String, String)]) -> Result<Vec<Run>, String> {
        let mut points: Vec<Vec<(String, String)>> = vec![Vec::new()];
        for (name, values) in &self.swept {
            points = points
                .into_iter()
                .flat_map(|p| {
                    values.iter().map(move |v| {
                        let mut p = p.clone();
                        p.push((name.clone(), v.clone()));
                        p
                    })
                })
                .collect();
        }
        let seeds: Vec<Option<u64>> = if self.seeds.is_empty() {
            vec![None]
        } else {
            self.seeds.iter().copied().map(Some).collect()
        };
        let mut runs = Vec::new();
        for point in points {
            for seed in &seeds {
                let seed = seed.map(|s| ("seed".to_owned(), s.to_string()));
                let pairs = self
                    .settings
                    .iter()
                    .chain(given)
                    .chain(&point)
                    .chain(seed.as_ref());
                let flags = Flags::from_pairs(pairs)?;
                flags.options()?;
                runs.push(Run {
                    point: point.clone(),
                    flags,
                });
            }
        }
        Ok(runs)
    }
}

/// Most figures a `[published]` table may give.
const MAX_PUBLISHED: usize = 1_000;

/// Reads a `[published]` table: a `label`, the first swept flag's values and as many
/// `stale_rate`s; every error names its line and field.
fn parse_published(
    text: &str,
    table: &BTreeMap<String, Spanned<toml::Value>>,
    swept: &[(String, Vec<String>)],
    known: &[String],
) -> Result<Published, ScenarioError> {
    let error = |key: &str, value: Option<&Spanned<toml::Value>>, message: String| ScenarioError {
        line: value.map_or(0, |v| line_of(text, v.span().start)),
        field: Some(format!("published.{key}")),
        message,
    };
    let list = |key: &str| -> Result<&Vec<toml::Value>, ScenarioError> {
        let value = table.get(key);
        match value.map(Spanned::get_ref) {
            Some(toml::Value::Array(a)) if !a.is_empty() && a.len() <= MAX_PUBLISHED => Ok(a),
            Some(toml::Value::Array(_)) => Err(error(
                key,
                value,
                format!("want 1 to {MAX_PUBLISHED} values"),
            )),
            Some(_) => Err(error(key, value, "want a list of values".into())),
            None => Err(error(key, None, "missing".into())),
        }
    };
    let label = match table.get("label").map(|v| (v, v.get_ref())) {
        Some((_, toml::Value::String(s))) => s.clone(),
        Some((v, _)) => return Err(error("label", Some(v), "want a string".into())),
        None => {
            return Err(error(
                "label",
                None,
                "missing: whose figures these are".into(),
            ));
        }
    };
    let first = swept.first().map(|(k, _)| k.as_str()).unwrap_or_default();
    if let Some((key, value)) = table
        .iter()
        .find(|(k, _)| !["label", "stale_rate", first].contains(&k.as_str()))
    {
        return Err(error(
            key,
            Some(value),
            format!("[published] gives figures at values of the first swept flag, `{first}`"),
        ));
    }
    if !table.contains_key(first) {
        return Err(error(
            first,
            None,
            "missing: the values the figures are given at".into(),
        ));
    }
    let flag = first.to_owned();
    let at = list(&flag)?
        .iter()
        .map(|v| check_field(&flag, v, known))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|m| error(&flag, table.get(&flag), m))?;
    let stale_rate = list("stale_rate")?
        .iter()
        .map(|v| match v {
            toml::Value::Float(f) if (0.0..=1.0).contains(f) => Ok(*f),
            toml::Value::Integer(i @ 0..=1) => Ok(*i as f64),
            other => Err(format!(
                "{other} is not a stale rate (a fraction from 0 to 1)"
            )),
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|m| error("stale_rate", table.get("stale_rate"), m))?;
    if at.len() != stale_rate.len() {
        return Err(error(
            "stale_rate",
            table.get("stale_rate"),
            format!(
                "{} rates for {} values of `{flag}`",
                stale_rate.len(),
                at.len()
            ),
        ));
    }
    Ok(Published {
        label,
        flag,
        at,
        stale_rate,
    })
}

/// Checks one field's value against its flag; returns it as the flag's raw text.
fn check_field(key: &str, value: &toml::Value, known: &[String]) -> Result<String, String> {
    if !known.iter().any(|k| k == key) {
        return Err(format!(
            "no such field; the fields are {}",
            known.join(", ")
        ));
    }
    let raw = match value {
        toml::Value::String(s) => s.clone(),
        toml::Value::Integer(i) => i.to_string(),
        toml::Value::Float(f) => f.to_string(),
        other => {
            return Err(format!(
                "want a number or a string, not {}",
                other.type_str()
            ));
        }
    };
    Flags::from_pairs(&[(key.to_owned(), raw.clone())])?;
    Ok(raw)
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    const SELFISH: &str = r#"name = "selfish"
nodes = 8
minutes = 120
block_interval = "2s"
latency = "10ms..50ms"

[sweep]
seeds = [1, 2]
selfish = [0.25, 0.4]
"#;

    #[test]
    fn a_sweep_makes_every_point_with_every_seed() {
        let s = Scenario::parse(SELFISH).unwrap();
        assert_eq!(s.name.as_deref(), Some("selfish"));
        let runs = s.runs(&[]).unwrap();
        let got: Vec<(f64, u64)> = runs
            .iter()
            .map(|r| (r.flags.selfish.unwrap(), r.flags.seed))
            .collect();
        assert_eq!(got, [(0.25, 1), (0.25, 2), (0.4, 1), (0.4, 2)]);
        assert!(runs.iter().all(|r| r.flags.nodes == 8
            && r.flags.block_interval == Duration::from_secs(2)
            && r.flags.latency == (Duration::from_millis(10), Duration::from_millis(50))));
        assert_eq!(runs[3].point, [("selfish".to_owned(), "0.4".to_owned())]);
    }

    #[test]
    fn the_command_line_overrides_the_file_but_not_the_sweep() {
        let s = Scenario::parse(SELFISH).unwrap();
        let given = [
            ("minutes".to_owned(), "30".to_owned()),
            ("selfish".to_owned(), "0.1".to_owned()),
        ];
        let runs = s.runs(&given).unwrap();
        assert!(runs.iter().all(|r| r.flags.minutes == 30.0));
        assert_eq!(runs[0].flags.selfish, Some(0.25));
    }

    #[test]
    fn errors_name_the_line_and_the_field() {
        let cases = [
            (
                "nodes = 8\nblock_interval = \"2x\"\n",
                2,
                "block_interval",
                "bad duration",
            ),
            (
                "nodes = 8\n\nblock_intervall = \"2s\"\n",
                3,
                "block_intervall",
                "no such field",
            ),
            ("nodes = -1\n", 1, "nodes", "invalid value"),
            ("nodes = true\n", 1, "nodes", "want a number or a string"),
            ("[sweep]\nselfish = 0.4\n", 2, "selfish", "a list of values"),
            ("[sweep]\nseeds = [1, -2]\n", 2, "seeds", "is not a seed"),
            ("[sweep]\nselfish = []\n", 2, "selfish", "empty"),
            (
                "[sweep]\nlatency = [\"1ms\", \"5ms..1ms\"]\n",
                2,
                "latency",
                "low end is above",
            ),
            (
                "[sweep]\nnodes = [1]\nminutes = [1]\nloss = [0.1]\n",
                4,
                "loss",
                "at most 2",
            ),
            ("data_dir = \"/tmp\"\n", 1, "data_dir", "no such field"),
            ("name = 3\n", 1, "name", "want a string"),
            (
                "nodes = 8\ncrash = \"3@60s\"\n",
                2,
                "crash",
                "want NODE@START+LENGTH",
            ),
            (
                "crash = \"3@60s+20s, 3@70s+5s\"\n",
                1,
                "crash",
                "crashes of node 3 overlap",
            ),
        ];
        for (text, line, field, what) in cases {
            let e = Scenario::parse(text).unwrap_err();
            assert_eq!(
                (e.line, e.field.as_deref()),
                (line, Some(field)),
                "{text:?}: {e}"
            );
            assert!(e.to_string().contains(what), "{text:?}: {e}");
        }
        // A file that is no TOML names its line too.
        let e = Scenario::parse("nodes = 8\nminutes = = 3\n").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
    }

    #[test]
    fn settings_that_clash_are_refused_per_run() {
        let s = Scenario::parse("[sweep]\nselfish = [0.5, 1.5]\n").unwrap();
        let e = s.runs(&[]).unwrap_err();
        assert!(e.contains("--selfish"), "{e}");
        // Liars: a fraction below one half, in a file as on the command line.
        let s = Scenario::parse("byzantine = 0.2\n[sweep]\nseeds = [1]\n").unwrap();
        assert_eq!(s.runs(&[]).unwrap()[0].flags.byzantine, 0.2);
        for bad in ["0.5", "-0.1"] {
            let s = Scenario::parse(&format!("byzantine = {bad}\n")).unwrap();
            let e = s.runs(&[]).unwrap_err();
            assert!(e.contains("--byzantine"), "{bad}: {e}");
        }
        for bad in ["eclipse = 0", "eclipse = 10\nselfish = 0.3"] {
            let e = Scenario::parse(bad).unwrap().runs(&[]).unwrap_err();
            assert!(e.contains("--eclipse"), "{bad}: {e}");
        }
    }

    #[test]
    fn shares_are_checked() {
        let flags = |args: &[(&str, &str)]| {
            let pairs: Vec<(String, String)> = args
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            Flags::from_pairs(&pairs).and_then(|f| f.options())
        };
        let ok = flags(&[("nodes", "10"), ("shares", "0.3, 0.2")]).unwrap();
        assert_eq!(ok.shares, [0.3, 0.2]);
        for (args, what) in [
            (&[("shares", "0.3,x")][..], "bad share"),
            (&[("shares", "1.5")][..], "bad share"),
            (&[("shares", "0.7,0.4")][..], "add up to"),
            (&[("nodes", "2"), ("shares", "0.5,0.3")][..], "exactly 1"),
            (
                &[("nodes", "2"), ("shares", "0.5,0.3,0.2")][..],
                "only 2 nodes mine",
            ),
            (&[("shares", "0.3"), ("selfish", "0.3")][..], "give one"),
        ] {
            let e = flags(args).unwrap_err();
            assert!(e.contains(what), "{args:?}: {e}");
        }
    }

    #[test]
    fn a_block_size_per_interval_scales_with_the_swept_interval() {
        let s = Scenario::parse(
            "block_size = \"535KB/10m\"\n[sweep]\nblock_interval = [\"10m\", \"2.5m\", \"10s\"]\n",
        )
        .unwrap();
        let sizes: Vec<usize> = s
            .runs(&[])
            .unwrap()
            .iter()
            .map(|r| r.flags.options().unwrap().block_size)
            .collect();
        assert_eq!(sizes, [535_000, 133_750, 8_917]);
        // A plain size stays what it is at any interval.
        let s = Scenario::parse("block_size = \"1MB\"\nblock_interval = \"1s\"\n").unwrap();
        assert_eq!(
            s.runs(&[]).unwrap()[0].flags.options().unwrap().block_size,
            1_000_000
        );
        for (text, what) in [
            ("block_size = \"1MB/0s\"\n", "above zero"),
            ("block_size = \"1MB/x\"\n", "bad duration"),
            ("block_size = \"1XB/1m\"\n", "bad size"),
        ] {
            let e = Scenario::parse(text).unwrap_err();
            assert_eq!((e.line, e.field.as_deref()), (1, Some("block_size")), "{e}");
            assert!(e.to_string().contains(what), "{text:?}: {e}");
        }
        // Scaled past the simulator's largest block: refused for the run that would.
        let s = Scenario::parse(
            "block_size = \"1MB/1s\"\n[sweep]\nblock_interval = [\"10s\", \"100s\"]\n",
        )
        .unwrap();
        let e = s.runs(&[]).unwrap_err();
        assert!(
            e.contains("100000000 bytes") && e.contains("--block-size"),
            "{e}"
        );
    }

    #[test]
    fn published_figures_are_read_and_checked() {
        let head = "[sweep]\nblock_interval = [\"10s\", \"1m\"]\n\n[published]\n";
        let s = Scenario::parse(&format!(
            "{head}label = \"a paper\"\nblock_interval = [\"10s\", \"1m\"]\nstale_rate = [0.0477, 0.0215]\n"
        ))
        .unwrap();
        assert_eq!(
            s.published,
            Some(Published {
                label: "a paper".into(),
                flag: "block_interval".into(),
                at: vec!["10s".into(), "1m".into()],
                stale_rate: vec![0.0477, 0.0215],
            })
        );
        let cases = [
            (
                "block_interval = [\"10s\"]\nstale_rate = [0.1]\n",
                0,
                "published.label",
                "missing",
            ),
            (
                "label = \"p\"\nblock_interval = [\"10s\"]\nstale_rate = [0.1, 0.2]\n",
                7,
                "published.stale_rate",
                "2 rates for 1 values",
            ),
            (
                "label = \"p\"\nblock_interval = [\"10x\"]\nstale_rate = [0.1]\n",
                6,
                "published.block_interval",
                "bad duration",
            ),
            (
                "label = \"p\"\nblock_interval = [\"10s\"]\nstale_rate = [1.5]\n",
                7,
                "published.stale_rate",
                "not a stale rate",
            ),
            (
                "label = \"p\"\nnodes = [4]\nstale_rate = [0.1]\n",
                6,
                "published.nodes",
                "first swept flag, `block_interval`",
            ),
            (
                "label = \"p\"\nstale_rate = [0.1]\n",
                0,
                "published.block_interval",
                "missing",
            ),
            (
                "label = \"p\"\nblock_interval = \"10s\"\nstale_rate = [0.1]\n",
                6,
                "published.block_interval",
                "a list",
            ),
        ];
        for (body, line, field, what) in cases {
            let e = Scenario::parse(&format!("{head}{body}")).unwrap_err();
            assert_eq!(
                (e.line, e.field.as_deref()),
                (line, Some(field)),
                "{body:?}: {e}"
            );
            assert!(e.to_string().contains(what), "{body:?}: {e}");
        }
        // Figures at values of a sweep the file does not make.
        let e = Scenario::parse("[published]\nlabel = \"p\"\n").unwrap_err();
        assert!(e.message.contains("sweeps none"), "{e}");
    }

    #[test]
    fn too_many_runs_are_refused() {
        let seeds: Vec<String> = (0..200).map(|s| s.to_string()).collect();
        let nodes: Vec<String> = (1..=60).map(|s| s.to_string()).collect();
        let text = format!(
            "[sweep]\nseeds = [{}]\nnodes = [{}]\n",
            seeds.join(","),
            nodes.join(",")
        );
        let e = Scenario::parse(&text).unwrap_err();
        assert!(e.message.contains("12000 runs"), "{e}");
    }
}
