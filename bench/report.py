#!/usr/bin/env python3
"""Registry benchmark helper for bench/run.

  report.py machine --dir D --berth B --etcd E     machine description + fsync latency (JSON)
  report.py collect --machine M --results R ...    combine one run into bench/results/latest.json
  report.py render --input latest.json             print BENCHMARKS.md

`render` keeps the hand-written text between <!-- BEGIN analysis --> and <!-- END analysis -->
of the existing BENCHMARKS.md (pass --previous), so a re-run refreshes the numbers and keeps the
commentary; re-read the commentary after a re-run, since it refers to the numbers.
"""

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def sh(cmd):
    try:
        return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=120).stdout.strip()
    except Exception as e:  # noqa: BLE001
        return f"({e})"


def fsync_latency(directory, n=300, size=4096):
    """Append `size` bytes and fsync, n times; the cost a WAL append pays per commit."""
    path = os.path.join(directory, "fsync-probe")
    buf = os.urandom(size)
    lat = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for _ in range(n):
            t = time.perf_counter()
            os.write(fd, buf)
            os.fsync(fd)
            lat.append((time.perf_counter() - t) * 1000)
    finally:
        os.close(fd)
        os.unlink(path)
    lat.sort()
    q = lambda p: round(lat[min(len(lat) - 1, int(p * len(lat)))], 3)  # noqa: E731
    return {
        "method": f"{n} x write({size} B)+fsync, python, {directory}",
        "p50_ms": q(0.5),
        "p90_ms": q(0.9),
        "p99_ms": q(0.99),
        "max_ms": round(lat[-1], 3),
        "mean_ms": round(statistics.mean(lat), 3),
    }


def dd_dsync(directory):
    path = os.path.join(directory, "dd-probe")
    out = sh(f"dd if=/dev/zero of={path} bs=4k count=500 oflag=dsync 2>&1; rm -f {path}")
    m = re.search(r"copied, ([0-9.]+) s", out)
    res = {"command": "dd if=/dev/zero bs=4k count=500 oflag=dsync", "output": out.splitlines()[-1] if out else ""}
    if m:
        res["per_write_ms"] = round(float(m.group(1)) / 500 * 1000, 3)
    return res


def cmd_machine(a):
    mem_kib = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    cpu = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    os.makedirs(a.dir, exist_ok=True)
    df = sh(f"df -T {a.dir} | tail -n 1").split()
    git = sh(f"git -C {ROOT} rev-parse --short HEAD")
    dirty = sh(f"git -C {ROOT} status --porcelain -- registry src Cargo.toml Cargo.lock")
    m = {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "mem_mib": mem_kib // 1024,
        "kernel": platform.release(),
        "os": sh(". /etc/os-release 2>/dev/null && echo $PRETTY_NAME"),
        "virt": sh("systemd-detect-virt 2>/dev/null") or "unknown",
        "disk": {"dir": a.dir, "device": df[0] if df else "", "fstype": df[1] if len(df) > 1 else ""},
        "fsync": fsync_latency(a.dir),
        "dd_dsync": dd_dsync(a.dir),
        "versions": {
            "berth": sh(f"{a.berth} --version"),
            "berth_git": git + (" + uncommitted changes" if dirty else ""),
            "berth_binary": f"{a.berth}, built {datetime.datetime.fromtimestamp(os.path.getmtime(a.berth), datetime.timezone.utc):%Y-%m-%d %H:%M UTC}",
            "berth_build": a.build_note,
            "head_commit_time": sh(f"git -C {ROOT} log -1 --format=%cd --date=format-local:'%Y-%m-%d %H:%M UTC'"),
            "etcd": sh(f"{a.etcd} --version | head -n 1"),
            "etcd_go": sh(f"{a.etcd} --version | grep -i 'go version'"),
            "rustc": sh("rustc --version"),
        },
    }
    json.dump(m, sys.stdout, indent=1)
    print()


def read_text(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def cmd_collect(a):
    results = {}
    crashes = []
    with open(a.results) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            r = json.loads(line)
            if r.get("workload") == "crash":
                crashes.append(r)
                continue
            results.setdefault(r["system"], {})[r["workload"]] = r
    profile = {}
    if a.profile and os.path.isdir(a.profile):
        for name in ("top-leader.txt", "top-all.txt", "vmstat.txt", "perf-top.txt", "perf-threads.txt",
                     "perf-children.txt"):
            t = read_text(os.path.join(a.profile, name))
            if t is not None:
                profile[name] = t
        for name in ("diskstats.json", "loadgen.json", "cpu.json"):
            t = read_text(os.path.join(a.profile, name))
            if t:
                try:
                    profile[name] = json.loads(t)
                except ValueError:
                    profile[name] = t
    out = {
        "generated_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "settings": a.settings,
        "elapsed_s": a.elapsed,
        "machine": json.load(open(a.machine)),
        "results": results,
        "crashes": crashes,
        "profile": profile,
    }
    json.dump(out, sys.stdout, indent=1)
    print()


# ---------------------------------------------------------------------------------------------
# render


def fmt(v, digits=2):
    if v is None:
        return "–"
    if isinstance(v, float):
        if abs(v) >= 100:
            return f"{v:,.0f}"
        return f"{v:.{digits}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def ratio(b, e):
    if b is None or e in (None, 0):
        return "–"
    return f"{b / e:.2f}x"


def lat(r, q):
    if not r:
        return None
    l = r.get("latency_ms") or {}
    return l.get(q)


def get(res, sys_, wl):
    return res.get(sys_, {}).get(wl)


def top_threads(text, n=12):
    """Last iteration of `top -H -b -n 2`: the thread lines."""
    if not text:
        return ""
    blocks = text.split("top - ")
    last = blocks[-1].splitlines()
    out, seen_header = [], False
    for line in last:
        if line.strip().startswith("PID"):
            seen_header = True
            out.append(line)
            continue
        if seen_header and line.strip():
            out.append(line)
    return "\n".join(out[: n + 1])


def cpu_line(text):
    if not text:
        return ""
    blocks = text.split("top - ")
    for line in blocks[-1].splitlines():
        if "Cpu(s)" in line:
            return line.strip()
    return ""


OTHERS_MARK = "<!-- other benchmarks: kept as they are by bench/run -->"


def cmd_render(a):
    d = json.load(open(a.input))
    res = d["results"]
    m = d["machine"]
    L = []
    w = L.append

    prev = read_text(a.previous) if a.previous else None
    analysis = None
    others = None
    if prev:
        mm = re.search(r"<!-- BEGIN analysis -->\n(.*?)<!-- END analysis -->", prev, re.S)
        if mm:
            analysis = mm.group(1)
        # The DNS, registrator and proxy sections come from their own scripts: keep them.
        i = prev.find(OTHERS_MARK)
        if i >= 0:
            others = prev[i:]

    w("# Benchmarks: berth registry vs etcd 3.4 (v2 API)")
    w("")
    w(f"Generated by `bench/run` on {d['generated_at']}; raw results in `bench/results/latest.json`. "
      f"Both systems ran as 3-member clusters on loopback on the same machine, one cluster at a time, "
      f"with the same load generator (`bench/loadgen`) and the same workload. "
      f"Benchmark wall time {d['elapsed_s']} s; settings: `{d['settings']}`.")
    w("")
    w("## Machine")
    w("")
    f = m["fsync"]
    dd = m.get("dd_dsync", {})
    w(f"- CPU: {m['nproc']} × {m['cpu']} ({m.get('virt', '')}); memory {m['mem_mib']:,} MiB; "
      f"kernel {m['kernel']}; {m.get('os', '')}")
    w(f"- Disk: `{m['disk']['device']}` ({m['disk']['fstype']}) holding `{m['disk']['dir']}`. "
      f"fsync latency (4 KiB append + fsync): p50 **{f['p50_ms']} ms**, p90 {f['p90_ms']} ms, "
      f"p99 {f['p99_ms']} ms, max {f['max_ms']} ms"
      + (f"; `{dd['command']}`: {dd.get('per_write_ms')} ms per write" if dd.get("per_write_ms") else "")
      + ".")
    v = m["versions"]
    w(f"- Versions: {v['berth']} (repo HEAD {v['berth_git']}, committed {v.get('head_commit_time', '?')}; "
      f"binary {v.get('berth_binary', '?')}: {v.get('berth_build', '')}; {v['rustc']}); "
      f"{v['etcd']} ({v['etcd_go']}, run with `--enable-v2`).")
    w("- Durability: both fsync before acknowledging (etcd: WAL fsync on each Raft ready batch; "
      "berth: RocksDB write with `sync=true` for every log append).")
    w("- The load generator runs on the same 2 cores as the three members, so every number here "
      "includes client CPU contention; the ratio between the systems is the meaningful figure.")
    w("")

    # ---- writes
    w("## Writes (PUT /v2/keys/bench/put/<worker>-<n>, 64-byte values)")
    w("")
    w("`round-robin`: each connection is pinned to one member, connections spread over the three "
      "members (with 1 connection: member n1 only, which may be a follower), so most writes "
      "arrive at a follower and are forwarded to the leader. `leader`: all connections to the leader.")
    w("")
    w("| conns | target | berth req/s | etcd req/s | berth/etcd | berth p50 / p90 / p99 / max ms | etcd p50 / p90 / p99 / max ms | errors (berth / etcd) |")
    w("|---:|---|---:|---:|---:|---|---|---|")
    conns = []
    for wl in list(res.get("berth", {})) + list(res.get("etcd", {})):
        mm = re.match(r"put-(rr|leader)-(\d+)$", wl)
        if mm and int(mm.group(2)) not in conns:
            conns.append(int(mm.group(2)))
    conns.sort()

    def latcell(r):
        if not r or not r.get("latency_ms"):
            return "–"
        l = r["latency_ms"]
        return f"{fmt(l['p50'])} / {fmt(l['p90'])} / {fmt(l['p99'])} / {fmt(l['max'])}"

    for c in conns:
        for tgt in ("rr", "leader"):
            b, e = get(res, "berth", f"put-{tgt}-{c}"), get(res, "etcd", f"put-{tgt}-{c}")
            if not b and not e:
                continue
            br, er = (b or {}).get("rps"), (e or {}).get("rps")
            w(f"| {c} | {'round-robin' if tgt == 'rr' else 'leader'} | {fmt(br)} | {fmt(er)} | {ratio(br, er)} | "
              f"{latcell(b)} | {latcell(e)} | {fmt((b or {}).get('errors'))} / {fmt((e or {}).get('errors'))} |")
    w("")

    # ---- reads
    w("## Reads (GET of 1,000 pre-written keys, random key per request)")
    w("")
    w("| workload | conns | berth req/s | etcd req/s | berth/etcd | berth p50 / p90 / p99 / max ms | etcd p50 / p90 / p99 / max ms | errors (berth / etcd) |")
    w("|---|---:|---:|---:|---:|---|---|---|")
    for wl in sorted({k for s in res.values() for k in s if re.match(r"q?get-\d+$", k)}):
        b, e = get(res, "berth", wl), get(res, "etcd", wl)
        name = "quorum GET (`?quorum=true`)" if wl.startswith("qget") else "local GET"
        br, er = (b or {}).get("rps"), (e or {}).get("rps")
        w(f"| {name} | {wl.split('-')[1]} | {fmt(br)} | {fmt(er)} | {ratio(br, er)} | {latcell(b)} | {latcell(e)} | "
          f"{fmt((b or {}).get('errors'))} / {fmt((e or {}).get('errors'))} |")
    w("")

    # ---- watch
    wwl = sorted({k for s in res.values() for k in s if k.startswith("watch-")})
    for wl in wwl:
        b, e = get(res, "berth", wl), get(res, "etcd", wl)
        w(f"## Watch fan-out ({wl.split('-')[1]} long-poll watchers on one member, one write)")
        w("")
        w("Each watcher is its own keep-alive connection to member n1 doing "
          "`GET /v2/keys/bench/watchkey?wait=true&waitIndex=<next>`; once all are registered (response "
          "headers received) and 1 s has passed, one PUT of that key goes to n1. Latency is from sending "
          "the PUT to each watcher's complete response, so it includes the write's own commit. "
          "Each answer has two times: when the load generator read it (the rows without a note), and "
          "when it reached the load generator's socket (kernel receive timestamp, `SO_TIMESTAMPNS`): "
          "the difference is the load generator's own queueing on the shared cores.")
        w("")
        w("| | berth | etcd |")
        w("|---|---:|---:|")
        rows = [
            ("watchers registered before the write", lambda r: fmt(r.get("registered_before_write"))),
            ("time to open and register all watchers (s)", lambda r: fmt(r.get("setup_s"))),
            ("the write's own latency (ms)", lambda r: fmt(r.get("write_ms"))),
            ("watchers answered", lambda r: fmt(r.get("answered"))),
            (f"answered within {(b or e or {}).get('deadline_ms', 100)} ms", lambda r: fmt(r.get("answered_within_deadline"))),
            (f"answered within {(b or e or {}).get('deadline_ms', 100)} ms, by arrival at the socket",
             lambda r: fmt(r.get("arrived_within_deadline"))),
            ("max ms, by arrival at the socket", lambda r: fmt((r.get("arrival_latency_ms") or {}).get("max"))),
            ("first watcher answered (min, ms)", lambda r: fmt(lat(r, "min"))),
            ("p50 ms", lambda r: fmt(lat(r, "p50"))),
            ("p90 ms", lambda r: fmt(lat(r, "p90"))),
            ("p99 ms", lambda r: fmt(lat(r, "p99"))),
            ("max ms", lambda r: fmt(lat(r, "max"))),
            ("errors", lambda r: fmt(r.get("errors"))),
        ]
        for label, fn in rows:
            w(f"| {label} | {fn(b) if b else '–'} | {fn(e) if e else '–'} |")
        w("")

    # ---- rss
    rb, re_ = get(res, "berth", "rss"), get(res, "etcd", "rss")
    fill_b = next((v for k, v in res.get("berth", {}).items() if k.startswith("fill-")), None)
    fill_e = next((v for k, v in res.get("etcd", {}).items() if k.startswith("fill-")), None)
    if rb or re_:
        keys = (rb or re_)["keys"]
        w(f"## Memory (VmRSS per member after writing {keys:,} keys, fresh cluster)")
        w("")
        w(f"Keys `/v2/keys/bench/fill/<i>` with 64-byte values, written with 64 connections "
          f"round-robin; RSS read from `/proc/<pid>/status` 3 s after the last write.")
        w("")
        w("| | berth | etcd | berth/etcd |")
        w("|---|---:|---:|---:|")
        mib = lambda k: k / 1024  # noqa: E731
        for i, name in enumerate(("n1", "n2", "n3")):
            bv = mib(rb["rss_kib"][i]) if rb else None
            ev = mib(re_["rss_kib"][i]) if re_ else None
            w(f"| {name} RSS MiB (idle before fill → after) | "
              f"{fmt(mib(rb['rss_kib_idle'][i]), 1) + ' → ' + fmt(bv, 1) if rb else '–'} | "
              f"{fmt(mib(re_['rss_kib_idle'][i]), 1) + ' → ' + fmt(ev, 1) if re_ else '–'} | {ratio(bv, ev)} |")
        w(f"| data dirs, all 3 members (MiB) | {fmt(mib(rb['disk_kib']), 1) if rb else '–'} | "
          f"{fmt(mib(re_['disk_kib']), 1) if re_ else '–'} | |")
        if fill_b or fill_e:
            w(f"| fill rate (writes/s, 64 conns) | {fmt((fill_b or {}).get('rps'))} | {fmt((fill_e or {}).get('rps'))} | "
              f"{ratio((fill_b or {}).get('rps'), (fill_e or {}).get('rps'))} |")
            w(f"| fill errors | {fmt((fill_b or {}).get('errors'))} | {fmt((fill_e or {}).get('errors'))} | |")
        w("")

    # ---- targets
    w("## Targets")
    w("")
    w("| target | measured | status |")
    w("|---|---|---|")

    def status(ok):
        return "**met**" if ok else "**not met**"

    for c in (64, 256):
        for tgt in ("rr", "leader"):
            b, e = get(res, "berth", f"put-{tgt}-{c}"), get(res, "etcd", f"put-{tgt}-{c}")
            if b and e and e.get("rps"):
                r_ = b["rps"] / e["rps"]
                w(f"| writes at {c} connections ({'round-robin' if tgt == 'rr' else 'leader only'}) ≥ 2x etcd | "
                  f"{fmt(b['rps'])} vs {fmt(e['rps'])} req/s = {r_:.2f}x | {status(r_ >= 2 and not b.get('errors'))} |")
    for tgt in ("leader", "rr"):
        b = get(res, "berth", f"put-{tgt}-1")
        if b and b.get("latency_ms"):
            p = b["latency_ms"]["p50"]
            what = "to the leader" if tgt == "leader" else "to n1 (round-robin with 1 connection)"
            w(f"| single-connection write p50 ≤ 0.6 ms ({what}) | {p:.3f} ms (etcd: "
              f"{fmt(lat(get(res, 'etcd', f'put-{tgt}-1'), 'p50'), 3)} ms; fsync p50 {f['p50_ms']} ms) | {status(p <= 0.6)} |")
    for wl in sorted(k for k in res.get("berth", {}) if k.startswith("qget-")):
        b, e = get(res, "berth", wl), get(res, "etcd", wl)
        if b and e and e.get("rps"):
            r_ = b["rps"] / e["rps"]
            w(f"| quorum reads ≥ 2x etcd ({wl.split('-')[1]} conns) | {fmt(b['rps'])} vs {fmt(e['rps'])} req/s = {r_:.2f}x | "
              f"{status(r_ >= 2 and not b.get('errors'))} |")
    for wl in wwl:
        b = get(res, "berth", wl)
        if b:
            n = b["watchers"]
            ok = b.get("answered_within_deadline") == n
            arrived = ""
            if b.get("arrived_within_deadline") is not None:
                arrived = (f"; by arrival at the socket {fmt(b.get('arrived_within_deadline'))} "
                           f"(max {fmt((b.get('arrival_latency_ms') or {}).get('max'))} ms)")
            w(f"| all {n:,} watchers answered within {b['deadline_ms']} ms | {fmt(b.get('answered_within_deadline'))} of {n:,} "
              f"(max {fmt(lat(b, 'max'))} ms){arrived} | {status(ok)} |")
    if rb:
        mx = max(rb["rss_kib"]) / 1024
        w(f"| < 100 MiB RSS per member after {rb['keys']:,} keys | max {mx:.1f} MiB | {status(mx < 100)} |")
    w("")

    if d.get("crashes"):
        w("## Crashes during the run")
        w("")
        for c in d["crashes"]:
            st = c.get("status")
            sig = f" (killed by signal {st - 128})" if isinstance(st, int) and st > 128 else ""
            w(f"- {c['system']} member {c['member']} exited during `{c.get('step', '?')}` with wait status "
              f"{st}{sig}; its log was saved to `{c.get('log', '?')}`; the cluster was restarted fresh for the "
              f"remaining steps. Last log lines:")
            w("")
            w("  ```")
            for line in c.get("tail", [])[-6:]:
                w("  " + line[:240])
            w("  ```")
        w("")

    # ---- member logs
    logs = [(sys_, wl, r) for sys_, wls in res.items() for wl, r in wls.items() if wl.startswith("logs-")]
    if logs:
        w("## Member logs")
        w("")
        w("Counted in each member's log after each cluster stopped (`main`: every load step; `rss`: the fill). "
          "Peer timeouts are berth's `peer ... did not answer within 100ms` (the Raft RPC timeout; each counted once, though openraft logs it on three lines) or etcd's "
          "`timed out`/`i/o timeout`; slow are etcd's `took too long` / `slow` warnings.")
        w("")
        w("| cluster | member | warn | error | panic | peer timeouts | slow | elections |")
        w("|---|---|---:|---:|---:|---:|---:|---:|")
        for sys_, wl, r in logs:
            for mem, c in r["members"].items():
                w(f"| {sys_} {wl[5:]} | {mem} | {c['warn']} | {c['error']} | {c['panic']} | {c['peer_timeouts']} | "
                  f"{c['slow']} | {c['elections']} |")
        w("")
        ex = [(sys_, wl, mem, e) for sys_, wl, r in logs for mem, c in r["members"].items() for e in c["examples"][:1]]
        if ex:
            w("Example peer-timeout lines:")
            w("")
            w("```")
            for sys_, wl, mem, e in ex[:4]:
                w(f"{sys_} {wl[5:]} {mem}: {e[:260]}")
            w("```")
            w("")

    # ---- CPU hygiene
    shares = []
    for sys_, wls in res.items():
        for wl, r in wls.items():
            c = r.get("cpu_share")
            if c:
                shares.append((sys_, wl, c))
    if shares:
        worst = max(shares, key=lambda x: x[2]["other_processes"])
        noisy = [x for x in shares if x[2]["other_processes"] > 0.05]
        w("## Measurement hygiene")
        w("")
        w("Before each step `bench/run` waits until processes other than the cluster use at most 15% of the "
          "machine, and it records the CPU share of members, load generator and everything else during the "
          "step (`cpu_share` in the JSON; \"other\" also holds kernel work not charged to a process: "
          "softirq for loopback TCP, block-layer kworkers, so a few percent is normal). "
          f"Largest share taken by other processes in this run: {worst[2]['other_processes']:.0%} "
          f"({worst[0]} `{worst[1]}`)."
          + (" Steps where other processes took more than 5%: "
             + ", ".join(f"{a} `{b}` ({c['other_processes']:.0%})" for a, b, c in noisy) + "."
             if noisy else " No step had more than 5% taken by other processes."))
        w("")

    # ---- what limits it
    w("## What limits berth's write throughput")
    w("")
    if analysis is not None:
        w("<!-- BEGIN analysis -->")
        L.append(analysis.rstrip("\n"))
        w("<!-- END analysis -->")
    else:
        w("<!-- BEGIN analysis -->")
        w("(No commentary yet: read the profile below and write it here; `bench/report.py render` keeps this block.)")
        w("<!-- END analysis -->")
    w("")
    prof = d.get("profile") or {}
    if prof:
        w("Evidence captured by `bench/run` during a separate, unmeasured round-robin 64-connection PUT run against berth "
          "(raw files in `/var/tmp/berth-bench/profile/`):")
        w("")
        lg, ds = prof.get("loadgen.json"), prof.get("diskstats.json")
        if isinstance(lg, dict) and lg.get("rps"):
            cj = prof.get("cpu.json")
            cpu = (f" CPU over the sampling window: machine {cj['machine_busy']:.0%} busy; members {cj['members']:.0%}, "
                   f"load generator {cj['loadgen']:.0%}, other (samplers, kernel, other processes) {cj['other_processes']:.0%} "
                   f"of the machine." if isinstance(cj, dict) else "")
            w(f"Profiled run: {fmt(lg['rps'])} req/s, p50 {fmt(lat(lg, 'p50'))} ms, p99 {fmt(lat(lg, 'p99'))} ms "
              f"(with the samplers running).{cpu}")
            w("")
        if isinstance(ds, dict) and isinstance(lg, dict) and lg.get("rps"):
            fl = ds.get("flushes_per_s") or 0
            per = fl / 3 if fl else 0
            w(f"Disk `{ds['device']}` during the sampling window: {fmt(float(ds['writes_per_s']))} write I/Os/s and "
              f"{fmt(float(fl))} cache flushes/s for all three members together"
              + (f", i.e. about {per:,.0f} fsyncs/s per member, about {lg['rps'] / per:.1f} client writes per fsync "
                 f"(flush count is an approximation of fsync count: ext4 issues one flush per fsync with data)."
                 if per else "."))
            w("")
        cl = cpu_line(prof.get("top-all.txt"))
        if cl:
            w(f"Whole machine (top, 4 s): `{cl}`")
            w("")
        ta = top_threads(prof.get("top-all.txt"), 8)
        if ta:
            w("Busiest processes (`top`, 4 s interval):")
            w("")
            w("```")
            w(ta)
            w("```")
            w("")
        tt = top_threads(prof.get("top-leader.txt"))
        if tt:
            w("Busiest threads of the leader (`top -H`, 4 s interval):")
            w("")
            w("```")
            w(tt)
            w("```")
            w("")
        pt = prof.get("perf-threads.txt")
        if pt:
            w("On-CPU samples by thread (`perf record -e cpu-clock -g -p <leader>`, 4 s; hardware counters are not available in this VM):")
            w("")
            w("```")
            w(pt.rstrip())
            w("```")
            w("")
        ps = prof.get("perf-top.txt")
        if ps:
            w("Top on-CPU symbols of the leader (self time):")
            w("")
            w("```")
            w("\n".join(ps.rstrip().splitlines()[:25]))
            w("```")
            w("")

    w("## Reproduce")
    w("")
    w("```sh")
    w("bench/run                      # builds berth and bench/loadgen, runs berth then etcd, rewrites this file")
    w("BENCH_DURATION=30 bench/run    # longer measurement windows")
    w("```")
    w("")
    w("Needs etcd 3.4 at `/usr/bin/etcd` (Debian `etcd-server`; override with `ETCD=`), `curl`, `python3`, "
      "and `perf` (optional, for the profile). Builds go to `/var/tmp/berth-target` (berth) and "
      "`/var/tmp/berth-bench-target` (loadgen); data directories and logs to `/var/tmp/berth-bench/`. "
      "Client ports 32379/32389/32399, peer ports 32380/32390/32400 on 127.0.0.1. "
      "Knobs: `BENCH_DURATION`, `BENCH_WARMUP`, `BENCH_PUT_CONNS`, `BENCH_READ_CONNS`, `BENCH_WATCHERS`, "
      "`BENCH_FILL_KEYS`, `BENCH_SYSTEMS`, `BENCH_PROFILE` (see the top of `bench/run`). "
      "Load generator alone: `berth-loadgen --mode put|get|qget|watch|fill --endpoints URL,URL,URL "
      "[--endpoint URL | --to-leader] --conns N --duration S --warmup S` prints one JSON object.")
    text = "\n".join(L)
    if others:
        text += "\n\n" + others.rstrip("\n")
    print(text)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("machine")
    m.add_argument("--dir", required=True)
    m.add_argument("--berth", required=True)
    m.add_argument("--etcd", required=True)
    m.add_argument("--build-note", default="")
    c = sub.add_parser("collect")
    c.add_argument("--machine", required=True)
    c.add_argument("--results", required=True)
    c.add_argument("--profile")
    c.add_argument("--elapsed", type=int, default=0)
    c.add_argument("--settings", default="")
    r = sub.add_parser("render")
    r.add_argument("--input", required=True)
    r.add_argument("--previous", help="existing BENCHMARKS.md whose analysis block is kept")
    a = p.parse_args()
    {"machine": cmd_machine, "collect": cmd_collect, "render": cmd_render}[a.cmd](a)


if __name__ == "__main__":
    main()
