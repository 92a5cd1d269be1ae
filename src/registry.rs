//! The shared list of running nodes: `$POWCHAIN_HOME/nodes.json`, the original's
//! `{"<port>": "<host>"}` map, changed only under a file lock and rewritten atomically.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

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

    fn read(&self) -> BTreeMap<String, String> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(
                    "registry {} is not a JSON map ({e}); starting it afresh",
                    self.path.display()
                );
                BTreeMap::new()
            }),
            Err(_) => BTreeMap::new(),
        }
    }

    /// Runs `change` on the map under an exclusive lock; writes it back if it changed.
    fn update<T>(&self, change: impl FnOnce(&mut BTreeMap<String, String>) -> T) -> io::Result<T> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let lock_path = self.path.with_extension("json.lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)?;
        lock.lock()?;
        let before = self.read();
        let mut map = before.clone();
        let out = change(&mut map);
        if map != before {
            let tmp = self
                .path
                .with_extension(format!("json.{}.tmp", std::process::id()));
            let mut file = File::create(&tmp)?;
            serde_json::to_writer_pretty(&mut file, &map)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
        }
        lock.unlock()?;
        Ok(out)
    }

    /// Lists the running nodes as (port, host).
    pub fn entries(&self) -> io::Result<Vec<(u16, String)>> {
        self.update(|m| {
            m.iter()
                .filter_map(|(p, h)| Some((p.parse().ok()?, h.clone())))
                .collect()
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
    pub fn remove_if(&self, port: u16, host: &str) -> io::Result<bool> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
