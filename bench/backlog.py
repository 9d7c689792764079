#!/usr/bin/env python3
"""Backlog scale: what a large queue costs while the API is down, and how it drains.

    python3 bench/backlog.py                  # N = 20000
    BACKLOG_N="5000 20000" python3 bench/backlog.py   # two sizes: is the cost per message flat?
    NOBUILD=1 ...                             # skip `cargo build --release`
    BENCH_BIN=path/to/postrelay ...       # another build (implies nothing about NOBUILD)

For each N, on a fresh temporary spool, with the same mock API as
bench/throughput.py (bench/mockapi.py):

 1. the mock answers 503 (API down); smtp-source queues N x 2 KB messages
    over 20 sessions; the daemon keeps retrying them with its default backoff.
 2. prints the daemon's RSS with N queued (and its peak), then stops it.
 3. restart: time from exec to the SMTP port accepting (the spool's recovery
    rebuilds the schedule from every record before the daemon listens), and
    the RSS of the restarted, idle daemon holding N entries.
 4. `postrelay queue list` time (reads every record; output discarded).
 5. the daemon stops; `postrelay queue retry --all` (the CLI owns the spool
    now) makes every message due; the mock answers 200 again; the daemon
    starts once more, and the script times the drain from its start until
    the mock has all N: drain msg/s (recovery included), API calls per
    message during the drain, peak RSS while draining.

Per-message columns (KB/msg, us/msg) make a linear cost visible as a flat
figure across the N values. Times depend on machine load; counts do not.
"""

import os
import subprocess
import sys
import tempfile
import time
import shutil

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import throughput as tp  # noqa: E402


def rss_mb(pid, key="VmRSS"):
    return tp.status_kb(pid, key) / 1024


def one(tmp, mock, n):
    mock.call("POST", "/__mode/503")
    relay = tp.Relay(tmp, mock.port)
    try:
        base_rss = rss_mb(relay.proc.pid)
        accepted = tp.smtp_source(relay.port, n, 2048, 20)
        queued_rss, queued_hwm = rss_mb(relay.proc.pid), rss_mb(relay.proc.pid, "VmHWM")
    finally:
        relay.stop()
    spool = relay.dir

    relays = [tp.Relay(tmp, mock.port, spool=spool)]
    try:
        drained(relays, tmp, mock, n, accepted, base_rss, queued_rss, queued_hwm)
    finally:
        for relay in relays:
            relay.stop()
        shutil.rmtree(spool, ignore_errors=True)


def drained(relays, tmp, mock, n, accepted, base_rss, queued_rss, queued_hwm):
    """Measures on the restarted daemon `relays[0]`; the one started for
    the drain is appended to `relays`, which the caller stops."""
    relay = relays[0]
    recovery = relay.ready_after
    time.sleep(0.5)
    idle_rss = rss_mb(relay.proc.pid)
    t = time.monotonic()
    subprocess.run([tp.BIN, "queue", "list"], env=relay.env, check=True, stdout=subprocess.DEVNULL)
    listed = time.monotonic() - t

    # Make every message due while no daemon runs (the CLI then owns the
    # spool and rewrites each record), so the drain below measures the
    # engine alone: every entry due at once when the restarted daemon
    # recovers, the API answering again.
    relay.stop()
    subprocess.run([tp.BIN, "queue", "retry", "--all"], env=relay.env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    mock.call("POST", "/__reset")
    mock.call("POST", "/__mode/200")
    t = time.monotonic()
    relay = tp.Relay(tmp, mock.port, spool=relay.dir)
    relays.append(relay)
    tp.wait_until("the backlog to drain", lambda: mock.stats()["emails"] >= n, secs=1800)
    drain = time.monotonic() - t
    tp.wait_until("the queue to empty", lambda: relay.queued() == 0, secs=600)
    stats = mock.stats()
    calls, sent = stats["calls"], stats["emails"]
    drained_hwm = rss_mb(relay.proc.pid, "VmHWM")
    print(f"N={n}")
    print(f"  queued with the API down: {n / accepted:.0f} msg/s accepted")
    print(f"  RSS: empty {base_rss:.1f} MB, {n} queued {queued_rss:.1f} MB (peak {queued_hwm:.1f}),"
          f" {(queued_rss - base_rss) * 1024 / n:.2f} KB/msg")
    print(f"  restart (recovery until listening): {recovery:.2f} s = {recovery * 1e6 / n:.0f} us/msg;"
          f" idle RSS after restart {idle_rss:.1f} MB = {(idle_rss - base_rss) * 1024 / n:.2f} KB/msg over empty")
    print(f"  queue list: {listed:.2f} s = {listed * 1e6 / n:.0f} us/msg")
    print(f"  drain: {sent} sent at {sent / drain:.0f} msg/s ({drain:.1f} s), {calls / max(sent, 1):.3f} API calls/msg,"
          f" peak RSS {drained_hwm:.1f} MB")
    sys.stdout.flush()


def main():
    tp.ensure_tools()
    if os.environ.get("NOBUILD") != "1":
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=tp.ROOT, check=True)
    sizes = [int(x) for x in os.environ.get("BACKLOG_N", "20000").split()]
    tmp = tempfile.mkdtemp(prefix="postrelay-backlog-")
    mock = tp.Mock()
    try:
        print(f"# {time.strftime('%Y-%m-%d %H:%M')} · {os.cpu_count()} cores · load "
              f"{open('/proc/loadavg').read().split()[0]} · 2 KB messages")
        for n in sizes:
            one(tmp, mock, n)
    finally:
        mock.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
