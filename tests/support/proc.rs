//! A `berth` subcommand as a child process, its stderr logged to a temp file.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{eventually, BERTH};

/// A long-running `berth` process (registrator, announce, proxy, ...) with its log in a temp dir.
pub struct Proc {
    child: Option<Child>,
    /// With [`Proc::start_unread_stderr`]: the read end of stderr, held open and never read.
    unread: Option<std::process::ChildStderr>,
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
        let mut p = Proc::new(wrapper, args);
        p.spawn();
        p
    }

    /// Runs `berth ARGS...` with stderr a pipe that nobody reads: once the pipe's 64 KiB are
    /// full, every write to stderr would block (an operator's paused `berth ... | less`, a
    /// stuck log shipper). There is no log to show. Logs at info whatever TEST_BERTH_LOG says.
    pub fn start_unread_stderr(args: &[String]) -> Proc {
        let mut p = Proc::new(&[], args);
        let mut child = p
            .command()
            .env("BERTH_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn berth");
        p.unread = child.stderr.take();
        p.child = Some(child);
        p
    }

    /// The read end of stderr of a [`Proc::start_unread_stderr`] process, to start reading it.
    pub fn take_stderr(&mut self) -> Option<std::process::ChildStderr> {
        self.unread.take()
    }

    /// Not started yet.
    fn new(wrapper: &[&str], args: &[String]) -> Proc {
        let dir = tempfile::tempdir().expect("temp dir");
        Proc {
            child: None,
            unread: None,
            wrapper: wrapper.iter().map(|s| s.to_string()).collect(),
            args: args.to_vec(),
            log: dir.path().join("berth.log"),
            _dir: dir,
        }
    }

    /// `WRAPPER... berth ARGS...` with the test log level, no colours, stdout discarded.
    fn command(&self) -> Command {
        let mut cmd = match self.wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(BERTH);
                c
            }
            None => Command::new(BERTH),
        };
        cmd.args(&self.args)
            .env(
                "BERTH_LOG",
                std::env::var("TEST_BERTH_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("NO_COLOR", "1")
            .stdout(Stdio::null());
        cmd
    }

    pub fn spawn(&mut self) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = self.command().stderr(log).spawn().expect("spawn berth");
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

    /// Every thread's stack of the running process, by gdb when it is installed (and may
    /// attach): what a process that stopped answering is waiting for. Without gdb, each
    /// thread's name and kernel wait channel.
    pub fn stacks(&self) -> String {
        let Some(c) = &self.child else {
            return "(not running)".into();
        };
        let pid = c.id().to_string();
        let gdb = Command::new("timeout")
            .args([
                "30",
                "gdb",
                "-batch",
                "-p",
                &pid,
                "-ex",
                "thread apply all bt",
            ])
            .output();
        let mut out = match gdb {
            Ok(o) => format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => format!("(no gdb stacks: {e})\n"),
        };
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
            for t in tasks.flatten() {
                let read = |f: &str| {
                    std::fs::read_to_string(t.path().join(f))
                        .unwrap_or_default()
                        .trim()
                        .to_string()
                };
                out.push_str(&format!(
                    "thread {}: wchan {}\n",
                    read("comm"),
                    read("wchan")
                ));
            }
        }
        out
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
