//! The volume driver: volumes of secrets and configs, mounted as a read-only tmpfs.
//!
//! `docker volume create -d berth -o secret=db-pass -o config=app.conf,target=conf/app.conf app`
//! (or `--mount type=volume,volume-driver=berth,src=app,dst=/run/secrets,volume-opt=secret=db-pass`).
//! Option values are `NAME[,target=PATH][,mode=OCTAL][,uid=N][,gid=N]`: the file is at
//! `PATH` (relative, default `NAME`) in the volume, mode 0444 and owner 0:0 by default.
//! Docker's options are a map, so one key cannot repeat: several files of one kind go in one
//! value separated by `;` (`secret=a;b,mode=0400`), or under keys `secret.<anything>`.
//! Inside `--mount`, a value with commas needs CSV quoting:
//! `--mount 'type=volume,...,"volume-opt=secret=db,target=x"'`.
//!
//! The definition is stored at `/_berth/volumes/<node>/<name>` at `Create` (every secret and
//! config must exist then). On the first `Mount` the secrets are read and decrypted, a tmpfs
//! is mounted at `<volume-root>/<name>` (nosuid, nodev, noexec), the files are written with
//! their mode and owner, and the tmpfs is remounted read-only. Later mounts (other container
//! ids) share it. The last `Unmount` unmounts the tmpfs (its pages are freed; nothing was
//! ever on disk) and removes the mount point. Mounting needs root (CAP_SYS_ADMIN).
//! The users of each mounted volume are recorded in [`STATE_FILE`] under the volume root, and
//! a stopping plugin leaves its volumes mounted: a restarted plugin carries on where the last
//! one stopped. A secret or config that a volume definition names cannot be removed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use registry::client::{codes, Client, DeleteOptions, GetOptions, SetOptions};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::error::{SecretError, VolumeError};
use crate::protocol::{
    CreateVolumeRequest, GetVolumeResponse, ListVolumesResponse, MountRequest, MountpointResponse,
    VolumeCapabilities, VolumeCapabilitiesResponse, VolumeInfo, VolumeNameRequest,
};
use crate::secrets::{self, ClusterKey, Kind};

/// Where volume definitions live: `/_berth/volumes/<node>/<name>`.
pub const VOLUMES_DIR: &str = "/_berth/volumes";
/// Default mode of a file in a volume.
pub const DEFAULT_MODE: u32 = 0o444;

/// One file of a volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSpec {
    pub kind: Kind,
    pub name: String,
    /// Relative path inside the volume.
    pub target: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// A volume's definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeSpec {
    pub files: Vec<FileSpec>,
}

/// Docker's volume name rule (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`), at most 128 bytes.
pub fn validate_volume_name(name: &str) -> Result<(), VolumeError> {
    if name.is_empty() {
        return Err(VolumeError::MissingName);
    }
    let b = name.as_bytes();
    let ok = b.len() <= 128
        && b[0].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(VolumeError::Name(name.to_string()))
    }
}

/// A relative path of normal components, no `..`, at most 1024 bytes.
fn validate_target(target: &str) -> Result<(), String> {
    let p = Path::new(target);
    let ok = !target.is_empty()
        && target.len() <= 1024
        && !target.contains('\0')
        && p.components().all(|c| matches!(c, Component::Normal(_)))
        && p.components().all(|c| c.as_os_str().len() <= 255);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "target={target:?}: expected a relative path inside the volume, without `..`"
        ))
    }
}

/// Parses one `NAME[,target=..][,mode=..][,uid=..][,gid=..]`.
pub fn parse_file(kind: Kind, spec: &str) -> Result<FileSpec, VolumeError> {
    let opt = |m: String| VolumeError::Option(format!("{}={spec:?}: {m}", kind.as_str()));
    let mut parts = spec.split(',').map(str::trim);
    let name = parts.next().unwrap_or_default().to_string();
    secrets::validate_name(kind, &name).map_err(|e| opt(e.to_string()))?;
    let mut file = FileSpec {
        kind,
        target: name.clone(),
        name,
        mode: DEFAULT_MODE,
        uid: 0,
        gid: 0,
    };
    for part in parts.filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| opt(format!("expected key=value, got {part:?}")))?;
        let num = |v: &str| {
            v.parse::<u32>()
                .map_err(|_| opt(format!("{k}={v:?} is not a number")))
        };
        match k {
            "target" => {
                let t = v.trim_start_matches("./");
                validate_target(t).map_err(opt)?;
                file.target = t.to_string();
            }
            "mode" => {
                let m = u32::from_str_radix(v, 8)
                    .ok()
                    .filter(|m| *m <= 0o777)
                    .ok_or_else(|| {
                        opt(format!(
                            "mode={v:?}: expected octal permissions such as 0400"
                        ))
                    })?;
                file.mode = m;
            }
            "uid" => file.uid = num(v)?,
            "gid" => file.gid = num(v)?,
            other => {
                return Err(opt(format!(
                    "unknown field {other:?} (expected target, mode, uid or gid)"
                )))
            }
        }
    }
    Ok(file)
}

/// Parses a volume's options into its definition.
pub fn parse_opts(opts: &BTreeMap<String, String>) -> Result<VolumeSpec, VolumeError> {
    let mut files = Vec::new();
    for (k, v) in opts {
        let kind = match k.split_once('.').map(|(a, _)| a).unwrap_or(k) {
            "secret" => Kind::Secret,
            "config" => Kind::Config,
            _ => {
                return Err(VolumeError::Option(format!(
                    "{k:?} is unknown (expected secret=NAME[,target=..,mode=..,uid=..,gid=..] or config=...)"
                )))
            }
        };
        for spec in v.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            files.push(parse_file(kind, spec)?);
        }
    }
    if files.is_empty() {
        return Err(VolumeError::Option(
            "none given: a berth volume needs at least one secret=NAME or config=NAME".into(),
        ));
    }
    let mut seen = BTreeSet::new();
    for f in &files {
        // One path cannot be a file and a directory, or two files.
        let t = Path::new(&f.target);
        let clash = seen
            .iter()
            .any(|s: &PathBuf| s.starts_with(t) || t.starts_with(s));
        if clash {
            return Err(VolumeError::Option(format!(
                "target {:?} is used twice (or as a file and a directory)",
                f.target
            )));
        }
        seen.insert(t.to_path_buf());
    }
    Ok(VolumeSpec { files })
}

struct Mounted {
    path: PathBuf,
    ids: BTreeSet<String>,
}

/// The file under the volume root recording which containers use each mounted volume
/// (`{"<volume>": ["<mount id>", ...]}`), rewritten on every change, so a restarted plugin
/// still knows them and the last `Unmount` still wipes the volume.
pub const STATE_FILE: &str = ".berth-mounts.json";

/// The users recorded in the state file for volumes still mounted under `root`.
fn restore(root: &Path) -> HashMap<String, Mounted> {
    let path = root.join(STATE_FILE);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return HashMap::new();
    };
    let saved: BTreeMap<String, BTreeSet<String>> = match serde_json::from_str(&text) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "ignoring an unreadable volume state file");
            return HashMap::new();
        }
    };
    let mut out = HashMap::new();
    for (name, ids) in saved {
        let mount = root.join(&name);
        if validate_volume_name(&name).is_ok() && !ids.is_empty() && is_mountpoint(&mount) {
            tracing::info!(volume = %name, users = ids.len(), "volume still mounted: users restored");
            out.insert(name, Mounted { path: mount, ids });
        }
    }
    out
}

/// Writes the state file (write to a temporary name, then rename); with nothing mounted,
/// removes it, so an idle plugin leaves nothing under the volume root.
fn save(root: &Path, mounts: &HashMap<String, Mounted>) {
    if mounts.is_empty() {
        match std::fs::remove_file(root.join(STATE_FILE)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(root = %root.display(), error = %e, "cannot remove the volume state file")
            }
        }
        return;
    }
    let state: BTreeMap<&String, &BTreeSet<String>> =
        mounts.iter().map(|(k, m)| (k, &m.ids)).collect();
    let text = serde_json::to_string(&state).expect("state serializes");
    let tmp = root.join(format!("{STATE_FILE}.tmp"));
    let result = std::fs::create_dir_all(root)
        .and_then(|_| std::fs::write(&tmp, text))
        .and_then(|_| std::fs::rename(&tmp, root.join(STATE_FILE)));
    if let Err(e) = result {
        tracing::warn!(root = %root.display(), error = %e, "cannot record volume users; a restart would forget them");
    }
}

/// The volume driver.
pub struct Volumes {
    client: Client,
    node: String,
    root: PathBuf,
    key_file: PathBuf,
    mounts: Mutex<HashMap<String, Mounted>>,
}

impl Volumes {
    pub fn new(client: Client, node: String, root: PathBuf, key_file: PathBuf) -> Volumes {
        let mounts = Mutex::new(restore(&root));
        Volumes {
            client,
            node,
            root,
            key_file,
            mounts,
        }
    }

    fn key(&self, name: &str) -> String {
        format!("{VOLUMES_DIR}/{}/{name}", self.node)
    }

    /// The mount point of a volume.
    pub fn mountpoint(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    pub fn capabilities(&self) -> VolumeCapabilitiesResponse {
        VolumeCapabilitiesResponse {
            capabilities: VolumeCapabilities {
                scope: "local".into(),
            },
        }
    }

    async fn spec(&self, name: &str) -> Result<VolumeSpec, VolumeError> {
        validate_volume_name(name)?;
        let key = self.key(name);
        match self.client.get(&key, GetOptions::default()).await {
            Ok(r) => {
                serde_json::from_str(r.node.value.as_deref().unwrap_or_default()).map_err(|e| {
                    VolumeError::Corrupt {
                        key,
                        detail: e.to_string(),
                    }
                })
            }
            Err(e) if e.is_key_not_found() => Err(VolumeError::Unknown(name.to_string())),
            Err(e) => Err(e.into()),
        }
    }

    /// `Create`: validates the options, checks every secret and config exists, stores the
    /// definition. Creating an existing volume with the same options is accepted.
    pub async fn create(&self, req: &CreateVolumeRequest) -> Result<(), VolumeError> {
        validate_volume_name(&req.name)?;
        let spec = parse_opts(&req.opts.clone().unwrap_or_default())?;
        for f in &spec.files {
            if !secrets::exists(&self.client, f.kind, &f.name).await? {
                return Err(SecretError::Missing {
                    kind: f.kind.as_str(),
                    name: f.name.clone(),
                }
                .into());
            }
        }
        let value = serde_json::to_string(&spec).expect("volume spec serializes");
        let opts = SetOptions {
            prev_exist: Some(false),
            ..Default::default()
        };
        match self.client.set(&self.key(&req.name), &value, opts).await {
            Ok(_) => Ok(()),
            Err(e) if e.etcd_code() == Some(codes::NODE_EXIST) => {
                if self.spec(&req.name).await? == spec {
                    Ok(())
                } else {
                    Err(VolumeError::Conflict(req.name.clone()))
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// `Remove`: refused while mounted.
    pub async fn remove(&self, req: &VolumeNameRequest) -> Result<(), VolumeError> {
        validate_volume_name(&req.name)?;
        let mounts = self.mounts.lock().await;
        if let Some(m) = mounts.get(&req.name) {
            return Err(VolumeError::InUse {
                name: req.name.clone(),
                ids: m.ids.iter().cloned().collect::<Vec<_>>().join(","),
            });
        }
        match self
            .client
            .delete(&self.key(&req.name), DeleteOptions::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.is_key_not_found() => Err(VolumeError::Unknown(req.name.clone())),
            Err(e) => Err(e.into()),
        }
    }

    /// `Mount`: builds the tmpfs on the first mount, shares it afterwards.
    pub async fn mount(&self, req: &MountRequest) -> Result<MountpointResponse, VolumeError> {
        let spec = self.spec(&req.name).await?;
        let mut mounts = self.mounts.lock().await;
        if let Some(m) = mounts.get_mut(&req.name) {
            m.ids.insert(req.id.clone());
            let mountpoint = m.path.display().to_string();
            save(&self.root, &mounts);
            return Ok(MountpointResponse { mountpoint });
        }
        // Read everything first: a missing secret or a wrong key changes nothing on disk.
        let key = if spec.files.iter().any(|f| f.kind == Kind::Secret) {
            Some(ClusterKey::load(&self.key_file)?)
        } else {
            None
        };
        let mut contents = Vec::new();
        for f in &spec.files {
            contents.push(secrets::read(&self.client, key.as_ref(), f.kind, &f.name).await?);
        }
        let path = self.mountpoint(&req.name);
        build(&self.root, &path, &spec, &contents)?;
        tracing::info!(volume = %req.name, path = %path.display(), files = spec.files.len(), "volume mounted");
        mounts.insert(
            req.name.clone(),
            Mounted {
                path: path.clone(),
                ids: BTreeSet::from([req.id.clone()]),
            },
        );
        save(&self.root, &mounts);
        Ok(MountpointResponse {
            mountpoint: path.display().to_string(),
        })
    }

    /// `Unmount`: the last caller's unmount removes the tmpfs and its mount point.
    pub async fn unmount(&self, req: &MountRequest) -> Result<(), VolumeError> {
        validate_volume_name(&req.name)?;
        let mut mounts = self.mounts.lock().await;
        let Some(m) = mounts.get_mut(&req.name) else {
            // Not mounted here (e.g. after a plugin restart): make sure nothing is left.
            let path = self.mountpoint(&req.name);
            if path.exists() {
                teardown(&path)?;
            }
            return Ok(());
        };
        m.ids.remove(&req.id);
        if !m.ids.is_empty() {
            save(&self.root, &mounts);
            return Ok(());
        }
        let path = m.path.clone();
        mounts.remove(&req.name);
        save(&self.root, &mounts);
        teardown(&path)?;
        tracing::info!(volume = %req.name, "volume unmounted and wiped");
        Ok(())
    }

    /// `Path`: the mount point while mounted, else empty.
    pub async fn path(&self, req: &VolumeNameRequest) -> Result<MountpointResponse, VolumeError> {
        self.spec(&req.name).await?;
        let mounts = self.mounts.lock().await;
        Ok(MountpointResponse {
            mountpoint: mounts
                .get(&req.name)
                .map(|m| m.path.display().to_string())
                .unwrap_or_default(),
        })
    }

    async fn info(&self, name: &str, spec: Option<&VolumeSpec>) -> VolumeInfo {
        let mounts = self.mounts.lock().await;
        let mut status = BTreeMap::new();
        if let Some(spec) = spec {
            let files: Vec<String> = spec
                .files
                .iter()
                .map(|f| {
                    format!(
                        "{}:{} -> {} ({:04o} {}:{})",
                        f.kind.as_str(),
                        f.name,
                        f.target,
                        f.mode,
                        f.uid,
                        f.gid
                    )
                })
                .collect();
            status.insert("files".to_string(), serde_json::json!(files));
        }
        VolumeInfo {
            name: name.to_string(),
            mountpoint: mounts
                .get(name)
                .map(|m| m.path.display().to_string())
                .unwrap_or_default(),
            created_at: String::new(),
            status,
        }
    }

    /// `Get`.
    pub async fn get(&self, req: &VolumeNameRequest) -> Result<GetVolumeResponse, VolumeError> {
        let spec = self.spec(&req.name).await?;
        Ok(GetVolumeResponse {
            volume: self.info(&req.name, Some(&spec)).await,
        })
    }

    /// `List`: this node's volumes.
    pub async fn list(&self) -> Result<ListVolumesResponse, VolumeError> {
        let dir = format!("{VOLUMES_DIR}/{}", self.node);
        let sorted = GetOptions {
            sorted: true,
            ..Default::default()
        };
        let names: Vec<String> = self
            .client
            .children(&dir, sorted)
            .await?
            .iter()
            .filter_map(|n| n.key.rsplit('/').next().map(str::to_string))
            .collect();
        let mut volumes = Vec::new();
        for n in names {
            volumes.push(self.info(&n, None).await);
        }
        Ok(ListVolumesResponse { volumes })
    }

    /// On shutdown: volumes stay mounted for the containers using them (their users are in
    /// the state file, so the next plugin wipes each at its last `Unmount`).
    pub async fn keep_on_shutdown(&self) {
        let mounts = self.mounts.lock().await;
        save(&self.root, &mounts);
        if !mounts.is_empty() {
            tracing::info!(
                volumes = mounts.len(),
                "volumes stay mounted for their containers"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// tmpfs
// ---------------------------------------------------------------------------

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> VolumeError {
    let what = what.into();
    move |source| VolumeError::Io { what, source }
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("paths have no NUL")
}

fn sys_mount(target: &Path, flags: libc::c_ulong, data: &str) -> std::io::Result<()> {
    let src = CString::new("berth").expect("literal");
    let fstype = CString::new("tmpfs").expect("literal");
    let data = CString::new(data).expect("no NUL");
    let t = cstr(target);
    // SAFETY: every pointer is a valid NUL-terminated string that outlives the call.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            t.as_ptr(),
            fstype.as_ptr(),
            flags,
            data.as_ptr() as *const libc::c_void,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn sys_umount(target: &Path, flags: libc::c_int) -> std::io::Result<()> {
    let t = cstr(target);
    // SAFETY: a valid NUL-terminated path.
    let rc = unsafe { libc::umount2(t.as_ptr(), flags) };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Whether `path` is a mount point (its device differs from its parent's).
fn is_mountpoint(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (
        std::fs::metadata(path),
        path.parent().map(std::fs::metadata),
    ) {
        (Ok(a), Some(Ok(b))) => a.dev() != b.dev(),
        _ => false,
    }
}

/// Mounts the tmpfs at `path` and writes the files, then makes it read-only. On failure
/// nothing is left behind.
fn build(
    root: &Path,
    path: &Path,
    spec: &VolumeSpec,
    contents: &[Vec<u8>],
) -> Result<(), VolumeError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(root)
        .map_err(io(format!("creating {}", root.display())))?;
    if is_mountpoint(path) {
        // A leftover from a plugin that died: start clean.
        teardown(path)?;
    }
    match std::fs::DirBuilder::new().mode(0o755).create(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io(format!("creating {}", path.display()))(e)),
    }
    let total: usize = contents.iter().map(|c| c.len()).sum();
    let size = total + 64 * 1024 * (contents.len() + 1);
    let flags = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    let data = format!("mode=0755,uid=0,gid=0,size={size}");
    if let Err(e) = sys_mount(path, flags, &data) {
        let _ = std::fs::remove_dir(path);
        return Err(io(format!(
            "mounting a tmpfs on {} (needs root)",
            path.display()
        ))(e));
    }
    let fill = || -> Result<(), VolumeError> {
        for (f, data) in spec.files.iter().zip(contents) {
            write_file(path, f, data)?;
        }
        sys_mount(path, flags | libc::MS_REMOUNT | libc::MS_RDONLY, &data)
            .map_err(io(format!("remounting {} read-only", path.display())))
    };
    if let Err(e) = fill() {
        let _ = teardown(path);
        return Err(e);
    }
    Ok(())
}

fn write_file(root: &Path, f: &FileSpec, data: &[u8]) -> Result<(), VolumeError> {
    use std::io::Write;
    let dest = root.join(&f.target);
    if let Some(parent) = dest.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .map_err(io(format!("creating {}", parent.display())))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&dest)
        .map_err(io(format!("creating {}", dest.display())))?;
    file.write_all(data)
        .map_err(io(format!("writing {}", dest.display())))?;
    std::os::unix::fs::fchown(&file, Some(f.uid), Some(f.gid))
        .map_err(io(format!("chown {}", dest.display())))?;
    file.set_permissions(std::fs::Permissions::from_mode(f.mode))
        .map_err(io(format!("chmod {}", dest.display())))?;
    Ok(())
}

/// Unmounts the tmpfs at `path` (lazily if busy) and removes the mount point.
fn teardown(path: &Path) -> Result<(), VolumeError> {
    if is_mountpoint(path) {
        if let Err(e) = sys_umount(path, 0) {
            if e.raw_os_error() == Some(libc::EBUSY) {
                sys_umount(path, libc::MNT_DETACH)
                    .map_err(io(format!("unmounting {}", path.display())))?;
            } else {
                return Err(io(format!("unmounting {}", path.display()))(e));
            }
        }
    }
    match std::fs::remove_dir(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(format!("removing {}", path.display()))(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn file_specs() {
        let f = parse_file(Kind::Secret, "db-pass").unwrap();
        assert_eq!(
            f,
            FileSpec {
                kind: Kind::Secret,
                name: "db-pass".into(),
                target: "db-pass".into(),
                mode: 0o444,
                uid: 0,
                gid: 0
            }
        );
        let f = parse_file(
            Kind::Config,
            "app.conf,target=etc/app.conf,mode=0640,uid=1000,gid=50",
        )
        .unwrap();
        assert_eq!(
            (f.target.as_str(), f.mode, f.uid, f.gid),
            ("etc/app.conf", 0o640, 1000, 50)
        );
        for bad in [
            "",
            "a/b",
            "db,target=/abs",
            "db,target=../up",
            "db,target=a/../b",
            "db,mode=999",
            "db,mode=rw",
            "db,uid=-1",
            "db,owner=1",
            "db,target",
        ] {
            assert!(parse_file(Kind::Secret, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn volume_options() {
        let s = parse_opts(&opts(&[("secret", "a;b,mode=0400"), ("config.x", "c")])).unwrap();
        let names: Vec<_> = s.files.iter().map(|f| (f.kind, f.name.as_str())).collect();
        assert_eq!(
            names,
            vec![
                (Kind::Config, "c"),
                (Kind::Secret, "a"),
                (Kind::Secret, "b")
            ]
        );
        assert_eq!(s.files[2].mode, 0o400);
        assert!(parse_opts(&opts(&[])).is_err());
        let e = parse_opts(&opts(&[("size", "1m")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"size\" is unknown"), "{e}");
        // Two files at one path, or a file used as a directory.
        assert!(parse_opts(&opts(&[("secret", "a;b,target=a")])).is_err());
        assert!(parse_opts(&opts(&[("secret", "a;b,target=a/b")])).is_err());
    }

    #[test]
    fn volume_names() {
        validate_volume_name("app").unwrap();
        validate_volume_name("my_app.v2-1").unwrap();
        assert!(matches!(
            validate_volume_name(""),
            Err(VolumeError::MissingName)
        ));
        for bad in ["-a", "a/b", "a b", &"x".repeat(129)] {
            assert!(validate_volume_name(bad).is_err(), "{bad:?}");
        }
    }
}
