//! Where powchain keeps its files: `$POWCHAIN_HOME` (or `~/.powchain`), and in it a data
//! directory per node and network, so that networks of other rules never meet one another's
//! stores:
//!
//! ```text
//! $POWCHAIN_HOME/nodes.json                 the registry of running nodes (all networks)
//! $POWCHAIN_HOME/nodes/<port>/              the default network (difficulty 16, no retarget)
//! $POWCHAIN_HOME/networks/d8/nodes/<port>/  difficulty 8
//! $POWCHAIN_HOME/networks/d12-r10x5/nodes/<port>/   difficulty 12, retarget every 10 blocks to 5 s
//! ```

use std::path::{Path, PathBuf};

use crate::params::{ChainParams, DEFAULT_DIFFICULTY};

/// Returns the powchain home: `$POWCHAIN_HOME`, else `~/.powchain`.
pub fn home() -> PathBuf {
    if let Some(h) = std::env::var_os("POWCHAIN_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    let user = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    user.join(".powchain")
}

/// Returns the data directory of the node on `port` of the default network under `home`.
pub fn node_dir_in(home: &Path, port: u16) -> PathBuf {
    home.join("nodes").join(port.to_string())
}

/// Returns the name of the network `params` define, `None` for the default network
/// (whose nodes keep the top-level `nodes/` directory, as before networks had their own).
pub(crate) fn network_name(params: &ChainParams) -> Option<String> {
    match (params.difficulty, params.retarget) {
        (DEFAULT_DIFFICULTY, None) => None,
        (d, None) => Some(format!("d{d}")),
        (d, Some(r)) => Some(format!("d{d}-r{}x{}", r.interval, r.target_secs)),
    }
}

/// Returns the data directory of the node on `port` of the network `params` define.
pub(crate) fn node_dir_for(home: &Path, params: &ChainParams, port: u16) -> PathBuf {
    match network_name(params) {
        None => node_dir_in(home, port),
        Some(name) => home
            .join("networks")
            .join(name)
            .join("nodes")
            .join(port.to_string()),
    }
}

/// Returns every data directory under `home` of a node on `port`, whatever its network:
/// the default network's first. (Admin tools try each one's cookie.)
pub fn node_dirs(home: &Path, port: u16) -> Vec<PathBuf> {
    let mut dirs = vec![node_dir_in(home, port)];
    if let Ok(networks) = std::fs::read_dir(home.join("networks")) {
        let mut more: Vec<PathBuf> = networks
            .filter_map(Result::ok)
            .map(|n| n.path().join("nodes").join(port.to_string()))
            .collect();
        more.sort();
        dirs.extend(more);
    }
    dirs.retain(|d| d.is_dir());
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::Retarget;

    /// The default network keeps the old layout; others get a directory named by their rules.
    #[test]
    fn each_network_has_its_own_directory() {
        let home = Path::new("/h");
        let default = ChainParams::with_difficulty(DEFAULT_DIFFICULTY);
        assert_eq!(
            node_dir_for(home, &default, 5001),
            Path::new("/h/nodes/5001")
        );
        let easy = ChainParams::with_difficulty(8);
        assert_eq!(
            node_dir_for(home, &easy, 5001),
            Path::new("/h/networks/d8/nodes/5001")
        );
        let retarget = ChainParams {
            retarget: Some(Retarget {
                interval: 10,
                target_secs: 5,
            }),
            ..default
        };
        assert_eq!(
            node_dir_for(home, &retarget, 5001),
            Path::new("/h/networks/d16-r10x5/nodes/5001")
        );
    }
}
