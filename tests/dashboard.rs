//! The dashboard in a real headless Chromium, driven over the DevTools protocol: nodes with
//! their heights, mining from the page, the block reaching every node, a node shut down.
//! Without a Chromium on the machine these tests are compiled as ignored (see build.rs).

mod common;

use std::collections::BTreeSet;

use common::*;
use powchain_testkit::browser::Browser;
use powchain_testkit::{Options, TestNetwork, wait_for};
use serde_json::json;

/// The page lists every node with its height, mines from the page and shows the block on
/// every node, and marks a node down after its shutdown button is pressed.
#[tokio::test]
#[cfg_attr(
    not(has_chromium),
    ignore = "needs Chromium (apt-get install chromium)"
)]
async fn dashboard_shows_mines_and_shuts_down_in_a_browser() {
    let net = TestNetwork::start(NODE, Options::new(3)).await.unwrap();
    net.wait_peered(DEADLINE).await.unwrap();
    net.client(1)
        .mine(json!("before the page opened"))
        .await
        .unwrap();
    net.wait_agree(DEADLINE).await.unwrap();
    let probe = start_probe(net.home(), &[]).await;
    let url = probe.url.clone();
    let mut page = Browser::open(&format!("{url}/")).await.unwrap();

    page.wait_js(
        "three node rows",
        "document.querySelectorAll('#nodes tr[data-port]').length === 3",
    )
    .await
    .unwrap();
    for i in 0..3 {
        let port = net.node(i).port();
        let height = net.client(i).status().await.unwrap().height;
        let shown = page
            .wait_js("the height", &format!("document.querySelector('#nodes tr[data-port=\"{port}\"] [data-field=height]')?.textContent"))
            .await
            .unwrap();
        assert_eq!(shown, json!(height.to_string()), "node {port}");
        let state = page.eval(&format!("document.querySelector('#nodes tr[data-port=\"{port}\"] [data-field=state]').textContent")).await.unwrap();
        assert_eq!(state, json!("up"));
    }

    // Mine from the page on node 0 and watch the block reach every node's chain.
    let p0 = net.node(0).port();
    page.eval(&format!(
        "document.getElementById('mine-node').value = '{p0}'; document.getElementById('mine-data').value = 'mined in a browser'; document.getElementById('mine-button').click(); true"
    ))
    .await
    .unwrap();
    let result = page.wait_js("the mine result", "(t => t.includes('mined on node') && t)(document.getElementById('result').textContent)").await.unwrap();
    assert!(result.as_str().unwrap().contains("#2"), "{result}");
    let tip = net.client(0).status().await.unwrap().tip.to_hex();
    let chain0 = net.client(0).get_chain().await.unwrap();
    assert_eq!(
        chain0.last().unwrap().data.as_str(),
        "\"mined in a browser\""
    );
    // The three nodes agree: one row of blocks, for the tip all three are on.
    page.wait_js(
        "the new block on the one tip every node is on",
        &format!("(rows => rows.length === 1 && rows[0].dataset.nodes === '3' && rows[0].dataset.tip === '{tip}' && rows[0].querySelector('.block:last-child')?.dataset.hash === '{tip}')([...document.querySelectorAll('.chain-row')])"),
    )
    .await
    .unwrap();
    // All three agree, so no block is drawn as a fork.
    assert_eq!(
        page.eval("document.querySelectorAll('.block.fork').length")
            .await
            .unwrap(),
        json!(0)
    );
    // A click on a block shows its fields.
    page.eval(&format!(
        "document.querySelector('.block[data-hash=\"{tip}\"]').click(); true"
    ))
    .await
    .unwrap();
    let details = page.wait_js("block details", "document.getElementById('details').textContent.includes('mined in a browser') && document.getElementById('details').textContent").await.unwrap();
    assert!(details.as_str().unwrap().contains(&tip));
    let nonce = chain0.last().unwrap().nonce.to_string();
    assert!(
        details.as_str().unwrap().contains(&nonce),
        "nonce {nonce} shown exactly: {details}"
    );

    if let Ok(path) = std::env::var("POWCHAIN_SCREENSHOT") {
        page.screenshot(path.as_ref()).await.unwrap();
    }

    // Shut node 2 down from the page: it is marked down.
    let p2 = net.node(2).port();
    page.eval(&format!(
        "document.querySelector('button[data-action=shutdown][data-port=\"{p2}\"]').click(); true"
    ))
    .await
    .unwrap();
    page.wait_js(
        "node 2 marked down",
        &format!("document.querySelector('#nodes tr[data-port=\"{p2}\"] [data-field=state]')?.textContent.startsWith('down')"),
    )
    .await
    .unwrap();
    let message = page
        .eval("document.getElementById('result').textContent")
        .await
        .unwrap();
    assert!(
        message.as_str().unwrap().contains("server is shutdown"),
        "{message}"
    );
    assert!(
        net.client(2).status().await.is_err(),
        "node 2 really stopped"
    );
}

/// A node killed outright stays on the page, marked down; the others stay up.
#[tokio::test]
#[cfg_attr(
    not(has_chromium),
    ignore = "needs Chromium (apt-get install chromium)"
)]
async fn dashboard_marks_a_crashed_node_down() {
    let mut net = TestNetwork::start(NODE, Options::new(2)).await.unwrap();
    net.wait_peered(DEADLINE).await.unwrap();
    let probe = start_probe(net.home(), &[]).await;
    let url = probe.url.clone();
    let mut page = Browser::open(&format!("{url}/")).await.unwrap();
    page.wait_js(
        "two node rows",
        "document.querySelectorAll('#nodes tr.is-up').length === 2",
    )
    .await
    .unwrap();
    let p1 = net.node(1).port();
    net.kill(1).await.unwrap();
    page.wait_js(
        "the crashed node marked down",
        &format!("document.querySelector('#nodes tr[data-port=\"{p1}\"] [data-field=state]')?.textContent.startsWith('down')"),
    )
    .await
    .unwrap();
    assert_eq!(
        page.eval("document.querySelectorAll('#nodes tr.is-up').length")
            .await
            .unwrap(),
        json!(1)
    );
}

/// Serves `html` to every request on a free loopback port: a second origin (another port
/// of the same host, so the browser calls it same-site, not same-origin).
async fn serve_page(html: String) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let html = html.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{html}",
                    html.len()
                );
                let _ = s.write_all(reply.as_bytes()).await;
            });
        }
    });
    url
}

/// A page of another origin tries what any web site could: an `<img>` of
/// `/shutdown/{port}`, a `no-cors` POST to `/append/{port}`, and form POSTs to `/append` and
/// `/shutdown`. The probe refuses all four, and the node is still up with its chain unchanged.
#[tokio::test]
#[cfg_attr(
    not(has_chromium),
    ignore = "needs Chromium (apt-get install chromium)"
)]
async fn pages_of_other_origins_cannot_drive_the_probe() {
    let net = TestNetwork::start(NODE, Options::new(1)).await.unwrap();
    let port = net.node(0).port();
    let log = net.home().join("probe.log");
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_probe"));
    command
        .args(["--port", "0"])
        .env("POWCHAIN_HOME", net.home())
        .env("RUST_LOG", "info")
        .stderr(std::fs::File::create(&log).unwrap());
    let probe = powchain::process::spawn_announced(&mut command, DEADLINE)
        .await
        .unwrap();
    let p = probe.addr.clone();
    let attack = format!(
        r#"<!doctype html><title>a web site</title>
<iframe name="sink1"></iframe><iframe name="sink2"></iframe>
<form id="append" method="POST" action="{p}/append/{port}" target="sink1" enctype="text/plain"><input name="x" value="y"></form>
<form id="stop" method="POST" action="{p}/shutdown/{port}" target="sink2"></form>
<img src="{p}/shutdown/{port}">
<script>
fetch("{p}/append/{port}", {{method: "POST", mode: "no-cors", body: "attack"}}).catch(() => {{}});
document.getElementById("append").submit();
document.getElementById("stop").submit();
</script>"#
    );
    let page_url = serve_page(attack).await;
    let _page = Browser::open(&format!("{page_url}/")).await.unwrap();
    wait_for(
        DEADLINE,
        "the probe to refuse all four requests",
        || async {
            let text = std::fs::read_to_string(&log).ok()?;
            (text.matches("refused cross-site request").count() >= 4).then_some(())
        },
    )
    .await
    .unwrap();
    let status = net.client(0).status().await.unwrap();
    assert_eq!(status.height, 0, "nothing was appended");
    // The probe still serves its own pages and curl.
    let ok = reqwest::get(format!("{p}/status/{port}")).await.unwrap();
    assert_eq!(ok.status(), 200);
}

/// The links the nodes' statuses report, as the page keys them: the two node ids (ports, or
/// `ext:ADDR` for a peer outside the registry) in string order, joined by `|`.
fn reported_links(statuses: &[powchain::message::Status]) -> BTreeSet<String> {
    let port_of = |addr: &str| {
        statuses
            .iter()
            .find(|s| s.listen == addr)
            .and_then(|s| s.listen.rsplit(':').next().map(str::to_owned))
            .unwrap_or_else(|| format!("ext:{addr}"))
    };
    let mut links = BTreeSet::new();
    for s in statuses {
        let a = port_of(&s.listen);
        for addr in s.outbound.iter().chain(&s.inbound) {
            let b = port_of(addr);
            if a != b {
                let (x, y) = if a < b { (&a, &b) } else { (&b, &a) };
                links.insert(format!("{x}|{y}"));
            }
        }
    }
    links
}

/// What the page's graph holds: node ids and link keys.
async fn drawn(page: &mut Browser) -> (BTreeSet<String>, BTreeSet<String>) {
    let v = page
        .eval("window.powchain ? window.powchain.topology() : null")
        .await
        .unwrap();
    let ids = |key: &str, field: Option<&str>| -> BTreeSet<String> {
        v[key]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| field.map_or(x, |f| &x[f]).as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    (ids("nodes", Some("id")), ids("links", None))
}

/// The fill colour the graph gives each node, by port.
async fn fills(page: &mut Browser, net: &TestNetwork, nodes: &[usize]) -> Vec<String> {
    let mut out = Vec::new();
    for &i in nodes {
        let port = net.node(i).port();
        let fill = page
            .eval(&format!("document.querySelector('#topology .tnode[data-port=\"{port}\"] circle')?.getAttribute('fill')"))
            .await
            .unwrap();
        out.push(fill.as_str().unwrap_or_default().to_owned());
    }
    out
}

/// With 16 nodes the graph draws the 16 nodes and exactly the links their own statuses
/// report, all in the colour of their one tip; hovering names a node, a click shows its
/// status, and the summary counts them.
#[tokio::test]
#[cfg_attr(
    not(has_chromium),
    ignore = "needs Chromium (apt-get install chromium)"
)]
async fn topology_draws_the_nodes_and_the_links_their_statuses_report() {
    let net = TestNetwork::start(NODE, Options::new(16)).await.unwrap();
    net.wait_peered(DEADLINE).await.unwrap();
    let probe = start_probe(net.home(), &["--sample-every", "1"]).await;
    let mut page = Browser::open_sized(&format!("{}/", probe.url), 1400, 1150)
        .await
        .unwrap();
    let all: Vec<usize> = (0..16).collect();
    let ports: BTreeSet<String> = all
        .iter()
        .map(|&i| net.node(i).port().to_string())
        .collect();
    // Links settle as the peer managers fill their outbound slots: wait until the page draws
    // what the statuses say at that moment.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let want = loop {
        let statuses = net.statuses(&all).await;
        let (nodes, links) = drawn(&mut page).await;
        if let Some(st) = statuses {
            let want = reported_links(&st);
            if nodes == ports && links == want {
                break want;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the graph never matched the statuses: drew {nodes:?} {links:?}, statuses say {want:?}"
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert!(
        want.len() >= 15,
        "16 connected nodes have at least 15 links: {want:?}"
    );
    assert_eq!(
        page.eval("document.querySelectorAll('#topology .tnode[data-port]').length")
            .await
            .unwrap(),
        json!(16)
    );
    assert_eq!(
        page.eval("document.querySelectorAll('#topology line').length")
            .await
            .unwrap(),
        json!(want.len())
    );
    let colours: BTreeSet<String> = fills(&mut page, &net, &all).await.into_iter().collect();
    assert_eq!(colours.len(), 1, "one tip, one colour: {colours:?}");
    assert_eq!(
        page.eval("document.querySelector('#summary [data-field=tips]').textContent")
            .await
            .unwrap(),
        json!("1")
    );
    assert_eq!(
        page.eval("document.querySelector('#summary [data-field=up]').textContent")
            .await
            .unwrap(),
        json!("16")
    );
    let port = net.node(5).port();
    let hover = page
        .eval(&format!(
            "document.querySelector('#topology .tnode[data-port=\"{port}\"] title').textContent"
        ))
        .await
        .unwrap();
    assert!(
        hover
            .as_str()
            .unwrap()
            .starts_with(&format!("node {port} · height 0")),
        "{hover}"
    );
    page.eval(&format!("document.querySelector('#topology .tnode[data-port=\"{port}\"] circle').dispatchEvent(new MouseEvent('click', {{bubbles: true}})); true")).await.unwrap();
    let listen = net.addr(5);
    let details = page
        .wait_js(
            "the clicked node's status",
            &format!("(t => t.includes('\"listen\": \"{listen}\"') && t)(document.getElementById('node-details').textContent)"),
        )
        .await
        .unwrap();
    assert!(details.as_str().unwrap().contains("\"outbound\""));
    if let Ok(path) = std::env::var("POWCHAIN_SCREENSHOT_TOPOLOGY") {
        page.wait_js("the layout to settle", "window.powchain.settled()")
            .await
            .unwrap();
        page.screenshot(path.as_ref()).await.unwrap();
    }
}

/// Two groups mining apart show as two tips in two colours, the history chart gains the
/// blocks they mine, and once the groups are joined the page shows one tip and the reorg.
#[tokio::test]
#[cfg_attr(
    not(has_chromium),
    ignore = "needs Chromium (apt-get install chromium)"
)]
async fn a_partition_shows_two_tips_and_heals_to_one() {
    // No outbound slots: the only links are the ones added here, so the groups stay apart.
    let net = TestNetwork::start(NODE, Options::new(8).args(["--max-outbound", "0"]))
        .await
        .unwrap();
    let (a, b): (Vec<usize>, Vec<usize>) = ((0..4).collect(), (4..8).collect());
    for group in [&a, &b] {
        for pair in group.windows(2) {
            net.client(pair[0])
                .add_peer(&net.addr(pair[1]))
                .await
                .unwrap();
        }
    }
    let probe = start_probe(net.home(), &["--sample-every", "1"]).await;
    let mut page = Browser::open_sized(&format!("{}/", probe.url), 1400, 1300)
        .await
        .unwrap();
    page.wait_js(
        "a first history sample",
        "window.powchain?.history().samples > 0",
    )
    .await
    .unwrap();
    let samples_before = page
        .eval("window.powchain.history().samples")
        .await
        .unwrap();

    for i in 0..2 {
        net.client(0)
            .mine(json!({ "side": "a", "i": i }))
            .await
            .unwrap();
    }
    for i in 0..3 {
        net.client(4)
            .mine(json!({ "side": "b", "i": i }))
            .await
            .unwrap();
    }
    let side_tips = wait_for(DEADLINE, "each group to agree within itself", || async {
        let sa = net.statuses(&a).await?;
        let sb = net.statuses(&b).await?;
        let one = |s: &[powchain::message::Status], h| {
            s.iter()
                .all(|x| x.tip == s[0].tip && x.height == h)
                .then_some(s[0].tip)
        };
        Some((one(&sa, 2)?, one(&sb, 3)?))
    })
    .await
    .unwrap();
    page.wait_js(
        "two tips in the summary",
        "document.querySelector('#summary [data-field=tips]')?.textContent === '2'",
    )
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let (fa, fb) = loop {
        let (fa, fb) = (
            fills(&mut page, &net, &a).await,
            fills(&mut page, &net, &b).await,
        );
        let same = |f: &[String]| f.iter().all(|x| x == &f[0] && !x.is_empty());
        if same(&fa) && same(&fb) && fa[0] != fb[0] {
            break (fa[0].clone(), fb[0].clone());
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the groups never showed in two colours: {fa:?} {fb:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    // The group with more work (b) has the leading colour; each tip is in the legend and has
    // its own row of blocks.
    for tip in [side_tips.0, side_tips.1] {
        let hex = tip.to_hex();
        page.wait_js(
            "the tip's row and legend",
            &format!("document.querySelector('.chain-row[data-tip=\"{hex}\"]') && document.querySelector('#tips [data-tip=\"{hex}\"]')"),
        )
        .await
        .unwrap();
    }
    assert_ne!(fa, fb);
    // The history chart has gained points, and its highest line reached group b's height.
    page.wait_js(
        "the history to plot the new heights",
        &format!("(h => h.samples > {samples_before} && Math.max(...h.height.slice(1).flat().filter(v => v !== null)) === 3)(window.powchain.history())"),
    )
    .await
    .unwrap();
    if let Ok(path) = std::env::var("POWCHAIN_SCREENSHOT") {
        page.wait_js("the layout to settle", "window.powchain.settled()")
            .await
            .unwrap();
        page.screenshot(path.as_ref()).await.unwrap();
    }

    // Heal: one link joins the groups; group a reorgs onto b's chain.
    net.client(3).add_peer(&net.addr(4)).await.unwrap();
    net.wait_agree(DEADLINE).await.unwrap();
    page.wait_js(
        "one tip again",
        "document.querySelector('#summary [data-field=tips]')?.textContent === '1'",
    )
    .await
    .unwrap();
    let all: Vec<usize> = (0..8).collect();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let f = fills(&mut page, &net, &all).await;
        if f.iter().all(|x| x == &f[0]) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the joined network never showed one colour: {f:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let reorgs = net.client(0).status().await.unwrap().reorgs;
    assert!(reorgs >= 1, "node 0 left its branch behind: {reorgs}");
    page.wait_js(
        "the reorg in the history",
        "Number(document.querySelector('#stats [data-field=reorgs]')?.textContent) >= 1",
    )
    .await
    .unwrap();
}
