//! Where powchain keeps its files: `$POWCHAIN_HOME`, or `~/.powchain`.

use std::path::PathBuf;

/// Returns the powchain home: `$POWCHAIN_HOME`, else `~/.powchain`.
pub fn home() -> PathBuf {
    if let Some(h) = std::env::var_os("POWCHAIN_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    let user = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    user.join(".powchain")
}

/// Returns the default data directory of the node on `port`.
pub fn node_dir(port: u16) -> PathBuf {
    node_dir_in(&home(), port)
}

/// Returns the data directory of the node on `port` under the powchain home `home`.
pub fn node_dir_in(home: &std::path::Path, port: u16) -> PathBuf {
    home.join("nodes").join(port.to_string())
}
