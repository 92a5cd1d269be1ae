//! What an attacker on the same host or a hostile peer tries, against the real binaries:
//! one connection naming many peers, addresses that lead a node to dial what they name, a
//! registry that is no file, registries that fan out, headers a check cannot read, and a
//! listener impersonating a node to learn its cookie.

mod common;

use std::os::unix::fs::FileTypeExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use futures::{SinkExt, StreamExt};
use powchain::frame::FrameCodec;
use powchain_testkit::{Options, TestNetwork, Topology, wait_for};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Framed;

type Conn = Framed<TcpStream, FrameCodec>;

async fn connect(addr: &str) -> Conn {
    Framed::new(
        TcpStream::connect(addr).await.expect("connect"),
        FrameCodec::default(),
    )
}

/// Sends `request` and returns the reply as JSON.
async fn ask(conn: &mut Conn, request: &Value) -> Value {
    conn.send(serde_json::to_vec(request).unwrap())
        .await
        .expect("send");
    let reply = tokio::time::timeout(DEADLINE, conn.next())
        .await
        .expect("a reply in time")
        .expect("a reply")
        .expect("a frame");
    serde_json::from_slice(&reply).expect("JSON")
}

fn hello(genesis: &str, listen: &str, work: &str) -> Value {
    json!({"type":"hello","version":1,"genesis":genesis,"listen":listen,
           "height":0,"tip":genesis,"work":work})
}

/// Starts one node outside any registry with `args`; returns it and its genesis hash.
async fn lone_node(args: &[&str]) -> (TestNetwork, String) {
    let options = Options::new(1)
        .topology(Topology::Isolated)
        .args(args.iter().copied());
    let net = TestNetwork::start(NODE, options).await.unwrap();
    let genesis = net.client(0).status().await.unwrap().tip.to_string();
    (net, genesis)
}

/// A port nothing listens on (bound, then closed).
async fn dead_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

async fn inbound_count(net: &TestNetwork) -> usize {
    net.client(0)
        .status()
        .await
        .map(|s| s.inbound.len())
        .unwrap_or(usize::MAX)
}

/// One connection naming 40 different nodes takes one inbound slot, not all of them: the
/// other `hello`s are refused `bad_peer`, an honest peer still gets in, and the hostile
/// connection's link ends when it closes.
#[tokio::test]
async fn one_connection_is_one_peer_and_its_link_ends_with_it() {
    let (net, genesis) = lone_node(&["--max-inbound", "20"]).await;
    let mut hostile = connect(&net.addr(0)).await;
    let mut refused = 0;
    for i in 0..40 {
        let listen = format!("127.0.0.1:{}", 20_000 + i);
        let reply = ask(&mut hostile, &hello(&genesis, &listen, "0")).await;
        match reply["type"].as_str() {
            Some("hello") => assert_eq!(i, 0, "only the first hello opens a link: {reply}"),
            Some("error") => {
                assert_eq!(reply["code"], "bad_peer", "{reply}");
                refused += 1;
            }
            _ => panic!("unexpected reply {reply}"),
        }
    }
    assert_eq!(refused, 39);
    // The same name again on the same connection is its link greeting again.
    let again = ask(&mut hostile, &hello(&genesis, "127.0.0.1:20000", "0")).await;
    assert_eq!(again["type"], "hello", "{again}");

    let honest_port = dead_port().await;
    let mut honest = connect(&net.addr(0)).await;
    let reply = ask(
        &mut honest,
        &hello(&genesis, &format!("127.0.0.1:{honest_port}"), "0"),
    )
    .await;
    assert_eq!(
        reply["type"], "hello",
        "an honest peer still gets a slot: {reply}"
    );
    assert_eq!(inbound_count(&net).await, 2);

    drop(hostile);
    wait_for(DEADLINE, "the hostile connection's link to end", || async {
        (inbound_count(&net).await == 1).then_some(())
    })
    .await
    .unwrap();
    drop(honest);
    wait_for(
        DEADLINE,
        "every link to end with its connection",
        || async { (inbound_count(&net).await == 0).then_some(()) },
    )
    .await
    .unwrap();
}

/// A `hello` naming a host by a name, or by a form only a resolver reads as loopback, is
/// refused `bad_peer`, and the node dials none of them.
#[tokio::test]
async fn hello_addresses_must_be_numeric() {
    let (net, genesis) = lone_node(&[]).await;
    let (target, dials) = counting_listener().await;
    let port = target.port();
    for listen in [
        format!("LOCALHOST:{port}"),
        format!("localhost:{port}"),
        format!("127.1:{port}"),
        format!("2130706433:{port}"),
        format!("0x7f.1:{port}"),
    ] {
        let mut conn = connect(&net.addr(0)).await;
        let reply = ask(&mut conn, &hello(&genesis, &listen, "999999999999")).await;
        assert_eq!(reply["code"], "bad_peer", "{listen}: {reply}");
    }
    // Nothing to wait for but the absence of dials: a node that would dial has had the
    // time a status round trip takes after each refusal, and refuses before it learns.
    assert_eq!(inbound_count(&net).await, 0);
    assert_eq!(dials.load(Ordering::SeqCst), 0);
}

/// A local listener that counts the connections made to it (and closes each at once).
async fn counting_listener() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let dials = Arc::new(AtomicUsize::new(0));
    let counter = dials.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    (addr, dials)
}

/// Hellos claiming more work for an address that is no node (a local service) make the
/// node dial it a bounded number of times: once for the claim, once more for the book,
/// not once a second for as long as the claims come.
#[tokio::test]
async fn claims_of_work_do_not_make_the_node_dial_a_service_repeatedly() {
    let (net, genesis) = lone_node(&[]).await;
    let (service, dials) = counting_listener().await;
    // Five claims over about five seconds, each on a connection of its own.
    for _ in 0..5 {
        let mut conn = connect(&net.addr(0)).await;
        let reply = ask(
            &mut conn,
            &hello(&genesis, &service.to_string(), "999999999999"),
        )
        .await;
        assert_eq!(reply["type"], "hello", "{reply}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        // The node dials on its own time: wait out the second on the connection.
        let _ = tokio::time::timeout_at(deadline, conn.next()).await;
    }
    wait_for(DEADLINE, "the first claim's dial", || async {
        (dials.load(Ordering::SeqCst) >= 1).then_some(())
    })
    .await
    .unwrap();
    let n = dials.load(Ordering::SeqCst);
    assert!(
        n <= 3,
        "the node dialled the named service {n} times for 5 claims in 5 s"
    );
    assert_eq!(net.client(0).status().await.unwrap().height, 0);
}

/// A FIFO where the registry should be wedges neither a starting node, nor a running one
/// re-reading it, nor its shutdown (SIGTERM) nor the probe's `GET /nodes`.
#[tokio::test]
async fn a_fifo_registry_wedges_nothing() {
    let mut net = TestNetwork::start(NODE, Options::new(1)).await.unwrap();
    let registry = net.home().join("nodes.json");
    wait_for(DEADLINE, "the node to register", || async {
        registry.is_file().then_some(())
    })
    .await
    .unwrap();
    std::fs::remove_file(&registry).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &registry,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    // A lone node re-reads the registry every few seconds while it has no peer.
    wait_for(
        DEADLINE,
        "the node to find the registry unreadable",
        || async { net.log(0).contains("not a regular file").then_some(()) },
    )
    .await
    .unwrap();
    assert_eq!(net.client(0).status().await.unwrap().height, 0);

    let probe = start_probe(net.home(), &[]).await;
    let reply = tokio::time::timeout(DEADLINE, reqwest::get(format!("{}/nodes", probe.url)))
        .await
        .expect("GET /nodes answers")
        .unwrap();
    assert!(reply.status().is_server_error(), "{}", reply.status());
    let body: Value = reply.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("not a regular file"),
        "{body}"
    );

    assert_eq!(net.stop(0).await.unwrap(), Some(0), "{}", net.log(0));
    net.restart(0).await.unwrap();
    assert_eq!(net.stop(0).await.unwrap(), Some(0), "{}", net.log(0));
    assert!(std::fs::metadata(&registry).unwrap().file_type().is_fifo());
}

/// A registry of a thousand keys naming one port makes `GET /nodes` ask that node once;
/// one of thousands of ports is cut to the cap.
#[tokio::test]
async fn the_registry_fans_out_once_per_port_and_is_capped() {
    // Outside the registry: the test writes it, and no node prunes it meanwhile.
    let (net, _) = lone_node(&[]).await;
    let port = net.node(0).port();
    let registry = net.home().join("nodes.json");
    let probe = start_probe(net.home(), &["--sample-every", "0"]).await;
    let nodes_of = |keys: Vec<String>| {
        let map: serde_json::Map<String, Value> =
            keys.into_iter().map(|k| (k, json!("127.0.0.1"))).collect();
        std::fs::write(&registry, serde_json::to_vec(&map).unwrap()).unwrap();
        let url = format!("{}/nodes", probe.url);
        async move {
            let reply = reqwest::get(url).await.unwrap();
            reply.json::<Vec<Value>>().await.unwrap()
        }
    };
    let spellings = (0..1000).map(|zeros| format!("{}{port}", "0".repeat(zeros)));
    let nodes = nodes_of(spellings.collect()).await;
    assert_eq!(nodes.len(), 1, "one port, asked once");
    assert_eq!(nodes[0]["up"], true);
    let nodes = nodes_of((30_000..33_000u16).map(|p| p.to_string()).collect()).await;
    assert_eq!(nodes.len(), powchain::registry::MAX_ENTRIES);
}

/// Sends raw HTTP `request` to the probe at `url` and returns the status code.
async fn raw_http(url: &str, request: &[u8]) -> u16 {
    let addr = url.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(DEADLINE, s.read_to_end(&mut reply))
        .await
        .expect("a reply in time")
        .unwrap();
    let text = String::from_utf8_lossy(&reply);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Header values the guard cannot read refuse the request instead of skipping the check:
/// a non-ASCII `Host` (421), two `Host`s (421), a non-ASCII `Origin`, `Referer` or
/// `Sec-Fetch-Site` on a change (403), and a foreign second `Origin` (403). The node the
/// changes name stays up.
#[tokio::test]
async fn headers_the_guard_cannot_read_refuse_the_request() {
    let net = TestNetwork::start(NODE, Options::new(1)).await.unwrap();
    let port = net.node(0).port();
    let probe = start_probe(net.home(), &["--sample-every", "0"]).await;
    let get = |host: &[u8]| {
        let mut r = b"GET /nodes HTTP/1.1\r\nHost: ".to_vec();
        r.extend_from_slice(host);
        r.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
        r
    };
    assert_eq!(raw_http(&probe.url, &get(b"127.0.0.1")).await, 200);
    assert_eq!(raw_http(&probe.url, &get(b"ev\xffil.com")).await, 421);
    assert_eq!(
        raw_http(&probe.url, &get(b"127.0.0.1\r\nHost: evil.com")).await,
        421
    );
    let host = probe.url.trim_start_matches("http://").to_owned();
    let post = |extra: &[u8]| {
        let mut r = format!("POST /shutdown/{port} HTTP/1.1\r\nHost: {host}\r\n").into_bytes();
        r.extend_from_slice(extra);
        r.extend_from_slice(b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        r
    };
    for extra in [
        b"Origin: http://ev\xffil.com".to_vec(),
        b"Referer: http://ev\xffil.com/".to_vec(),
        b"Sec-Fetch-Site: cross\xff".to_vec(),
        format!("Origin: http://{host}\r\nOrigin: http://evil.example").into_bytes(),
    ] {
        assert_eq!(
            raw_http(&probe.url, &post(&extra)).await,
            403,
            "{}",
            String::from_utf8_lossy(&extra)
        );
    }
    assert_eq!(net.client(0).status().await.unwrap().height, 0, "still up");
}

/// Whatever listens on a node's port (here a fake that took it) never learns the node's
/// cookie from the probe: the probe asks for a challenge and sends a proof for the fake's
/// own nonce, which the real node would not accept again.
#[tokio::test]
async fn the_probe_proves_the_cookie_and_never_sends_it() {
    let home = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let cookie = "ab".repeat(32);
    let dir = home.path().join("nodes").join(port.to_string());
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(".cookie"), &cookie).unwrap();
    let heard = Arc::new(std::sync::Mutex::new(Vec::<Value>::new()));
    let log = heard.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut conn = Framed::new(stream, FrameCodec::default());
                while let Some(Ok(frame)) = conn.next().await {
                    let request: Value = serde_json::from_slice(&frame).unwrap_or(Value::Null);
                    log.lock().unwrap().push(request.clone());
                    let reply = match request["type"].as_str() {
                        Some("challenge") => json!({"type":"challenge","nonce":"cd".repeat(32)}),
                        _ => json!({"type":"error","code":"unauthorized","message":"no"}),
                    };
                    let _ = conn.send(serde_json::to_vec(&reply).unwrap()).await;
                }
            });
        }
    });
    let probe = start_probe(home.path(), &["--sample-every", "0"]).await;
    let reply = reqwest::Client::new()
        .post(format!("{}/shutdown/{port}", probe.url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        reply.status(),
        403,
        "the fake refused: the probe reports it"
    );
    let heard = heard.lock().unwrap().clone();
    let text = serde_json::to_string(&heard).unwrap();
    assert!(!text.contains(&cookie), "the cookie leaked: {text}");
    assert!(heard.iter().any(|r| r["type"] == "challenge"), "{text}");
    let shutdowns: Vec<&Value> = heard.iter().filter(|r| r["type"] == "shutdown").collect();
    assert!(
        shutdowns.iter().all(|r| r.get("cookie").is_none()),
        "{text}"
    );
    // With the cookie, a proof for the fake's own nonce; then (the cookie refused) none.
    let want = powchain::message::admin_proof(&cookie, &"cd".repeat(32), "shutdown");
    assert_eq!(
        shutdowns.first().map(|r| &r["proof"]),
        Some(&json!(want)),
        "{text}"
    );
}

/// Against the real node: a proof for this connection's challenge is obeyed once; the same
/// proof again, a proof with no challenge, one for another request type and one from
/// another connection's challenge are `unauthorized`; the bearer cookie still works.
#[tokio::test]
async fn admin_proofs_are_bound_to_the_connection_and_used_once() {
    let net = TestNetwork::start(NODE, Options::new(1).topology(Topology::Isolated))
        .await
        .unwrap();
    let cookie = std::fs::read_to_string(net.node(0).data_dir.join(".cookie"))
        .unwrap()
        .trim()
        .to_owned();
    let peer = format!("127.0.0.1:{}", dead_port().await);
    let add = |proof: &str| json!({"type":"add_peer","addr":peer,"proof":proof});
    let mut a = connect(&net.addr(0)).await;
    let mut b = connect(&net.addr(0)).await;
    let nonce_a = ask(&mut a, &json!({"type":"challenge"})).await["nonce"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(nonce_a.len(), 64);
    let proof = powchain::message::admin_proof(&cookie, &nonce_a, "add_peer");
    // Another connection cannot use a's challenge.
    assert_eq!(ask(&mut b, &add(&proof)).await["code"], "unauthorized");
    // A proof for another type is refused, and uses the challenge up.
    let wrong = powchain::message::admin_proof(&cookie, &nonce_a, "remove_peer");
    assert_eq!(ask(&mut a, &add(&wrong)).await["code"], "unauthorized");
    assert_eq!(ask(&mut a, &add(&proof)).await["code"], "unauthorized");
    let nonce = ask(&mut a, &json!({"type":"challenge"})).await["nonce"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(nonce, nonce_a, "a fresh nonce each time");
    let proof = powchain::message::admin_proof(&cookie, &nonce, "add_peer");
    assert_eq!(ask(&mut a, &add(&proof)).await["type"], "ok");
    assert_eq!(ask(&mut a, &add(&proof)).await["code"], "unauthorized");
    let bearer = json!({"type":"remove_peer","addr":peer,"cookie":cookie});
    assert_eq!(ask(&mut b, &bearer).await["type"], "ok");
    // powchain's own client proves the cookie.
    let client = powchain::NodeClient::new(net.addr(0)).with_cookie(Some(cookie));
    client.add_peer(&peer).await.unwrap();
    client.remove_peer(&peer).await.unwrap();
    client.shutdown().await.unwrap();
}

/// A peer whose `get_addr` reply floods the node with 20,000 addresses (all leading to one
/// local listener, on as many loopback addresses) places at most its share of the book:
/// the node dials at most 64 of them however long it runs, shares at most 32, and serves on.
#[tokio::test]
async fn an_address_flood_places_at_most_one_peers_share() {
    // Every 127.x.y.z:port reaches a listener bound to 0.0.0.0:port.
    let sink = TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = sink.local_addr().unwrap().port();
    let dialled = Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    let seen = dialled.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = sink.accept().await {
            if let Ok(to) = stream.local_addr() {
                seen.lock().unwrap().insert(to.ip());
            }
        }
    });
    let flood: Vec<String> = (0..20_000u32)
        .map(|i| {
            format!(
                "127.{}.{}.{}:{port}",
                1 + i / 65_536,
                (i / 256) % 256,
                1 + i % 254
            )
        })
        .collect();
    let genesis = powchain::ChainParams::with_difficulty(8).genesis().hash;
    let seed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let seed_addr = seed.local_addr().unwrap().to_string();
    let listen = seed_addr.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = seed.accept().await {
            let (flood, listen) = (flood.clone(), listen.clone());
            tokio::spawn(async move {
                let mut conn = Framed::new(stream, FrameCodec::default());
                while let Some(Ok(frame)) = conn.next().await {
                    let request: Value = serde_json::from_slice(&frame).unwrap_or(Value::Null);
                    let reply = match request["type"].as_str() {
                        Some("hello") => hello(&genesis.to_string(), &listen, "1"),
                        Some("get_addr") => json!({"type":"addr","addrs":flood}),
                        Some("ping") => json!({"type":"pong","height":0,"tip":genesis,"work":"1"}),
                        _ => json!({"type":"ok"}),
                    };
                    if conn
                        .send(serde_json::to_vec(&reply).unwrap())
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    let (net, _) = lone_node(&["--peer", &seed_addr]).await;
    wait_for(
        DEADLINE,
        "the node to dial the flooded addresses",
        || async { (dialled.lock().unwrap().len() >= 16).then_some(()) },
    )
    .await
    .unwrap();
    // Long enough for every flooded address to be tried once if the book took them all.
    for _ in 0..20 {
        let shared = net.client(0).get_addr().await.unwrap();
        assert!(shared.len() <= 32, "{}", shared.len());
        let n = dialled.lock().unwrap().len();
        assert!(n <= 64, "the node dialled {n} flooded addresses");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(net.client(0).status().await.unwrap().height, 0);
}
