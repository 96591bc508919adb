//! The bearer token of `/sd/*` (`--http-sd-bearer-token-file`): read at start and
//! again on SIGHUP, compared in constant time.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use axum::http::{HeaderMap, header};
use subtle::ConstantTimeEq;

/// Why the token file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read the bearer token file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the bearer token file {path} is empty")]
    Empty { path: PathBuf },
    #[error(
        "the bearer token file {path} holds a space or a character that is not printable ASCII inside the token (one token, on one line)"
    )]
    Invalid { path: PathBuf },
}

/// The token `/sd/*` requires, and the file it comes from.
#[derive(Debug)]
pub struct BearerToken {
    path: PathBuf,
    token: RwLock<Arc<[u8]>>,
}

/// The token in a file: its content without surrounding white space (a trailing
/// newline is usual), which Prometheus also trims from its `credentials_file`.
fn read(path: &Path) -> Result<Arc<[u8]>, TokenError> {
    let bytes = std::fs::read(path).map_err(|source| TokenError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let token = bytes.trim_ascii();
    if token.is_empty() {
        return Err(TokenError::Empty {
            path: path.to_path_buf(),
        });
    }
    if !token.iter().all(u8::is_ascii_graphic) {
        return Err(TokenError::Invalid {
            path: path.to_path_buf(),
        });
    }
    Ok(token.into())
}

impl BearerToken {
    /// Reads the token in `path`.
    pub fn load(path: &Path) -> Result<Self, TokenError> {
        Ok(BearerToken {
            path: path.to_path_buf(),
            token: RwLock::new(read(path)?),
        })
    }

    /// Reads the file again; on error the token in use stays.
    pub fn reload(&self) -> Result<(), TokenError> {
        let token = read(&self.path)?;
        *self.token.write().unwrap_or_else(|e| e.into_inner()) = token;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether `headers` carry `Authorization: Bearer <the token>` (the scheme in any
    /// case). The comparison takes the same time whatever bytes differ; only the
    /// length of the token can be told apart.
    pub fn allows(&self, headers: &HeaderMap) -> bool {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return false;
        };
        let value = value.as_bytes();
        let Some(space) = value.iter().position(|b| *b == b' ') else {
            return false;
        };
        let (scheme, given) = (&value[..space], value[space..].trim_ascii());
        if !scheme.eq_ignore_ascii_case(b"bearer") {
            return false;
        }
        let token = self.token.read().unwrap_or_else(|e| e.into_inner()).clone();
        bool::from(given.ct_eq(&token))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(auth).unwrap());
        h
    }

    #[test]
    fn the_token_is_required_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "s3cr3t-Token_1\n").unwrap();
        let t = BearerToken::load(&path).unwrap();
        assert!(t.allows(&with("Bearer s3cr3t-Token_1")));
        assert!(t.allows(&with("bearer s3cr3t-Token_1")));
        assert!(!t.allows(&HeaderMap::new()));
        assert!(!t.allows(&with("Bearer s3cr3t-Token_2")));
        assert!(!t.allows(&with("Bearer s3cr3t-Token_")));
        assert!(!t.allows(&with("Bearer s3cr3t-Token_11")));
        assert!(!t.allows(&with("Basic s3cr3t-Token_1")));
        assert!(!t.allows(&with("s3cr3t-Token_1")));
        assert!(!t.allows(&with("Bearer")));
    }

    #[test]
    fn reload_takes_the_new_token_and_keeps_the_old_one_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "old").unwrap();
        let t = BearerToken::load(&path).unwrap();
        std::fs::write(&path, "new\n").unwrap();
        t.reload().unwrap();
        assert!(t.allows(&with("Bearer new")) && !t.allows(&with("Bearer old")));
        std::fs::write(&path, "  \n").unwrap();
        assert!(matches!(t.reload(), Err(TokenError::Empty { .. })));
        std::fs::write(&path, "two words").unwrap();
        assert!(matches!(t.reload(), Err(TokenError::Invalid { .. })));
        std::fs::remove_file(&path).unwrap();
        let e = t.reload().unwrap_err();
        assert!(e.to_string().contains("cannot read"), "{e}");
        assert!(t.allows(&with("Bearer new")), "the token in use stays");
    }
}
