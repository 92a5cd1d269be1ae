//! A headless Chromium driven over the DevTools protocol, for the dashboard's browser tests
//! and benchmarks: open a page, evaluate JavaScript in it, wait for a condition, take a
//! screenshot.

use std::process::Stdio;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::{Error, wait_for};

/// How long the browser gets to start, and a page condition to hold.
pub const PAGE_DEADLINE: Duration = Duration::from_secs(30);

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A headless Chromium with one page, and a DevTools connection to that page.
pub struct Browser {
    _child: tokio::process::Child,
    _profile: tempfile::TempDir,
    ws: Socket,
    next_id: u64,
}

/// The names a Chromium is looked for by, in order.
pub const CHROMIUM_NAMES: &[&str] = include!("chromium_names.rs");

/// The Chromium to run: `$CHROMIUM`, else the first of [`CHROMIUM_NAMES`] that runs.
pub fn chromium() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| {
        CHROMIUM_NAMES
            .iter()
            .copied()
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
    /// Starts a headless Chromium with a 1400×1000 window on `url`.
    pub async fn open(url: &str) -> Result<Browser, Error> {
        Self::open_sized(url, 1400, 1000).await
    }

    /// Starts a headless Chromium with a `width`×`height` window on `url`, with a fresh
    /// profile and no background networking (this machine's network is closed).
    pub async fn open_sized(url: &str, width: u32, height: u32) -> Result<Browser, Error> {
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
                "--remote-debugging-port=0",
            ])
            .arg(format!("--window-size={width},{height}"))
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        // Chromium writes the port it chose into the profile.
        let port_file = profile.path().join("DevToolsActivePort");
        let port: u16 = wait_for(PAGE_DEADLINE, "Chromium's DevTools port", || async {
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
        let ws_url = wait_for(PAGE_DEADLINE, "the page target", || async {
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
    pub async fn call(&mut self, method: &str, params: Value) -> Result<Value, Error> {
        let id = self.next_id;
        self.next_id += 1;
        let msg = json!({ "id": id, "method": method, "params": params }).to_string();
        self.ws.send(Message::Text(msg.into())).await?;
        loop {
            let frame = tokio::time::timeout(PAGE_DEADLINE, self.ws.next())
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
    pub async fn eval(&mut self, js: &str) -> Result<Value, Error> {
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
    pub async fn wait_js(&mut self, what: &str, js: &str) -> Result<Value, Error> {
        let deadline = tokio::time::Instant::now() + PAGE_DEADLINE;
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

    /// Saves a PNG of the page as it is now to `path`.
    pub async fn screenshot(&mut self, path: &std::path::Path) -> Result<(), Error> {
        use base64::Engine;
        let shot = self
            .call("Page.captureScreenshot", json!({ "format": "png" }))
            .await?;
        let data = shot["data"].as_str().ok_or("no screenshot data")?;
        let png = base64::engine::general_purpose::STANDARD.decode(data)?;
        std::fs::write(path, png)?;
        Ok(())
    }
}
