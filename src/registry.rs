//! The shared list of running nodes: `$POWCHAIN_HOME/nodes.json`, the original's
//! `{"<port>": "<host>"}` map, changed only under a file lock and rewritten atomically.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The registry file of a powchain home.
#[derive(Debug, Clone)]
pub struct Registry {
    path: PathBuf,
}

impl Registry {
    /// Returns the registry stored at `path`.
    pub fn new(path: PathBuf) -> Self {
        Registry { path }
    }

    /// Returns the registry of the home directory `home`.
    pub fn in_home(home: &Path) -> Self {
        Registry::new(home.join("nodes.json"))
    }

    /// Returns the file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the map. A missing file is an empty map, and so is one that is not JSON (it
    /// is rewritten at the next change); a path that is not a regular file (a FIFO, a
    /// device, a symlink to one) or a file over [`MAX_BYTES`] is an error, and is never
    /// waited on or read whole.
    fn read(&self) -> io::Result<BTreeMap<String, String>> {
        let file = match open_regular(&self.path, OpenOptions::new().read(true)) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(e) => return Err(e),
        };
        let mut bytes = Vec::new();
        file.take(MAX_BYTES + 1).read_to_end(&mut bytes)?;
        if bytes.len() as u64 > MAX_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} is over the registry's {MAX_BYTES} byte cap; remove it",
                    self.path.display()
                ),
            ));
        }
        Ok(serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::warn!(
                "registry {} is not a JSON map ({e}); starting it afresh",
                self.path.display()
            );
            BTreeMap::new()
        }))
    }

    /// Runs `change` on the map under an exclusive lock (given up after [`LOCK_WAIT`]);
    /// writes it back if it changed.
    fn update<T>(&self, change: impl FnOnce(&mut BTreeMap<String, String>) -> T) -> io::Result<T> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let lock_path = self.path.with_extension("json.lock");
        let lock = open_regular(
            &lock_path,
            OpenOptions::new().create(true).truncate(false).write(true),
        )?;
        lock_within(&lock, &lock_path, LOCK_WAIT)?;
        let before = self.read()?;
        let mut map = before.clone();
        let out = change(&mut map);
        if map != before {
            let tmp = self
                .path
                .with_extension(format!("json.{}.tmp", std::process::id()));
            // Made afresh (never through a link or a FIFO left at that name).
            let _ = std::fs::remove_file(&tmp);
            let mut file = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            serde_json::to_writer_pretty(&mut file, &map)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
        }
        lock.unlock()?;
        Ok(out)
    }

    /// Lists the running nodes as (port, host): each port once (`"5001"` and `"05001"` are
    /// one port), at most [`MAX_ENTRIES`].
    pub fn entries(&self) -> io::Result<Vec<(u16, String)>> {
        self.update(|m| {
            let mut ports = BTreeMap::new();
            for (p, h) in m.iter() {
                if ports.len() >= MAX_ENTRIES {
                    break;
                }
                if let Ok(port) = p.parse::<u16>()
                    && port != 0
                    && h.len() <= MAX_HOST
                {
                    ports.entry(port).or_insert_with(|| h.clone());
                }
            }
            ports.into_iter().collect()
        })
    }

    /// Adds (or updates) a node.
    pub fn add(&self, port: u16, host: &str) -> io::Result<()> {
        self.update(|m| {
            m.insert(port.to_string(), host.to_owned());
        })
    }

    /// Removes a node; true if it was listed.
    pub fn remove(&self, port: u16) -> io::Result<bool> {
        self.update(|m| m.remove(&port.to_string()).is_some())
    }

    /// Removes a node only if it is listed with `host`; true if it was.
    pub(crate) fn remove_if(&self, port: u16, host: &str) -> io::Result<bool> {
        self.update(|m| {
            let key = port.to_string();
            if m.get(&key)
                .is_some_and(|h| h == host || (h == "localhost" && host == "127.0.0.1"))
            {
                m.remove(&key);
                true
            } else {
                false
            }
        })
    }
}

/// Largest registry file read (1,024 entries take about 30 KiB).
pub(crate) const MAX_BYTES: u64 = 1 << 20;
/// Most entries listed: a registry of more is not this machine's nodes.
pub const MAX_ENTRIES: usize = 1024;
/// Longest host name kept from an entry.
const MAX_HOST: usize = 255;
/// Longest wait for the registry's lock: a process that holds it longer is not a node
/// updating it.
pub(crate) const LOCK_WAIT: Duration = Duration::from_secs(2);

/// Opens `path` with `options` without waiting (a FIFO opens at once, and is refused), and
/// checks that it is a regular file.
fn open_regular(path: &Path, options: &mut OpenOptions) -> io::Result<File> {
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(
        options,
        rustix::fs::OFlags::NONBLOCK.bits() as i32,
    );
    let file = options.open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a regular file; remove it", path.display()),
        ));
    }
    Ok(file)
}

/// Takes the exclusive lock on `file`, or fails after `wait`.
fn lock_within(file: &File, path: &Path, wait: Duration) -> io::Result<()> {
    let deadline = std::time::Instant::now() + wait;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(()),
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "{} stayed locked for {} ms; is a process stuck holding it?",
                        path.display(),
                        wait.as_millis()
                    ),
                ));
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileTypeExt;

    /// Many writers at once all end up listed, and removal works.
    #[test]
    fn concurrent_adds_all_land() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::in_home(dir.path());
        std::thread::scope(|s| {
            for port in 5001..5017u16 {
                let reg = reg.clone();
                s.spawn(move || reg.add(port, "127.0.0.1").unwrap());
            }
        });
        assert_eq!(reg.entries().unwrap().len(), 16);
        assert!(reg.remove(5001).unwrap());
        assert!(!reg.remove(5001).unwrap());
        let text = std::fs::read_to_string(reg.path()).unwrap();
        let map: BTreeMap<String, String> = serde_json::from_str(&text).unwrap();
        assert_eq!(map.get("5002").map(String::as_str), Some("127.0.0.1"));
    }

    /// A FIFO, a device or an oversized file at the registry's path is an error at once:
    /// never waited on, never read whole, never replaced.
    #[test]
    fn a_registry_that_is_not_a_small_regular_file_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::in_home(dir.path());
        rustix::fs::mknodat(
            rustix::fs::CWD,
            reg.path(),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let err = reg.entries().unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        assert!(reg.add(5001, "127.0.0.1").is_err());
        assert!(std::fs::metadata(reg.path()).unwrap().file_type().is_fifo());

        std::fs::remove_file(reg.path()).unwrap();
        std::os::unix::fs::symlink("/dev/zero", reg.path()).unwrap();
        let err = reg.entries().unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");

        std::fs::remove_file(reg.path()).unwrap();
        std::fs::write(reg.path(), vec![b' '; MAX_BYTES as usize + 1]).unwrap();
        let err = reg.entries().unwrap_err();
        assert!(err.to_string().contains("byte cap"), "{err}");
    }

    /// Keys naming one port (`"5001"`, `"05001"`) are one entry; port 0 and non-ports are
    /// skipped; at most `MAX_ENTRIES` are listed.
    #[test]
    fn entries_are_deduplicated_by_port_and_capped() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::in_home(dir.path());
        let mut map = BTreeMap::new();
        for zeros in 0..200 {
            map.insert(format!("{}5001", "0".repeat(zeros)), "127.0.0.1".to_owned());
        }
        map.insert("0".into(), "127.0.0.1".into());
        map.insert("x".into(), "127.0.0.1".into());
        for port in 10_000..12_000u16 {
            map.insert(port.to_string(), "127.0.0.1".to_owned());
        }
        std::fs::write(reg.path(), serde_json::to_vec(&map).unwrap()).unwrap();
        let entries = reg.entries().unwrap();
        assert_eq!(entries.len(), MAX_ENTRIES);
        assert_eq!(entries.iter().filter(|(p, _)| *p == 5001).count(), 1);
        assert!(entries.iter().all(|(p, _)| *p != 0));
    }

    /// A lock held by another process makes a change fail after `LOCK_WAIT`, not hang.
    #[test]
    fn a_lock_held_elsewhere_is_waited_on_for_a_bounded_time() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Registry::in_home(dir.path());
        let lock = File::create(reg.path().with_extension("json.lock")).unwrap();
        lock.lock().unwrap();
        let err = reg.add(5001, "127.0.0.1").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        lock.unlock().unwrap();
        reg.add(5001, "127.0.0.1").unwrap();
    }
}
