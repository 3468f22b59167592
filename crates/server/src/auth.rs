//! Bearer tokens: the admin token written to `<data-dir>/token` on first start, per-user and
//! per-job tokens kept in the store by their SHA-256, and the [`Caller`] every handler but
//! health is given.

use crate::error::ApiError;
use crate::state::AppState;
use adaptsched_store::{DurableJobId, Store, TokenRecord};
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The user the first (admin) token acts for.
pub const ADMIN_USER: &str = "admin";

/// A fresh token: 32 bytes from the kernel's CSPRNG, hex-encoded.
pub fn new_token() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(hex(&bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What the store keeps instead of the token.
pub fn digest(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

/// Returns the admin token, creating `<data-dir>/token` (mode 0600) and registering it on
/// first start. A token file whose token the store does not know (a new database) is
/// registered again, so deleting the database does not lock the admin out.
pub fn ensure_admin_token(store: &dyn Store, data_dir: &Path, at: f64) -> anyhow::Result<String> {
    let path = data_dir.join(adaptsched_api::data_dir::TOKEN_FILE);
    let token = match std::fs::read_to_string(&path) {
        Ok(text) if !text.trim().is_empty() => text.trim().to_string(),
        _ => {
            let token = new_token()?;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)?;
            writeln!(file, "{token}")?;
            file.sync_all()?;
            token
        }
    };
    let key = digest(&token);
    if store.token(&key)?.is_none() {
        store.add_token(
            &key,
            &TokenRecord {
                user: ADMIN_USER.to_string(),
                admin: true,
                job: None,
            },
            at,
        )?;
    }
    Ok(token)
}

/// Who made the request, from its bearer token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub user: String,
    pub admin: bool,
    /// Set when the token is a job's own (from its launch environment).
    pub job: Option<DurableJobId>,
}

impl Caller {
    /// Owners and admins may act on a job (read its logs, cancel it, report its metrics).
    pub fn may_act_on(&self, owner: &str) -> Result<(), ApiError> {
        if self.admin || self.user == owner {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "user {:?} may not act on jobs of user {owner:?}",
                self.user
            )))
        }
    }
}

impl Caller {
    /// Owners and admins may act on a job; a job's own token only on that job.
    pub fn may_act_on_job(&self, job: DurableJobId, owner: &str) -> Result<(), ApiError> {
        if let Some(own) = self.job
            && own != job
        {
            return Err(ApiError::forbidden(format!(
                "the token of job {own} may not act on job {job}"
            )));
        }
        self.may_act_on(owner)
    }

    /// Job tokens only report and read: they cannot submit, cancel or create tokens, so a
    /// leaked launch environment does not give a user's full rights away.
    pub fn not_a_job_token(&self, action: &str) -> Result<(), ApiError> {
        match self.job {
            Some(job) => Err(ApiError::forbidden(format!(
                "the token of job {job} may not {action}"
            ))),
            None => Ok(()),
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer <token>"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|token| !token.is_empty())
            .ok_or_else(|| ApiError::unauthorized("Authorization must be Bearer <token>"))?;
        let key = digest(token);
        let record = state.db(move |store| store.token(&key)).await??;
        let record = record.ok_or_else(|| ApiError::unauthorized("unknown token"))?;
        Ok(Caller {
            user: record.user,
            admin: record.admin,
            job: record.job,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn digests_are_sha256_hex() {
        assert_eq!(
            digest("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let token = new_token().unwrap();
        assert_eq!(token.len(), 64);
        assert_ne!(token, new_token().unwrap());
    }

    #[test]
    fn the_admin_token_is_created_once_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let store = adaptsched_store::SqliteStore::open(dir.path().join("db")).unwrap();
        let first = ensure_admin_token(&store, dir.path(), 1.0).unwrap();
        let second = ensure_admin_token(&store, dir.path(), 2.0).unwrap();
        assert_eq!(first, second);
        let mode = std::fs::metadata(dir.path().join("token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let record = store.token(&digest(&first)).unwrap().unwrap();
        assert!(record.admin);
        assert_eq!(record.user, ADMIN_USER);
    }
}
