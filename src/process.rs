//! Starting our own binaries: spawn a child that prints `listening on ADDR` on stdout once
//! it serves, and wait for that line. Used by the probe's `--spawn`, the test harness, the
//! integration tests and the benchmarks alike.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

pub use rustix::process::Signal;

/// Asks a child to stop with SIGTERM (as Ctrl-C or a service manager would), without
/// `unsafe`: a child that has exited already (no pid) is left alone.
pub fn terminate(child: &Child) -> std::io::Result<()> {
    signal(child, Signal::TERM)
}

/// Sends `signal` to a child we spawned and have not reaped.
pub fn signal(child: &Child, signal: Signal) -> std::io::Result<()> {
    let Some(pid) = child
        .id()
        .and_then(|p| rustix::process::Pid::from_raw(p as i32))
    else {
        return Ok(());
    };
    rustix::process::kill_process(pid, signal).map_err(std::io::Error::from)
}

/// What a node or probe prints, followed by its address, once it serves.
pub(crate) const LISTENING: &str = "listening on ";

/// A started child that announced its address.
#[derive(Debug)]
pub struct Announced {
    /// The process (killed when dropped).
    pub child: Child,
    /// The address it announced (`host:port`, or `http://host:port` for the probe).
    pub addr: String,
    /// The rest of its stdout, line by line.
    pub lines: Lines<BufReader<ChildStdout>>,
}

/// Why a child did not announce an address.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// It could not be started.
    #[error("could not start {program}: {source}")]
    Start {
        program: String,
        source: std::io::Error,
    },
    /// It exited (or closed stdout) before announcing an address.
    #[error("{program} exited before listening (see its log)")]
    Exited { program: String },
    /// It announced nothing in time.
    #[error("{program} did not print its address within {secs} s")]
    Timeout { program: String, secs: u64 },
    /// Its first line was something else.
    #[error("{program} printed {line:?} instead of its address")]
    Unexpected { program: String, line: String },
}

/// Spawns `command` with stdout piped and `kill_on_drop`, and waits up to `timeout` for
/// its `listening on ADDR` line.
pub async fn spawn_announced(
    command: &mut Command,
    timeout: Duration,
) -> Result<Announced, SpawnError> {
    let program = command
        .as_std()
        .get_program()
        .to_string_lossy()
        .into_owned();
    let mut child = command
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| SpawnError::Start {
            program: program.clone(),
            source,
        })?;
    let Some(stdout) = child.stdout.take() else {
        return Err(SpawnError::Exited { program });
    };
    let mut lines = BufReader::new(stdout).lines();
    let line = match tokio::time::timeout(timeout, lines.next_line()).await {
        Err(_) => {
            return Err(SpawnError::Timeout {
                program,
                secs: timeout.as_secs(),
            });
        }
        Ok(Ok(Some(line))) => line,
        Ok(_) => return Err(SpawnError::Exited { program }),
    };
    match line.strip_prefix(LISTENING) {
        Some(addr) => Ok(Announced {
            child,
            addr: addr.trim().to_owned(),
            lines,
        }),
        None => Err(SpawnError::Unexpected { program, line }),
    }
}
