//! Secrets and configs in the registry, and the `berth secret` / `berth config` commands.
//!
//! - A secret is stored at `/_berth/secrets/<name>` as
//!   `xchacha20poly1305:<base64(nonce ‖ ciphertext ‖ tag)>`: XChaCha20-Poly1305 under the
//!   cluster key, a random 24-byte nonce per value, and the secret's name as associated data
//!   (a value copied to another name does not decrypt). What `/v2/keys` shows is ciphertext.
//! - A config is stored plain (UTF-8 text) at `/_berth/configs/<name>`.
//! - Both are created with `prevExist=false` (immutable, as in Swarm: remove and re-create
//!   to change one), are at most 500 KiB, and have Swarm's name rule.
//! - The cluster key is 32 random bytes, base64 on one line, in a file outside the registry
//!   (`--key-file`, default `/var/lib/berth/secrets.key`). `berth secret create` makes it
//!   (mode 0600) when it does not exist; every host running `berth plugin` needs a copy.
//!   A key file readable by group or others is refused.

use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use registry::client::{codes, Client, DeleteOptions, GetOptions, SetOptions};

use crate::error::SecretError;

/// Where secrets live in the registry.
pub const SECRETS_DIR: &str = "/_berth/secrets";
/// Where configs live in the registry.
pub const CONFIGS_DIR: &str = "/_berth/configs";
/// Largest secret or config (Swarm's limit).
pub const MAX_SIZE: usize = 500 * 1024;
/// Default cluster key file.
pub const DEFAULT_KEY_FILE: &str = "/var/lib/berth/secrets.key";
/// Prefix of a stored secret value (the format and algorithm).
pub const SEALED_PREFIX: &str = "xchacha20poly1305:";

const NONCE_LEN: usize = 24;
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Secret or config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Secret,
    Config,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Secret => "secret",
            Kind::Config => "config",
        }
    }

    pub fn dir(self) -> &'static str {
        match self {
            Kind::Secret => SECRETS_DIR,
            Kind::Config => CONFIGS_DIR,
        }
    }

    pub fn key(self, name: &str) -> String {
        format!("{}/{name}", self.dir())
    }
}

/// Swarm's rule: 1-64 of `[A-Za-z0-9_.-]`, starting and ending with a letter or digit.
pub fn validate_name(kind: Kind, name: &str) -> Result<(), SecretError> {
    let b = name.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(SecretError::Name {
            kind: kind.as_str(),
            name: name.to_string(),
        })
    }
}

/// Non-empty and at most [`MAX_SIZE`].
pub fn check_size(kind: Kind, name: &str, size: usize) -> Result<(), SecretError> {
    if size == 0 {
        return Err(SecretError::Empty {
            kind: kind.as_str(),
            name: name.into(),
        });
    }
    if size > MAX_SIZE {
        return Err(SecretError::TooLarge {
            kind: kind.as_str(),
            name: name.into(),
            size,
            max: MAX_SIZE,
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The cluster key
// ---------------------------------------------------------------------------

/// The cluster key, loaded from its file.
#[derive(Clone)]
pub struct ClusterKey {
    key: [u8; 32],
    path: PathBuf,
}

impl std::fmt::Debug for ClusterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterKey")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl ClusterKey {
    fn err(path: &Path, detail: impl Into<String>) -> SecretError {
        SecretError::Key {
            path: path.to_path_buf(),
            detail: detail.into(),
        }
    }

    /// Reads the key file; it must exist, hold 32 bytes in base64 and be private (0600).
    pub fn load(path: &Path) -> Result<ClusterKey, SecretError> {
        let meta = std::fs::metadata(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Self::err(path, "missing: copy the cluster key from the host where `berth secret create` made it (or pass --key-file)")
            } else {
                Self::err(path, e.to_string())
            }
        })?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(Self::err(
                path,
                format!(
                    "mode {:o} lets other users read it; run `chmod 600 {}`",
                    meta.permissions().mode() & 0o777,
                    path.display()
                ),
            ));
        }
        let text = std::fs::read_to_string(path).map_err(|e| Self::err(path, e.to_string()))?;
        let bytes = B64
            .decode(text.trim())
            .map_err(|_| Self::err(path, "not a berth key (expected 32 bytes in base64)"))?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| Self::err(path, "not a berth key (expected 32 bytes in base64)"))?;
        Ok(ClusterKey {
            key,
            path: path.to_path_buf(),
        })
    }

    /// Loads the key, or makes a new random one (file mode 0600, parent directories 0700)
    /// when the file does not exist. The flag says whether it was made now.
    pub fn load_or_create(path: &Path) -> Result<(ClusterKey, bool), SecretError> {
        if path.exists() {
            return Ok((Self::load(path)?, false));
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| Self::err(path, format!("cannot create its directory: {e}")))?;
        }
        let mut key = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut key);
        let mut f = match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(f) => f,
            // Someone made it in the meantime: use theirs.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Ok((Self::load(path)?, false))
            }
            Err(e) => return Err(Self::err(path, format!("cannot create: {e}"))),
        };
        f.write_all(format!("{}\n", B64.encode(key)).as_bytes())
            .and_then(|_| f.sync_all())
            .map_err(|e| Self::err(path, format!("cannot write: {e}")))?;
        Ok((
            ClusterKey {
                key,
                path: path.to_path_buf(),
            },
            true,
        ))
    }

    /// A key from raw bytes (tests).
    pub fn from_bytes(key: [u8; 32], path: PathBuf) -> ClusterKey {
        ClusterKey { key, path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Encrypts `plaintext` of secret `name` into its stored form.
    pub fn seal(&self, name: &str, plaintext: &[u8]) -> String {
        let cipher = XChaCha20Poly1305::new(chacha20poly1305::Key::from_slice(&self.key));
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let ct = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: name.as_bytes(),
                },
            )
            .expect("XChaCha20-Poly1305 encryption cannot fail for these sizes");
        let mut raw = nonce.to_vec();
        raw.extend_from_slice(&ct);
        format!("{SEALED_PREFIX}{}", B64.encode(raw))
    }

    /// Decrypts the stored form of secret `name`.
    pub fn open(&self, name: &str, stored: &str) -> Result<Vec<u8>, SecretError> {
        let raw = stored
            .strip_prefix(SEALED_PREFIX)
            .and_then(|b| B64.decode(b).ok())
            .filter(|r| r.len() >= NONCE_LEN + 16)
            .ok_or_else(|| SecretError::Format(name.to_string()))?;
        let cipher = XChaCha20Poly1305::new(chacha20poly1305::Key::from_slice(&self.key));
        cipher
            .decrypt(
                XNonce::from_slice(&raw[..NONCE_LEN]),
                Payload {
                    msg: &raw[NONCE_LEN..],
                    aad: name.as_bytes(),
                },
            )
            .map_err(|_| SecretError::Decrypt {
                name: name.to_string(),
                key: self.path.clone(),
            })
    }
}

// ---------------------------------------------------------------------------
// Registry I/O
// ---------------------------------------------------------------------------

async fn create_raw(
    client: &Client,
    kind: Kind,
    name: &str,
    value: &str,
) -> Result<(), SecretError> {
    let opts = SetOptions {
        prev_exist: Some(false),
        ..Default::default()
    };
    match client.set(&kind.key(name), value, opts).await {
        Ok(_) => Ok(()),
        Err(e) if e.etcd_code() == Some(codes::NODE_EXIST) => Err(SecretError::Exists {
            kind: kind.as_str(),
            name: name.into(),
        }),
        Err(e) => Err(e.into()),
    }
}

/// The stored value of a secret or config.
pub async fn get_raw(client: &Client, kind: Kind, name: &str) -> Result<String, SecretError> {
    validate_name(kind, name)?;
    let opts = GetOptions {
        quorum: true,
        ..Default::default()
    };
    match client.get(&kind.key(name), opts).await {
        Ok(r) if !r.node.dir => Ok(r.node.value.unwrap_or_default()),
        Ok(_) => Err(SecretError::Format(name.to_string())),
        Err(e) if e.is_key_not_found() => Err(SecretError::Missing {
            kind: kind.as_str(),
            name: name.into(),
        }),
        Err(e) => Err(e.into()),
    }
}

/// Whether a secret or config exists.
pub async fn exists(client: &Client, kind: Kind, name: &str) -> Result<bool, SecretError> {
    match get_raw(client, kind, name).await {
        Ok(_) => Ok(true),
        Err(SecretError::Missing { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Encrypts and stores a new secret.
pub async fn create_secret(
    client: &Client,
    key: &ClusterKey,
    name: &str,
    data: &[u8],
) -> Result<(), SecretError> {
    validate_name(Kind::Secret, name)?;
    check_size(Kind::Secret, name, data.len())?;
    create_raw(client, Kind::Secret, name, &key.seal(name, data)).await
}

/// Stores a new config (UTF-8 text).
pub async fn create_config(client: &Client, name: &str, data: &[u8]) -> Result<(), SecretError> {
    validate_name(Kind::Config, name)?;
    check_size(Kind::Config, name, data.len())?;
    let text = std::str::from_utf8(data).map_err(|_| SecretError::NotText(name.into()))?;
    create_raw(client, Kind::Config, name, text).await
}

/// The plaintext of a secret or the bytes of a config (`key` is needed for secrets).
pub async fn read(
    client: &Client,
    key: Option<&ClusterKey>,
    kind: Kind,
    name: &str,
) -> Result<Vec<u8>, SecretError> {
    let raw = get_raw(client, kind, name).await?;
    match kind {
        Kind::Config => Ok(raw.into_bytes()),
        Kind::Secret => {
            let key = key.ok_or_else(|| SecretError::Key {
                path: PathBuf::from(DEFAULT_KEY_FILE),
                detail: "no cluster key loaded".into(),
            })?;
            key.open(name, &raw)
        }
    }
}

/// Names of every secret or config, sorted.
pub async fn list(client: &Client, kind: Kind) -> Result<Vec<String>, SecretError> {
    let opts = GetOptions {
        sorted: true,
        quorum: true,
        ..Default::default()
    };
    Ok(client
        .children(kind.dir(), opts)
        .await?
        .iter()
        .filter(|n| !n.dir)
        .filter_map(|n| n.key.rsplit('/').next().map(str::to_string))
        .collect())
}

/// The volumes (`<node>/<volume>`) whose definition names this secret or config.
pub async fn users(client: &Client, kind: Kind, name: &str) -> Result<Vec<String>, SecretError> {
    let opts = GetOptions {
        recursive: true,
        quorum: true,
        ..Default::default()
    };
    let hosts = client.children(crate::volume::VOLUMES_DIR, opts).await?;
    let mut out = Vec::new();
    for node in hosts.iter().flat_map(|n| n.nodes.iter()) {
        let Ok(spec) =
            serde_json::from_str::<crate::volume::VolumeSpec>(node.value.as_deref().unwrap_or(""))
        else {
            continue;
        };
        if spec.files.iter().any(|f| f.kind == kind && f.name == name) {
            let mut parts = node.key.rsplit('/');
            let vol = parts.next().unwrap_or_default();
            let host = parts.next().unwrap_or_default();
            out.push(format!("{host}/{vol}"));
        }
    }
    Ok(out)
}

/// Removes a secret or config; refused while a volume's definition still names it (remove
/// those volumes first, as Swarm refuses to remove a secret a service uses).
pub async fn remove(client: &Client, kind: Kind, name: &str) -> Result<(), SecretError> {
    validate_name(kind, name)?;
    let used_by = users(client, kind, name).await?;
    if !used_by.is_empty() {
        return Err(SecretError::InUse {
            kind: kind.as_str(),
            name: name.into(),
            volumes: used_by.join(", "),
        });
    }
    match client
        .delete(&kind.key(name), DeleteOptions::default())
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if e.is_key_not_found() => Err(SecretError::Missing {
            kind: kind.as_str(),
            name: name.into(),
        }),
        Err(e) => Err(e.into()),
    }
}

// ---------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------

/// `berth secret`: secrets encrypted in the registry, for berth volumes.
#[derive(clap::Args, Debug, Clone)]
pub struct SecretArgs {
    /// Registry client URLs, comma-separated.
    #[arg(
        long,
        global = true,
        env = "BERTH_ENDPOINTS",
        default_value = "http://127.0.0.1:2379"
    )]
    pub endpoints: String,
    /// The cluster key (32 random bytes, base64). `create` makes it (mode 0600) if missing;
    /// copy it to every host that runs `berth plugin`.
    #[arg(long, global = true, env = "BERTH_SECRET_KEY_FILE", default_value = DEFAULT_KEY_FILE)]
    pub key_file: PathBuf,
    #[command(subcommand)]
    pub command: ObjectCommand,
}

/// `berth config`: plain configuration files in the registry, for berth volumes.
#[derive(clap::Args, Debug, Clone)]
pub struct ConfigArgs {
    /// Registry client URLs, comma-separated.
    #[arg(
        long,
        global = true,
        env = "BERTH_ENDPOINTS",
        default_value = "http://127.0.0.1:2379"
    )]
    pub endpoints: String,
    #[command(subcommand)]
    pub command: ObjectCommand,
}

/// What to do with secrets or configs.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum ObjectCommand {
    /// Store a new one (immutable; at most 500 KiB) from FILE, or from stdin with `-` or
    /// no FILE. Prints its name.
    Create {
        name: String,
        /// A file to read, or `-` for stdin.
        file: Option<PathBuf>,
    },
    /// List the names, one per line.
    #[command(alias = "list")]
    Ls,
    /// Remove one or more (containers already running keep their files).
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
}

fn endpoints(s: &str) -> Result<Client, SecretError> {
    let eps = registry::client::split_endpoints(s);
    Ok(Client::new(&eps)?)
}

/// Reads FILE (or stdin), at most one byte more than the limit.
fn read_input(kind: Kind, name: &str, file: Option<&Path>) -> Result<Vec<u8>, SecretError> {
    let mut data = Vec::new();
    let limit = (MAX_SIZE + 1) as u64;
    let result = match file {
        Some(p) if p != Path::new("-") => std::fs::File::open(p)
            .and_then(|f| f.take(limit).read_to_end(&mut data))
            .map_err(|e| SecretError::Io {
                what: p.display().to_string(),
                source: e,
            }),
        _ => std::io::stdin()
            .lock()
            .take(limit)
            .read_to_end(&mut data)
            .map_err(|e| SecretError::Io {
                what: "stdin".into(),
                source: e,
            }),
    };
    result?;
    check_size(kind, name, data.len())?;
    Ok(data)
}

async fn run_objects(
    kind: Kind,
    client: Client,
    key_file: Option<&Path>,
    command: ObjectCommand,
    out: &mut dyn Write,
) -> Result<(), SecretError> {
    let io = |e: std::io::Error| SecretError::Io {
        what: "stdout".into(),
        source: e,
    };
    match command {
        ObjectCommand::Create { name, file } => {
            validate_name(kind, &name)?;
            let data = read_input(kind, &name, file.as_deref())?;
            match kind {
                Kind::Secret => {
                    let path = key_file.expect("secrets have a key file");
                    let (key, made) = ClusterKey::load_or_create(path)?;
                    if made {
                        eprintln!(
                            "berth: made a new cluster key in {}: copy it to every host running `berth plugin`",
                            path.display()
                        );
                    }
                    create_secret(&client, &key, &name, &data).await?;
                }
                Kind::Config => create_config(&client, &name, &data).await?,
            }
            writeln!(out, "{name}").map_err(io)?;
        }
        ObjectCommand::Ls => {
            for name in list(&client, kind).await? {
                writeln!(out, "{name}").map_err(io)?;
            }
        }
        ObjectCommand::Rm { names } => {
            for name in names {
                remove(&client, kind, &name).await?;
                writeln!(out, "{name}").map_err(io)?;
            }
        }
    }
    Ok(())
}

/// Runs `berth secret ...`, writing its output to `out`.
pub async fn run_secret(args: SecretArgs, out: &mut dyn Write) -> Result<(), SecretError> {
    let client = endpoints(&args.endpoints)?;
    run_objects(
        Kind::Secret,
        client,
        Some(&args.key_file),
        args.command,
        out,
    )
    .await
}

/// Runs `berth config ...`, writing its output to `out`.
pub async fn run_config(args: ConfigArgs, out: &mut dyn Write) -> Result<(), SecretError> {
    let client = endpoints(&args.endpoints)?;
    run_objects(Kind::Config, client, None, args.command, out).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "db-pass", "db_pass.v2", "A1", &"x".repeat(64)] {
            validate_name(Kind::Secret, ok).unwrap();
        }
        for bad in ["", "-a", "a-", "a/b", "a b", "ä", "..", &"x".repeat(65)] {
            assert!(validate_name(Kind::Secret, bad).is_err(), "{bad:?}");
        }
        let e = validate_name(Kind::Config, "a/b").unwrap_err().to_string();
        assert!(e.starts_with("invalid config name \"a/b\""), "{e}");
    }

    #[test]
    fn sizes() {
        check_size(Kind::Secret, "s", 1).unwrap();
        check_size(Kind::Secret, "s", MAX_SIZE).unwrap();
        let e = check_size(Kind::Secret, "s", MAX_SIZE + 1).unwrap_err();
        assert!(
            e.to_string()
                .contains("more than the limit of 512000 bytes"),
            "{e}"
        );
        assert!(matches!(
            check_size(Kind::Config, "c", 0),
            Err(SecretError::Empty { .. })
        ));
    }

    #[test]
    fn seal_and_open() {
        let key = ClusterKey::from_bytes([7; 32], "/k".into());
        let sealed = key.seal("db", b"hunter2");
        assert!(sealed.starts_with(SEALED_PREFIX));
        assert!(!sealed.contains("hunter2"));
        // A fresh nonce per value.
        assert_ne!(sealed, key.seal("db", b"hunter2"));
        assert_eq!(key.open("db", &sealed).unwrap(), b"hunter2");
        // Bound to its name and key; tampering is detected.
        assert!(matches!(
            key.open("other", &sealed),
            Err(SecretError::Decrypt { .. })
        ));
        let other = ClusterKey::from_bytes([8; 32], "/k2".into());
        assert!(matches!(
            other.open("db", &sealed),
            Err(SecretError::Decrypt { .. })
        ));
        let mut raw = B64
            .decode(sealed.strip_prefix(SEALED_PREFIX).unwrap())
            .unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        let tampered = format!("{SEALED_PREFIX}{}", B64.encode(raw));
        assert!(key.open("db", &tampered).is_err());
        assert!(matches!(
            key.open("db", "plain"),
            Err(SecretError::Format(_))
        ));
    }

    #[test]
    fn key_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/secrets.key");
        let (k1, made) = ClusterKey::load_or_create(&path).unwrap();
        assert!(made);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let (k2, made) = ClusterKey::load_or_create(&path).unwrap();
        assert!(!made);
        assert_eq!(k2.open("s", &k1.seal("s", b"x")).unwrap(), b"x");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = ClusterKey::load(&path).unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        assert!(ClusterKey::load(&dir.path().join("none"))
            .unwrap_err()
            .to_string()
            .contains("missing"));
        let bad = dir.path().join("bad");
        std::fs::write(&bad, "short\n").unwrap();
        std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(ClusterKey::load(&bad).is_err());
    }
}
