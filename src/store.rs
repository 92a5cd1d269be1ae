//! The on-disk chain: blocks in an embedded redb database, one transaction per change.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};

use crate::block::{Block, BlockData, BlockHash, PrevHash, Timestamp};
use crate::chain::{Blockchain, ChainError};
use crate::params::ChainParams;
use crate::record;
use crate::rules::{BlockError, Checked, check_with};

const BLOCKS: TableDefinition<u64, &[u8]> = TableDefinition::new("blocks");
const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
/// Data of blocks left behind by a reorg, waiting to be mined again (id -> canonical JSON).
/// The remine queue: data of blocks to be mined again, by id. The table keeps the name
/// it has always had on disk.
const REMINE: TableDefinition<u64, &str> = TableDefinition::new("pending");
/// File name of the database inside the data directory.
pub const DB_FILE: &str = "chain.redb";
/// Blocks at the top of a stored chain re-checked against every rule at a normal start.
pub(crate) const RECHECK_AT_START: usize = 1_000;

/// How much of a stored chain is checked when the store opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Verify {
    /// The store holds only blocks that passed every rule, each change written in one
    /// transaction: every block's hash, link and proof of work are checked (damage on disk
    /// is found), and every rule only for the newest [`RECHECK_AT_START`] blocks.
    #[default]
    Recent,
    /// Every rule of every block, the data re-canonicalised, as for a chain from a peer
    /// (`node --reverify`).
    Full,
}

/// Why the store cannot be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database belongs to another network.
    #[error(
        "the store at {path} holds the chain of another network (genesis {stored}); this node's \
         genesis is {expected}: use another --data-dir or the stored network's settings"
    )]
    WrongNetwork {
        path: PathBuf,
        stored: String,
        expected: BlockHash,
    },
    /// A stored block does not parse.
    #[error("stored block {height} in {path} does not parse: {reason}")]
    Corrupt {
        path: PathBuf,
        height: u64,
        reason: String,
    },
    /// The store was written by an older version whose miner used nonces above 2^53 - 1.
    #[error(
        "the chain stored at {path} was written by an older powchain: block {index} has nonce \
         {nonce}, above 2^53 - 1, which this version refuses because JSON readers cannot all \
         read it exactly. Nothing was changed on disk. Move the data directory aside (or use \
         another --data-dir) and the node fetches the chain again from its peers; keep the \
         old directory to go back to the older version"
    )]
    OldNonce {
        path: PathBuf,
        index: u64,
        nonce: u64,
    },
    /// The store holds a timestamp an older version's lenient reader accepted and rule 6
    /// now refuses (anything but the exact `DD/MM/YYYY, HH:MM:SS`).
    #[error(
        "the chain stored at {path} was accepted by an older powchain: block {index} has the \
         timestamp {timestamp:?}, not in the exact form \"DD/MM/YYYY, HH:MM:SS\" this version \
         requires of every block. Nothing was changed on disk. Move the data directory aside \
         (or use another --data-dir) and the node fetches the chain again from its peers"
    )]
    OldTimestamp {
        path: PathBuf,
        index: u64,
        timestamp: String,
    },
    /// The stored chain breaks a rule.
    #[error("the chain stored at {path} is invalid: {source}")]
    Invalid { path: PathBuf, source: ChainError },
    /// redb or the file system failed.
    #[error("store at {path}: {reason}")]
    Db { path: PathBuf, reason: String },
}

/// redb's page cache for a store: the chain is read once at start and then only written,
/// so redb's default (1 GiB) would only keep the pages read at start in memory.
pub(crate) const CACHE_BYTES: usize = 16 << 20;

fn builder(cache_bytes: usize) -> redb::Builder {
    let mut builder = redb::Builder::new();
    builder.set_cache_size(cache_bytes);
    builder
}

/// Locks `m`, also after a panic elsewhere (the values it guards are plain heights).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The chain database of one node.
#[derive(Debug)]
pub struct Store {
    /// The open database. A redb handle that saw an I/O error (a full disk) refuses every
    /// later transaction, so after one the handle is closed and the file opened again
    /// ([`Store::reopen`]); `None` while that has not worked yet.
    db: RwLock<Option<Database>>,
    path: PathBuf,
    /// redb's page cache, in bytes ([`CACHE_BYTES`] unless the opener chose).
    cache_bytes: usize,
    /// The lowest fork of the commits made without an fsync ([`Store::commit_deferred`])
    /// since the last durable one; `None` when every commit is durable.
    deferred: Mutex<Option<u64>>,
    /// Set when the handle was reopened after an I/O error while commits were deferred:
    /// the blocks above this height are gone from the file (redb recovers its last durable
    /// commit). Taken by [`Store::take_lost`].
    lost: Mutex<Option<u64>>,
}

/// Upgrades a store written by powchain 0.1 (redb 2, file format `version`) in place to
/// the file format this redb reads, with redb 2.6's own upgrade step, in one transaction: a
/// crash during it leaves the old file as it was, and the next start upgrades it again.
fn upgrade_file_format(path: &Path, version: u8) -> Result<(), StoreError> {
    let failed = |e: &dyn std::fmt::Display| StoreError::Db {
        path: path.to_path_buf(),
        reason: format!("could not upgrade the store from file format v{version}: {e}"),
    };
    let started = std::time::Instant::now();
    let mut old = redb2::Database::open(path).map_err(|e| failed(&e))?;
    let upgraded = old.upgrade().map_err(|e| failed(&e))?;
    drop(old);
    tracing::info!(
        path = %path.display(),
        from = version,
        upgraded,
        millis = started.elapsed().as_millis() as u64,
        "store upgraded to the current file format (one time; powchain 0.1 cannot open it again)"
    );
    Ok(())
}

impl Store {
    /// Opens (or creates) the store in `dir` and loads and fully re-validates its chain.
    ///
    /// A store that exists is read and checked through a read-only handle first, so a store
    /// this version refuses (another network, an invalid chain) is left exactly as it was;
    /// only then is it opened for writing. A store written by powchain 0.1 is upgraded first
    /// (see [`upgrade_file_format`]); one that needs recovery after a crash is recovered by the
    /// writable open (redb repairs it there) and checked after.
    pub fn open(dir: &Path, params: &ChainParams) -> Result<(Store, Blockchain), StoreError> {
        Self::open_with(dir, params, Verify::Full)
    }

    /// As [`Store::open`], checking the stored chain as `verify` says.
    pub(crate) fn open_with(
        dir: &Path,
        params: &ChainParams,
        verify: Verify,
    ) -> Result<(Store, Blockchain), StoreError> {
        Self::open_at(dir, params, verify, crate::block::unix_now(), CACHE_BYTES)
    }

    /// As [`Store::open_with`], judging the future-time rule against `now` (Unix seconds:
    /// a node's own clock, which is the simulated one under simulation) and giving redb a
    /// page cache of `cache_bytes` once the chain is loaded (the simulator gives each of
    /// its thousands of nodes a small one).
    pub(crate) fn open_at(
        dir: &Path,
        params: &ChainParams,
        verify: Verify,
        now: i64,
        cache_bytes: usize,
    ) -> Result<(Store, Blockchain), StoreError> {
        let path = dir.join(DB_FILE);
        let db_err = |e: &dyn std::fmt::Display| StoreError::Db {
            path: path.clone(),
            reason: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(|e| db_err(&e))?;
        let checked = if path.exists() {
            check_existing(&path, params, verify, now)?
        } else {
            None
        };
        let db = match builder(cache_bytes).create(&path) {
            Err(redb::DatabaseError::UpgradeRequired(version)) => {
                upgrade_file_format(&path, version)?;
                builder(cache_bytes).create(&path)
            }
            opened => opened,
        }
        .map_err(|e| db_err(&e))?;
        if let Some(chain) = checked {
            return Ok((Store::new(db, &path, cache_bytes), chain));
        }
        let genesis = params.genesis();
        match read_meta(&db, &path, "genesis")? {
            Some(stored) => check_network(&path, &stored, params)?,
            None => {
                let tx = db.begin_write().map_err(|e| db_err(&e))?;
                {
                    let mut meta = tx.open_table(META).map_err(|e| db_err(&e))?;
                    meta.insert("genesis", genesis.hash.to_hex().as_str())
                        .map_err(|e| db_err(&e))?;
                    let mut blocks = tx.open_table(BLOCKS).map_err(|e| db_err(&e))?;
                    let mut record = Vec::new();
                    record::encode(&genesis, &mut record);
                    blocks
                        .insert(0, record.as_slice())
                        .map_err(|e| db_err(&e))?;
                }
                tx.commit().map_err(|e| db_err(&e))?;
            }
        }
        let stored = read_blocks(&db, &path, verify)?;
        let chain = validate(&path, params, stored, verify, now)?;
        Ok((Store::new(db, &path, cache_bytes), chain))
    }

    fn new(db: Database, path: &Path, cache_bytes: usize) -> Store {
        Store {
            db: RwLock::new(Some(db)),
            path: path.to_path_buf(),
            cache_bytes,
            deferred: Mutex::new(None),
            lost: Mutex::new(None),
        }
    }

    /// Runs `f` on the open database. An I/O failure (or redb's "previous I/O error")
    /// closes the handle and opens the file again, so that the next transaction can work
    /// once the cause is gone (space freed on a full disk); this one's error is returned.
    fn with_db<T>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, redb::Error>,
    ) -> Result<T, StoreError> {
        let result = {
            let guard = self.db.read().unwrap_or_else(|e| e.into_inner());
            match guard.as_ref() {
                Some(db) => f(db),
                None => Err(redb::Error::DatabaseClosed),
            }
        };
        match result {
            Ok(v) => Ok(v),
            Err(
                e @ (redb::Error::Io(_) | redb::Error::PreviousIo | redb::Error::DatabaseClosed),
            ) => {
                let err = self.err(&e);
                self.reopen();
                Err(err)
            }
            Err(e) => Err(self.err(e)),
        }
    }

    /// Closes the database handle and opens the file again (redb recovers the last
    /// committed state); logs the outcome. A failed open is tried again by the next call.
    fn reopen(&self) {
        let mut guard = self.db.write().unwrap_or_else(|e| e.into_inner());
        // The old handle holds the file's lock: it must be gone before the open.
        drop(guard.take());
        // Commits made without an fsync die with the handle.
        if let Some(fork) = lock(&self.deferred).take() {
            let mut lost = lock(&self.lost);
            *lost = Some(lost.map_or(fork, |l| l.min(fork)));
        }
        match builder(self.cache_bytes).create(&self.path) {
            Ok(db) => {
                tracing::warn!(path = %self.path.display(), "store reopened after an I/O error");
                *guard = Some(db);
            }
            Err(e) => tracing::error!(
                path = %self.path.display(),
                "store could not be reopened after an I/O error (will try again): {e}"
            ),
        }
    }

    fn err(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Db {
            path: self.path.clone(),
            reason: e.to_string(),
        }
    }

    /// Reads every stored block, genesis first.
    pub fn load(&self) -> Result<Vec<Block>, StoreError> {
        self.load_checked().map(|(blocks, _)| blocks)
    }

    /// Reads every stored block, genesis first, its data parsed again, and hashes each on
    /// the way (on all cores): `checked[i]` for `blocks[i]`, ready for
    /// [`Blockchain::from_stored_checked_at`].
    pub(crate) fn load_checked(&self) -> Result<(Vec<Block>, Vec<Checked>), StoreError> {
        let guard = self.db.read().unwrap_or_else(|e| e.into_inner());
        let db = guard
            .as_ref()
            .ok_or_else(|| self.err("the store is closed after an I/O error"))?;
        read_blocks(db, &self.path, Verify::Full).map(|s| (s.blocks, s.checked))
    }

    /// Durably appends `block`; returns once it is committed.
    pub fn append(&self, block: &Block) -> Result<(), StoreError> {
        self.replace_from(block.index.saturating_sub(1), std::slice::from_ref(block))
    }

    /// Replaces every block above `fork` with `blocks`, in one transaction.
    pub fn replace_from(&self, fork: u64, blocks: &[Block]) -> Result<(), StoreError> {
        self.commit(fork, blocks, &[], None).map(drop)
    }

    /// In one transaction: replaces the blocks above `fork` with `blocks`, puts `remine`
    /// (data of blocks left behind) in the remine queue, and drops its entry `done`.
    /// Returns the ids given to the new entries.
    pub fn commit(
        &self,
        fork: u64,
        blocks: &[Block],
        remine: &[BlockData],
        done: Option<u64>,
    ) -> Result<Vec<u64>, StoreError> {
        let ids = self.write(fork, blocks, remine, done, Durability::Immediate)?;
        *lock(&self.deferred) = None;
        Ok(ids)
    }

    /// Replaces the blocks above `fork` with `blocks` as [`Store::commit`] does, without
    /// waiting for the disk: the commit is seen by every later read, and made durable by
    /// the next durable commit or [`Store::flush`]. A crash before that loses it (the store
    /// opens on the last durable commit), so only blocks that can be had again are
    /// committed so: a sync's batches, which its peers still hold.
    pub(crate) fn commit_deferred(&self, fork: u64, blocks: &[Block]) -> Result<(), StoreError> {
        self.write(fork, blocks, &[], None, Durability::None)?;
        let mut deferred = lock(&self.deferred);
        *deferred = Some(deferred.map_or(fork, |d| d.min(fork)));
        Ok(())
    }

    /// Makes every deferred commit durable (an empty durable commit); does nothing when
    /// there is none.
    pub(crate) fn flush(&self) -> Result<(), StoreError> {
        if lock(&self.deferred).is_none() {
            return Ok(());
        }
        self.with_db(|db| {
            let tx = db.begin_write()?;
            tx.commit()?;
            Ok(())
        })?;
        *lock(&self.deferred) = None;
        Ok(())
    }

    /// Tells whether commits wait for a durable one.
    pub(crate) fn has_deferred(&self) -> bool {
        lock(&self.deferred).is_some()
    }

    /// Returns, once, the height above which deferred blocks were lost when the handle was
    /// reopened after an I/O error: the caller's chain must not go beyond it.
    pub(crate) fn take_lost(&self) -> Option<u64> {
        lock(&self.lost).take()
    }

    fn write(
        &self,
        fork: u64,
        blocks: &[Block],
        remine: &[BlockData],
        done: Option<u64>,
        durability: Durability,
    ) -> Result<Vec<u64>, StoreError> {
        self.with_db(|db| {
            let mut tx = db.begin_write()?;
            tx.set_durability(durability)?;
            let mut ids = Vec::new();
            {
                let mut table = tx.open_table(BLOCKS)?;
                table.retain_in(fork + 1.., |_, _| false)?;
                let mut record = Vec::with_capacity(512);
                for b in blocks {
                    record::encode(b, &mut record);
                    table.insert(b.index, record.as_slice())?;
                }
                let mut remine_queue = tx.open_table(REMINE)?;
                if let Some(id) = done {
                    remine_queue.remove(id)?;
                }
                let first = remine_queue.last()?.map_or(0, |(k, _)| k.value() + 1);
                for (id, data) in (first..).zip(remine) {
                    remine_queue.insert(id, data.as_str())?;
                    ids.push(id);
                }
            }
            tx.commit()?;
            Ok(ids)
        })
    }

    /// Drops an entry of the remine queue (its data turned out to be in the chain already).
    pub(crate) fn drop_remine(&self, id: u64) -> Result<(), StoreError> {
        self.with_db(|db| {
            let tx = db.begin_write()?;
            tx.open_table(REMINE)?.remove(id)?;
            tx.commit()?;
            Ok(())
        })
    }

    /// Puts `data` in the remine queue (blocks withheld and given up), in one
    /// transaction; returns the ids given.
    pub fn queue_remine(&self, data: &[BlockData]) -> Result<Vec<u64>, StoreError> {
        self.with_db(|db| {
            let tx = db.begin_write()?;
            let mut ids = Vec::with_capacity(data.len());
            {
                let mut remine_queue = tx.open_table(REMINE)?;
                let first = remine_queue.last()?.map_or(0, |(k, _)| k.value() + 1);
                for (id, d) in (first..).zip(data) {
                    remine_queue.insert(id, d.as_str())?;
                    ids.push(id);
                }
            }
            tx.commit()?;
            Ok(ids)
        })
    }

    /// Returns the data waiting to be mined again, by id.
    pub fn remine_queue(&self) -> Result<Vec<(u64, BlockData)>, StoreError> {
        self.with_db(|db| {
            let tx = db.begin_read()?;
            let table = match tx.open_table(REMINE) {
                Ok(t) => t,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(e.into()),
            };
            let mut out = Vec::new();
            for row in table.iter()? {
                let (k, v) = row?;
                let value: serde_json::Value =
                    serde_json::from_str(v.value()).unwrap_or(serde_json::Value::Null);
                out.push((k.value(), BlockData::new(&value)));
            }
            Ok(out)
        })
    }

    /// Returns the database file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Reads and checks an existing store through a read-only handle: `None` when the writable
/// open must handle it (no genesis yet, or a crash to recover from).
fn check_existing(
    path: &Path,
    params: &ChainParams,
    verify: Verify,
    now: i64,
) -> Result<Option<Blockchain>, StoreError> {
    let db = match builder(CACHE_BYTES).open_read_only(path) {
        Ok(db) => db,
        Err(redb::DatabaseError::UpgradeRequired(version)) => {
            upgrade_file_format(path, version)?;
            match builder(CACHE_BYTES).open_read_only(path) {
                Ok(db) => db,
                Err(_) => return Ok(None),
            }
        }
        // Recovery after a crash needs a writer; other failures are reported by it too.
        Err(_) => return Ok(None),
    };
    let Some(stored) = read_meta(&db, path, "genesis")? else {
        return Ok(None);
    };
    check_network(path, &stored, params)?;
    let started = std::time::Instant::now();
    let stored = read_blocks(&db, path, verify)?;
    drop(db);
    tracing::debug!(
        blocks = stored.blocks.len(),
        millis = started.elapsed().as_millis() as u64,
        "stored blocks read and hashed"
    );
    validate(path, params, stored, verify, now).map(Some)
}

/// Refuses a store whose genesis (`stored`, hex) is not this network's.
fn check_network(path: &Path, stored: &str, params: &ChainParams) -> Result<(), StoreError> {
    let expected = params.genesis().hash;
    if stored == expected.to_hex() {
        Ok(())
    } else {
        Err(StoreError::WrongNetwork {
            path: path.to_path_buf(),
            stored: stored.to_owned(),
            expected,
        })
    }
}

/// Checks the stored blocks as `verify` says.
fn validate(
    path: &Path,
    params: &ChainParams,
    stored: Stored,
    verify: Verify,
    now: i64,
) -> Result<Blockchain, StoreError> {
    let started = std::time::Instant::now();
    let recheck = match verify {
        Verify::Full => usize::MAX,
        Verify::Recent => RECHECK_AT_START,
    };
    let Stored { blocks, checked } = stored;
    let checked = Blockchain::from_stored_checked_at(params.clone(), blocks, checked, recheck, now);
    match (&checked, verify) {
        (Ok(chain), Verify::Full) => tracing::info!(
            height = chain.height(),
            millis = started.elapsed().as_millis() as u64,
            "every stored block re-validated against every rule"
        ),
        (Ok(chain), Verify::Recent) => tracing::debug!(
            height = chain.height(),
            millis = started.elapsed().as_millis() as u64,
            "stored chain checked"
        ),
        _ => {}
    }
    checked.map_err(|source| match source {
        ChainError::Block(BlockError::NonceTooLarge { index, nonce }) => StoreError::OldNonce {
            path: path.to_path_buf(),
            index,
            nonce,
        },
        ChainError::Block(BlockError::BadTimestamp { index, timestamp }) => {
            StoreError::OldTimestamp {
                path: path.to_path_buf(),
                index,
                timestamp,
            }
        }
        source => StoreError::Invalid {
            path: path.to_path_buf(),
            source,
        },
    })
}

fn db_error(path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Db {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

fn read_meta(
    db: &impl ReadableDatabase,
    path: &Path,
    key: &str,
) -> Result<Option<String>, StoreError> {
    let tx = db.begin_read().map_err(|e| db_error(path, e))?;
    let table = match tx.open_table(META) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(db_error(path, e)),
    };
    Ok(table
        .get(key)
        .map_err(|e| db_error(path, e))?
        .map(|v| v.value().to_owned()))
}

/// A block as earlier versions stored it, as JSON: its data is the canonical text it wrote.
#[derive(serde::Deserialize)]
struct JsonRecord<'a> {
    index: u64,
    timestamp: Timestamp,
    nonce: u64,
    difficulty: u32,
    prev_hash: PrevHash,
    hash: BlockHash,
    #[serde(borrow)]
    data: &'a serde_json::value::RawValue,
}

impl From<JsonRecord<'_>> for Block {
    fn from(b: JsonRecord<'_>) -> Block {
        Block {
            index: b.index,
            timestamp: b.timestamp,
            nonce: b.nonce,
            difficulty: b.difficulty,
            prev_hash: b.prev_hash,
            hash: b.hash,
            data: BlockData::from_stored_text(b.data.get()),
        }
    }
}

/// Reads one stored record of either layout.
fn read_record(key: u64, record: &[u8], verify: Verify) -> Result<Block, String> {
    let block = match record.split_first() {
        Some((&record::RECORD_V1, rest)) => record::decode(key, rest, verify == Verify::Full)?,
        _ => match verify {
            Verify::Full => serde_json::from_slice::<Block>(record),
            Verify::Recent => serde_json::from_slice::<JsonRecord>(record).map(Block::from),
        }
        .map_err(|e| e.to_string())?,
    };
    if block.index != key {
        return Err(format!("the record holds block {}", block.index));
    }
    Ok(block)
}

/// Every stored block, genesis first, with the hashing pass over them (`checked[i]` for
/// `blocks[i]`; genesis's is not used).
struct Stored {
    blocks: Vec<Block>,
    checked: Vec<Checked>,
}

/// Reads every stored block, genesis first, hashing each on the way. With
/// [`Verify::Recent`] each block's data is taken as the canonical text it was stored as;
/// with [`Verify::Full`] it is parsed and written canonically again, as data from a peer is.
///
/// A long chain's heights are split between the cores, each part read in a read
/// transaction of its own (the file does not change meanwhile: a read-only handle, or the
/// node's own before it serves) straight into its place in one vector, so reading,
/// decoding and hashing all run in parallel and no block is copied afterwards.
fn read_blocks(
    db: &(impl ReadableDatabase + Sync),
    path: &Path,
    verify: Verify,
) -> Result<Stored, StoreError> {
    let len = {
        let tx = db.begin_read().map_err(|e| db_error(path, e))?;
        let table = tx.open_table(BLOCKS).map_err(|e| db_error(path, e))?;
        table.len().map_err(|e| db_error(path, e))?
    };
    let len = usize::try_from(len).map_err(|e| db_error(path, e))?;
    let mut out = Stored {
        blocks: Vec::new(),
        checked: Vec::new(),
    };
    out.blocks.resize_with(len, vacant_block);
    out.checked.resize_with(len, Checked::default);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if len < 4096 || threads < 2 {
        read_part(db, path, verify, 0, &mut out.blocks, &mut out.checked)?;
        return Ok(out);
    }
    let per = len.div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = out
            .blocks
            .chunks_mut(per)
            .zip(out.checked.chunks_mut(per))
            .enumerate()
            .map(|(t, (blocks, checked))| {
                s.spawn(move || read_part(db, path, verify, (t * per) as u64, blocks, checked))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect::<Result<Vec<()>, StoreError>>()
    })?;
    Ok(out)
}

/// A block slot before its stored block is read into it (allocates nothing).
fn vacant_block() -> Block {
    Block {
        index: 0,
        timestamp: Timestamp::Unix(0),
        nonce: 0,
        difficulty: 0,
        prev_hash: PrevHash::Genesis,
        hash: BlockHash::default(),
        data: BlockData::from_stored_text(""),
    }
}

/// Reads the blocks from height `start` into `blocks` (as many as it holds), hashing each
/// into `checked`; every height must be there, in order.
fn read_part(
    db: &impl ReadableDatabase,
    path: &Path,
    verify: Verify,
    start: u64,
    blocks: &mut [Block],
    checked: &mut [Checked],
) -> Result<(), StoreError> {
    let tx = db.begin_read().map_err(|e| db_error(path, e))?;
    let table = tx.open_table(BLOCKS).map_err(|e| db_error(path, e))?;
    let end = start + blocks.len() as u64;
    let rows = table.range(start..end).map_err(|e| db_error(path, e))?;
    let mut buf = String::with_capacity(512);
    let mut next = start;
    for ((row, slot), c) in rows.zip(blocks.iter_mut()).zip(checked.iter_mut()) {
        let (k, v) = row.map_err(|e| db_error(path, e))?;
        let corrupt = |reason: String| StoreError::Corrupt {
            path: path.to_path_buf(),
            height: next,
            reason,
        };
        if k.value() != next {
            return Err(corrupt(format!(
                "the block is missing; the next stored block is {}",
                k.value()
            )));
        }
        *slot = read_record(next, v.value(), verify).map_err(corrupt)?;
        if next > 0 {
            *c = check_with(slot, &mut buf);
        }
        next += 1;
    }
    if next < end {
        return Err(StoreError::Corrupt {
            path: path.to_path_buf(),
            height: next,
            reason: format!("the block is missing (none stored from {next} below {end})"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A write transaction on the store's open database (tests write records by hand).
    fn begin_write(store: &Store) -> redb::WriteTransaction {
        let db = store.db.read().unwrap();
        db.as_ref().unwrap().begin_write().unwrap()
    }

    /// A read transaction on the store's open database.
    fn begin_read(store: &Store) -> redb::ReadTransaction {
        let db = store.db.read().unwrap();
        db.as_ref().unwrap().begin_read().unwrap()
    }
    use crate::block::BlockData;
    use crate::chain::mine_next;

    /// Blocks appended survive a reopen and the reopened chain is the same.
    #[test]
    fn store_round_trips_a_chain() {
        let dir = tempfile::tempdir().unwrap();
        let params = ChainParams::with_difficulty(4);
        let (store, mut chain) = Store::open(dir.path(), &params).unwrap();
        for i in 0..5 {
            let b = mine_next(&chain, BlockData::new(&serde_json::json!(i)), 1);
            store.append(&b).unwrap();
            chain.push(b).unwrap();
        }
        drop(store);
        let (_, again) = Store::open(dir.path(), &params).unwrap();
        assert_eq!(again.to_vec(), chain.to_vec());
    }

    /// A reorg replaces the tail in one transaction.
    #[test]
    fn replace_from_drops_the_old_tail() {
        let dir = tempfile::tempdir().unwrap();
        let params = ChainParams::with_difficulty(0);
        let (store, mut chain) = Store::open(dir.path(), &params).unwrap();
        for i in 0..5 {
            let b = mine_next(&chain, BlockData::new(&serde_json::json!(i)), 1);
            store.append(&b).unwrap();
            chain.push(b).unwrap();
        }
        let mut fork =
            Blockchain::from_blocks(params.clone(), chain.to_vec()[..3].to_vec()).unwrap();
        for i in 0..4 {
            fork.push(mine_next(
                &fork,
                BlockData::new(&serde_json::json!(["f", i])),
                1,
            ))
            .unwrap();
        }
        store.replace_from(2, &fork.blocks_from(3)).unwrap();
        assert_eq!(store.load().unwrap(), fork.to_vec());
    }

    /// Queued data survives a reopen and leaves the queue with the block that carries it.
    #[test]
    fn remine_data_is_queued_with_the_reorg_and_dropped_with_its_block() {
        let dir = tempfile::tempdir().unwrap();
        let params = ChainParams::with_difficulty(0);
        let (store, chain) = Store::open(dir.path(), &params).unwrap();
        let left = BlockData::new(&serde_json::json!({"left": "behind"}));
        let ids = store
            .commit(0, &[], std::slice::from_ref(&left), None)
            .unwrap();
        drop(store);
        let (store, _) = Store::open(dir.path(), &params).unwrap();
        assert_eq!(store.remine_queue().unwrap(), vec![(ids[0], left.clone())]);
        let b = mine_next(&chain, left, 1);
        store.commit(0, &[b], &[], Some(ids[0])).unwrap();
        assert!(store.remine_queue().unwrap().is_empty());
        assert_eq!(store.load().unwrap().len(), 2);
    }

    /// A store holding a block with a nonce above 2^53 - 1 (written by an older miner) is
    /// refused with the block named and what to do, and its file is left as it was.
    #[test]
    fn store_with_an_old_large_nonce_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let params = ChainParams::with_difficulty(0);
        let (store, chain) = Store::open(dir.path(), &params).unwrap();
        let mut b = mine_next(&chain, BlockData::new(&serde_json::json!("old")), 1);
        b.nonce = 1_000_000_000_000_059_757;
        b.hash = b.compute_hash();
        store.append(&b).unwrap();
        drop(store);
        let file = dir.path().join(DB_FILE);
        let before = std::fs::read(&file).unwrap();
        let err = Store::open(dir.path(), &params).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, StoreError::OldNonce { index: 1, .. }),
            "{msg}"
        );
        assert!(
            msg.contains("block 1 has nonce 1000000000000059757"),
            "{msg}"
        );
        assert!(msg.contains("Move the data directory aside"), "{msg}");
        assert_eq!(std::fs::read(&file).unwrap(), before);
    }

    /// Stores `n` blocks at difficulty 0 and returns them, genesis first.
    fn stored_chain(dir: &Path, n: usize) -> Vec<Block> {
        let params = ChainParams::with_difficulty(0);
        let (store, mut chain) = Store::open(dir, &params).unwrap();
        for i in 0..n {
            let b = mine_next(&chain, BlockData::new(&serde_json::json!({ "i": i })), 1);
            chain.push(b).unwrap();
        }
        let blocks = chain.to_vec();
        store.replace_from(0, &blocks[1..]).unwrap();
        blocks
    }

    /// A normal start takes the stored chain as it was written, data text included.
    #[test]
    fn a_normal_start_loads_the_stored_chain_as_written() {
        let dir = tempfile::tempdir().unwrap();
        let blocks = stored_chain(dir.path(), 50);
        let params = ChainParams::with_difficulty(0);
        let (_, chain) = Store::open_with(dir.path(), &params, Verify::Recent).unwrap();
        assert_eq!(chain.to_vec(), blocks);
    }

    /// Damage on disk deep below the re-checked top (block 1 of 1,500 has other data than
    /// its hash covers) is found at a normal start, and the store is refused.
    #[test]
    fn damage_below_the_rechecked_blocks_is_found_at_a_normal_start() {
        let dir = tempfile::tempdir().unwrap();
        let mut blocks = stored_chain(dir.path(), RECHECK_AT_START + 500);
        let params = ChainParams::with_difficulty(0);
        {
            let (store, _) = Store::open(dir.path(), &params).unwrap();
            blocks[1].data = BlockData::new(&serde_json::json!({ "i": "flipped" }));
            store.replace_from(0, &blocks[1..]).unwrap();
        }
        let err = Store::open_with(dir.path(), &params, Verify::Recent).unwrap_err();
        assert!(
            matches!(
                &err,
                StoreError::Invalid {
                    source: ChainError::Block(BlockError::BadHash { index: 1, .. }),
                    ..
                }
            ),
            "{err}"
        );
    }

    /// What a normal start trusts: a rule that needs the chain's history (here the
    /// difficulty) is checked only for the newest blocks, and for all with `Verify::Full`.
    #[test]
    fn history_rules_below_the_top_are_checked_only_by_a_full_verification() {
        let dir = tempfile::tempdir().unwrap();
        let params = ChainParams::with_difficulty(0);
        let mut blocks = stored_chain(dir.path(), RECHECK_AT_START + 10);
        // Block 1 claims difficulty 1 (the network's is 0), with a hash that meets it; the
        // blocks above are linked again (at difficulty 0 any hash meets theirs).
        blocks[1].difficulty = 1;
        for nonce in 0.. {
            blocks[1].nonce = nonce;
            blocks[1].hash = blocks[1].compute_hash();
            if blocks[1].hash.leading_zero_bits() >= 1 {
                break;
            }
        }
        for i in 2..blocks.len() {
            blocks[i].prev_hash = blocks[i - 1].hash.into();
            blocks[i].hash = blocks[i].compute_hash();
        }
        {
            let (store, _) = Store::open(dir.path(), &params).unwrap();
            store.replace_from(0, &blocks[1..]).unwrap();
        }
        let (_, chain) = Store::open_with(dir.path(), &params, Verify::Recent).unwrap();
        assert_eq!(chain.height(), blocks.len() as u64 - 1);
        let err = Store::open_with(dir.path(), &params, Verify::Full).unwrap_err();
        assert!(
            matches!(
                &err,
                StoreError::Invalid {
                    source: ChainError::Block(BlockError::BadDifficulty { index: 1, .. }),
                    ..
                }
            ),
            "{err}"
        );
    }

    /// Deferred commits are read back at once, made durable by a flush (or any durable
    /// commit), and reported lost, with the height they went above, when the handle is
    /// reopened (as after an I/O error) before that.
    #[test]
    fn deferred_commits_are_read_flushed_or_reported_lost() {
        let dir = tempfile::tempdir().unwrap();
        let params = ChainParams::with_difficulty(0);
        let (store, chain) = Store::open(dir.path(), &params).unwrap();
        let mut chain = chain;
        let mut blocks = Vec::new();
        for i in 0..4 {
            let b = mine_next(&chain, BlockData::new(&serde_json::json!(i)), 1);
            chain.push(b.clone()).unwrap();
            blocks.push(b);
        }
        store.commit_deferred(0, &blocks[..2]).unwrap();
        assert!(store.has_deferred());
        assert_eq!(
            store.load().unwrap().len(),
            3,
            "a deferred commit is read back"
        );
        store.flush().unwrap();
        assert!(!store.has_deferred());
        store.reopen();
        assert_eq!(store.take_lost(), None, "flushed: nothing lost");
        assert_eq!(store.load().unwrap().len(), 3);

        store.commit_deferred(2, &blocks[2..3]).unwrap();
        store.commit_deferred(3, &blocks[3..]).unwrap();
        store.reopen();
        assert_eq!(
            store.take_lost(),
            Some(2),
            "lost above the first deferred fork"
        );
        assert_eq!(store.take_lost(), None, "reported once");
        // A handle closed cleanly writes them out; one that failed may not: they are
        // reported lost either way, and the next commit above 2 replaces what is there.
        assert!(matches!(store.load().unwrap().len(), 3 | 5));

        // A durable commit makes what was deferred durable too.
        store.commit_deferred(2, &blocks[2..3]).unwrap();
        store.commit(3, &blocks[3..], &[], None).unwrap();
        assert!(!store.has_deferred());
        store.reopen();
        assert_eq!(store.take_lost(), None);
        assert_eq!(store.load().unwrap().len(), 5);
    }

    /// Dropping a queue entry removes that entry only and leaves every block in place.
    #[test]
    fn drop_remine_touches_only_the_queue() {
        let dir = tempfile::tempdir().unwrap();
        let params = ChainParams::with_difficulty(0);
        let (store, chain) = Store::open(dir.path(), &params).unwrap();
        let b = mine_next(&chain, BlockData::new(&serde_json::json!("kept")), 1);
        let datas = [
            BlockData::new(&serde_json::json!("one")),
            BlockData::new(&serde_json::json!("two")),
        ];
        let ids = store
            .commit(0, std::slice::from_ref(&b), &datas, None)
            .unwrap();
        store.drop_remine(ids[0]).unwrap();
        assert_eq!(
            store.remine_queue().unwrap(),
            vec![(ids[1], datas[1].clone())]
        );
        assert_eq!(store.load().unwrap().len(), 2);
    }

    /// Blocks are stored in the binary layout and come back equal; records in the earlier
    /// JSON layout, in the same table, are read as well, by a normal start and a full one.
    #[test]
    fn binary_and_json_records_both_load() {
        let dir = tempfile::tempdir().unwrap();
        let params = ChainParams::with_difficulty(0);
        let blocks = stored_chain(dir.path(), 6);
        json_records(dir.path(), &params, &blocks);
        for verify in [Verify::Recent, Verify::Full] {
            let (_, chain) = Store::open_with(dir.path(), &params, verify).unwrap();
            assert_eq!(chain.to_vec(), blocks, "{verify:?}");
        }
    }

    /// Rewrites blocks 1 to 3 of a store as the JSON records earlier versions wrote.
    fn json_records(dir: &Path, params: &ChainParams, blocks: &[Block]) {
        let (store, _) = Store::open(dir, params).unwrap();
        let tx = begin_write(&store);
        {
            let mut table = tx.open_table(BLOCKS).unwrap();
            for b in &blocks[1..4] {
                table
                    .insert(b.index, serde_json::to_vec(b).unwrap().as_slice())
                    .unwrap();
            }
            let record = table.get(4).unwrap().unwrap().value().to_vec();
            assert_eq!(record[0], record::RECORD_V1);
            assert!(record.len() < serde_json::to_vec(&blocks[4]).unwrap().len() / 2);
        }
        tx.commit().unwrap();
    }

    /// A stored block whose timestamp an older version's lenient reader accepted (seconds
    /// written with one digit) survives the binary record byte for byte, and then keeps the
    /// store from opening, naming the block and the way out (PROTOCOL.md rule 6).
    #[test]
    fn a_stored_lenient_timestamp_is_named_and_nothing_changes() {
        let dir = tempfile::tempdir().unwrap();
        let params = ChainParams::with_difficulty(0);
        let mut blocks = stored_chain(dir.path(), 6);
        let after = blocks[5].timestamp.unix().unwrap();
        let t = (after..after + 60).find(|t| t % 60 < 10).unwrap();
        let text = crate::block::format_timestamp(t);
        let lenient = format!("{}{}", &text[..18], &text[19..]);
        blocks[6].timestamp = Timestamp::from(lenient.as_str());
        assert!(matches!(blocks[6].timestamp, Timestamp::Text(_)));
        blocks[6].hash = blocks[6].compute_hash();
        {
            let (store, _) = Store::open(dir.path(), &params).unwrap();
            store.replace_from(5, &blocks[6..]).unwrap();
            let record = begin_read(&store);
            let table = record.open_table(BLOCKS).unwrap();
            let raw = table.get(6).unwrap().unwrap().value().to_vec();
            assert_eq!(
                read_record(6, &raw, Verify::Full).unwrap(),
                blocks[6],
                "byte for byte"
            );
        }
        let before = std::fs::read(dir.path().join("chain.redb")).unwrap();
        for verify in [Verify::Recent, Verify::Full] {
            let err = Store::open_with(dir.path(), &params, verify).unwrap_err();
            assert!(
                matches!(&err, StoreError::OldTimestamp { index: 6, timestamp, .. } if *timestamp == lenient),
                "{verify:?}: {err}"
            );
            assert!(
                err.to_string().contains("Move the data directory aside"),
                "{err}"
            );
        }
        assert_eq!(
            std::fs::read(dir.path().join("chain.redb")).unwrap(),
            before
        );
    }

    /// A truncated record, or one filed under another height, is reported as damage with
    /// its height, and the store is not served.
    #[test]
    fn a_damaged_record_names_its_height() {
        let dir = tempfile::tempdir().unwrap();
        let params = ChainParams::with_difficulty(0);
        let blocks = stored_chain(dir.path(), 4);
        let mut record = Vec::new();
        record::encode(&blocks[2], &mut record);
        // Cut short, the record no longer parses; filed under height 3, block 2's fields
        // hash to something else at index 3.
        for (key, bytes, want) in [
            (2, &record[..record.len() - 40], "stored block 2 in"),
            (3, &record[..], "block 3 "),
        ] {
            {
                let (store, _) = Store::open(dir.path(), &params).unwrap();
                let tx = begin_write(&store);
                tx.open_table(BLOCKS).unwrap().insert(key, bytes).unwrap();
                tx.commit().unwrap();
            }
            let Err(err) = Store::open_with(dir.path(), &params, Verify::Recent) else {
                panic!("a damaged store opened");
            };
            let msg = err.to_string();
            assert!(
                matches!(&err, StoreError::Corrupt { height: 2, reason, .. } if reason.contains("truncated"))
                    || matches!(&err, StoreError::Invalid { .. }),
                "{msg}"
            );
            assert!(msg.contains(want), "{msg}");
            let dir2 = tempfile::tempdir().unwrap();
            stored_chain(dir2.path(), 4);
            std::fs::copy(dir2.path().join(DB_FILE), dir.path().join(DB_FILE)).unwrap();
        }
    }

    /// A height missing from the middle of a long store (read in parallel parts) is found
    /// and named; the blocks above it are not dropped silently.
    #[test]
    fn a_missing_height_is_reported_not_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let params = ChainParams::with_difficulty(0);
        stored_chain(dir.path(), 6_000);
        for gone in [1, 2_999, 3_001, 6_000] {
            let copy = tempfile::tempdir().unwrap();
            std::fs::copy(dir.path().join(DB_FILE), copy.path().join(DB_FILE)).unwrap();
            {
                let (store, _) = Store::open(copy.path(), &params).unwrap();
                let tx = begin_write(&store);
                tx.open_table(BLOCKS).unwrap().remove(gone).unwrap();
                tx.commit().unwrap();
            }
            match Store::open_with(copy.path(), &params, Verify::Recent) {
                // The tip removed leaves a shorter, whole chain: nothing above it is lost.
                Ok((_, chain)) => assert_eq!((gone, chain.height()), (6_000, 5_999)),
                Err(StoreError::Corrupt { height, reason, .. }) => {
                    assert_eq!(height, gone, "{reason}");
                    assert!(reason.contains("missing"), "{reason}");
                }
                Err(e) => panic!("block {gone} removed: {e}"),
            }
        }
    }

    /// A store of another network is refused with both genesis hashes named.
    #[test]
    fn other_network_store_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path(), &ChainParams::with_difficulty(4)).unwrap());
        let err = Store::open(dir.path(), &ChainParams::with_difficulty(5)).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, StoreError::WrongNetwork { .. }));
        assert!(
            msg.contains(&ChainParams::with_difficulty(4).genesis().hash.to_hex()),
            "{msg}"
        );
        assert!(
            msg.contains(&ChainParams::with_difficulty(5).genesis().hash.to_hex()),
            "{msg}"
        );
    }
}
