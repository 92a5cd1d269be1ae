//! The block: its fields, the canonical bytes its hash commits to, and the fixed genesis.

use std::fmt::{self, Write as _};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

/// Timestamp format of every block, always UTC (the original's `"%d/%m/%Y, %H:%M:%S"`).
pub(crate) const TIMESTAMP_FORMAT: &str = "%d/%m/%Y, %H:%M:%S";

/// Timestamp of the genesis block.
pub(crate) const GENESIS_TIMESTAMP: &str = "01/01/1970, 00:00:00";

/// `prev_hash` of the genesis block (it has no parent).
pub(crate) const GENESIS_PREV_HASH: &str = "0000";

/// The largest difficulty a block may ask for, in leading zero bits.
pub const MAX_DIFFICULTY: u32 = 64;

/// The largest nonce a block may carry: 2^53 − 1, the largest integer every JSON reader
/// (JavaScript, jq, Go's `interface{}`) reads exactly (I-JSON, RFC 7493).
pub const MAX_NONCE: u64 = (1 << 53) - 1;

/// Returns the work of one block of `difficulty` bits: 2^difficulty.
pub fn work(difficulty: u32) -> u128 {
    1u128 << difficulty.min(MAX_DIFFICULTY)
}

/// Returns the OS clock's time in Unix seconds, what block timestamps are made of.
pub fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Parses a block timestamp into Unix seconds: exactly the 20 bytes `DD/MM/YYYY, HH:MM:SS`
/// (ASCII digits, each field zero-padded to its width, one space after the comma, a real
/// date of years 0000–9999, hours 00–23, minutes and seconds 00–59: no leap second), as
/// PROTOCOL.md's rule 6 says. Anything else is `None`, whatever a lenient reader (chrono's,
/// which nodes before this rule used) would make of it: a second implementation built on
/// its language's strict parser must agree with the node byte for byte.
pub(crate) fn parse_timestamp(ts: &str) -> Option<i64> {
    parse_canonical(ts)
}

/// PROTOCOL.md's vectors of timestamps rule 6 refuses: whitespace where the form has
/// none (or other whitespace than one space), unpadded fields, a leap second, a day the
/// month lacks, another separator, trailing bytes.
#[cfg(any(test, feature = "testkit"))]
pub const TIMESTAMPS_REFUSED: [&str; 16] = [
    "03/02/1972,00:00:00",
    " 05/02/1972, 00:00:00",
    "15/ 03/1972, 00:00:00",
    "18/03/1972, 00: 00:00",
    "\t05/02/1972, 00:00:00",
    "05/02/1972,  00:00:00",
    "05/02/1972, 00:00:00 ",
    "31/12/1972, 23:59:60",
    "1/1/2026, 0:00:00",
    "29/02/2025, 00:00:00",
    "31/04/2026, 00:00:00",
    "05-02-1972, 00:00:00",
    "05/02/1972 00:00:00",
    "05/02/+1972, 00:00:00",
    "yesterday",
    "",
];

/// Formats Unix seconds as a block timestamp.
pub fn format_timestamp(secs: i64) -> String {
    match canonical_time(secs) {
        Some(buf) => ascii(&buf).to_owned(),
        None => chrono::DateTime::from_timestamp(secs, 0)
            .unwrap_or_default()
            .format(TIMESTAMP_FORMAT)
            .to_string(),
    }
}

/// The text of a buffer this module filled with ASCII digits and punctuation.
fn ascii(buf: &[u8]) -> &str {
    std::str::from_utf8(buf).unwrap_or_default()
}

/// Seconds from 1970 of 0000-01-01 00:00:00 and of 9999-12-31 23:59:59: the range whose
/// timestamps have the fixed 20-character form and are held as integers.
const CANONICAL_SECS: std::ops::RangeInclusive<i64> = -62_167_219_200..=253_402_300_799;

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day count since 1970-01-01: (year, month, day).
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Returns `secs` as `dd/mm/YYYY, HH:MM:SS` if its year has four digits.
fn canonical_time(secs: i64) -> Option<[u8; 20]> {
    if !CANONICAL_SECS.contains(&secs) {
        return None;
    }
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    let mut buf = *b"dd/mm/YYYY, HH:MM:SS";
    let two = |buf: &mut [u8; 20], at: usize, v: i64| {
        buf[at] = b'0' + (v / 10) as u8;
        buf[at + 1] = b'0' + (v % 10) as u8;
    };
    two(&mut buf, 0, d);
    two(&mut buf, 3, m);
    two(&mut buf, 6, y / 100);
    two(&mut buf, 8, y % 100);
    two(&mut buf, 12, rem / 3600);
    two(&mut buf, 15, rem / 60 % 60);
    two(&mut buf, 18, rem % 60);
    Some(buf)
}

/// Reads exactly the form [`format_timestamp`] writes (two-digit fields, a four-digit year,
/// a real date); anything else is `None`.
fn parse_canonical(ts: &str) -> Option<i64> {
    let b: &[u8; 20] = ts.as_bytes().try_into().ok()?;
    let num = |at: usize, len: usize| -> Option<i64> {
        b[at..at + len].iter().try_fold(0i64, |n, c| {
            c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0'))
        })
    };
    if &b[2..3] != b"/" || &b[5..6] != b"/" || &b[10..12] != b", " || b[14] != b':' || b[17] != b':'
    {
        return None;
    }
    let (d, m, y) = (num(0, 2)?, num(3, 2)?, num(6, 4)?);
    let (hh, mm, ss) = (num(12, 2)?, num(15, 2)?, num(18, 2)?);
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&m) || d < 1 || d > month_days[(m - 1) as usize] {
        return None;
    }
    if hh > 23 || mm > 59 || ss > 59 {
        return None;
    }
    Some(days_from_civil(y, m, d) * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// A block's timestamp: Unix seconds for every timestamp in the canonical
/// `dd/mm/YYYY, HH:MM:SS` form (all a miner writes), else the text exactly as received,
/// so that the hash still commits to the very bytes the block carried.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum Timestamp {
    /// Unix seconds; written back as the canonical text.
    Unix(i64),
    /// Text that is not in the canonical form (the rules decide whether it parses).
    Text(Box<str>),
}

impl Timestamp {
    /// The timestamp of `secs` Unix seconds, written canonically.
    pub fn from_unix(secs: i64) -> Self {
        if CANONICAL_SECS.contains(&secs) {
            Timestamp::Unix(secs)
        } else {
            Timestamp::Text(format_timestamp(secs).into())
        }
    }

    /// Returns the time in Unix seconds, if the timestamp parses.
    pub fn unix(&self) -> Option<i64> {
        match self {
            Timestamp::Unix(secs) => Some(*secs),
            Timestamp::Text(text) => parse_timestamp(text),
        }
    }

    /// Calls `f` with the timestamp's text (no allocation for the canonical form).
    fn with_text<R>(&self, f: impl FnOnce(&str) -> R) -> R {
        match self {
            Timestamp::Unix(secs) => match canonical_time(*secs) {
                Some(buf) => f(ascii(&buf)),
                // Only a `Unix` built by hand is outside the range `from_unix` keeps there.
                None => f(&format_timestamp(*secs)),
            },
            Timestamp::Text(text) => f(text),
        }
    }
}

impl From<&str> for Timestamp {
    fn from(text: &str) -> Self {
        match parse_canonical(text) {
            Some(secs) => Timestamp::Unix(secs),
            None => Timestamp::Text(text.into()),
        }
    }
}

impl From<String> for Timestamp {
    fn from(text: String) -> Self {
        match parse_canonical(&text) {
            Some(secs) => Timestamp::Unix(secs),
            None => Timestamp::Text(text.into_boxed_str()),
        }
    }
}

impl FromStr for Timestamp {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Timestamp::from(s))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.with_text(|t| f.write_str(t))
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.with_text(|t| write!(f, "{t:?}"))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.with_text(|t| s.serialize_str(t))
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(ParseText::new("a timestamp \"dd/mm/YYYY, HH:MM:SS\""))
    }
}

/// A serde visitor that parses a string where the deserializer holds it (no copy first),
/// for the block's text fields: hashes, `prev_hash`, timestamps.
struct ParseText<T> {
    expecting: &'static str,
    into: std::marker::PhantomData<T>,
}

impl<T> ParseText<T> {
    fn new(expecting: &'static str) -> Self {
        ParseText {
            expecting,
            into: std::marker::PhantomData,
        }
    }
}

impl<T: FromStr<Err: fmt::Display>> serde::de::Visitor<'_> for ParseText<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.expecting)
    }
    fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<T, E> {
        s.parse().map_err(E::custom)
    }
}

/// A block's `prev_hash`: the parent's hash, or `"0000"` for genesis, which has none.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub enum PrevHash {
    /// Genesis: `"0000"`.
    Genesis,
    /// The parent block's hash.
    Block(BlockHash),
}

impl PrevHash {
    /// Tells whether this is the hash of `parent`.
    pub fn is(&self, parent: &BlockHash) -> bool {
        matches!(self, PrevHash::Block(h) if h == parent)
    }

    /// Calls `f` with the text form: `0000` or 64 hex digits (no allocation).
    fn with_text<R>(&self, f: impl FnOnce(&str) -> R) -> R {
        match self {
            PrevHash::Genesis => f(GENESIS_PREV_HASH),
            PrevHash::Block(h) => f(ascii(&h.hex())),
        }
    }
}

impl From<BlockHash> for PrevHash {
    fn from(h: BlockHash) -> Self {
        PrevHash::Block(h)
    }
}

impl FromStr for PrevHash {
    type Err = ParseHashError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == GENESIS_PREV_HASH {
            Ok(PrevHash::Genesis)
        } else {
            s.parse().map(PrevHash::Block)
        }
    }
}

impl fmt::Display for PrevHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.with_text(|t| f.write_str(t))
    }
}

impl fmt::Debug for PrevHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PrevHash({self})")
    }
}

impl Serialize for PrevHash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.with_text(|t| s.serialize_str(t))
    }
}

impl<'de> Deserialize<'de> for PrevHash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(ParseText::new(
            "\"0000\" or a hash as 64 lowercase hex digits",
        ))
    }
}

/// Hashes a preimage: SHA-256, the block hash.
pub(crate) fn hash_preimage(preimage: &[u8]) -> BlockHash {
    BlockHash(Sha256::digest(preimage).into())
}

/// A SHA-256 block hash, shown as 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct BlockHash(pub [u8; 32]);

impl BlockHash {
    /// Returns the hash as 64 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Returns the 64 lowercase hex digits in a buffer (no allocation).
    fn hex(&self) -> [u8; 64] {
        let mut buf = [0u8; 64];
        // Infallible: the buffer is exactly twice the digest length.
        let _ = hex::encode_to_slice(self.0, &mut buf);
        buf
    }

    /// Returns the first 8 hex digits, for logs and dashboards.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }

    /// Counts the leading zero bits of the digest, read big-endian.
    pub fn leading_zero_bits(&self) -> u32 {
        let mut bits = 0;
        for byte in self.0 {
            if byte == 0 {
                bits += 8;
            } else {
                return bits + byte.leading_zeros();
            }
        }
        bits
    }
}

impl fmt::Display for BlockHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for BlockHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlockHash({})", self.to_hex())
    }
}

/// Why a string is not a block hash.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a block hash (64 lowercase hex digits): {0:?}")]
pub struct ParseHashError(pub String);

impl FromStr for BlockHash {
    type Err = ParseHashError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        /// The value of a lowercase hex digit; 0xff for any other byte.
        const fn digit(b: u8) -> u8 {
            match b {
                b'0'..=b'9' => b - b'0',
                b'a'..=b'f' => b - b'a' + 10,
                _ => 0xff,
            }
        }
        const DIGITS: [u8; 256] = {
            let mut table = [0xff; 256];
            let mut b = 0;
            while b < 256 {
                table[b] = digit(b as u8);
                b += 1;
            }
            table
        };
        let refuse = || ParseHashError(s.chars().take(80).collect());
        let bytes: &[u8; 64] = s.as_bytes().try_into().map_err(|_| refuse())?;
        let mut out = [0u8; 32];
        let mut bad = 0u8;
        for (o, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
            let (hi, lo) = (DIGITS[usize::from(pair[0])], DIGITS[usize::from(pair[1])]);
            bad |= hi | lo;
            *o = (hi << 4) | (lo & 0xf);
        }
        // Every digit is below 16, so any 0xff marks a byte that is no lowercase hex digit.
        if bad & 0xf0 != 0 {
            return Err(refuse());
        }
        Ok(BlockHash(out))
    }
}

impl Serialize for BlockHash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(ascii(&self.hex()))
    }
}

impl<'de> Deserialize<'de> for BlockHash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(ParseText::new("a hash as 64 lowercase hex digits"))
    }
}

/// User data carried by a block, held as compact JSON with object keys sorted.
///
/// Keeping the canonical text (rather than a `serde_json::Value`) makes the hash preimage
/// independent of how any dependency configures `serde_json`'s map, and keeps a large chain
/// small in memory. The text is shared: a block cloned into the chain, a relay or a reply
/// holds the same bytes.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct BlockData(std::sync::Arc<str>);

impl BlockData {
    /// Builds canonical data from any JSON value.
    pub fn new(value: &Value) -> Self {
        let mut out = String::new();
        write_canonical(value, &mut out);
        BlockData(out.into())
    }

    /// The empty object `{}`, the data of a plain genesis.
    pub fn empty() -> Self {
        BlockData("{}".into())
    }

    /// Takes `text` as canonical data as it is, without parsing it again: only for text this
    /// program wrote itself (its store). The block's hash, recomputed over it, still checks it.
    pub(crate) fn from_stored_text(text: &str) -> Self {
        Self::from_text(text)
    }

    /// Holds `text`, known to be canonical.
    fn from_text(text: &str) -> Self {
        #[cfg(feature = "testkit")]
        if let Some(shared) = shared_data::find_or_add(text) {
            return BlockData(shared);
        }
        BlockData(text.into())
    }

    /// Reads data a peer sent as canonical text: taken as it is when it already is the
    /// canonical form of its value (no parse, the common case), else parsed and written
    /// canonically, as data in a JSON block is; an error when it is not JSON.
    pub(crate) fn from_peer_text(text: &str) -> Result<Self, serde_json::Error> {
        if is_canonical(text) {
            return Ok(Self::from_text(text));
        }
        let value: Value = serde_json::from_str(text)?;
        Ok(BlockData::new(&value))
    }

    /// Returns the canonical JSON text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Parses the data back into a JSON value.
    pub fn to_value(&self) -> Value {
        serde_json::from_str(&self.0).unwrap_or(Value::Null)
    }

    /// Tells whether the block carries nothing a user submitted (`{}` or `null`).
    pub fn is_empty(&self) -> bool {
        matches!(&*self.0, "{}" | "null")
    }
}

impl fmt::Debug for BlockData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for BlockData {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match serde_json::from_str::<&RawValue>(&self.0) {
            Ok(raw) => raw.serialize(s),
            Err(_) => Err(serde::ser::Error::custom("block data is not JSON")),
        }
    }
}

impl<'de> Deserialize<'de> for BlockData {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        Ok(BlockData::new(&value))
    }
}

/// Tells, without building a value, whether `text` is sure to be the canonical form of the
/// JSON value it holds (what [`write_canonical`] writes for it): compact, object keys in
/// strictly increasing byte order, strings without escapes or control characters, numbers
/// that are plain integers within `i64`/`u64`. `false` means "not known": the caller
/// parses the text and writes it canonically (floats, escapes, deep nesting take that way).
fn is_canonical(text: &str) -> bool {
    let mut at = 0;
    canonical_value(text.as_bytes(), &mut at, 0) && at == text.len()
}

/// Nesting checked by [`is_canonical`]; deeper text takes the parsing way (whose own limit,
/// 128, then decides).
const CANONICAL_DEPTH: usize = 64;

fn canonical_value(b: &[u8], at: &mut usize, depth: usize) -> bool {
    if depth > CANONICAL_DEPTH {
        return false;
    }
    match b.get(*at) {
        Some(b'{') => {
            *at += 1;
            if b.get(*at) == Some(&b'}') {
                *at += 1;
                return true;
            }
            let mut last: Option<&[u8]> = None;
            loop {
                let Some(key) = canonical_string(b, at) else {
                    return false;
                };
                if last.is_some_and(|l| l >= key) || b.get(*at) != Some(&b':') {
                    return false;
                }
                last = Some(key);
                *at += 1;
                if !canonical_value(b, at, depth + 1) {
                    return false;
                }
                match b.get(*at) {
                    Some(b',') => *at += 1,
                    Some(b'}') => {
                        *at += 1;
                        return true;
                    }
                    _ => return false,
                }
            }
        }
        Some(b'[') => {
            *at += 1;
            if b.get(*at) == Some(&b']') {
                *at += 1;
                return true;
            }
            loop {
                if !canonical_value(b, at, depth + 1) {
                    return false;
                }
                match b.get(*at) {
                    Some(b',') => *at += 1,
                    Some(b']') => {
                        *at += 1;
                        return true;
                    }
                    _ => return false,
                }
            }
        }
        Some(b'"') => canonical_string(b, at).is_some(),
        Some(b't') => literal(b, at, b"true"),
        Some(b'f') => literal(b, at, b"false"),
        Some(b'n') => literal(b, at, b"null"),
        Some(b'-' | b'0'..=b'9') => {
            let start = *at;
            if b[*at] == b'-' {
                *at += 1;
            }
            let digits = *at;
            while b.get(*at).is_some_and(u8::is_ascii_digit) {
                *at += 1;
            }
            let number = &b[start..*at];
            let first = b.get(digits).copied();
            // One digit `0`, or digits not starting with 0 (so no `-0`), followed by no
            // fraction or exponent, and within the integers serde_json keeps as integers.
            let plain = match first {
                Some(b'0') => number == b"0",
                Some(b'1'..=b'9') => true,
                _ => false,
            };
            plain
                && !matches!(b.get(*at), Some(b'.' | b'e' | b'E'))
                && std::str::from_utf8(number).is_ok_and(|n| {
                    if n.starts_with('-') {
                        n.parse::<i64>().is_ok()
                    } else {
                        n.parse::<u64>().is_ok()
                    }
                })
        }
        _ => false,
    }
}

/// Reads a string with no escape and no control character; returns its bytes between the
/// quotes.
fn canonical_string<'a>(b: &'a [u8], at: &mut usize) -> Option<&'a [u8]> {
    if b.get(*at) != Some(&b'"') {
        return None;
    }
    let start = *at + 1;
    let len = b[start..]
        .iter()
        .position(|&c| c == b'"' || c == b'\\' || c < 0x20)?;
    if b[start + len] != b'"' {
        return None;
    }
    *at = start + len + 1;
    Some(&b[start..start + len])
}

fn literal(b: &[u8], at: &mut usize, word: &[u8]) -> bool {
    if b[*at..].starts_with(word) {
        *at += word.len();
        true
    } else {
        false
    }
}

/// Writes `value` as compact JSON with object keys sorted, escaping as serde_json does.
fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(k, out);
                out.push(':');
                write_canonical(v, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        Value::String(s) => write_string(s, out),
        other => out.push_str(&other.to_string()),
    }
}

fn write_string(s: &str, out: &mut String) {
    // serde_json escapes only '"', '\\' and control characters: most strings (timestamps,
    // hashes) have none and are written as they are, without allocating.
    if s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        out.push_str(&serde_json::to_string(s).unwrap_or_default());
    } else {
        out.push('"');
        out.push_str(s);
        out.push('"');
    }
}

/// One block of the chain, in the field order of its JSON form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    /// Height in the chain; genesis is 0.
    pub index: u64,
    /// UTC time the block was mined, as `"%d/%m/%Y, %H:%M:%S"`.
    pub timestamp: Timestamp,
    /// The value that makes the hash meet the difficulty.
    pub nonce: u64,
    /// Leading zero bits the hash must have.
    pub difficulty: u32,
    /// Hash of the parent block (`"0000"` for genesis).
    pub prev_hash: PrevHash,
    /// Hash as claimed by whoever sent the block; validation recomputes it.
    pub hash: BlockHash,
    /// User data, any JSON value.
    pub data: BlockData,
}

/// What a block's compact JSON form holds beyond its preimage: `,"hash":"<64 hex>"`.
const HASH_FIELD_LEN: usize = 74;

impl Block {
    /// Returns the fixed part of the preimage: everything before the nonce digits.
    ///
    /// The full preimage is `prefix + nonce + "}"`:
    /// `{"index":I,"timestamp":"T","prev_hash":"P","difficulty":D,"data":J,"nonce":N}`.
    pub(crate) fn preimage_prefix(&self) -> String {
        let mut out = String::with_capacity(160 + self.data.as_str().len());
        self.write_preimage_prefix(&mut out);
        out
    }

    /// Appends the fixed part of the preimage to `out`.
    fn write_preimage_prefix(&self, out: &mut String) {
        out.push_str("{\"index\":");
        let _ = write!(out, "{}", self.index);
        out.push_str(",\"timestamp\":");
        self.timestamp.with_text(|t| write_string(t, out));
        out.push_str(",\"prev_hash\":\"");
        self.prev_hash.with_text(|t| out.push_str(t));
        out.push_str("\",\"difficulty\":");
        let _ = write!(out, "{}", self.difficulty);
        out.push_str(",\"data\":");
        out.push_str(self.data.as_str());
        out.push_str(",\"nonce\":");
    }

    /// Returns the canonical preimage, the exact bytes the block hash commits to.
    pub fn preimage(&self) -> String {
        let mut out = String::with_capacity(180 + self.data.as_str().len());
        self.write_preimage(&mut out);
        out
    }

    /// Clears `out` and writes the canonical preimage into it (reusing its allocation).
    pub(crate) fn write_preimage(&self, out: &mut String) {
        out.clear();
        self.write_preimage_prefix(out);
        let _ = write!(out, "{}}}", self.nonce);
    }

    /// Returns the length of the block's compact JSON form, writing its preimage into
    /// `scratch` (reused between calls): the preimage's fields plus `,"hash":"<64 hex>"`.
    pub(crate) fn json_len(&self, scratch: &mut String) -> usize {
        self.write_preimage(scratch);
        scratch.len() + HASH_FIELD_LEN
    }

    /// Computes the SHA-256 of the canonical preimage.
    pub fn compute_hash(&self) -> BlockHash {
        hash_preimage(self.preimage().as_bytes())
    }

    /// Returns the work this block adds to a chain: 2^difficulty.
    pub fn work(&self) -> u128 {
        work(self.difficulty)
    }
}

/// One copy of each big block's data for all the nodes of a process, for the simulator:
/// thousands of simulated nodes each hold every block, so 1,000 nodes of 1 MB blocks would
/// otherwise keep a thousand copies of each. Off until [`shared_data::enable`]; a real
/// node never turns it on. Sharing changes no behaviour: the text is the same, held once.
#[cfg(feature = "testkit")]
pub mod shared_data {
    use std::collections::HashMap;
    use std::hash::{Hash, Hasher};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex, Weak};

    /// Data shorter than this is not worth a look-up.
    const MIN_LEN: usize = 4096;
    /// Bytes from each end of the text that pick its bucket (the whole text is compared).
    const SAMPLE: usize = 512;
    /// Insertions between two sweeps of entries whose data is gone.
    const SWEEP_EVERY: usize = 4096;

    static ON: AtomicBool = AtomicBool::new(false);
    static TABLE: Mutex<Option<Table>> = Mutex::new(None);

    #[derive(Default)]
    struct Table {
        buckets: HashMap<u64, Vec<Weak<str>>>,
        added: usize,
    }

    /// Turns sharing on for the rest of the process.
    pub fn enable() {
        ON.store(true, Ordering::Relaxed);
    }

    /// The shared copy of `text` (made now if none is alive), or `None` when sharing is
    /// off or the text is small.
    pub(super) fn find_or_add(text: &str) -> Option<Arc<str>> {
        if text.len() < MIN_LEN || !ON.load(Ordering::Relaxed) {
            return None;
        }
        let key = {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            text.len().hash(&mut h);
            text.as_bytes()[..SAMPLE].hash(&mut h);
            text.as_bytes()[text.len() - SAMPLE..].hash(&mut h);
            h.finish()
        };
        let mut guard = TABLE.lock().unwrap_or_else(|e| e.into_inner());
        let table = guard.get_or_insert_with(Table::default);
        let bucket = table.buckets.entry(key).or_default();
        if let Some(found) = bucket
            .iter()
            .filter_map(Weak::upgrade)
            .find(|held| &**held == text)
        {
            return Some(found);
        }
        let held: Arc<str> = text.into();
        bucket.retain(|w| w.strong_count() > 0);
        bucket.push(Arc::downgrade(&held));
        table.added += 1;
        if table.added >= SWEEP_EVERY {
            table.added = 0;
            table.buckets.retain(|_, b| {
                b.retain(|w| w.strong_count() > 0);
                !b.is_empty()
            });
        }
        Some(held)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::params::genesis;
    use serde_json::json;

    /// With sharing on, equal big data read twice is one allocation; different data, or
    /// data too small to share, is not merged; a copy outliving the others stays whole.
    #[cfg(feature = "testkit")]
    #[test]
    fn shared_data_holds_equal_big_texts_once() {
        shared_data::enable();
        let big = |c: char| format!("\"{}\"", c.to_string().repeat(10_000));
        let a = BlockData::from_peer_text(&big('a')).unwrap();
        let again = BlockData::from_peer_text(&big('a')).unwrap();
        assert!(std::sync::Arc::ptr_eq(&a.0, &again.0));
        let b = BlockData::from_peer_text(&big('b')).unwrap();
        assert!(!std::sync::Arc::ptr_eq(&a.0, &b.0));
        assert_eq!(b.as_str(), big('b'));
        // Same ends, different middle: same bucket, still told apart.
        let mut middle = big('a');
        middle.replace_range(5000..5001, "z");
        let m = BlockData::from_peer_text(&middle).unwrap();
        assert_eq!(m.as_str(), middle);
        assert!(!std::sync::Arc::ptr_eq(&a.0, &m.0));
        let small = BlockData::from_peer_text("{\"k\":1}").unwrap();
        let small_again = BlockData::from_peer_text("{\"k\":1}").unwrap();
        assert!(!std::sync::Arc::ptr_eq(&small.0, &small_again.0));
        drop((a, b, m));
        let kept = again.as_str().to_owned();
        assert_eq!(BlockData::from_peer_text(&kept).unwrap().as_str(), big('a'));
    }

    /// The genesis preimage and hash at difficulty 16 are pinned: they are the network id.
    #[test]
    fn genesis_preimage_and_hash_are_pinned() {
        let g = genesis(16, None);
        assert_eq!(
            g.preimage(),
            r#"{"index":0,"timestamp":"01/01/1970, 00:00:00","prev_hash":"0000","difficulty":16,"data":{},"nonce":0}"#
        );
        assert_eq!(
            g.hash.to_hex(),
            hex::encode(Sha256::digest(g.preimage().as_bytes()))
        );
        assert_eq!(
            g.hash.to_hex(),
            "b441da4274a091891a4383470f98263cbc5f3412fbc9516b8949ba29ab302163"
        );
    }

    /// The test vectors of PROTOCOL.md section 3.2 hold: a block with unsorted nested data,
    /// non-ASCII text and escapes, mined on the default genesis.
    #[test]
    fn protocol_md_block_vector() {
        let block = protocol_block_1();
        let preimage = block.preimage();
        assert_eq!(
            preimage,
            r#"{"index":1,"timestamp":"22/11/2026, 10:00:00","prev_hash":"b441da4274a091891a4383470f98263cbc5f3412fbc9516b8949ba29ab302163","difficulty":16,"data":{"amount":5,"from":"alice","memo":{"a":"naïve café ☃ \"quoted\"\n","z":[3,1,2]},"to":"bob"},"nonce":2067}"#
        );
        assert_eq!(preimage.len(), 257);
        assert_eq!(
            block.compute_hash().to_hex(),
            "0000f38fc86f3997334e7256ea03d53e69489d697ee0c0614ae47cbfac0c1c00"
        );
        let retarget = genesis_of_retarget();
        assert_eq!(
            retarget.hash.to_hex(),
            "45a2625fd77458b7e845a7e7aad9ea05135674d1663abbe7421fa4eeb6589d31"
        );
    }

    /// Block 1 of PROTOCOL.md section 3.2 on genesis at difficulty 16, its hash the one
    /// recomputed (the vector says which).
    pub(crate) fn protocol_block_1() -> Block {
        let data: Value = serde_json::from_str(
            r#"{"to":"bob","from":"alice","amount":5,"memo":{"z":[3,1,2],"a":"naïve café ☃ \"quoted\"\n"}}"#,
        )
        .unwrap();
        let mut block = Block {
            index: 1,
            timestamp: "22/11/2026, 10:00:00".into(),
            nonce: 2067,
            difficulty: 16,
            prev_hash: genesis(16, None).hash.into(),
            hash: BlockHash::default(),
            data: BlockData::new(&data),
        };
        block.hash = block.compute_hash();
        block
    }

    fn genesis_of_retarget() -> Block {
        genesis(
            12,
            Some(crate::params::Retarget {
                interval: 10,
                target_secs: 60,
            }),
        )
    }

    /// Numbers in data are written as PROTOCOL.md section 3.1 says (serde_json's shortest
    /// round-trip form), the forms the Python verifier reproduces.
    #[test]
    fn protocol_md_number_forms() {
        let data: Value = serde_json::from_str(
            "[1.5,0.1,1e100,1e-7,1e-5,0.0001,123456789012345680000,5.0,1e16,1e15,-2.5e-300,18446744073709551615,-9223372036854775808]",
        )
        .unwrap();
        assert_eq!(
            BlockData::new(&data).as_str(),
            "[1.5,0.1,1e+100,1e-7,0.00001,0.0001,1.2345678901234568e+20,5.0,1e+16,1000000000000000.0,-2.5e-300,18446744073709551615,-9223372036854775808]"
        );
    }

    /// Nested, unsorted data comes out of the preimage with every object's keys sorted.
    #[test]
    fn preimage_sorts_nested_keys() {
        let data: Value =
            serde_json::from_str(r#"{"z":1,"a":{"y":[{"b":2,"a":"é\"\n"}],"x":null},"m":1.5}"#)
                .unwrap();
        let block = Block {
            index: 7,
            timestamp: "22/11/2026, 10:00:00".into(),
            nonce: 48213,
            difficulty: 16,
            prev_hash: BlockHash([0xab; 32]).into(),
            hash: BlockHash::default(),
            data: BlockData::new(&data),
        };
        assert_eq!(
            block.preimage(),
            format!(
                r#"{{"index":7,"timestamp":"22/11/2026, 10:00:00","prev_hash":"{}","difficulty":16,"data":{{"a":{{"x":null,"y":[{{"a":"é\"\n","b":2}}]}},"m":1.5,"z":1}},"nonce":48213}}"#,
                "ab".repeat(32)
            )
        );
        assert_eq!(
            block.compute_hash().to_hex(),
            "0855d50e49f658f5cdd020d1bf2351f38a5c1b585b70dcc3e60887f35bd91834"
        );
    }

    /// A block survives a JSON round trip with its field order and data intact.
    #[test]
    fn block_json_round_trip_keeps_field_order() {
        let mut b = genesis(16, None);
        b.data = BlockData::new(&json!({"b": [1, 2], "a": "x"}));
        let text = serde_json::to_string(&b).unwrap();
        assert!(text.starts_with(r#"{"index":0,"timestamp":"01/01/1970, 00:00:00","nonce":0,"difficulty":16,"prev_hash":"0000","hash":""#));
        assert!(text.ends_with(r#","data":{"a":"x","b":[1,2]}}"#));
        let back: Block = serde_json::from_str(&text).unwrap();
        assert_eq!(back, b);
    }

    /// Canonical data is a fixed point: parsing and canonicalizing it again changes nothing,
    /// so every node recomputes the same hash (found by fuzzing: without exact float parsing
    /// 99999999900000200376420520689061 came back as 9.999999990000019e31).
    #[test]
    fn canonical_data_is_a_fixed_point() {
        let text = r#"[1e22, 99999999900000200376420520689061, 99999999999999999, 98, 0.1, -2.5e-300, 1.7976931348623157e308]"#;
        let once = BlockData::new(&serde_json::from_str(text).unwrap());
        let twice = BlockData::new(&serde_json::from_str(once.as_str()).unwrap());
        assert_eq!(once, twice);
    }

    /// Text the fast check takes as canonical is exactly what parsing and writing it
    /// canonically gives; each near miss is left to the parse.
    #[test]
    fn the_canonical_check_takes_only_canonical_text() {
        let yes = [
            r#"{}"#,
            r#"[]"#,
            r#"null"#,
            r#"0"#,
            r#"-9223372036854775808"#,
            r#"18446744073709551615"#,
            r#"{"a":[1,true,false,null,"x ☃"],"b":{"c":{}}}"#,
            r#""naïve café""#,
        ];
        for t in yes {
            assert!(is_canonical(t), "{t}");
            let value: Value = serde_json::from_str(t).unwrap();
            assert_eq!(BlockData::new(&value).as_str(), t);
            assert_eq!(BlockData::from_peer_text(t).unwrap().as_str(), t);
        }
        let no = [
            r#"{"b":1,"a":2}"#,
            r#"{"a":1,"a":2}"#,
            r#"{ "a":1}"#,
            r#"[1, 2]"#,
            r#"-0"#,
            r#"01"#,
            r#"1.0"#,
            r#"1e3"#,
            r#"18446744073709551616"#,
            r#"-9223372036854775809"#,
            r#""a\u0041""#,
            r#""tab	""#,
            r#"[1]x"#,
            r#"tru"#,
            r#"{"a"}"#,
            r#""#,
        ];
        for t in no {
            assert!(!is_canonical(t), "{t}");
        }
        assert_eq!(
            BlockData::from_peer_text(r#"{"b":1,"a":2.50}"#)
                .unwrap()
                .as_str(),
            r#"{"a":2.5,"b":1}"#
        );
        assert!(BlockData::from_peer_text("{nope").is_err());
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert!(!is_canonical(&deep));
        assert_eq!(BlockData::from_peer_text(&deep).unwrap().as_str(), deep);
    }

    proptest::proptest! {
        /// Over text made of JSON's punctuation, digits and letters, whatever the fast check
        /// takes is what parsing and writing canonically gives.
        #[test]
        fn whatever_the_check_takes_parses_to_itself(t in r#"[\[\]{}",:0-9a-f\-. ]{0,24}"#) {
            if is_canonical(&t) {
                let value: Value = serde_json::from_str(&t).unwrap();
                let canon = BlockData::new(&value);
                proptest::prop_assert_eq!(canon.as_str(), t.as_str());
            }
        }

        /// The canonical text of any value of integers, strings and nesting is taken by the
        /// fast check when it has no float or escape.
        #[test]
        fn canonical_text_of_plain_values_is_taken(
            ints in proptest::collection::vec(proptest::arbitrary::any::<i64>(), 0..4),
            big in proptest::arbitrary::any::<u64>(),
            s in "[a-z ☃]{0,8}",
        ) {
            let value = json!({ "i": ints, s.clone(): { "s": s, "u": big }, "n": null });
            let text = BlockData::new(&value);
            proptest::prop_assert!(is_canonical(text.as_str()), "{}", text.as_str());
        }
    }

    proptest::proptest! {
        /// Strings are escaped exactly as serde_json's compact writer escapes them.
        #[test]
        fn strings_are_escaped_as_serde_json_does(s in "\\PC*|[\\x00-\\x7f]{0,20}") {
            let mut out = String::new();
            write_string(&s, &mut out);
            proptest::prop_assert_eq!(out, serde_json::to_string(&s).unwrap());
        }

        /// Canonicalization is idempotent for any numbers, strings and nesting.
        #[test]
        fn canonicalization_is_idempotent(
            floats in proptest::collection::vec(proptest::num::f64::NORMAL | proptest::num::f64::SUBNORMAL | proptest::num::f64::ZERO, 0..6),
            ints in proptest::collection::vec(proptest::arbitrary::any::<i64>(), 0..4),
            s in ".{0,12}",
        ) {
            let value = json!({ "f": floats, "i": ints, s.clone(): { "s": s } });
            let once = BlockData::new(&value);
            let twice = BlockData::new(&serde_json::from_str(once.as_str()).unwrap());
            proptest::prop_assert_eq!(once, twice);
        }
    }

    proptest::proptest! {
        /// The integer timestamp is written exactly as chrono writes the format, for every
        /// second of years 0 to 9999, and read back to the same second.
        #[test]
        fn timestamps_format_and_parse_as_chrono_does(secs in -62_167_219_200i64..=253_402_300_799) {
            let chrono_text = chrono::DateTime::from_timestamp(secs, 0)
                .unwrap()
                .format(TIMESTAMP_FORMAT)
                .to_string();
            proptest::prop_assert_eq!(format_timestamp(secs), chrono_text.clone());
            proptest::prop_assert_eq!(Timestamp::from_unix(secs).to_string(), chrono_text.clone());
            proptest::prop_assert_eq!(Timestamp::from(chrono_text.as_str()), Timestamp::Unix(secs));
            proptest::prop_assert_eq!(parse_canonical(&chrono_text), Some(secs));
        }
    }

    /// Boundaries of the integer form: leap days, the ends of the four-digit years, and
    /// texts that are not in the canonical form, which are kept as they came.
    #[test]
    fn timestamps_outside_the_canonical_form_keep_their_text() {
        assert_eq!(parse_canonical("29/02/2024, 23:59:59"), Some(1_709_251_199));
        assert_eq!(parse_canonical("29/02/2023, 00:00:00"), None);
        assert_eq!(parse_canonical("29/02/2000, 00:00:00"), Some(951_782_400));
        assert_eq!(parse_canonical("29/02/1900, 00:00:00"), None);
        assert_eq!(
            parse_canonical("31/12/9999, 23:59:59"),
            Some(253_402_300_799)
        );
        assert_eq!(
            parse_canonical("01/01/0000, 00:00:00"),
            Some(-62_167_219_200)
        );
        assert_eq!(parse_canonical("24/11/2026, 24:00:00"), None);
        assert_eq!(
            Timestamp::from("01/01/1970, 00:00:00"),
            Timestamp::Unix(0),
            "genesis"
        );
        // Chrono reads some of these; the hash commits to their exact bytes, so they stay
        // text, and none of them is a time under rule 6.
        for text in TIMESTAMPS_REFUSED {
            let t = Timestamp::from(text);
            assert_eq!(t, Timestamp::Text(text.into()), "{text:?}");
            assert_eq!(t.to_string(), text);
            assert_eq!(t.unix(), None, "{text:?}");
            assert_eq!(parse_timestamp(text), None, "{text:?}");
        }
        let far = Timestamp::from_unix(253_402_300_800);
        assert_eq!(far.to_string(), "01/01/+10000, 00:00:00");
        assert_eq!(far, Timestamp::Text("01/01/+10000, 00:00:00".into()));
        assert_eq!(far.unix(), None, "a five-digit year is not the form");
    }

    /// PROTOCOL.md's vectors of timestamps rule 6 reads, with their Unix seconds.
    #[test]
    fn timestamp_vectors_of_the_protocol() {
        for (text, secs) in [
            ("01/01/1970, 00:00:00", 0),
            ("31/12/1972, 23:59:59", 94_694_399),
            ("29/02/2024, 12:30:05", 1_709_209_805),
            ("31/12/9999, 23:59:59", 253_402_300_799),
        ] {
            assert_eq!(parse_timestamp(text), Some(secs), "{text}");
            assert_eq!(format_timestamp(secs), text);
        }
    }

    /// A non-canonical timestamp and genesis's `"0000"` survive JSON and the preimage as
    /// they came; a `prev_hash` that is neither `"0000"` nor a hash does not parse.
    #[test]
    fn odd_fields_survive_a_round_trip_byte_for_byte() {
        let text = r#"{"index":3,"timestamp":"1/1/2026, 0:00:00","nonce":9,"difficulty":0,"prev_hash":"0000","hash":"0000000000000000000000000000000000000000000000000000000000000000","data":{}}"#;
        let b: Block = serde_json::from_str(text).unwrap();
        assert_eq!(b.prev_hash, PrevHash::Genesis);
        assert_eq!(serde_json::to_string(&b).unwrap(), text);
        assert!(
            b.preimage()
                .contains(r#""timestamp":"1/1/2026, 0:00:00","prev_hash":"0000","#)
        );
        for bad in ["000", "AB".repeat(32).as_str(), "x"] {
            let doc = text.replace(r#""prev_hash":"0000""#, &format!(r#""prev_hash":"{bad}""#));
            assert!(serde_json::from_str::<Block>(&doc).is_err(), "{bad}");
        }
    }

    /// What a block costs in memory, as docs/node.md says: 120 bytes plus its data's text.
    #[test]
    fn a_block_is_held_in_120_bytes_plus_its_data() {
        assert_eq!(std::mem::size_of::<Block>(), 120);
        assert_eq!(std::mem::size_of::<Timestamp>(), 16);
        assert_eq!(std::mem::size_of::<PrevHash>(), 33);
    }

    proptest::proptest! {
        /// The hash reader accepts exactly 64 lowercase hex digits and decodes them as the
        /// hex crate does.
        #[test]
        fn hash_parsing_agrees_with_hex(s in "[0-9a-f]{64}|[0-9a-f]{0,40}[A-Fgz é][0-9a-f]{23}|[0-9a-f]{63,65}") {
            let lower = s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            match s.parse::<BlockHash>() {
                Ok(h) => {
                    proptest::prop_assert!(lower);
                    proptest::prop_assert_eq!(h.0.to_vec(), hex::decode(&s).unwrap());
                }
                Err(_) => proptest::prop_assert!(!lower),
            }
        }
    }

    /// Hashes that are not 64 lowercase hex digits are refused.
    #[test]
    fn block_hash_parse_rejects_bad_text() {
        assert!("AB".repeat(32).parse::<BlockHash>().is_err());
        assert!("ab".repeat(31).parse::<BlockHash>().is_err());
        assert!("zz".repeat(32).parse::<BlockHash>().is_err());
        assert!("ab".repeat(32).parse::<BlockHash>().is_ok());
        assert!(format!("{}g", "a".repeat(63)).parse::<BlockHash>().is_err());
        assert!(format!("{}é", "a".repeat(62)).parse::<BlockHash>().is_err());
        assert!(format!(" {}", "a".repeat(63)).parse::<BlockHash>().is_err());
        let h = BlockHash(std::array::from_fn(|i| (i * 37) as u8));
        assert_eq!(h.to_hex().parse::<BlockHash>(), Ok(h));
    }
}
