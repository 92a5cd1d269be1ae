//! Fuzzes block and chain JSON decoding and validation: a chain decoded from any bytes is
//! validated without panicking, and one accepted is valid again when re-checked.
#![no_main]

use libfuzzer_sys::fuzz_target;
use powchain::{Block, Blockchain, ChainParams};

fuzz_target!(|data: &[u8]| {
    let params = ChainParams::with_difficulty(0);
    if let Ok(block) = serde_json::from_slice::<Block>(data) {
        let chain = Blockchain::new(params.clone());
        let _ = chain.check_next(&block);
        let _ = block.compute_hash();
    }
    if let Ok(blocks) = serde_json::from_slice::<Vec<Block>>(data) {
        if let Ok(chain) = Blockchain::from_blocks(params.clone(), blocks.clone()) {
            assert!(chain.validate().is_ok());
        }
        let mut held = Blockchain::new(params);
        let _ = held.replace_with(blocks);
        assert!(
            held.validate().is_ok(),
            "a refused replacement left the chain invalid"
        );
    }
});
