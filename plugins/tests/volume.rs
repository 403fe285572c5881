//! The volume driver against the real Docker daemon: a plugin on a socket under
//! /run/docker/plugins (so Docker finds it by name), a one-member registry in process,
//! a busybox image built FROM scratch. Skipped without a daemon, except under CI=true.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use plugins::secrets::{self, ClusterKey, Kind, SEALED_PREFIX};
use support::{docker, docker_out, docker_ready, eventually, uniq, Guard, Harness, Image};

/// Lines of /proc/self/mountinfo mentioning `path`.
fn mounts_under(path: &Path) -> Vec<String> {
    let p = path.display().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains(&p))
        .map(str::to_string)
        .collect()
}

/// Every regular file under `dir`, with its contents.
fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else if let Ok(b) = std::fs::read(&p) {
            out.push((p, b));
        }
    }
    out
}

struct Setup {
    h: Harness,
    driver: String,
    socket: PathBuf,
    volume_root: PathBuf,
    key: ClusterKey,
}

fn setup() -> Setup {
    let mut h = Harness::start();
    let driver = uniq("berth-test");
    let socket = PathBuf::from(format!("/run/docker/plugins/{driver}.sock"));
    let args = h.args(&socket);
    let volume_root = args.volume_root.clone();
    let (key, made) = ClusterKey::load_or_create(&h.key_file()).unwrap();
    assert!(made);
    h.plugin(&args);
    Setup {
        h,
        driver,
        socket,
        volume_root,
        key,
    }
}

#[test]
fn docker_run_reads_a_secret_from_a_berth_volume_and_nothing_remains() {
    if !docker_ready() {
        return;
    }
    let s = setup();
    let img = Image::busybox();
    // Binary, not UTF-8, with a newline: bytes must arrive unchanged.
    let secret: Vec<u8> = b"s3cr3t-\x00\xff\xfe-\n-end".to_vec();
    s.h.rt
        .block_on(secrets::create_secret(
            &s.h.client,
            &s.key,
            "db-pass",
            &secret,
        ))
        .unwrap();

    // The raw registry value is ciphertext.
    let (raw, _) = s.h.raw("/_berth/secrets/db-pass").expect("secret stored");
    assert!(raw.starts_with(SEALED_PREFIX), "{raw}");
    assert!(!raw.contains("s3cr3t"), "{raw}");

    let vol = uniq("app");
    let _vol_guard = Guard {
        kind: "volume",
        name: vol.clone(),
    };
    let mount = format!(
        "type=volume,volume-driver={},src={vol},dst=/run/secrets,volume-opt=secret=db-pass",
        s.driver
    );
    let out = docker(&[
        "run",
        "--rm",
        "--mount",
        &mount,
        &img.tag,
        "cat",
        "/run/secrets/db-pass",
    ]);
    assert_eq!(out, secret, "the container read other bytes");

    let out = docker(&[
        "run",
        "--rm",
        "--mount",
        &mount,
        &img.tag,
        "sh",
        "-c",
        "stat -c '%a %u:%g' /run/secrets/db-pass; touch /run/secrets/x 2>/dev/null && echo writable || echo read-only",
    ]);
    assert_eq!(String::from_utf8_lossy(&out), "444 0:0\nread-only\n");

    // After the containers are gone: no mount, no mount point, no file under the root.
    let mp = s.volume_root.join(&vol);
    assert!(
        eventually(Duration::from_secs(10), || !mp.exists()),
        "{} still exists after the container exited",
        mp.display()
    );
    assert!(
        mounts_under(&s.volume_root).is_empty(),
        "{:?}",
        mounts_under(&s.volume_root)
    );
    let left = files_under(&s.volume_root);
    assert!(left.is_empty(), "files left on disk: {left:?}");
}

#[test]
fn volume_with_several_files_modes_owners_and_a_config() {
    if !docker_ready() {
        return;
    }
    let s = setup();
    let img = Image::busybox();
    let c = &s.h.client;
    s.h.rt.block_on(async {
        secrets::create_secret(c, &s.key, "api-key", b"KEY")
            .await
            .unwrap();
        secrets::create_secret(c, &s.key, "tls-key", b"PEM")
            .await
            .unwrap();
        secrets::create_config(c, "app.conf", b"listen 80\n")
            .await
            .unwrap();
    });
    // The config is stored plain.
    assert_eq!(
        s.h.raw("/_berth/configs/app.conf").unwrap().0,
        "listen 80\n"
    );
    let vol = uniq("multi");
    let _vol_guard = Guard {
        kind: "volume",
        name: vol.clone(),
    };
    docker(&[
        "volume",
        "create",
        "-d",
        &s.driver,
        "-o",
        "secret=api-key,mode=0400,uid=1000,gid=1001;tls-key,target=tls/key.pem",
        "-o",
        "config=app.conf,target=etc/app.conf,mode=0644",
        &vol,
    ]);
    let out = docker(&[
        "run",
        "--rm",
        "-v",
        &format!("{vol}:/run/secrets"),
        &img.tag,
        "sh",
        "-c",
        "cd /run/secrets && for f in api-key tls/key.pem etc/app.conf; do echo \"$(stat -c '%a %u:%g' $f) $f $(cat $f)\"; done",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out),
        "400 1000:1001 api-key KEY\n444 0:0 tls/key.pem PEM\n644 0:0 etc/app.conf listen 80\n"
    );
    // docker volume inspect goes through Get.
    let inspect: serde_json::Value =
        serde_json::from_slice(&docker(&["volume", "inspect", &vol])).unwrap();
    assert_eq!(
        inspect[0]["Status"]["files"][2], "secret:tls-key -> tls/key.pem (0444 0:0)",
        "{inspect}"
    );
    let mp = s.volume_root.join(&vol);
    assert!(eventually(Duration::from_secs(10), || !mp.exists()));

    // A volume naming a missing secret is refused at creation, with the reason.
    let o = docker_out(&[
        "volume",
        "create",
        "-d",
        &s.driver,
        "-o",
        "secret=nope",
        &uniq("bad"),
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("secret nope does not exist"), "{err}");
    // Creating it stored nothing.
    assert_eq!(s.h.children("/_berth/volumes/test-node").len(), 1);
    // The registry's raw secret values are ciphertext, never the plaintext.
    for name in ["api-key", "tls-key"] {
        let raw = s.h.raw(&format!("/_berth/secrets/{name}")).unwrap().0;
        assert!(raw.starts_with(SEALED_PREFIX) && !raw.contains("KEY") && !raw.contains("PEM"));
    }
    let names = s.h.rt.block_on(secrets::list(c, Kind::Secret)).unwrap();
    assert_eq!(names, vec!["api-key", "tls-key"]);
    let _ = &s.socket;
}
