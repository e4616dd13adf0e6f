//! The users' SCRAM credentials, kept in `<data-dir>/sluice-security.json`
//! (mode 0600; written to a temporary file, synced, renamed, directory
//! synced). Shard 0 owns the copy that changes; every shard holds an
//! immutable `Arc` of the last one, as with the topic metadata.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::scram::{Credential, Mechanism};

/// The file under the data directory.
pub const SECURITY_FILE: &str = "sluice-security.json";

/// Longest user name accepted (Kafka has none; a bound keeps the file and
/// the answers listing users bounded per entry).
pub const USER_NAME_BYTES_MAX: usize = 256;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Security {
    /// Credentials by user and mechanism.
    #[serde(default)]
    pub users: BTreeMap<String, BTreeMap<Mechanism, Credential>>,
    #[serde(default)]
    pub acls: Vec<super::acl::Acl>,
}

impl Security {
    pub fn credential(&self, user: &str, mech: Mechanism) -> Option<Credential> {
        self.users.get(user)?.get(&mech).cloned()
    }

    /// Sets (or replaces) a user's credential for one mechanism.
    pub fn upsert(&mut self, user: &str, mech: Mechanism, cred: Credential) -> Result<(), String> {
        check_user_name(user)?;
        self.users
            .entry(user.to_string())
            .or_default()
            .insert(mech, cred);
        Ok(())
    }

    /// Removes a user's credential for one mechanism; false if there was
    /// none.
    pub fn remove(&mut self, user: &str, mech: Mechanism) -> bool {
        let Some(creds) = self.users.get_mut(user) else {
            return false;
        };
        let had = creds.remove(&mech).is_some();
        if creds.is_empty() {
            self.users.remove(user);
        }
        had
    }
}

impl Security {
    /// Adds an ACL (one already there is left as it is).
    pub fn add_acl(&mut self, a: super::acl::Acl) -> Result<(), String> {
        a.check()?;
        if !self.acls.contains(&a) {
            if self.acls.len() >= ACLS_MAX {
                return Err(format!("the broker holds {ACLS_MAX} ACLs, its limit"));
            }
            self.acls.push(a);
        }
        Ok(())
    }

    /// Removes the ACLs `f` matches; returns them.
    pub fn remove_acls(&mut self, f: &super::acl::Filter) -> Vec<super::acl::Acl> {
        let (gone, kept) = std::mem::take(&mut self.acls)
            .into_iter()
            .partition(|a| f.matches(a));
        self.acls = kept;
        gone
    }
}

/// ACLs a broker holds at most (each request on a secured listener is
/// checked against them).
pub const ACLS_MAX: usize = 10_000;

/// A user name SCRAM can carry: not empty, bounded, no control
/// characters.
pub fn check_user_name(user: &str) -> Result<(), String> {
    if user.is_empty() {
        return Err("a user name cannot be empty".into());
    }
    if user.len() > USER_NAME_BYTES_MAX {
        return Err(format!(
            "a user name is at most {USER_NAME_BYTES_MAX} bytes"
        ));
    }
    if user.chars().any(char::is_control) {
        return Err("a user name cannot hold control characters".into());
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("security file {0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("security file {0} is damaged: {1}")]
    Parse(PathBuf, String),
    #[error(
        "data directory {0} is in use by a running broker (stop it, or change users through it \
         with --bootstrap)"
    )]
    Locked(PathBuf),
}

/// The stored users (none when there is no file yet).
pub fn load(data_dir: &Path) -> Result<Security, StoreError> {
    let path = data_dir.join(SECURITY_FILE);
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| StoreError::Parse(path, e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Security::default()),
        Err(e) => Err(StoreError::Io(path, e)),
    }
}

/// Stores durably: a crash leaves the old file or the new one. Blocking:
/// run it off the shard threads.
pub fn store(data_dir: &Path, s: &Security) -> Result<(), StoreError> {
    let body = serde_json::to_vec_pretty(s).expect("security state serializes");
    crate::metadata::replace_file(data_dir, SECURITY_FILE, &body, 0o600)
        .map_err(|e| StoreError::Io(data_dir.join(SECURITY_FILE), e))
}

/// The lock file under the data directory: held by a running broker,
/// and by `sluice user --data-dir` while it changes the file.
pub const LOCK_FILE: &str = ".lock";

/// Takes the data directory's lock (released when the file is dropped),
/// or says a broker holds it.
pub fn lock_data_dir(data_dir: &Path) -> Result<std::fs::File, StoreError> {
    use std::os::fd::AsRawFd;
    let path = data_dir.join(LOCK_FILE);
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StoreError::Io(path.clone(), e))?;
    // SAFETY: flock on a descriptor this function owns.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(if e.kind() == std::io::ErrorKind::WouldBlock {
            StoreError::Locked(data_dir.to_path_buf())
        } else {
            StoreError::Io(path, e)
        });
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_survive_a_store_and_never_hold_the_password() {
        let dir = crate::test_support::tempdir("security-");
        assert_eq!(load(dir.path()).unwrap(), Security::default());
        let mut s = Security::default();
        let cred = Credential::new(Mechanism::Sha512, "hunter2-password", 4096);
        s.upsert("alice", Mechanism::Sha512, cred.clone()).unwrap();
        store(dir.path(), &s).unwrap();
        let text = std::fs::read_to_string(dir.path().join(SECURITY_FILE)).unwrap();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("SCRAM-SHA-512"), "{text}");
        let back = load(dir.path()).unwrap();
        assert_eq!(back, s);
        assert!(back
            .credential("alice", Mechanism::Sha512)
            .unwrap()
            .matches(Mechanism::Sha512, "hunter2-password"));
        assert!(back.credential("alice", Mechanism::Sha256).is_none());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(SECURITY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        let mut s = back;
        assert!(s.remove("alice", Mechanism::Sha512));
        assert!(!s.remove("alice", Mechanism::Sha512));
        assert!(s.users.is_empty());
        assert!(s.upsert("", Mechanism::Sha256, cred.clone()).is_err());
        assert!(s.upsert("a\nb", Mechanism::Sha256, cred).is_err());

        let held = lock_data_dir(dir.path()).unwrap();
        assert!(matches!(
            lock_data_dir(dir.path()),
            Err(StoreError::Locked(_))
        ));
        drop(held);
        assert!(lock_data_dir(dir.path()).is_ok());

        std::fs::write(dir.path().join(SECURITY_FILE), b"{\"users\": 3}").unwrap();
        let e = load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("damaged"), "{e}");
    }
}
