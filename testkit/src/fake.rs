//! Fake peers for hostile and protocol tests: a listener on a free loopback port that
//! answers every frame of every connection with what the test's closure says, so that a
//! test writes only what its peer does differently from a node.
//!
//! ```no_run
//! # async fn demo() {
//! use powchain::message::{Request, Response};
//! use powchain_testkit::fake::{FakePeer, Answer, hello};
//! let peer = FakePeer::bind().await;
//! let greeting = hello(3, &peer.addr);
//! let addr = peer.serve(move |frame| match serde_json::from_slice::<Request>(frame) {
//!     Ok(Request::Hello(_)) => Answer::json(&Response::Hello(greeting.clone())),
//!     _ => Answer::json(&Response::Ok),
//! });
//! # let _ = addr;
//! # }
//! ```

use futures::{SinkExt, StreamExt};
use powchain::ChainParams;
use powchain::frame::FrameCodec;
use powchain::message::{Hello, Request, Response};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Framed;

/// What a fake peer does with one frame.
#[derive(Debug, Clone)]
pub enum Answer {
    /// Sends this payload as one frame.
    Frame(Vec<u8>),
    /// Writes these bytes as they are (no frame header): for replies that are no frame.
    Raw(Vec<u8>),
    /// Never answers: keeps the connection open and reads nothing more.
    Stall,
    /// Closes the connection.
    Close,
}

impl Answer {
    /// A frame of `value`'s JSON.
    pub fn json<T: serde::Serialize>(value: &T) -> Answer {
        Answer::Frame(serde_json::to_vec(value).expect("a reply serializes"))
    }
}

/// A bound fake peer, not yet answering.
pub struct FakePeer {
    listener: TcpListener,
    /// `127.0.0.1:PORT`, where it listens.
    pub addr: String,
}

impl FakePeer {
    /// Binds a free loopback port.
    pub async fn bind() -> FakePeer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free loopback port");
        let addr = listener.local_addr().expect("bound").to_string();
        FakePeer { listener, addr }
    }

    /// Answers every frame of every connection with `answer` until the test ends; returns
    /// the address.
    pub fn serve<F>(self, answer: F) -> String
    where
        F: Fn(&[u8]) -> Answer + Send + Sync + 'static,
    {
        let answer = std::sync::Arc::new(answer);
        let listener = self.listener;
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let answer = answer.clone();
                tokio::spawn(async move {
                    let mut conn = Framed::new(stream, FrameCodec::default());
                    while let Some(Ok(frame)) = conn.next().await {
                        match answer(&frame) {
                            Answer::Frame(reply) => {
                                if conn.send(reply).await.is_err() {
                                    return;
                                }
                            }
                            Answer::Raw(bytes) => {
                                use tokio::io::AsyncWriteExt;
                                let stream = conn.get_mut();
                                if stream.write_all(&bytes).await.is_err() {
                                    return;
                                }
                            }
                            Answer::Stall => {
                                std::future::pending::<()>().await;
                            }
                            Answer::Close => return,
                        }
                    }
                });
            }
        });
        self.addr
    }
}

/// A `hello` of protocol `version` on the difficulty-8 network (the testkit's), listening
/// at `listen`, at genesis with no work (so that a node does not sync with it).
pub fn hello(version: u32, listen: &str) -> Hello {
    let genesis = ChainParams::with_difficulty(8).genesis().hash;
    Hello {
        version,
        genesis,
        listen: listen.to_owned(),
        height: 0,
        tip: genesis,
        work: "0".into(),
    }
}

/// Sends `request` on `conn` and reads the reply, within `timeout`; panics on a closed
/// connection, a late reply or one that does not parse (the test's failure).
pub async fn call(
    conn: &mut Framed<TcpStream, FrameCodec>,
    request: &Request,
    timeout: std::time::Duration,
) -> Response {
    let reply = call_raw(
        conn,
        serde_json::to_vec(request).expect("serializes"),
        timeout,
    )
    .await;
    serde_json::from_slice(&reply).expect("a reply that parses")
}

/// Sends `payload` as one frame on `conn` and returns the reply frame's payload.
pub async fn call_raw(
    conn: &mut Framed<TcpStream, FrameCodec>,
    payload: Vec<u8>,
    timeout: std::time::Duration,
) -> Vec<u8> {
    conn.send(payload).await.expect("the request is sent");
    tokio::time::timeout(timeout, conn.next())
        .await
        .expect("a reply in time")
        .expect("the connection stays open")
        .expect("a frame")
        .to_vec()
}
