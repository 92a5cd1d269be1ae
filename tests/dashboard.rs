//! The dashboard in a real headless Chromium, driven over the DevTools protocol: nodes with
//! their heights, mining from the page, the block reaching every node, a node shut down.
//! Without a Chromium on the machine these tests are compiled as ignored (see build.rs).

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use futures::{SinkExt, StreamExt};
use powchain_testkit::{Error, Options, TestNetwork, wait_for};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A headless Chromium with one page, and a DevTools connection to that page.
struct Browser {
    _child: tokio::process::Child,
    _profile: tempfile::TempDir,
    ws: Socket,
    next_id: u64,
}

fn chromium() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| {
        ["chromium", "chromium-browser", "google-chrome"]
            .into_iter()
            .find(|c| {
                std::process::Command::new(c)
                    .arg("--version")
                    .output()
                    .is_ok_and(|o| o.status.success())
            })
            .unwrap_or("chromium")
            .to_owned()
    })
}

impl Browser {
    async fn open(url: &str) -> Result<Browser, Error> {
        let profile = tempfile::tempdir()?;
        let child = tokio::process::Command::new(chromium())
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--window-size=1400,1000",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        // Chromium writes the port it chose into the profile.
        let port_file = profile.path().join("DevToolsActivePort");
        let port: u16 = wait_for(DEADLINE, "Chromium's DevTools port", || async {
            std::fs::read_to_string(&port_file)
                .ok()?
                .lines()
                .next()?
                .trim()
                .parse()
                .ok()
        })
        .await?;
        let http = reqwest::Client::new();
        let ws_url = wait_for(DEADLINE, "the page target", || async {
            let targets: Value = http
                .get(format!("http://127.0.0.1:{port}/json/list"))
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            targets.as_array()?.iter().find(|t| t["type"] == "page")?["webSocketDebuggerUrl"]
                .as_str()
                .map(str::to_owned)
        })
        .await?;
        let (ws, _) = tokio_tungstenite::connect_async(ws_url.as_str()).await?;
        Ok(Browser {
            _child: child,
            _profile: profile,
            ws,
            next_id: 1,
        })
    }

    /// Sends one DevTools command and returns its result.
    async fn call(&mut self, method: &str, params: Value) -> Result<Value, Error> {
        let id = self.next_id;
        self.next_id += 1;
        let msg = json!({ "id": id, "method": method, "params": params }).to_string();
        self.ws.send(Message::Text(msg.into())).await?;
        loop {
            let frame = tokio::time::timeout(DEADLINE, self.ws.next())
                .await?
                .ok_or("DevTools closed")??;
            let Message::Text(text) = frame else { continue };
            let v: Value = serde_json::from_str(&text)?;
            if v["id"] == id {
                if let Some(e) = v.get("error") {
                    return Err(format!("{method} failed: {e}").into());
                }
                return Ok(v["result"].clone());
            }
        }
    }

    /// Evaluates JavaScript in the page and returns its value.
    async fn eval(&mut self, js: &str) -> Result<Value, Error> {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": js, "returnByValue": true, "awaitPromise": true }),
            )
            .await?;
        if let Some(e) = r.get("exceptionDetails") {
            return Err(format!("script failed: {e}").into());
        }
        Ok(r["result"]["value"].clone())
    }

    /// Polls `js` until it returns something truthy (not null/false/""), or fails.
    async fn wait_js(&mut self, what: &str, js: &str) -> Result<Value, Error> {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let v = self.eval(js).await?;
            if !(v.is_null() || v == json!(false) || v == json!("")) {
                return Ok(v);
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!("timed out waiting for {what}").into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

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
    page.wait_js(
        "the new block on every node's chain",
        &format!("[...document.querySelectorAll('.chain-row')].length === 3 && [...document.querySelectorAll('.chain-row')].every(r => r.querySelector('.block:last-child')?.dataset.hash === '{tip}')"),
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
        let shot = page
            .call("Page.captureScreenshot", json!({ "format": "png" }))
            .await
            .unwrap();
        use base64::Engine;
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        std::fs::write(path, png).unwrap();
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
