//! The binary form of a block: the store's record, and lists of them on the wire.
//!
//! One record layout serves both: the store keeps one per height (the height is the key),
//! and a node answers a `blocks` or `chain` request that asks `"encoding":"binary"` with a
//! list of them, each after its height (PROTOCOL.md section 4.1 has the layout and test
//! vectors). Reading a list is reading bytes at known offsets: no JSON but each block's
//! data, which is parsed and written canonically again as data from a peer always is.

use crate::block::{Block, BlockData, BlockHash, PrevHash, Timestamp};

/// First byte of a block record in the binary layout (see [`encode`]). Records written by
/// earlier versions of the store are the block's JSON and start with `{`; both are read.
pub(crate) const RECORD_V1: u8 = 1;

/// The first bytes of a binary block list: a NUL, which no JSON text or text command starts
/// with, then `BLK`.
pub(crate) const LIST_MAGIC: [u8; 4] = *b"\0BLK";

/// Writes `block` as a binary record into `out` (cleared first):
///
/// | bytes | field |
/// |---|---|
/// | 1 | [`RECORD_V1`] |
/// | 1 + 8, or 1 + 4 + n | timestamp: `0` and Unix seconds (i64 LE), or `1`, a length (u32 LE) and the text as received |
/// | 8 | nonce (u64 LE) |
/// | 4 | difficulty (u32 LE) |
/// | 1, or 1 + 32 | prev_hash: `0` for genesis's `"0000"`, or `1` and the parent's hash |
/// | 32 | hash |
/// | rest | data, its canonical JSON text |
///
/// The index is not in the record (the store's key; a list writes it before the record).
/// 87 bytes plus the data (the timestamp as seconds), against ~250 as JSON, and read back
/// without parsing text.
pub fn encode(block: &Block, out: &mut Vec<u8>) {
    out.clear();
    append(block, out);
}

/// Appends `block`'s record to `out`.
fn append(block: &Block, out: &mut Vec<u8>) {
    out.push(RECORD_V1);
    match &block.timestamp {
        Timestamp::Unix(secs) => {
            out.push(0);
            out.extend_from_slice(&secs.to_le_bytes());
        }
        Timestamp::Text(text) => {
            out.push(1);
            out.extend_from_slice(&(text.len() as u32).to_le_bytes());
            out.extend_from_slice(text.as_bytes());
        }
    }
    out.extend_from_slice(&block.nonce.to_le_bytes());
    out.extend_from_slice(&block.difficulty.to_le_bytes());
    match &block.prev_hash {
        PrevHash::Genesis => out.push(0),
        PrevHash::Block(h) => {
            out.push(1);
            out.extend_from_slice(&h.0);
        }
    }
    out.extend_from_slice(&block.hash.0);
    out.extend_from_slice(block.data.as_str().as_bytes());
}

/// Bytes a record takes besides its data and a text timestamp.
const RECORD_FIXED: usize = 1 + 1 + 8 + 8 + 4 + 1 + 32 + 32;

/// Takes `n` bytes off the front of `rest`.
fn take<'a>(rest: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
    if rest.len() < n {
        return Err("the record is truncated".into());
    }
    let (head, tail) = rest.split_at(n);
    *rest = tail;
    Ok(head)
}

/// Takes `N` bytes off the front of `rest` as an array.
fn array<const N: usize>(rest: &mut &[u8]) -> Result<[u8; N], String> {
    let mut out = [0u8; N];
    out.copy_from_slice(take(rest, N)?);
    Ok(out)
}

/// Reads a record (after its first byte, [`RECORD_V1`]) of the block at `index`.
///
/// With `from_peer` the record is input from outside: its data is parsed and written
/// canonically again, and a timestamp is read as the JSON form's would be (canonical text
/// as seconds; seconds the canonical text cannot write are refused), so the block is the
/// one its JSON form gives. Otherwise it is a record this node wrote, taken as it is.
pub fn decode(index: u64, mut rest: &[u8], from_peer: bool) -> Result<Block, String> {
    let timestamp = match take(&mut rest, 1)?[0] {
        0 => {
            let secs = i64::from_le_bytes(array(&mut rest)?);
            match Timestamp::from_unix(secs) {
                // Seconds are only for times the canonical text can write; a peer sends
                // any other timestamp as its text.
                Timestamp::Text(_) if from_peer => {
                    return Err(format!("{secs} s is outside the canonical timestamps"));
                }
                _ => Timestamp::Unix(secs),
            }
        }
        1 => {
            let len = u32::from_le_bytes(array(&mut rest)?) as usize;
            let text = std::str::from_utf8(take(&mut rest, len)?)
                .map_err(|_| "the timestamp is not UTF-8".to_owned())?;
            if from_peer {
                Timestamp::from(text)
            } else {
                Timestamp::Text(text.into())
            }
        }
        tag => return Err(format!("unknown timestamp tag {tag}")),
    };
    let nonce = u64::from_le_bytes(array(&mut rest)?);
    let difficulty = u32::from_le_bytes(array(&mut rest)?);
    let prev_hash = match take(&mut rest, 1)?[0] {
        0 => PrevHash::Genesis,
        1 => PrevHash::Block(BlockHash(array(&mut rest)?)),
        tag => return Err(format!("unknown prev_hash tag {tag}")),
    };
    let hash = BlockHash(array(&mut rest)?);
    let text = std::str::from_utf8(rest).map_err(|_| "the data is not UTF-8".to_owned())?;
    let data = if from_peer {
        BlockData::from_peer_text(text).map_err(|e| format!("the data is not JSON: {e}"))?
    } else {
        BlockData::from_stored_text(text)
    };
    Ok(Block {
        index,
        timestamp,
        nonce,
        difficulty,
        prev_hash,
        hash,
        data,
    })
}

/// Writes `blocks` as a binary list: [`LIST_MAGIC`], the count (u32 LE), then for each
/// block its index (u64 LE), its record's length (u32 LE) and its record.
pub fn encode_list(blocks: &[Block]) -> Vec<u8> {
    let bytes: usize = blocks
        .iter()
        .map(|b| 12 + RECORD_FIXED + b.data.as_str().len())
        .sum();
    let mut out = Vec::with_capacity(8 + bytes);
    out.extend_from_slice(&LIST_MAGIC);
    out.extend_from_slice(&(blocks.len() as u32).to_le_bytes());
    for block in blocks {
        out.extend_from_slice(&block.index.to_le_bytes());
        let at = out.len();
        out.extend_from_slice(&[0; 4]);
        append(block, &mut out);
        let len = (out.len() - at - 4) as u32;
        out[at..at + 4].copy_from_slice(&len.to_le_bytes());
    }
    out
}

/// Tells whether a payload is a binary block list.
pub fn is_list(payload: &[u8]) -> bool {
    payload.starts_with(&LIST_MAGIC)
}

/// Reads a binary list from a peer: at most `max_blocks` blocks, every record whole and
/// inside the payload, nothing after the last. Any fault is an error naming it; nothing is
/// allocated for a count the payload cannot hold.
pub fn decode_list(payload: &[u8], max_blocks: usize) -> Result<Vec<Block>, String> {
    let mut rest = payload
        .strip_prefix(&LIST_MAGIC)
        .ok_or_else(|| "not a binary block list".to_owned())?;
    let count = u32::from_le_bytes(array(&mut rest)?) as usize;
    if count > max_blocks {
        return Err(format!(
            "a list of {count} blocks is over the {max_blocks} a reply carries"
        ));
    }
    // Each block takes at least its index, length and fixed record bytes.
    if count > rest.len() / (12 + RECORD_FIXED - 32) {
        return Err(format!(
            "a list of {count} blocks cannot fit in {} bytes",
            rest.len()
        ));
    }
    let mut blocks = Vec::with_capacity(count);
    for i in 0..count {
        let fault = |e: String| format!("block {i} of the list: {e}");
        let index = u64::from_le_bytes(array(&mut rest).map_err(fault)?);
        let len = u32::from_le_bytes(array(&mut rest).map_err(fault)?) as usize;
        let record = take(&mut rest, len).map_err(fault)?;
        let block = match record.split_first() {
            Some((&RECORD_V1, body)) => decode(index, body, true).map_err(fault)?,
            Some((tag, _)) => return Err(fault(format!("unknown record layout {tag}"))),
            None => return Err(fault("an empty record".into())),
        };
        blocks.push(block);
    }
    if !rest.is_empty() {
        return Err(format!(
            "{} bytes after the last of {count} blocks",
            rest.len()
        ));
    }
    Ok(blocks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::{Blockchain, mine_next};
    use crate::params::ChainParams;
    use serde_json::json;

    fn chain(n: usize) -> Vec<Block> {
        let mut chain = Blockchain::new(ChainParams::with_difficulty(0));
        for i in 0..n {
            let data = BlockData::new(&json!({"i": i, "memo": "naïve \"q\"\n"}));
            let block = mine_next(&chain, data, 1);
            chain.push(block).unwrap();
        }
        chain.to_vec()
    }

    /// PROTOCOL.md section 4.1's vector is the list of genesis and block 1 of section 3.2,
    /// byte for byte, and reads back as those blocks.
    #[test]
    fn protocol_md_binary_list_vector() {
        let doc = include_str!("../PROTOCOL.md");
        let start = doc
            .find("**Test vector**: genesis at difficulty 16 and block 1")
            .expect("the vector's heading");
        let body = &doc[start..];
        let open = body.find("```\n").expect("the vector's fence") + 4;
        let close = open + body[open..].find("```").expect("the fence's end");
        let hex_text: String = body[open..close]
            .lines()
            .map(|line| line.split("  ").next().unwrap_or("").replace(' ', ""))
            .collect();
        let vector = hex::decode(&hex_text).expect("the vector is hex");

        let genesis = ChainParams::with_difficulty(16).genesis();
        let block = crate::block::tests::protocol_block_1();
        assert_eq!(
            block.hash.to_hex(),
            "0000f38fc86f3997334e7256ea03d53e69489d697ee0c0614ae47cbfac0c1c00"
        );
        let blocks = vec![genesis, block];
        assert_eq!(vector.len(), 271);
        assert_eq!(hex::encode(encode_list(&blocks)), hex::encode(&vector));
        assert_eq!(decode_list(&vector, 2).unwrap(), blocks);
    }

    /// A list reads back as the blocks written, and as the JSON form reads them.
    #[test]
    fn a_list_round_trips_and_agrees_with_json() {
        let mut blocks = chain(20);
        blocks[3].timestamp = Timestamp::Text("not a time".into());
        let bytes = encode_list(&blocks);
        assert!(is_list(&bytes));
        let back = decode_list(&bytes, 5000).unwrap();
        assert_eq!(back, blocks);
        let json: Vec<Block> =
            serde_json::from_slice(&serde_json::to_vec(&blocks).unwrap()).unwrap();
        assert_eq!(back, json);
        assert_eq!(decode_list(&encode_list(&[]), 5000).unwrap(), Vec::new());
    }

    /// A peer's record is read as its JSON form would be: data written canonically again,
    /// a canonical text timestamp held as seconds.
    #[test]
    fn a_peers_record_is_normalised_as_json_is() {
        let mut block = chain(2).pop().unwrap();
        let canonical = block.timestamp.to_string();
        block.timestamp = Timestamp::Text(canonical.clone().into());
        block.data = BlockData::from_stored_text("{ \"b\": 1, \"a\": 2 }");
        let back = decode_list(&encode_list(&[block.clone()]), 10).unwrap();
        assert_eq!(back[0].data.as_str(), r#"{"a":2,"b":1}"#);
        assert_eq!(back[0].timestamp, Timestamp::from(canonical.as_str()));
        assert!(matches!(back[0].timestamp, Timestamp::Unix(_)));
    }

    /// Every damaged list is refused with its fault named, never a panic: each truncation,
    /// bytes after the end, a count over the cap or beyond the payload, unknown tags, data
    /// that is not JSON or not UTF-8.
    #[test]
    fn damaged_lists_are_refused_with_the_fault_named() {
        let blocks = chain(3);
        let good = encode_list(&blocks);
        for cut in 0..good.len() {
            assert!(decode_list(&good[..cut], 5000).is_err(), "cut at {cut}");
        }
        let mut longer = good.clone();
        longer.push(0);
        assert!(
            decode_list(&longer, 5000)
                .unwrap_err()
                .contains("after the last")
        );
        assert_eq!(blocks.len(), 4, "genesis and three");
        assert!(decode_list(&good, 4).is_ok());
        assert!(decode_list(&good, 3).unwrap_err().contains("over the 3"));
        let mut huge = good.clone();
        huge[4..8].copy_from_slice(&4000u32.to_le_bytes());
        assert!(decode_list(&huge, 5000).unwrap_err().contains("cannot fit"));
        // The first record starts after magic, count, index and length.
        let first = 4 + 4 + 8 + 4;
        let mut tag = good.clone();
        tag[first] = 7;
        assert!(decode_list(&tag, 5000).unwrap_err().contains("layout 7"));
        let mut time = good.clone();
        time[first + 1] = 9;
        assert!(
            decode_list(&time, 5000)
                .unwrap_err()
                .contains("timestamp tag 9")
        );
        let mut far = good.clone();
        far[first + 2..first + 10].copy_from_slice(&i64::MAX.to_le_bytes());
        assert!(
            decode_list(&far, 5000)
                .unwrap_err()
                .contains("outside the canonical")
        );
        let mut prev = good.clone();
        prev[first + 1 + 1 + 8 + 8 + 4] = 5;
        assert!(
            decode_list(&prev, 5000)
                .unwrap_err()
                .contains("prev_hash tag 5")
        );
        let mut bad = blocks[..1].to_vec();
        bad[0].data = BlockData::from_stored_text("{nope");
        assert!(
            decode_list(&encode_list(&bad), 5000)
                .unwrap_err()
                .contains("not JSON")
        );
        let mut bytes = encode_list(&blocks[..1]);
        let last = bytes.len() - 1;
        bytes[last] = 0xff;
        assert!(decode_list(&bytes, 5000).unwrap_err().contains("not UTF-8"));
        let mut wrong = good;
        wrong[0] = b'{';
        assert!(decode_list(&wrong, 5000).is_err());
    }

    proptest::proptest! {
        /// Arbitrary bytes after the magic never panic the reader.
        #[test]
        fn any_bytes_are_read_or_refused(tail in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let mut payload = LIST_MAGIC.to_vec();
            payload.extend_from_slice(&tail);
            let _ = decode_list(&payload, 5000);
        }
    }
}
