#!/usr/bin/env python3
"""Instructions per message by phase, counted by callgrind: a profile that
does not depend on machine load.

    python3 bench/profile.py                 # N=300 messages of 2 KB, then of 20 KB
    N=100 NOBUILD=1 python3 bench/profile.py
    BENCH_BIN=/path/to/other/postrelay NOBUILD=1 python3 bench/profile.py
    TOP=40 ...                               # also print the 40 costliest functions (inclusive)
    KEEP=1 ...                               # keep the dumps for callgrind_annotate
    SYSCALLS=1 ...                           # instead: syscalls per message (strace -f -c)

SYSCALLS=1 runs the same load with `strace -f -c` attached instead of
callgrind (one daemon per size, 20 warm-up messages included, so the
figure is a slight overestimate) and prints system calls per message, by call.

A release postrelay (backend postmark, pointed at bench/mockapi.py, as in
bench/throughput.py) runs under `valgrind --tool=callgrind`. Once it
listens and 20 warm-up messages are delivered, for each size: the counters are zeroed (`callgrind_control -z`),
`smtp-source -s 4 -m N -l SIZE` sends N messages, the script waits until
the mock has all N and the queue is empty, and dumps the counters
(`callgrind_control -d`): that dump holds exactly receiving, committing and
delivering N messages. `callgrind_annotate --inclusive=yes` then gives each
function's inclusive instruction count; a phase adds its root functions
below (each root's largest match, so nested matches do not count twice;
a root marked -1 is taken away), divided by N:

  smtp receive   the SMTP connection task: commands, the DATA stream, the
                 reply (the DATA check and the commit excluded)
  DATA check     the backend's mapping of the message at DATA (kept for
                 its first attempt), in place or on the blocking pool
  spool commit   the commit on the connection task, the log's writer
                 thread, and delivered messages leaving the spool
  delivery       claiming, loading and mapping (a kept mapping taken
                 instead), JSON bodies, HTTP (reqwest/hyper), recording
  log + metrics  tracing and the Prometheus recorder, wherever called
  total          every instruction of the process between zero and dump

Instruction counts are exact for a given binary and load shape and vary
little between runs (thread interleaving moves a few percent); wall time
under callgrind means nothing.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import throughput as tp  # noqa: E402

N = int(os.environ.get("N", "300"))
SIZES = (2048, 20480)
TOP = int(os.environ.get("TOP", "0"))

# Phase -> root functions (regexes on callgrind_annotate's function names),
# each added or (a cost counted under another root too) subtracted. Async
# code shows up as the `{{closure}}` poll functions of the named fn; work
# handed to spawn_blocking runs in the blocking pool, outside its caller's
# inclusive cost, so it is counted under its own root.
PHASES = {
    "smtp receive": [(1, r"^postrelay::smtp::serve::\{\{closure\}\}::\{\{closure\}\}$"),
                     (-1, r"^postrelay::smtp::connection::(data::<impl postrelay::smtp::connection::Conn<S>>|Conn<S>)::accept::\{\{closure\}\}::\{\{closure\}\}$"),
                     (-1, r"^postrelay::spool::commit::Incoming::commit_with::\{\{closure\}\}$")],
    "DATA check": [(1, r"^postrelay::smtp::connection::(data::<impl postrelay::smtp::connection::Conn<S>>|Conn<S>)::accept::\{\{closure\}\}::\{\{closure\}\}$")],
    "spool commit": [(1, r"^postrelay::spool::commit::Incoming::commit_with::\{\{closure\}\}$"),
                     (1, r"^postrelay::spool::log::writer::run$"),
                     (1, r"^postrelay::spool::(store|finish)::.*Spool>::complete_all$")],
    "delivery": [(1, r"^postrelay::delivery::Engine::run::\{\{closure\}\}::\{\{closure\}\}::\{\{closure\}\}$"),
                 (1, r"^postrelay::delivery::prepare::.*load_chunk::\{\{closure\}\}$"),
                 (1, r"^postrelay::delivery::prepare::.*map_all::\{\{closure\}\}$"),
                 (1, r"^hyper::proto::h1::dispatch::Dispatcher<.*>::poll_catch$")],
    "log + metrics": [(1, r"^<tracing_subscriber::fmt::fmt_layer::Layer<.*on_event$"),
                      (1, r"^<metrics_exporter_prometheus::recorder::PrometheusRecorder as metrics::recorder::Recorder>::register_"),
                      (1, r"^<metrics_exporter_prometheus::registry::AtomicStorage as .*")],
}


def ctl(*args):
    subprocess.run(["callgrind_control", *args], check=True, stdout=subprocess.DEVNULL)


def inclusive(outfile):
    """{function: inclusive Ir} from one dump."""
    text = subprocess.run(
        ["callgrind_annotate", "--inclusive=yes", "--threshold=100", outfile],
        check=True, capture_output=True, text=True).stdout
    costs = {}
    total = 0
    for line in text.splitlines():
        m = re.match(r"\s*([\d,]+)\s+(?:\(\s*[\d.]+%\)\s+)?(?:\*\s+)?(\S.*)$", line)
        if not m:
            continue
        ir, name = int(m.group(1).replace(",", "")), m.group(2)
        if "PROGRAM TOTALS" in name:
            total = ir
            continue
        name = name.split(":", 1)[1] if re.match(r"^[^ ]*\.(rs|c|S|h)?:|^\?\?\?:", name) else name
        name = re.sub(r" \[.*\]$", "", name)
        costs[name] = max(costs.get(name, 0), ir)
    return total, costs


def phases(total, costs):
    out = {}
    for phase, roots in PHASES.items():
        out[phase] = sum(sign * max((ir for f, ir in costs.items() if re.search(r, f)), default=0)
                         for sign, r in roots)
    out["total"] = total
    return out


def syscalls(mock, size):
    """{syscall: calls per message} over N messages of `size`, start-up included."""
    tmp = tempfile.mkdtemp(prefix="postrelay-strace-")
    out = os.path.join(tmp, "strace.out")
    mock.call("POST", "/__reset")
    relay = tp.Relay(tmp, mock.port)
    tracer = subprocess.Popen(["strace", "-f", "-c", "-o", out, "-p", str(relay.proc.pid)])
    time.sleep(1)  # strace attaches to every thread before it returns to us
    try:
        tp.smtp_source(relay.port, 20 + N, size, 4)
        tp.wait_until("delivery", lambda: mock.stats()["emails"] >= 20 + N, secs=1800)
        tp.wait_until("the queue to empty", lambda: relay.queued() == 0, secs=600)
    finally:
        tracer.send_signal(signal.SIGINT)
        tracer.wait()
        relay.stop()
    counts = {}
    for line in open(out):
        f = line.split()
        if len(f) >= 5 and f[-1] != "total" and f[3].isdigit():
            counts[f[-1]] = int(f[3])
    shutil.rmtree(tmp, ignore_errors=True)
    return {k: v / N for k, v in counts.items()}


def main_syscalls(mock):
    by_size = {size: syscalls(mock, size) for size in SIZES}
    print(f"# system calls per message (strace -f -c, N={N} + 20 warm-up per size, smtp-source -s 4)")
    print(f"{'call':<20}" + "".join(f"{f'{s // 1024} KB':>10}" for s in SIZES))
    names = sorted(set().union(*by_size.values()), key=lambda k: -by_size[SIZES[0]].get(k, 0))
    for name in ["total"] + names:
        row = [sum(by_size[s].values()) if name == "total" else by_size[s].get(name, 0) for s in SIZES]
        if name == "total" or max(row) >= 0.1:
            print(f"{name:<20}" + "".join(f"{v:>10.2f}" for v in row))


def main():
    tp.ensure_tools()
    if not shutil.which("valgrind"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "install", "-y", "-qq", "valgrind"], check=True, env=env)
    if os.environ.get("NOBUILD") != "1":
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=tp.ROOT, check=True)
    mock = tp.Mock()
    if os.environ.get("SYSCALLS") == "1":
        try:
            main_syscalls(mock)
        finally:
            mock.stop()
        return
    tmp = tempfile.mkdtemp(prefix="postrelay-profile-")
    out = os.path.join(tmp, "callgrind.out")
    wrap = ["valgrind", "--tool=callgrind", "--quiet", f"--callgrind-out-file={out}"]
    relay = tp.Relay(tmp, mock.port, wrap=wrap)
    results = {}
    try:
        # Warm up (start-up work, the API connection), then count.
        tp.smtp_source(relay.port, 20, 2048, 4)
        tp.wait_until("warm-up delivery", lambda: mock.stats()["emails"] >= 20, secs=600)
        tp.wait_until("the queue to empty", lambda: relay.queued() == 0, secs=600)
        time.sleep(2)
        for i, size in enumerate(SIZES, start=1):
            mock.call("POST", "/__reset")
            ctl("-z", str(relay.proc.pid))
            tp.smtp_source(relay.port, N, size, 4)
            tp.wait_until("delivery", lambda: mock.stats()["emails"] >= N, secs=1800)
            tp.wait_until("the queue to empty", lambda: relay.queued() == 0, secs=600)
            ctl("-d", str(relay.proc.pid))
            dump = f"{out}.{i}"
            tp.wait_until("the dump", lambda: os.path.exists(dump), secs=60)
            time.sleep(1)
            total, costs = inclusive(dump)
            results[size] = phases(total, costs)
            if TOP:
                print(f"\n# {size // 1024} KB: top {TOP} functions, inclusive instructions per message")
                for f, ir in sorted(costs.items(), key=lambda kv: -kv[1])[:TOP]:
                    print(f"{ir / N:>12,.0f}  {f[:150]}")
    finally:
        relay.stop()
        mock.stop()
    print(f"\n# instructions per message (callgrind, N={N} per size, smtp-source -s 4, "
          f"{os.path.basename(tp.BIN)} {subprocess.run([tp.BIN, '--version'], capture_output=True, text=True).stdout.strip()})")
    print(f"{'phase':<16}" + "".join(f"{f'{s // 1024} KB':>14}" for s in SIZES))
    for phase in list(PHASES) + ["total"]:
        print(f"{phase:<16}" + "".join(f"{results[s][phase] / N:>14,.0f}" for s in SIZES))
    if os.environ.get("KEEP") == "1":
        print(f"callgrind dumps kept: {out}.1 (2 KB), {out}.2 (20 KB)")
    else:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
