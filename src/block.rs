//! The block: its fields, the canonical bytes its hash commits to, and the fixed genesis.

use std::fmt::{self, Write as _};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

/// Timestamp format of every block, always UTC (the original's `"%d/%m/%Y, %H:%M:%S"`).
pub const TIMESTAMP_FORMAT: &str = "%d/%m/%Y, %H:%M:%S";

/// Timestamp of the genesis block.
pub const GENESIS_TIMESTAMP: &str = "01/01/1970, 00:00:00";

/// `prev_hash` of the genesis block (it has no parent).
pub const GENESIS_PREV_HASH: &str = "0000";

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

/// Parses a block timestamp into Unix seconds.
pub fn parse_timestamp(ts: &str) -> Option<i64> {
    chrono::NaiveDateTime::parse_from_str(ts, TIMESTAMP_FORMAT)
        .ok()
        .map(|t| t.and_utc().timestamp())
}

/// Formats Unix seconds as a block timestamp.
pub fn format_timestamp(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .unwrap_or_default()
        .format(TIMESTAMP_FORMAT)
        .to_string()
}

/// Hashes a preimage: SHA-256, the block hash.
pub fn hash_preimage(preimage: &[u8]) -> BlockHash {
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
        let lower = s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        let mut out = [0u8; 32];
        if s.len() != 64 || !lower || hex::decode_to_slice(s, &mut out).is_err() {
            let shown: String = s.chars().take(80).collect();
            return Err(ParseHashError(shown));
        }
        Ok(BlockHash(out))
    }
}

impl Serialize for BlockHash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; 64];
        // Infallible: the buffer is exactly twice the digest length.
        let _ = hex::encode_to_slice(self.0, &mut buf);
        s.serialize_str(std::str::from_utf8(&buf).unwrap_or_default())
    }
}

impl<'de> Deserialize<'de> for BlockHash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        /// Parses the text where the deserializer holds it, without copying it first.
        struct HexHash;
        impl serde::de::Visitor<'_> for HexHash {
            type Value = BlockHash;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a hash as 64 lowercase hex digits")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<BlockHash, E> {
                s.parse().map_err(E::custom)
            }
        }
        d.deserialize_str(HexHash)
    }
}

/// User data carried by a block, held as compact JSON with object keys sorted.
///
/// Keeping the canonical text (rather than a `serde_json::Value`) makes the hash preimage
/// independent of how any dependency configures `serde_json`'s map, and keeps a large chain
/// small in memory.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct BlockData(Box<str>);

impl BlockData {
    /// Builds canonical data from any JSON value.
    pub fn new(value: &Value) -> Self {
        let mut out = String::new();
        write_canonical(value, &mut out);
        BlockData(out.into_boxed_str())
    }

    /// The empty object `{}`, the data of a plain genesis.
    pub fn empty() -> Self {
        BlockData("{}".into())
    }

    /// Takes `text` as canonical data as it is, without parsing it again: only for text this
    /// program wrote itself (its store). The block's hash, recomputed over it, still checks it.
    pub(crate) fn from_stored_text(text: &str) -> Self {
        BlockData(text.into())
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
    pub timestamp: String,
    /// The value that makes the hash meet the difficulty.
    pub nonce: u64,
    /// Leading zero bits the hash must have.
    pub difficulty: u32,
    /// Hash of the parent block (`"0000"` for genesis).
    pub prev_hash: String,
    /// Hash as claimed by whoever sent the block; validation recomputes it.
    pub hash: BlockHash,
    /// User data, any JSON value.
    pub data: BlockData,
}

impl Block {
    /// Returns the fixed part of the preimage: everything before the nonce digits.
    ///
    /// The full preimage is `prefix + nonce + "}"`:
    /// `{"index":I,"timestamp":"T","prev_hash":"P","difficulty":D,"data":J,"nonce":N}`.
    pub fn preimage_prefix(&self) -> String {
        let mut out = String::with_capacity(160 + self.data.as_str().len());
        out.push_str("{\"index\":");
        let _ = write!(out, "{}", self.index);
        out.push_str(",\"timestamp\":");
        write_string(&self.timestamp, &mut out);
        out.push_str(",\"prev_hash\":");
        write_string(&self.prev_hash, &mut out);
        out.push_str(",\"difficulty\":");
        let _ = write!(out, "{}", self.difficulty);
        out.push_str(",\"data\":");
        out.push_str(self.data.as_str());
        out.push_str(",\"nonce\":");
        out
    }

    /// Returns the canonical preimage, the exact bytes the block hash commits to.
    pub fn preimage(&self) -> String {
        let mut out = self.preimage_prefix();
        let _ = write!(out, "{}}}", self.nonce);
        out
    }

    /// Computes the SHA-256 of the canonical preimage.
    pub fn compute_hash(&self) -> BlockHash {
        hash_preimage(self.preimage().as_bytes())
    }

    /// Returns the length of the block's compact JSON form, the size the cap applies to.
    pub fn serialized_size(&self) -> usize {
        serde_json::to_vec(self)
            .map(|v| v.len())
            .unwrap_or(usize::MAX)
    }

    /// Returns the work this block adds to a chain: 2^difficulty.
    pub fn work(&self) -> u128 {
        work(self.difficulty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::genesis;
    use serde_json::json;

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
        let data: Value = serde_json::from_str(
            r#"{"to":"bob","from":"alice","amount":5,"memo":{"z":[3,1,2],"a":"naïve café ☃ \"quoted\"\n"}}"#,
        )
        .unwrap();
        let genesis = genesis(16, None);
        let block = Block {
            index: 1,
            timestamp: "22/11/2026, 10:00:00".into(),
            nonce: 2067,
            difficulty: 16,
            prev_hash: genesis.hash.to_hex(),
            hash: BlockHash::default(),
            data: BlockData::new(&data),
        };
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
            prev_hash: "ab".repeat(32),
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

    /// Hashes that are not 64 lowercase hex digits are refused.
    #[test]
    fn block_hash_parse_rejects_bad_text() {
        assert!("AB".repeat(32).parse::<BlockHash>().is_err());
        assert!("ab".repeat(31).parse::<BlockHash>().is_err());
        assert!("zz".repeat(32).parse::<BlockHash>().is_err());
        assert!("ab".repeat(32).parse::<BlockHash>().is_ok());
    }
}
