#!/usr/bin/env python3
"""Helpers of bench/proxy/run.

    lib.py ticks ROOT [PID...]    -> "now busy ours user1 sys1 ..." in USER_HZ ticks (1/100 s):
                                     uptime, the whole machine's busy time, CPU time of ROOT's
                                     process tree, then user and system time of each PID's tree
                                     (utime+cutime, stime+cstime summed over the live tree, so
                                     reaped children still count)
    lib.py record OUT key=value... [--wrk FILE]
                                  -> appends one JSON object to OUT (values parsed as JSON
                                     when they parse, else strings; FILE's "JSON {...}" line
                                     from stats.lua/reconf.lua goes under "wrk")
    lib.py report RESULTS META OUT -> writes the Markdown section (between the proxy-bench
                                     markers) to OUT and prints it
"""
import json
import os
import sys


def busy_ticks():
    with open("/proc/stat") as f:
        v = f.readline().split()[1:]
    # user nice system idle iowait irq softirq steal
    return sum(int(v[i]) for i in (0, 1, 2, 5, 6, 7))


def proc_table():
    procs = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                s = f.read()
        except OSError:
            continue
        rest = s.rsplit(")", 1)[1].split()
        # rest[0] = state, [1] = ppid, [11..14] = utime stime cutime cstime
        v = [int(x) for x in rest[11:15]]
        procs[int(d)] = (int(rest[1]), v[0] + v[2], v[1] + v[3])
    return procs


def tree_ticks(procs, root):
    """(user, sys) ticks of root's live process tree, reaped children included."""
    children = {}
    for pid, (ppid, _, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    user, sys_, stack, seen = 0, 0, [root], set()
    while stack:
        p = stack.pop()
        if p in seen or p not in procs:
            continue
        seen.add(p)
        user += procs[p][1]
        sys_ += procs[p][2]
        stack.extend(children.get(p, []))
    return user, sys_


def cmd_ticks(args):
    procs = proc_table()
    b = busy_ticks()
    with open("/proc/uptime") as f:
        now = int(round(float(f.read().split()[0]) * 100))
    out = [now, b, sum(tree_ticks(procs, int(args[0])))]
    for p in args[1:]:
        out.extend(tree_ticks(procs, int(p)))
    print(" ".join(str(x) for x in out))


def parse_value(v):
    try:
        return json.loads(v)
    except ValueError:
        return v


def cmd_record(args):
    out, rec = args[0], {}
    it = iter(args[1:])
    for a in it:
        if a == "--wrk":
            path = next(it)
            line = ""
            try:
                for l in open(path):
                    if l.startswith("JSON "):
                        line = l[5:]
            except OSError:
                pass
            rec["wrk"] = json.loads(line) if line else None
            continue
        k, _, v = a.partition("=")
        rec[k] = parse_value(v)
    with open(out, "a") as f:
        f.write(json.dumps(rec) + "\n")


# ---------------------------------------------------------------- report

def fmt_int(x):
    return "{:,}".format(int(round(x)))


def fmt_ms(us):
    ms = us / 1000.0
    if ms >= 100:
        return "{:,.0f}".format(ms)
    if ms >= 10:
        return "%.1f" % ms
    return "%.2f" % ms


def ratio(a, b):
    if not a or not b:
        return "–"
    return "%.2fx" % (a / b)


def rps(r):
    w = r.get("wrk") or {}
    return w["requests"] / (w["duration_us"] / 1e6) if w.get("duration_us") else 0.0


def errs(r):
    w = r.get("wrk") or {}
    e = w.get("errors") or {}
    return e.get("status", 0), e.get("connect", 0) + e.get("read", 0) + e.get("write", 0) + e.get("timeout", 0)


def err_text(r):
    w = r.get("wrk") or {}
    e = w.get("errors") or {}
    st, sock = errs(r)
    if st == 0 and sock == 0:
        return "0"
    parts = []
    if st:
        parts.append("%s non-2xx" % fmt_int(st))
    for k in ("connect", "read", "write", "timeout"):
        if e.get(k):
            parts.append("%s %s" % (fmt_int(e[k]), k))
    return ", ".join(parts)


def cpu_per_req(r):
    """Proxy CPU µs per request: (total, user, sys), or None."""
    w = r.get("wrk") or {}
    n = w.get("requests")
    if not n or r.get("proxy_user_s") is None:
        return None
    u, y = r["proxy_user_s"] * 1e6 / n, r["proxy_sys_s"] * 1e6 / n
    return (u + y, u, y)


NAMES = {"direct": "direct to backend (ceiling)", "berth": "berth proxy", "haproxy": "HAProxy",
         "nginx": "nginx"}


def cmd_report(args):
    results_path, meta_path, out_path = args
    meta = json.load(open(meta_path))
    rows = [json.loads(l) for l in open(results_path) if l.strip()]
    tp = [r for r in rows if r.get("kind") == "throughput"]
    rc = [r for r in rows if r.get("kind") == "reconf"]
    by = {(r["threads"], r["target"]): r for r in tp}
    threads = sorted({r["threads"] for r in tp})
    L = []
    L.append("<!-- proxy-bench:start -->")
    L.append("## Reverse proxy")
    L.append("")
    L.append(
        "`berth proxy` against %s and %s, generated by `bench/proxy/run` on %s (berth git %s%s). "
        "Everything ran on loopback on this machine (%d × %s, %s): one backend "
        "(`berth-echo`, hyper on a current-thread runtime, answers `GET /` with `b1\\n`, 3 bytes of body), "
        "one proxy at a time in front of it, load from %s with %d keep-alive connections, `--latency`, "
        "%d s measured after a %d s warm-up, `Host: web.test`."
        % (meta["haproxy_version"], meta["nginx_version"], meta["date"], meta["git"],
           ", working tree with uncommitted changes" if meta.get("dirty") else "", meta["nproc"], meta["cpu"],
           meta["kernel"], meta["wrk_version"], meta["conns"], meta["duration"], meta["warmup"]))
    L.append("")
    L.append("**Placement (same for every proxy).** *1 thread*: the proxy pinned to CPU 0 (`taskset -c 0`; "
             "berth with `--threads 1`, HAProxy `nbthread 1`, nginx `worker_processes 1`), wrk "
             "(`-t1`) and the backend pinned to CPU 1. *2 threads*: nothing pinned, berth with "
             "`--threads 2`, HAProxy `nbthread 2`, nginx `worker_processes 2`, wrk `-t2`; proxy, "
             "backend and wrk share both cores. The *direct* row is wrk straight to the backend with the same "
             "placement of wrk and backend, i.e. the most any proxy could reach there. All three proxies keep "
             "connections to the backend alive (nginx: `upstream { keepalive 64; }`, `proxy_http_version 1.1`; "
             "`keepalive_requests` raised so nginx does not close connections every 1,000 requests), add "
             "`X-Forwarded-For/-Proto/-Host` (berth also adds `X-Real-IP`; nginx and HAProxy are configured "
             "to send the same four), and log nothing per request. The worker-thread/process counts in the "
             "table were read from `/proc` during the run.")
    L.append("")
    L.append("| threads | target | req/s | p50 ms | p90 ms | p99 ms | max ms | errors | proxy CPU (cores) | proxy CPU µs per request (user + sys) | other processes' CPU | workers seen |")
    L.append("|---:|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---|")
    for t in threads:
        for tgt in ("direct", "berth", "haproxy", "nginx"):
            r = by.get((t, tgt))
            if not r:
                continue
            w = r.get("wrk") or {}
            lat = w.get("latency_us") or {}
            if not w:
                L.append("| %d | %s | failed | | | | | | | | | |" % (t, NAMES[tgt]))
                continue
            pc = r.get("proxy_cores")
            per = cpu_per_req(r)
            L.append("| %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                t, NAMES[tgt], fmt_int(rps(r)), fmt_ms(lat["p50"]), fmt_ms(lat["p90"]), fmt_ms(lat["p99"]),
                fmt_ms(lat["max"]), err_text(r),
                ("%.2f" % pc) if pc is not None and tgt != "direct" else "–",
                ("%.1f (%.1f + %.1f)" % per) if per and tgt != "direct" else "–",
                "%d%%" % round(r.get("other_pct", 0)) + ("" if r.get("attempts", 1) == 1 else " (best of %d)" % r["attempts"]),
                r.get("workers", "") or "–"))
    L.append("")
    L.append("Ratios (berth ÷ other; req/s above 1 is better for berth, latency below 1 is better for berth):")
    L.append("")
    L.append("| threads | berth/HAProxy req/s | berth/nginx req/s | berth/direct req/s | HAProxy/direct req/s | nginx/direct req/s | berth/HAProxy p50 | berth/nginx p50 | berth/HAProxy p99 | berth/nginx p99 | berth/HAProxy CPU per request | berth/nginx CPU per request |")
    L.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for t in threads:
        b, h, n, d = (by.get((t, x)) for x in ("berth", "haproxy", "nginx", "direct"))
        def R(x):
            return rps(x) if x and x.get("wrk") else None
        def P(x, p):
            return x["wrk"]["latency_us"][p] if x and x.get("wrk") else None
        def E(x):
            c = cpu_per_req(x) if x else None
            return c[0] if c else None
        L.append("| %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            t, ratio(R(b), R(h)), ratio(R(b), R(n)), ratio(R(b), R(d)), ratio(R(h), R(d)), ratio(R(n), R(d)),
            ratio(P(b, "p50"), P(h, "p50")), ratio(P(b, "p50"), P(n, "p50")),
            ratio(P(b, "p99"), P(h, "p99")), ratio(P(b, "p99"), P(n, "p99")),
            ratio(E(b), E(h)), ratio(E(b), E(n))))
    L.append("")
    L.append("How much these numbers move: on the 2-core VM where this script was written (shared with "
             "builds and test suites), four runs gave HAProxy at 1 thread 19,200–26,700 req/s, berth/HAProxy "
             "req/s at 1 thread 0.51x–0.74x and berth/HAProxy CPU per request 1.46x–1.96x; berth's own CPU per "
             "request at 1 thread stayed within 66–74 µs. Read the ratios as \"about this much\", not as exact figures.")
    L.append("")
    L.append("*proxy CPU (cores)*: CPU time of the proxy's processes (all threads, workers and reaped "
             "children) during the measured window ÷ its length; *proxy CPU µs per request* = that CPU time "
             "÷ requests, split into user and system (kernel) time, from `/proc/<pid>/stat`: the proxy's "
             "cost per request, which varies less with contention than req/s does. System time includes "
             "the loopback TCP delivery the kernel does in the sender's context. "
             "*other processes' CPU*: share of the whole machine used by processes this script did not "
             "start during the window (kernel softirq work for loopback TCP that no process is charged for "
             "also lands here). Before every run the script waited until that share was below 15%%; a run "
             "where it exceeded %d%% was repeated (at most %d attempts in all) and the least disturbed one kept."
             % (meta["max_other"], meta["attempts"]))
    L.append("")

    if rc:
        iv = meta["reconf_interval"]
        L.append("### Reconfiguration under load")
        L.append("")
        L.append(
            "wrk (%d connections, `-t%d`) through each proxy for %d s while the backend set changes every %s s: "
            "three backends b1, b2, b3 run throughout; b1 stays, and the set cycles {b1,b2} → +b3 → −b2 → +b2 → "
            "−b3 → … (one add or one removal per step; a removed backend keeps running, so every error is the "
            "proxy's). berth: each step is one `PUT`/`DELETE` of `/v2/keys/services/web/<b>` in the "
            "registry, which the proxy picks up through its watch. HAProxy: each step rewrites the config and "
            "sends `SIGUSR2` to the master (`haproxy -W`, master-worker mode; the stats socket has "
            "`expose-fd listeners`, so the new worker takes over the listening socket seamlessly, and the old "
            "worker finishes its connections; HAProxy's defaults otherwise). nginx: rewrite and `SIGHUP` to "
            "the master (`nginx -s reload`). Placement as in the %d-thread rows above. *errors* are wrk's: "
            "responses with status ≥ 400, plus socket errors (connect / read / write / timeout). A read error is "
            "a connection the proxy closed while wrk had a request outstanding on it (e.g. an idle keep-alive "
            "connection closed by an old worker as it stops); clients such as browsers retry those "
            "transparently for idempotent requests, they do not retry a 5xx."
            % (meta["conns"], meta["reconf_wrk_threads"], meta["reconf_duration"], iv, meta["reconf_threads"]))
        L.append("")
        names = [r["target"] for r in rc]
        L.append("| | " + " | ".join(NAMES[n] for n in names) + " |")
        L.append("|---|" + "---:|" * len(names))

        def row(label, f):
            L.append("| %s | %s |" % (label, " | ".join(f(r) for r in rc)))
        row("backend-set changes made", lambda r: str(r.get("changes", "–")))
        row("requests", lambda r: fmt_int(r["wrk"]["requests"]) if r.get("wrk") else "failed")
        row("req/s", lambda r: fmt_int(rps(r)) if r.get("wrk") else "–")
        row("**errors (non-2xx + socket)**", lambda r: "**%s**" % fmt_int(sum(errs(r))) if r.get("wrk") else "–")
        row("non-2xx responses", lambda r: fmt_int(errs(r)[0]) if r.get("wrk") else "–")
        row("socket errors: connect / read / write / timeout", lambda r: " / ".join(
            fmt_int((r["wrk"]["errors"] or {}).get(k, 0)) for k in ("connect", "read", "write", "timeout")) if r.get("wrk") else "–")

        def answered(r):
            resp = (r.get("wrk") or {}).get("responses") or {}
            parts = []
            for b in ("b1", "b2", "b3"):
                parts.append("%s %s" % (b, fmt_int(resp.get("200 " + b, 0))))
            return ", ".join(parts)
        row("200s answered by b1 / b2 / b3", answered)

        def other_status(r):
            resp = (r.get("wrk") or {}).get("responses") or {}
            bad = sorted(((v, k) for k, v in resp.items() if not k.startswith("200 ")), reverse=True)
            return "; ".join("%s × `%s`" % (fmt_int(v), k[:70]) for v, k in bad[:3]) or "none"
        row("other responses (count × status body)", other_status)
        row("p50 / p99 / max ms", lambda r: "%s / %s / %s" % tuple(fmt_ms(r["wrk"]["latency_us"][p]) for p in ("p50", "p99", "max")) if r.get("wrk") else "–")
        row("proxy CPU (cores)", lambda r: "%.2f" % r["proxy_cores"] if r.get("proxy_cores") is not None else "–")
        row("proxy CPU µs per request (user + sys)", lambda r: "%.1f (%.1f + %.1f)" % cpu_per_req(r) if cpu_per_req(r) else "–")
        row("other processes' CPU", lambda r: "%d%%" % round(r.get("other_pct", 0)) + ("" if r.get("attempts", 1) == 1 else " (best of %d)" % r["attempts"]))
        row("reconfiguration mechanism cost", lambda r: r.get("mechanism_note", ""))
        L.append("")
        for r in rc:
            if r.get("notes"):
                L.append("- %s: %s" % (NAMES[r["target"]], r["notes"]))
        if any(r.get("notes") for r in rc):
            L.append("")

    if meta.get("berth_log"):
        L.append("### berth proxy logs")
        L.append("")
        L.append(meta["berth_log"])
        L.append("")
    shares = [(r.get("other_pct", 0), "%s %s" % (r["target"], ("reconf" if r["kind"] == "reconf" else "%d thread(s)" % r["threads"])))
              for r in rows]
    if shares:
        worst = max(shares)
        busy = ["%s (%d%%)" % (n, round(v)) for v, n in shares if v > 5]
        waited = sum(r.get("quiet_wait_s", 0) or 0 for r in rows)
        L.append("**Contention.** Load average when the script started: %s. Largest CPU share taken by other "
                 "processes during a kept run: %d%% (%s). %s"
                 % (meta.get("load_start", "?"), round(worst[0]), worst[1],
                    ("Kept runs where others took more than 5%%: %s." % ", ".join(busy)) if busy else
                    "No kept run had others above 5%."))
        L.append("")
    if meta.get("contention"):
        L.append(meta["contention"])
        L.append("")
    L.append("Versions: berth %s (binary %s, built %s); %s; %s; %s. Raw results: `%s`; logs and configs: `%s`. "
             "Reproduce: `apt-get install -y haproxy nginx-light wrk`, then `bench/proxy/run` (knobs at its "
             "top; %d s wall time for this run)."
             % (meta["berth_version"], meta["berth_src"], meta["berth_built"], meta["haproxy_version"],
                meta["nginx_version"], meta["wrk_version"], meta["results"], meta["work"], meta["wall_s"]))
    L.append("<!-- proxy-bench:end -->")
    text = "\n".join(L) + "\n"
    with open(out_path, "w") as f:
        f.write(text)
    sys.stdout.write(text)


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    {"ticks": cmd_ticks, "record": cmd_record, "report": cmd_report}[cmd](args)


if __name__ == "__main__":
    main()
