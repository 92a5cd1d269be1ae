//! Every cap and interval of the node in one place: what peers can make it hold, how often
//! it does things on its own, and the defaults of the limits the command line sets.

use std::time::Duration;

// Command-line defaults (`node --help`).

/// Most connections open at once (`--max-connections`).
pub(crate) const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Seconds a connection may idle before it is closed (`--idle-timeout`).
pub(crate) const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 120;
/// Links a node dials itself (`--max-outbound`).
pub(crate) const DEFAULT_MAX_OUTBOUND: usize = 8;
/// Links other nodes may open to a node (`--max-inbound`).
pub(crate) const DEFAULT_MAX_INBOUND: usize = 117;

// Address book.

/// Most addresses held.
pub const MAX_ADDRS: usize = 1024;
/// Most addresses one peer's gossip may place in the book.
pub(crate) const MAX_PER_SOURCE: usize = 64;
/// Most addresses taken from one gossip message, and sent in one.
pub(crate) const MAX_SHARED: usize = 32;
/// Most addresses under a ban at once.
pub(crate) const MAX_BANNED: usize = 1024;
/// Failures in a row after which an address learned from others is forgotten.
pub(crate) const MAX_FAILURES: u32 = 5;
/// First wait before an address that failed is dialled again; doubles with each failure.
pub(crate) const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// Longest wait before a failing address is dialled again.
pub(crate) const MAX_BACKOFF: Duration = Duration::from_secs(30);

// Peer set and links.

/// Unanswered relays to one peer beyond which new blocks are not sent to it.
pub(crate) const MAX_RELAYS_IN_FLIGHT: usize = 4;
/// Block hashes remembered per link as held by the peer (so no block is sent back).
pub(crate) const KNOWN_PER_LINK: usize = 64;
/// Most manual links (`add_peer`), which do not count against `--max-outbound`.
pub(crate) const MAX_MANUAL: usize = 8;
/// Timeout of a peer's requests (handshake, ping, relay, one batch of a sync): a request
/// fails when this long passes in which its connection moved under 4 KiB (see
/// `NodeClient`), so a big reply over a slow link is read as long as it keeps moving.
pub(crate) const PEER_TIMEOUT: Duration = Duration::from_secs(10);
/// Invalid blocks from one peer before it is dropped.
pub const MAX_STRIKES: u32 = 5;
/// How long a dropped peer stays banned.
pub(crate) const BAN: Duration = Duration::from_secs(600);
/// A peer's block that does not link makes us sync with that peer at most this often.
pub(crate) const UNLINKED_SYNC_INTERVAL: Duration = Duration::from_secs(1);
/// Most peers whose last unlinked-block sync is remembered.
pub(crate) const MAX_SYNC_MEMORY: usize = 1024;
/// Most peers owed a sync at once (a block of theirs did not link within
/// [`UNLINKED_SYNC_INTERVAL`] of the last sync with them).
pub(crate) const MAX_DEFERRED_SYNCS: usize = 256;
/// A `hello` claiming more work makes us dial an address that never answered us as a node
/// (a claim costs nothing) at most this often: a peer cannot turn us into a dialler of
/// whatever address it names.
pub(crate) const UNVERIFIED_SYNC_INTERVAL: Duration = Duration::from_secs(30);

// Links: timers.

/// How often a link is checked with a `ping`.
pub(crate) const PING_INTERVAL: Duration = Duration::from_secs(30);
/// How often a link is checked while the peer claims more work than syncing with it gave
/// us (a sync that failed, or a peer that lies): it is struck again, or we catch up.
pub(crate) const BEHIND_INTERVAL: Duration = Duration::from_secs(2);
/// How often the peer manager looks at its links when nothing wakes it.
pub(crate) const MANAGER_TICK: Duration = Duration::from_secs(2);
/// Shortest time between two reads of the registry while outbound slots stay free.
pub(crate) const REGISTRY_REREAD: Duration = Duration::from_secs(5);
/// Longest wait between two attempts to re-dial a manual link.
pub(crate) const MAX_MANUAL_BACKOFF: Duration = Duration::from_secs(30);

// Connections.

/// Longest silence on a connection that opened an inbound link before it is closed.
pub(crate) const INBOUND_SILENCE: Duration = Duration::from_secs(75);

// Requests.

/// How long a `hello` that greets a new connection of a known link waits before its news
/// (more work) makes us sync: the request it precedes usually brings that news.
pub(crate) const GREETING_GRACE: Duration = Duration::from_secs(1);
/// Invalid blocks one connection may send before it is closed.
pub(crate) const MAX_INVALID_PER_CONNECTION: u32 = 5;
/// Blocks already held that one connection may send again before it is closed.
pub(crate) const MAX_REPLAYS_PER_CONNECTION: u32 = 1000;
/// Payloads larger than this are parsed on a blocking thread (a pushed chain may be 64 MiB).
pub(crate) const PARSE_OFF_RUNTIME: usize = 1024 * 1024;

// Sync, relay and re-mining.

/// How long a node waits before mining again data of a block it did not mine itself.
pub(crate) const REMINE_DELAY_OTHERS: Duration = Duration::from_secs(10);
/// How long queued data waits after a restart (time for the first sync to bring it in).
pub(crate) const REMINE_DELAY_STARTUP: Duration = Duration::from_secs(3);
/// Blocks asked for per `get_blocks` round trip.
pub const SYNC_BATCH: usize = 5000;
/// A sync commits its full batches without an fsync and makes them durable every this many
/// batches and when it ends (a crash loses at most these, and the peers still hold them).
pub(crate) const SYNC_DURABLE_EVERY: usize = 20;
/// Most peers one sync fetches from at once (the peer synced with and three others).
pub(crate) const MAX_SYNC_SOURCES: usize = 4;
/// Range requests each source of a sync has in flight, at most.
pub(crate) const RANGES_PER_SOURCE: usize = 2;
/// Most bytes of blocks (counted as compact JSON; binary lists are smaller) in one reply to
/// `get_blocks`, `get_range` or `get_tail`, or the frame cap less [`REPLY_ENVELOPE`] where
/// that is lower: the reply stops before the block that would pass it (the first block is
/// always sent). 8 MiB moves in under the peers' 10 s timeout over a 10 Mbit/s link, and a
/// node of 1 MiB blocks far behind syncs a few blocks a reply instead of being refused.
pub(crate) const MAX_REPLY_BYTES: usize = 8 * 1024 * 1024;
/// Bytes of a reply of blocks that are not blocks (its type, list header, brackets).
pub(crate) const REPLY_ENVELOPE: usize = 1024;
/// Replies one sync may have in flight from several peers, counted at the frame cap each
/// (256 MiB: four ranges at the default 64 MiB cap), so peers cannot make it hold more.
pub(crate) const MAX_FETCH_BYTES: usize = 256 * 1024 * 1024;
/// Most blocks of a competing branch held in memory while it is fetched.
pub const MAX_BRANCH_BLOCKS: usize = 500_000;
/// Most bytes of a competing branch held in memory while it is fetched.
pub const MAX_BRANCH_BYTES: usize = 128 * 1024 * 1024;
/// How many recent blocks a re-mining job searches for its data.
pub(crate) const RECENT_SCAN: usize = 10_000;
/// Most blocks marked as being handled at once; beyond it a block is handled without the
/// mark (a duplicate then costs a second look, never a wrong result).
pub(crate) const MAX_HANDLING: usize = 256;
/// Most announced blocks being fetched at once; an announcement beyond it is ignored (a
/// flood of made-up headers costs at most this many fetches in flight).
pub(crate) const MAX_FETCHES: usize = 64;
/// Most announcers kept per block being fetched (asked one after another).
pub(crate) const MAX_ANNOUNCERS: usize = 8;
/// Blocks with at least this many bytes of data are announced (`announce`, then
/// `get_block`) to peers that take announcements; smaller ones are pushed whole
/// (`--push-below`).
pub(crate) const DEFAULT_PUSH_BELOW: usize = 16 * 1024;

// Mining.

/// Most hashes of self-mined blocks remembered.
pub(crate) const MINED_MEMORY: usize = 100_000;
/// A run lasting longer than this logs its progress.
pub(crate) const PROGRESS_AFTER: Duration = Duration::from_secs(2);
pub(crate) const PROGRESS_EVERY: Duration = Duration::from_secs(5);

// Chain state.

/// Branches at least this long are checked on a blocking thread; shorter ones (a relayed or
/// mined block) cost microseconds and are checked in place, still outside the lock.
pub(crate) const CHECK_OFF_RUNTIME: usize = 16;
