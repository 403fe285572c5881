//! Runs the same sequence of commands through `berth ctl` (`registry::ctl::run`) against
//! one fresh berth registry and through the real `etcdctl` (ETCDCTL_API=2)
//! against another fresh berth, and requires identical stdout, stderr and exit codes.
//! Only store indexes (renumbered by first appearance), expirations, URLs
//! and member IDs are normalised.

mod common;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use clap::Parser;
use common::{Etcd, ETCDCTL};
use registry::ctl::{run, CtlArgs};

#[derive(Parser)]
struct Berth {
    #[command(subcommand)]
    cmd: Top,
}

#[derive(clap::Subcommand)]
enum Top {
    Ctl(CtlArgs),
}

#[derive(Debug, PartialEq)]
struct Outcome {
    stdout: String,
    stderr: String,
    code: i32,
}

async fn ours(url: &str, args: &[&str]) -> Outcome {
    let mut argv = vec!["berth", "ctl", "--endpoints", url];
    argv.extend_from_slice(args);
    let Top::Ctl(ctl) = Berth::try_parse_from(&argv)
        .unwrap_or_else(|e| panic!("berth ctl {args:?} does not parse: {e}"))
        .cmd;
    let mut buf = Vec::new();
    let res = run(ctl, &mut buf).await;
    let (stderr, code) = match res {
        Ok(()) => (String::new(), 0),
        Err(e) => (
            e.report().map(|s| s + "\n").unwrap_or_default(),
            e.exit_code(),
        ),
    };
    Outcome {
        stdout: String::from_utf8(buf).unwrap(),
        stderr,
        code,
    }
}

fn theirs(url: &str, args: &[&str]) -> Outcome {
    let out = Command::new(ETCDCTL)
        .env("ETCDCTL_API", "2")
        .args(["--endpoints", url])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run etcdctl");
    Outcome {
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
        code: out.status.code().unwrap_or(-1),
    }
}

/// Per-transcript normaliser: index numbers become `#n` in order of first
/// appearance, so equal indexes stay equal and distinct ones distinct.
struct Norm {
    replace: Vec<(String, String)>,
    seen: HashMap<u64, usize>,
}

impl Norm {
    fn new(etcd: &Etcd, member_id: &str) -> Norm {
        Norm {
            replace: vec![
                (etcd.client_url.clone(), "<client-url>".into()),
                (etcd.peer_url.clone(), "<peer-url>".into()),
                (member_id.to_string(), "<member-id>".into()),
            ],
            seen: HashMap::new(),
        }
    }

    fn token(&mut self, n: u64) -> String {
        let next = self.seen.len();
        format!("#{}", self.seen.entry(n).or_insert(next))
    }

    fn apply(&mut self, text: &str) -> String {
        let mut s = text.to_string();
        for (from, to) in &self.replace {
            s = s.replace(from.as_str(), to);
        }
        s = mask_between(&s, "\"expiration\":\"", "\"", "<expiration>");
        for marker in [
            "\"createdIndex\":",
            "\"modifiedIndex\":",
            "Created-Index: ",
            "Modified-Index: ",
            "Index: ",
            ") [",
            "([",
            " != ",
        ] {
            s = self.renumber_after(&s, marker);
        }
        self.renumber_long_runs(&s)
    }

    fn renumber_after(&mut self, s: &str, marker: &str) -> String {
        let mut out = String::new();
        let mut rest = s;
        while let Some(pos) = rest.find(marker) {
            let end = pos + marker.len();
            out.push_str(&rest[..end]);
            rest = &rest[end..];
            let digits = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            if digits > 0 {
                let n: u64 = rest[..digits].parse().unwrap();
                out.push_str(&self.token(n));
                rest = &rest[digits..];
            }
        }
        out.push_str(rest);
        out
    }

    /// In-order keys are 20-digit zero padded indexes.
    fn renumber_long_runs(&mut self, s: &str) -> String {
        let mut out = String::new();
        let chars: Vec<char> = s.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            if chars[i].is_ascii_digit() {
                let start = i;
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
                let run: String = chars[start..i].iter().collect();
                if run.len() == 20 {
                    let t = self.token(run.parse().unwrap());
                    out.push_str(&t);
                } else {
                    out.push_str(&run);
                }
            } else {
                out.push(chars[i]);
                i += 1;
            }
        }
        out
    }
}

fn mask_between(s: &str, start: &str, end: &str, with: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(pos) = rest.find(start) {
        let from = pos + start.len();
        out.push_str(&rest[..from]);
        rest = &rest[from..];
        let stop = rest.find(end).unwrap_or(rest.len());
        out.push_str(with);
        rest = &rest[stop..];
    }
    out.push_str(rest);
    out
}

fn sequence() -> Vec<Vec<&'static str>> {
    let cmds: &[&[&str]] = &[
        &["set", "/a/b", "va"],
        &["-o", "extended", "set", "/a/c", "vc"],
        &[
            "-o",
            "json",
            "set",
            "/x",
            "hello <world> & \"quotes\" \\ tab\there",
        ],
        &["get", "/x"],
        &["get", "/a/b"],
        &["-o", "extended", "get", "/a/b"],
        &["-o", "json", "get", "/a/b"],
        &["get", "/a"],
        &["-o", "json", "get", "/a"],
        &["get", "/nope"],
        &["-o", "json", "get", "/nope"],
        &["get"],
        &["get", "--quorum", "/a/b"],
        &["get", "-q", "--sort", "/a/c"],
        &["mk", "/a/b", "dup"],
        &["mk", "/m1", "v1"],
        &["-o", "json", "mk", "/m2", "v2"],
        &["-o", "extended", "mk", "--ttl", "100", "/m3", "v3"],
        &["-o", "json", "mk", "--ttl", "100", "/m4", "v4"],
        &["mk", "--in-order", "/q", "first"],
        &["-o", "json", "mk", "--in-order", "/q", "second"],
        &["-o", "extended", "mk", "--in-order", "/q", "third"],
        &["ls", "--sort", "/q"],
        &["mkdir", "/d"],
        &["-o", "extended", "mkdir", "/d2"],
        &["-o", "json", "mkdir", "/d3"],
        &["mkdir", "/d"],
        &["-o", "json", "mkdir", "--ttl", "100", "/d4"],
        &["setdir", "/d"],
        &["setdir", "/sd"],
        &["-o", "extended", "setdir", "/sd2"],
        &["-o", "json", "setdir", "/sd3"],
        &["updatedir", "/d"],
        &["-o", "extended", "updatedir", "--ttl", "100", "/d2"],
        &["-o", "json", "updatedir", "/d3"],
        &["updatedir", "/nodir"],
        &["update", "/a/b", "vb2"],
        &["-o", "json", "update", "/a/b", "vb3"],
        &["-o", "extended", "update", "/a/b", "vb4"],
        &["update", "/nokey", "v"],
        &["set", "--swap-with-value", "wrong", "/a/b", "z"],
        &["set", "--swap-with-value", "vb4", "/a/b", "z"],
        &["-o", "json", "set", "--swap-with-index", "1", "/a/b", "zz"],
        &[
            "-o",
            "extended",
            "set",
            "--swap-with-value",
            "z",
            "/a/b",
            "zz",
        ],
        &["set", "--ttl", "100", "/t", "tv"],
        &["-o", "extended", "set", "--ttl", "100", "/t", "tv2"],
        &["-o", "json", "set", "--ttl", "100", "/t", "tv3"],
        &["mkdir", "/d/sub"],
        &["set", "/d/sub/leaf", "l"],
        &["set", "/d/k", "k"],
        &["set", "/one/two/three", "3"],
        &["set", "/sp ace/k%y", "spaced"],
        &["get", "/sp ace/k%y"],
        &["ls", "--sort", "/sp ace"],
        &["set", "rel/key", "relative"],
        &["get", "/rel/key/"],
        &["ls", "--sort"],
        &["ls", "--sort", "/"],
        &["ls", "--sort", "-r", "/"],
        &["ls", "--sort", "--recursive", "-p", "/"],
        &["ls", "-p", "--sort", "/d"],
        &["ls", "-r", "/one"],
        &["ls", "-r", "-p", "/one"],
        &["-o", "json", "ls", "--sort", "--recursive", "/d"],
        &["-o", "extended", "ls", "--sort", "/d"],
        &["-o", "json", "ls", "/one/two"],
        &["ls", "/a/b"],
        &["-o", "extended", "ls", "/a/b"],
        &["ls", "/nope"],
        &["ls", "-q", "--sort", "/a"],
        &["watch", "--after-index", "1", "/a/b"],
        &["-o", "json", "watch", "--after-index", "1", "/a/b"],
        &["-o", "extended", "watch", "--after-index", "1", "/a/b"],
        &["watch", "-r", "--after-index", "1", "/d"],
        &[
            "-o",
            "extended",
            "watch",
            "--recursive",
            "--after-index",
            "1",
            "/d",
        ],
        &[
            "-o",
            "json",
            "watch",
            "--recursive",
            "--after-index",
            "1",
            "/d",
        ],
        &["watch"],
        &["rm", "/a/b"],
        &["-o", "extended", "rm", "/a/c"],
        &["-o", "json", "rm", "/m1"],
        &["rm", "/d"],
        &["rm", "--dir", "/d"],
        &["rm", "--recursive", "/d2"],
        &["-o", "extended", "rm", "-r", "/d"],
        &["-o", "json", "rm", "--recursive", "/d3"],
        &["rmdir", "/sd"],
        &["-o", "extended", "rmdir", "/sd2"],
        &["-o", "json", "rmdir", "/sd3"],
        &["rmdir", "/q"],
        &["rmdir", "/m2"],
        &["rm", "--with-value", "x", "/m3"],
        &["rm", "--with-index", "1", "/m3"],
        &["rm", "--with-value", "v3", "/m3"],
        &["rm", "/nope"],
        &["rm", "watch-watch"],
        &["rm"],
        &["watch", "/a"],
        &["member", "list"],
        &["member", "remove", "default"],
        &["member", "remove", "1234"],
        &["member", "add", "onlyname"],
        &["cluster-health"],
    ];
    cmds.iter()
        .filter(|c| c != &&["watch", "/a"]) // waits forever; covered below
        .map(|c| c.to_vec())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_output_matches_etcdctl() {
    if !common::available() {
        return;
    }
    let mine = Etcd::start().await;
    let real = Etcd::start().await;
    let mine_id = first_member_id(&mine).await;
    let real_id = first_member_id(&real).await;
    let mut norm_mine = Norm::new(&mine, &mine_id);
    let mut norm_real = Norm::new(&real, &real_id);

    let mut failures = Vec::new();
    let (mut with_stdout, mut failed) = (0, 0);
    for args in sequence() {
        let a = ours(&mine.client_url, &args).await;
        let b = theirs(&real.client_url, &args);
        with_stdout += usize::from(!b.stdout.is_empty());
        failed += usize::from(b.code != 0);
        let a = Outcome {
            stdout: norm_mine.apply(&a.stdout),
            stderr: norm_mine.apply(&a.stderr),
            code: a.code,
        };
        let b = Outcome {
            stdout: norm_real.apply(&b.stdout),
            stderr: norm_real
                .apply(&b.stderr)
                .replace("etcdctl member remove", "berth ctl member remove"),
            code: b.code,
        };
        // etcdctl adds a documentation link to the member-by-name hint.
        let b = Outcome {
            stderr: strip_doc_link(&b.stderr),
            ..b
        };
        if a != b {
            failures.push(format!(
                "command {args:?}\n  berth ctl: {a:?}\n  etcdctl:   {b:?}"
            ));
        }
    }

    // A watch that has to wait for a future change.
    let a = {
        let url = mine.client_url.clone();
        let task =
            tokio::spawn(async move { ours(&url, &["-o", "extended", "watch", "/w"]).await });
        tokio::time::sleep(Duration::from_millis(700)).await;
        ours(&mine.client_url, &["set", "/w", "later"]).await;
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .unwrap()
            .unwrap()
    };
    let b = {
        let child = Command::new(ETCDCTL)
            .env("ETCDCTL_API", "2")
            .args([
                "--endpoints",
                &real.client_url,
                "-o",
                "extended",
                "watch",
                "/w",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(700)).await;
        theirs(&real.client_url, &["set", "/w", "later"]);
        let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
            .await
            .unwrap();
        Outcome {
            stdout: String::from_utf8(out.stdout).unwrap(),
            stderr: String::from_utf8(out.stderr).unwrap(),
            code: out.status.code().unwrap_or(-1),
        }
    };
    let a = norm_mine.apply(&format!("{a:?}"));
    let b = norm_real.apply(&format!("{b:?}"));
    if a != b {
        failures.push(format!("waiting watch\n  berth ctl: {a}\n  etcdctl:   {b}"));
    }

    // Last, as it leaves each one-member cluster without quorum: member add.
    let add = ["member", "add", "newbie", "http://127.0.0.1:2"];
    let a = ours(&mine.client_url, &add).await;
    let b = theirs(&real.client_url, &add);
    let new_id = |o: &Outcome| {
        o.stdout
            .split_whitespace()
            .skip_while(|w| *w != "ID")
            .nth(1)
            .unwrap_or("?")
            .to_string()
    };
    let (ia, ib) = (new_id(&a), new_id(&b));
    let a = Outcome {
        stdout: sort_initial_cluster(&a.stdout),
        ..a
    };
    let b = Outcome {
        stdout: sort_initial_cluster(&b.stdout),
        ..b
    };
    let a = norm_mine.apply(&format!("{a:?}")).replace(&ia, "<new-id>");
    let b = norm_real.apply(&format!("{b:?}")).replace(&ib, "<new-id>");
    if a != b || !a.contains("ETCD_INITIAL_CLUSTER_STATE") {
        failures.push(format!("member add\n  berth ctl: {a}\n  etcdctl:   {b}"));
    }

    // Guard against a vacuous comparison (e.g. etcdctl not running at all).
    assert!(
        with_stdout > 60,
        "only {with_stdout} etcdctl commands printed anything"
    );
    assert!(failed > 20, "only {failed} etcdctl commands failed");
    assert!(
        failures.is_empty(),
        "{} of the commands differ from etcdctl:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn strip_doc_link(s: &str) -> String {
    s.lines()
        .filter(|l| !l.starts_with("For more details, read the documentation"))
        .map(|l| format!("{l}\n"))
        .collect::<String>()
        .replace("\n\n\n", "\n\n")
}

async fn first_member_id(e: &Etcd) -> String {
    let c = registry::client::Client::new(std::slice::from_ref(&e.client_url)).unwrap();
    c.member_list().await.unwrap()[0].id.clone()
}

/// exec-watch runs the command with the ETCD_WATCH_* variables, as etcdctl does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_watch_matches_etcdctl() {
    if !common::available() {
        return;
    }
    let mine = Etcd::start().await;
    let real = Etcd::start().await;
    let dir = std::env::temp_dir().join(format!("wip-ctl-exec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = "printf '%s|%s|%s|%s' \"$ETCD_WATCH_ACTION\" \"$ETCD_WATCH_KEY\" \"$ETCD_WATCH_VALUE\" \"$ETCD_WATCH_MODIFIED_INDEX\" > \"$OUT\"";
    let out_a = dir.join("a");
    let out_b = dir.join("b");
    std::env::set_var("OUT", &out_a);

    ours(&mine.client_url, &["mkdir", "/ew"]).await;
    theirs(&real.client_url, &["mkdir", "/ew"]);

    let url = mine.client_url.clone();
    let script_a = script.to_string();
    let task = tokio::spawn(async move {
        ours(
            &url,
            &[
                "exec-watch",
                "--recursive",
                "/ew",
                "--",
                "sh",
                "-c",
                &script_a,
            ],
        )
        .await
    });
    let mut child = Command::new(ETCDCTL)
        .env("ETCDCTL_API", "2")
        .env("OUT", &out_b)
        .args([
            "--endpoints",
            &real.client_url,
            "exec-watch",
            "--recursive",
            "/ew",
            "--",
            "sh",
            "-c",
            script,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    ours(&mine.client_url, &["set", "/ew/k", "hello world"]).await;
    theirs(&real.client_url, &["set", "/ew/k", "hello world"]);

    let read = |p: std::path::PathBuf| async move {
        for _ in 0..100 {
            if let Ok(s) = std::fs::read_to_string(&p) {
                if !s.is_empty() {
                    return s;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{} never written", p.display());
    };
    if task.is_finished() {
        panic!("berth ctl exec-watch ended early: {:?}", task.await);
    }
    let a = read(out_a).await;
    let b = read(out_b).await;
    task.abort();
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let strip_index = |s: &str| {
        s.rsplit_once('|')
            .map(|(h, i)| (h.to_string(), i.parse::<u64>().is_ok()))
            .unwrap()
    };
    assert_eq!(strip_index(&a), strip_index(&b), "berth: {a} etcdctl: {b}");
    assert_eq!(strip_index(&a), ("set|/ew/k|hello world".to_string(), true));
}

/// `member add` lists the cluster in member-id order, and ids differ between the two
/// servers: compare the entries as a set.
fn sort_initial_cluster(s: &str) -> String {
    s.lines()
        .map(|line| {
            match line
                .strip_prefix("ETCD_INITIAL_CLUSTER=\"")
                .and_then(|r| r.strip_suffix('"'))
            {
                Some(list) => {
                    let mut parts: Vec<&str> = list.split(',').collect();
                    parts.sort_unstable();
                    format!("ETCD_INITIAL_CLUSTER=\"{}\"", parts.join(","))
                }
                None => line.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + if s.ends_with('\n') { "\n" } else { "" }
}
