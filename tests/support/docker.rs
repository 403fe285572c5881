//! Docker fixtures: the daemon check, the busybox workload image built FROM scratch, and
//! containers, networks and image tags removed by Drop guards.

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

pub const BUSYBOX: &str = "/bin/busybox";

/// True when Docker answers; panics under CI=true when it does not.
pub fn docker_ready() -> bool {
    let ok = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        if super::in_ci() {
            panic!("the Docker daemon is not reachable (`docker info` fails) and CI=true: Docker tests must run in CI");
        }
        eprintln!("skipping: no Docker daemon reachable (`docker info` fails)");
        return false;
    }
    if !Path::new(BUSYBOX).exists() {
        panic!("{BUSYBOX} is missing: install it with `apt-get install -y busybox-static` (scripts/setup does)");
    }
    true
}

pub fn docker_out(args: &[&str]) -> std::process::Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("run the docker CLI")
}

/// Runs `docker ARGS`, panics with its stderr on failure, returns trimmed stdout.
pub fn docker(args: &[&str]) -> String {
    let o = docker_out(args);
    assert!(
        o.status.success(),
        "docker {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A name unique to this test process: `<prefix>-<pid>-<n>` (also a valid DNS label).
pub fn uniq(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// A tag of the busybox workload image; the tag is removed on drop.
pub struct Image {
    pub tag: String,
}

/// The workload image: busybox-static FROM scratch, `EXPOSE 80`, serving "hello" with
/// `httpd -f -p 80` under a shell that exits on SIGTERM.
pub const BUSYBOX_DOCKERFILE: &str = r#"FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "sh", "-c", "/bin/busybox mkdir -p /usr/bin /sbin /usr/sbin /tmp /www && /bin/busybox --install -s && echo hello > /www/index.html"]
EXPOSE 80
CMD ["/bin/sh", "-c", "trap 'exit 0' TERM; httpd -f -p 80 -h /www & wait"]
"#;

/// Builds [`BUSYBOX_DOCKERFILE`] as `tag` with `docker` (plus `host_args`, e.g. `-H unix://...`).
pub fn build_busybox(host_args: &[&str], tag: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::copy(BUSYBOX, dir.path().join("busybox")).expect("copy busybox");
    std::fs::write(dir.path().join("Dockerfile"), BUSYBOX_DOCKERFILE).unwrap();
    let o = Command::new("docker")
        .args(host_args)
        .args(["build", "-q", "-t", tag])
        .arg(dir.path())
        .output()
        .expect("docker build");
    assert!(
        o.status.success(),
        "building {tag} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

impl Image {
    /// `berth-test/busybox:<uniq>` on the host's Docker.
    pub fn busybox() -> Image {
        let tag = format!("berth-test/busybox:{}", uniq("t"));
        build_busybox(&[], &tag);
        Image { tag }
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = docker_out(&["rmi", "-f", &self.tag]);
    }
}

/// A container, removed (`docker rm -f`) on drop.
pub struct Container {
    pub name: String,
    pub id: String,
}

impl Container {
    /// `docker run -d --name <name> ARGS...` (ARGS end with the image and command).
    pub fn run(name: &str, args: &[&str]) -> Container {
        let mut all = vec!["run", "-d", "--name", name];
        all.extend_from_slice(args);
        let id = docker(&all);
        Container {
            name: name.to_string(),
            id,
        }
    }

    pub fn stop(&self) {
        docker(&["stop", "-t", "5", &self.name]);
    }

    pub fn exec(&self, cmd: &[&str]) {
        let mut all = vec!["exec", self.name.as_str()];
        all.extend_from_slice(cmd);
        docker(&all);
    }

    pub fn inspect(&self, format: &str) -> String {
        docker(&["inspect", "-f", format, &self.name])
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let o = docker_out(&["logs", "--tail", "30", &self.name]);
            eprintln!(
                "----- container {} -----\n{}{}",
                self.name,
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
        }
        let _ = docker_out(&["rm", "-f", &self.name]);
    }
}

/// A user network, removed on drop.
pub struct Network {
    pub name: String,
}

impl Network {
    pub fn create() -> Network {
        let name = uniq("berth-test-net");
        docker(&["network", "create", &name]);
        Network { name }
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = docker_out(&["network", "rm", &self.name]);
    }
}
