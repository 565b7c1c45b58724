//! Per-client tokens without a token table: a client's token is `HMAC-SHA256(secret, client id)`, so the
//! server keeps one secret, can issue any client its token, and checks a presented token in constant time.

use crate::NetError;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::path::Path;

type HmacSha256 = Hmac<Sha256>;

/// The server's token authority.
#[derive(Clone)]
pub struct Tokens {
    secret: Vec<u8>,
}

const MIN_SECRET: usize = 16;

/// A problem with the secret file, named by its field and path once.
fn secret_file(path: &Path, detail: impl std::fmt::Display) -> NetError {
    NetError::setup("serve.secret_file", format!("{}: {detail}", path.display()))
}

impl Tokens {
    pub fn new(secret: Vec<u8>) -> Result<Self, NetError> {
        Self::checked(secret).map_err(|problem| NetError::setup("serve.secret_file", problem))
    }

    /// The one check of a secret, its problem in words for the caller to place.
    fn checked(secret: Vec<u8>) -> Result<Self, String> {
        if secret.len() < MIN_SECRET {
            return Err(format!("the secret needs at least {MIN_SECRET} bytes"));
        }
        Ok(Tokens { secret })
    }

    /// Reads the secret (surrounding whitespace ignored).
    pub fn from_file(path: &Path) -> Result<Self, NetError> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path).map_err(|e| secret_file(path, e))?.permissions().mode();
            if mode & 0o077 != 0 {
                return Err(NetError::setup(
                    "serve.secret_file",
                    format!(
                        "{} can be read by other users (mode {:o}): anyone who reads it can issue tokens; \
                         `chmod 600` it",
                        path.display(),
                        mode & 0o777
                    ),
                ));
            }
        }
        let text = std::fs::read(path).map_err(|e| secret_file(path, e))?;
        let trimmed = text.trim_ascii().to_vec();
        Self::checked(trimmed).map_err(|problem| secret_file(path, problem))
    }

    /// The secret of `path`, created there (random, owner-only permissions) when absent: a run directory
    /// keeps its secret, so tokens stay valid across `--resume`.
    pub fn load_or_create(path: &Path) -> Result<Self, NetError> {
        if !path.exists() {
            let mut bytes = [0u8; 32];
            rand_bytes(&mut bytes).map_err(|e| {
                NetError::setup(
                    "serve.secret_file",
                    format!("no system randomness to create {} ({e}); write a secret there yourself", path.display()),
                )
            })?;
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            let tmp = path.with_extension("tmp");
            // Owner-only from the moment it exists: never a window in which the umask's mode applies.
            let _ = std::fs::remove_file(&tmp);
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let mut file = options.open(&tmp).map_err(|e| NetError::io(&tmp, e))?;
            std::io::Write::write_all(&mut file, hex.as_bytes()).map_err(|e| NetError::io(&tmp, e))?;
            file.sync_all().map_err(|e| NetError::io(&tmp, e))?;
            std::fs::rename(&tmp, path).map_err(|e| NetError::io(path, e))?;
        }
        Tokens::from_file(path)
    }

    fn mac(&self, client: u32) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.secret).expect("HMAC takes keys of any length");
        mac.update(b"fedsoft client token v1:");
        mac.update(&client.to_le_bytes());
        mac
    }

    /// Client `client`'s token (64 hex digits).
    pub fn token(&self, client: u32) -> String {
        self.mac(client).finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Whether `token` is client `client`'s, compared in constant time.
    pub fn verify(&self, client: u32, token: &str) -> bool {
        let Some(bytes) = from_hex(token) else { return false };
        self.mac(client).verify_slice(&bytes).is_ok()
    }
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// Operating-system randomness for the secret (never the experiment's seeded streams).
fn rand_bytes(out: &mut [u8]) -> std::io::Result<()> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")?.read_exact(out)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn secrets_are_owner_only_and_shared_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        let tokens = Tokens::load_or_create(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(tokens.verify(3, &tokens.token(3)) && !tokens.verify(4, &tokens.token(3)));
        // The same secret again (a resumed run keeps its tokens).
        assert_eq!(Tokens::load_or_create(&path).unwrap().token(3), tokens.token(3));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Tokens::from_file(&path).err().unwrap().to_string();
        assert!(e.contains("serve.secret_file") && e.contains("644") && e.contains("chmod 600"), "{e}");
    }
}
