//! `Admin`: the node's cookie and the check of admin requests (`add_peer`, `remove_peer`,
//! `shutdown`) against it: the cookie itself, or a proof of it for a challenge.

use std::path::Path;

use super::shared::NodeError;

/// The cookie, written to `<data-dir>/.cookie` (mode 0600) at start.
pub(super) struct Admin {
    cookie: String,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Admin { .. }")
    }
}

impl Admin {
    /// Writes a new random cookie into `dir` (blocking: a file).
    pub(super) fn write(dir: &Path) -> Result<Self, NodeError> {
        use rand::Rng;
        let err = |source| NodeError::DataDir {
            path: dir.to_path_buf(),
            source,
        };
        let bytes: [u8; 32] = rand::rng().random();
        let cookie = hex::encode(bytes);
        let path = dir.join(crate::client::COOKIE_FILE);
        let tmp = dir.join(".cookie.tmp");
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp).map_err(err)?;
        std::io::Write::write_all(&mut file, cookie.as_bytes()).map_err(err)?;
        std::fs::rename(&tmp, &path).map_err(err)?;
        Ok(Admin { cookie })
    }

    /// Returns a fresh challenge nonce (64 hex digits).
    pub(super) fn challenge() -> String {
        use rand::Rng;
        hex::encode(rand::rng().random::<[u8; 32]>())
    }

    /// Tells whether an admin request of type `kind` is authorized: it carries the cookie,
    /// or the proof of it for `nonce`, the challenge its connection was given last.
    pub(super) fn authorizes(
        &self,
        kind: &str,
        cookie: Option<&str>,
        proof: Option<&str>,
        nonce: Option<&str>,
    ) -> bool {
        match (cookie, proof, nonce) {
            (Some(c), _, _) => constant_time_eq(c.as_bytes(), self.cookie.as_bytes()),
            (None, Some(p), Some(nonce)) => {
                let want = crate::message::admin_proof(&self.cookie, nonce, kind);
                constant_time_eq(p.as_bytes(), want.as_bytes())
            }
            _ => false,
        }
    }

    /// The cookie, for tests in this crate.
    #[cfg(test)]
    pub(super) fn cookie(&self) -> &str {
        &self.cookie
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
