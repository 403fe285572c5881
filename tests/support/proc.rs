//! A `berth` subcommand as a child process, its stderr logged to a temp file.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{eventually, BERTH};

/// A long-running `berth` process (registrator, announce, proxy, ...) with its log in a temp dir.
pub struct Proc {
    child: Option<Child>,
    /// A command that runs berth (e.g. `nsenter --net=...`), empty for berth itself.
    wrapper: Vec<String>,
    args: Vec<String>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Proc {
    pub fn start(args: &[String]) -> Proc {
        Self::start_wrapped(&[], args)
    }

    /// Runs `WRAPPER... berth ARGS...`, e.g. with `nsenter --net=/run/netns/x` in front.
    pub fn start_wrapped(wrapper: &[&str], args: &[String]) -> Proc {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut p = Proc {
            child: None,
            wrapper: wrapper.iter().map(|s| s.to_string()).collect(),
            args: args.to_vec(),
            log: dir.path().join("berth.log"),
            _dir: dir,
        };
        p.spawn();
        p
    }

    pub fn spawn(&mut self) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd = match self.wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(BERTH);
                c
            }
            None => Command::new(BERTH),
        };
        let child = cmd
            .args(&self.args)
            .env(
                "BERTH_LOG",
                std::env::var("TEST_BERTH_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn berth");
        self.child = Some(child);
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn wait_log(&self, needle: &str, timeout: Duration) {
        let ok = eventually(timeout, || self.log().contains(needle).then_some(()));
        assert!(
            ok.is_some(),
            "{needle:?} not logged within {timeout:?}; log:\n{}",
            self.log()
        );
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            Command::new("kill")
                .args([sig, &c.id().to_string()])
                .status()
                .unwrap();
        }
    }

    /// Some(exit status) once the process has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().unwrap())
    }

    pub fn running(&mut self) -> bool {
        self.child.is_some() && self.exited().is_none()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("----- berth {} -----\n{}", self.args.join(" "), self.log());
        }
        self.kill9();
    }
}
