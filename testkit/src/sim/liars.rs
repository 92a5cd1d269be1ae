//! Lying peers (`--byzantine FRACTION`): hosts that run no node but speak its protocol to
//! the honest ones, each with one lie. They listen on the node port (honest nodes learn
//! their addresses from seeds and gossip, and dial them) and dial their own seeds.
//!
//! | lie | what it does |
//! |---|---|
//! | `claims_work` | its `hello` and pongs claim the most work there is; it serves blocks that break the rules |
//! | `pushes_invalid` | pushes a block whose hash is not its own to every node it reaches, again and again |
//! | `withholds` | announces blocks (headers whose hash meets the difficulty) and never serves a body |
//! | `floods_addresses` | answers `get_addr` with a thousand addresses where nothing listens |
//! | `answers_slowly` | answers every request 20 s late |
//! | `sends_garbage` | answers every connection with bytes that are no frame |
//!
//! What the honest nodes must do about them is checked by the run's invariants: agree among
//! themselves, keep every block they mined, hold their caps, and ban a peer that pushed them
//! [`powchain::node::limits::MAX_STRIKES`] invalid blocks.

use super::*;

use futures::{SinkExt, StreamExt};
use powchain::block::{PrevHash, Timestamp};
use powchain::frame::FrameCodec;
use powchain::message::{BlockOutcome, ErrorCode, Header, Hello, Pong, Request, Response};
use tokio_util::codec::Framed;

/// The lies, in the order liars are given them.
pub(super) const LIES: [Lie; 6] = [
    Lie::PushesInvalid,
    Lie::ClaimsWork,
    Lie::Withholds,
    Lie::FloodsAddresses,
    Lie::AnswersSlowly,
    Lie::SendsGarbage,
];

/// One liar's lie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lie {
    ClaimsWork,
    PushesInvalid,
    Withholds,
    FloodsAddresses,
    AnswersSlowly,
    SendsGarbage,
}

impl Lie {
    pub(super) fn name(self) -> &'static str {
        match self {
            Lie::ClaimsWork => "claims_work",
            Lie::PushesInvalid => "pushes_invalid",
            Lie::Withholds => "withholds",
            Lie::FloodsAddresses => "floods_addresses",
            Lie::AnswersSlowly => "answers_slowly",
            Lie::SendsGarbage => "sends_garbage",
        }
    }
}

/// What the liars saw of the honest nodes.
#[derive(Debug, Default)]
pub(super) struct LiarStats {
    /// (liar, honest node) → blocks of the liar's that node rejected, and when the
    /// [`powchain::node::limits::MAX_STRIKES`]-th was.
    pub(super) rejected: BTreeMap<(usize, usize), (u32, Option<Duration>)>,
    /// (liar, honest node) pairs where the node refused the liar's `hello` as banned.
    pub(super) banned_by: BTreeSet<(usize, usize)>,
    /// Announcements sent, bodies asked for and never served.
    pub(super) announced: u64,
    pub(super) withheld: u64,
}

/// One liar host.
pub(super) struct LiarSetup {
    pub(super) index: usize,
    pub(super) lie: Lie,
    pub(super) shared: Arc<Shared>,
    pub(super) seeds: Vec<usize>,
    pub(super) params: ChainParams,
    /// The hosts, by index (for addresses that are real hosts with nothing on the port).
    pub(super) hosts: usize,
}

/// The liar's greeting: a node at its address, with the most work there is when it lies
/// about work, else at genesis.
fn greeting(setup: &LiarSetup, listen: &str) -> Hello {
    let genesis = setup.params.genesis().hash;
    let mut hello = Hello {
        version: powchain::message::PROTOCOL_VERSION,
        genesis,
        listen: listen.to_owned(),
        height: 0,
        tip: genesis,
        work: "0".into(),
    };
    if setup.lie == Lie::ClaimsWork {
        hello.height = 1_000_000;
        hello.tip = BlockHash([0xee; 32]);
        hello.work = u128::MAX.to_string();
    }
    hello
}

/// A block on `tip` at `height + 1` whose hash is not its own: rejected by rule.
fn invalid_block(height: u64, tip: BlockHash, difficulty: u32, k: u64) -> Block {
    Block {
        index: height + 1,
        timestamp: Timestamp::from_unix(sim_clock()),
        nonce: k,
        difficulty,
        prev_hash: PrevHash::Block(tip),
        hash: BlockHash([0x0d; 32]),
        data: powchain::BlockData::new(&json!({ "lie": k })),
    }
}

/// A header on `tip` whose claimed hash meets any difficulty up to 8 (its body is never
/// served, so nothing else about it can be checked).
fn withheld_header(height: u64, tip: BlockHash, difficulty: u32, k: u64) -> Header {
    let mut hash = [0u8; 32];
    hash[8..16].copy_from_slice(&k.to_be_bytes());
    hash[31] = 1;
    Header {
        index: height + 1,
        timestamp: Timestamp::from_unix(sim_clock()),
        nonce: k,
        difficulty,
        prev_hash: PrevHash::Block(tip),
        hash: BlockHash(hash),
        size: 100,
    }
}

/// One liar: listens on the node port and answers as its lie says, and dials its seeds.
pub(super) async fn liar(setup: LiarSetup) -> turmoil::Result {
    let ip = turmoil::lookup(host_name(setup.index));
    let listen = format!("{ip}:{PORT}");
    let setup = Arc::new(setup);
    let hello = greeting(&setup, &listen);
    for &j in &setup.seeds {
        tokio::spawn(dial(setup.clone(), hello.clone(), j));
    }
    let listener = turmoil::net::TcpListener::bind(("0.0.0.0", PORT)).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(answer(setup.clone(), hello.clone(), stream));
    }
}

/// Answers one connection an honest node opened to the liar.
async fn answer(setup: Arc<LiarSetup>, hello: Hello, stream: turmoil::net::TcpStream) {
    let mut conn = Framed::new(stream, FrameCodec::default());
    if setup.lie == Lie::SendsGarbage {
        use tokio::io::AsyncWriteExt;
        let _ = conn.get_mut().write_all(b"!! no frame here !!").await;
        return;
    }
    while let Some(Ok(frame)) = conn.next().await {
        let Ok(request) = serde_json::from_slice::<Request>(&frame) else {
            continue;
        };
        if setup.lie == Lie::AnswersSlowly {
            tokio::time::sleep(Duration::from_secs(20)).await;
        }
        let pong = Response::Pong(Pong {
            height: hello.height,
            tip: hello.tip,
            work: hello.work.clone(),
        });
        let reply = match request {
            Request::Hello(_) => Response::Hello(hello.clone()),
            Request::Ping => pong,
            Request::GetAddr if setup.lie == Lie::FloodsAddresses => Response::Addr {
                // Real hosts, ports where nothing listens: each dial is refused.
                addrs: (0..1000)
                    .map(|k| {
                        let host = turmoil::lookup(host_name(k % setup.hosts));
                        format!("{host}:{}", 6000 + k)
                    })
                    .collect(),
            },
            Request::GetAddr => Response::Addr { addrs: vec![] },
            Request::GetPeers => Response::Peers { peers: vec![] },
            Request::GetBlocks { .. } | Request::GetRange { .. }
                if setup.lie == Lie::ClaimsWork =>
            {
                let genesis = setup.params.genesis().hash;
                Response::Blocks {
                    blocks: (0..8)
                        .map(|k| invalid_block(0, genesis, setup.params.difficulty, k))
                        .collect(),
                }
            }
            Request::GetBlocks { .. } | Request::GetRange { .. } => {
                Response::Blocks { blocks: vec![] }
            }
            Request::GetBlock { .. } if setup.lie == Lie::Withholds => {
                setup.shared.liars().withheld += 1;
                std::future::pending::<()>().await;
                return;
            }
            Request::GetBlock { .. } => Response::Blocks { blocks: vec![] },
            Request::NewBlock { .. } => Response::BlockResult {
                result: BlockOutcome::Ignored,
                reason: None,
            },
            _ => Response::Ok,
        };
        if !send(&mut conn, &reply).await {
            return;
        }
    }
}

/// Sends `reply`; `false` when the connection is gone.
async fn send(conn: &mut Framed<turmoil::net::TcpStream, FrameCodec>, reply: &Response) -> bool {
    match serde_json::to_vec(reply) {
        Ok(bytes) => conn.send(bytes).await.is_ok(),
        Err(_) => false,
    }
}

/// Sends `request` and reads the reply; `None` when the connection failed or closed.
async fn call(
    conn: &mut Framed<turmoil::net::TcpStream, FrameCodec>,
    request: &Request,
) -> Option<Response> {
    conn.send(serde_json::to_vec(request).ok()?).await.ok()?;
    let frame = tokio::time::timeout(Duration::from_secs(10), conn.next())
        .await
        .ok()??
        .ok()?;
    serde_json::from_slice(&frame).ok()
}

/// Dials honest node `j` again and again and lies to it.
async fn dial(setup: Arc<LiarSetup>, hello: Hello, j: usize) {
    let target = format!("{}:{PORT}", turmoil::lookup(host_name(j)));
    let difficulty = setup.params.difficulty;
    let mut k = 0u64;
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let Ok(Ok(stream)) = tokio::time::timeout(
            Duration::from_secs(5),
            turmoil::net::TcpStream::connect(target.as_str()),
        )
        .await
        else {
            continue;
        };
        let mut conn = Framed::new(stream, FrameCodec::default());
        if setup.lie == Lie::SendsGarbage {
            use tokio::io::AsyncWriteExt;
            let _ = conn.get_mut().write_all(b"0000000012xx garbage").await;
            continue;
        }
        match call(&mut conn, &Request::Hello(hello.clone())).await {
            Some(Response::Hello(_)) => {}
            Some(Response::Error {
                code: ErrorCode::BadPeer,
                message,
            }) if message.contains("banned") => {
                setup.shared.liars().banned_by.insert((setup.index, j));
                continue;
            }
            _ => continue,
        }
        // Lie on this connection until it closes.
        loop {
            let Some(Response::Pong(pong)) = call(&mut conn, &Request::Ping).await else {
                break;
            };
            k += 1;
            match setup.lie {
                Lie::PushesInvalid => {
                    let block = invalid_block(pong.height, pong.tip, difficulty, k);
                    match call(&mut conn, &Request::NewBlock { block }).await {
                        Some(Response::BlockResult {
                            result: BlockOutcome::Rejected,
                            ..
                        }) => {
                            let mut liars = setup.shared.liars();
                            let entry = liars.rejected.entry((setup.index, j)).or_default();
                            entry.0 += 1;
                            if entry.0 == powchain::node::limits::MAX_STRIKES {
                                entry.1 = Some(now());
                            }
                        }
                        Some(_) => {}
                        None => break,
                    }
                }
                Lie::Withholds => {
                    let header = withheld_header(pong.height, pong.tip, difficulty, k);
                    setup.shared.liars().announced += 1;
                    if call(&mut conn, &Request::Announce { header })
                        .await
                        .is_none()
                    {
                        break;
                    }
                }
                _ => {}
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// The liars' part of the summary.
pub(super) fn summary(stats: &LiarStats, lies: &[(usize, Lie)]) -> Value {
    let mut by_lie: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, lie) in lies {
        *by_lie.entry(lie.name()).or_default() += 1;
    }
    json!({
        "liars": lies.len(),
        "by_lie": by_lie,
        "invalid_blocks_rejected": stats.rejected.values().map(|r| u64::from(r.0)).sum::<u64>(),
        "bans_seen": stats.banned_by.len(),
        "announced_never_served": stats.announced,
        "bodies_asked_of_withholders": stats.withheld,
    })
}

/// Ports each eclipse attacker host listens on: each one an address of the attacker.
pub(super) const ATTACKER_PORTS: u16 = 16;

/// One host of an eclipse attacker (`--eclipse RATIO`): [`ATTACKER_PORTS`] addresses that
/// look like nodes at genesis, never relay a block, answer `get_addr` with the attacker's
/// addresses only, and each dial the victim once (as Heilman et al.'s attacker fills a
/// victim's address book and inbound slots, then waits for it to restart).
pub(super) struct AttackerSetup {
    pub(super) index: usize,
    pub(super) victim: usize,
    pub(super) params: ChainParams,
    /// Host indices of the whole attacker.
    pub(super) hosts: std::ops::Range<usize>,
}

pub(super) async fn attacker(setup: AttackerSetup) -> turmoil::Result {
    let ip = turmoil::lookup(host_name(setup.index));
    let all: Arc<Vec<String>> = Arc::new(
        setup
            .hosts
            .clone()
            .flat_map(|h| {
                let ip = turmoil::lookup(host_name(h));
                (0..ATTACKER_PORTS).map(move |p| format!("{ip}:{}", PORT + p))
            })
            .collect(),
    );
    let genesis = setup.params.genesis().hash;
    let victim = format!("{}:{PORT}", turmoil::lookup(host_name(setup.victim)));
    for p in 0..ATTACKER_PORTS {
        let hello = Hello {
            version: powchain::message::PROTOCOL_VERSION,
            genesis,
            listen: format!("{ip}:{}", PORT + p),
            height: 0,
            tip: genesis,
            work: "0".into(),
        };
        let listener = turmoil::net::TcpListener::bind(("0.0.0.0", PORT + p)).await?;
        let (all_in, hello_in) = (all.clone(), hello.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(pose(
                    Framed::new(stream, FrameCodec::default()),
                    hello_in.clone(),
                    all_in.clone(),
                ));
            }
        });
        let (all_out, victim) = (all.clone(), victim.clone());
        tokio::spawn(async move {
            // Into the victim's inbound slots and address book, again whenever dropped.
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let Ok(stream) = turmoil::net::TcpStream::connect(victim.as_str()).await else {
                    continue;
                };
                let mut conn = Framed::new(stream, FrameCodec::default());
                if let Some(Response::Hello(_)) =
                    call(&mut conn, &Request::Hello(hello.clone())).await
                {
                    pose(conn, hello.clone(), all_out.clone()).await;
                }
            }
        });
    }
    std::future::pending::<()>().await;
    Ok(())
}

/// Answers like a node at genesis that knows only the attacker's addresses.
async fn pose(
    mut conn: Framed<turmoil::net::TcpStream, FrameCodec>,
    hello: Hello,
    all: Arc<Vec<String>>,
) {
    let mut k = 0usize;
    while let Some(Ok(frame)) = conn.next().await {
        let Ok(request) = serde_json::from_slice::<Request>(&frame) else {
            continue;
        };
        let reply = match request {
            Request::Hello(_) => Response::Hello(hello.clone()),
            Request::Ping => Response::Pong(Pong {
                height: 0,
                tip: hello.tip,
                work: "0".into(),
            }),
            Request::GetAddr => {
                k += 1;
                Response::Addr {
                    addrs: (0..32)
                        .map(|i| all[(k * 32 + i) % all.len()].clone())
                        .collect(),
                }
            }
            Request::GetPeers => Response::Peers { peers: vec![] },
            Request::GetBlocks { .. } | Request::GetRange { .. } | Request::GetBlock { .. } => {
                Response::Blocks { blocks: vec![] }
            }
            Request::NewBlock { .. } => Response::BlockResult {
                result: BlockOutcome::Ignored,
                reason: None,
            },
            _ => Response::Ok,
        };
        if !send(&mut conn, &reply).await {
            return;
        }
    }
}
