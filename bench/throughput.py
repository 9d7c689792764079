#!/usr/bin/env python3
"""postrelay against Postfix, same load, same invocation, interleaved run by run.

    python3 bench/throughput.py                 # full: 3000 messages a run, medians of 3
    QUICK=1 python3 bench/throughput.py         # 300 messages a run, one run each
    N=5000 REPS=5 NOBUILD=1 python3 bench/throughput.py
    BENCH_BIN=/path/to/other/postrelay NOBUILD=1 python3 bench/throughput.py
    FSYNC_ONLY=1 ...                            # only the strace fsync tally

Needs root for the private Postfix instance (and apt-get, which installs
`postfix` for smtp-source/smtp-sink and `strace` when they are missing).

For each load (2 KB and 20 KB messages, 1 and 20 sessions) and each
repetition, it runs, one after the other on fresh state:

  postrelay   release build on a temporary spool, backend postmark pointed
              at bench/mockapi.py (a local mock answering /email and
              /email/batch with 200; its own ceiling is printed first),
              delivery.rate_limit = 0, everything else at its default.
  postfix     a private instance (own config dir and queue under the temp
              dir, `postfix -c DIR start`, no chroot) relaying everything
              to `smtp-sink` on another port.

both driven by `smtp-source -s SESSIONS -m N -l SIZE`. Printed per load
(medians over the repetitions):

  accepted msg/s   N / time until smtp-source returns (every 250 received)
  e2e msg/s        N / time until the mock API (postrelay) or smtp-sink
                   (Postfix, queue empty) has every message
  CPU ms/msg       postrelay: utime+stime of the daemon from /proc/PID/stat;
                   Postfix: the same for the master, its live children and
                   its reaped children (cutime+cstime), over the run / N
  API calls/msg    the mock's request count / N (postrelay only)
  mock %           the mock's CPU over the run / wall time: well under 100
                   means the mock was not the bottleneck
  RSS              postrelay: peak RSS (VmHWM) of the fresh daemon;
                   Postfix: PSS summed over its processes after the run
  ratio            postrelay e2e msg/s / Postfix e2e msg/s

Then, for each session count at 2 KB, p50/p99 DATA-to-250: a Python asyncio
SMTP client of its own (SESSIONS connections, no pipelining) stamps the time
just before it writes the message's final ".\\r\\n" and when the reply line
arrives; the client runs on the same 2 cores, so the figure includes its
own scheduling delay. And once, fsyncs per message: `strace -f -y -e
trace=fsync,fdatasync,syncfs` attached to the daemon over a 2 KB x 20-session
run, each call tallied by the file it synced (log segment, log tombstones,
message, record, queue/ dir, other): once with delivery paced at 1 msg/s
(the receiving path alone), once accepted and delivered. Shared syncs per
message (segment, tombstones, directories) fall as more commits overlap
(more sessions, slower disk); rates, CPU and latency depend on load.
"""

import asyncio
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("BENCH_BIN", os.path.join(ROOT, "target", "release", "postrelay"))
QUICK = os.environ.get("QUICK") == "1"
N = int(os.environ.get("N", "300" if QUICK else "3000"))
REPS = int(os.environ.get("REPS", "1" if QUICK else "3"))
LAT_N = int(os.environ.get("LAT_N", "200" if QUICK else "2000"))
SIZES = (2048, 20480)
SESSIONS = (1, 20)
TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc=None, secs=60):
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            sys.exit(f"process exited with {proc.returncode} before listening on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.02)
    sys.exit(f"nothing listens on {port}")


def wait_until(what, cond, secs=300):
    deadline = time.monotonic() + secs
    while not cond():
        if time.monotonic() > deadline:
            sys.exit(f"timed out waiting for {what}")
        time.sleep(0.01)


def ensure_tools():
    missing = [p for t, p in (("smtp-source", "postfix"), ("strace", "strace")) if not shutil.which(t)]
    if missing:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True, env=env)
    try:
        import orjson  # noqa: F401  (the mock's JSON decoder; it falls back to json without it)
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "orjson"], check=False)


def cpu_ticks(pid, children=False):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks


def status_kb(pid, key):
    with open(f"/proc/{pid}/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith(key + ":"))


def smtp_source(port, n, size, sessions):
    start = time.monotonic()
    subprocess.run(
        ["smtp-source", "-s", str(sessions), "-m", str(n), "-l", str(size),
         "-f", "bench@example.com", "-t", "rcpt@example.org", f"127.0.0.1:{port}"],
        check=True,
    )
    return time.monotonic() - start


# ---------------------------------------------------------------- the mock API


class Mock:
    def __init__(self):
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "bench", "mockapi.py"), str(self.port)])
        wait_port(self.port, self.proc)

    def call(self, method, path):
        with socket.create_connection(("127.0.0.1", self.port)) as s:
            s.sendall(f"{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\n\r\n".encode())
            data = b""
            while b"\r\n\r\n" not in data or not data.endswith(b"}"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        import json

        return json.loads(data.split(b"\r\n\r\n", 1)[1] or b"{}")

    def stats(self):
        return self.call("GET", "/__stats")

    def ceiling(self):
        """(requests/s one Python client got, the mock's CPU microseconds per request)."""
        out = subprocess.run(
            [sys.executable, os.path.join(ROOT, "bench", "mockapi.py"), "ceiling", str(self.port), str(self.proc.pid)],
            check=True, capture_output=True, text=True).stdout
        self.call("POST", "/__reset")
        rate, us = out.split()
        return float(rate), float(us)

    def cpu(self):
        return cpu_ticks(self.proc.pid) / TICK

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


# ---------------------------------------------------------------- postrelay


class Relay:
    """A fresh daemon on a fresh spool under `tmp`."""

    def __init__(self, tmp, api_port, extra_env=None, spool=None, wrap=()):
        self.dir = spool or tempfile.mkdtemp(prefix="relay-", dir=tmp)
        self.port = free_port()
        env = dict(os.environ)
        env.update(
            POSTRELAY_BACKEND="postmark",
            POSTRELAY_POSTMARK__SERVER_TOKEN="bench-token",
            POSTRELAY_POSTMARK__API_URL=f"http://127.0.0.1:{api_port}",
            POSTRELAY_SPOOL__DIR=os.path.join(self.dir, "spool"),
            POSTRELAY_SPOOL__MIN_FREE_SPACE="0",
            POSTRELAY_SMTP__LISTEN=f"127.0.0.1:{self.port}",
            POSTRELAY_HTTP__LISTEN=f"127.0.0.1:{free_port()}",
            POSTRELAY_SENDMAIL__MAILDROP=os.path.join(self.dir, "maildrop"),
            POSTRELAY_DELIVERY__RATE_LIMIT="0",
            POSTRELAY_LOG__LEVEL="warn",
            # smtp-source opens a session's next connection while the
            # server still counts the last one.
            POSTRELAY_SMTP__MAX_CONNECTIONS_PER_IP="1000",
        )
        env.update(extra_env or {})
        self.env = env
        self.started = time.monotonic()
        self.log = open(os.path.join(self.dir, "log"), "ab")
        self.proc = subprocess.Popen([*wrap, BIN, "serve"], env=env, stderr=self.log)
        wait_port(self.port, self.proc)
        self.ready_after = time.monotonic() - self.started

    def queued(self):
        """Messages still queued, in the log or as files, as `postrelay queue list` reads them."""
        import json

        out = subprocess.run([BIN, "queue", "list", "--json"], env=self.env, check=True,
                             capture_output=True, text=True).stdout
        return len(json.loads(out))

    def stop(self):
        self.proc.terminate()
        self.proc.wait()
        self.log.close()


def run_relay(tmp, mock, size, sessions, n):
    mock.call("POST", "/__reset")
    relay = Relay(tmp, mock.port)
    try:
        cpu0, mock0 = cpu_ticks(relay.proc.pid), mock.cpu()
        start = time.monotonic()
        accepted = smtp_source(relay.port, n, size, sessions)
        wait_until("delivery", lambda: mock.stats()["emails"] >= n)
        e2e = time.monotonic() - start
        cpu = (cpu_ticks(relay.proc.pid) - cpu0) / TICK
        busy = (mock.cpu() - mock0) / e2e
        calls = mock.stats()["calls"]
        return dict(acc=n / accepted, e2e=n / e2e, cpu=cpu * 1000 / n, calls=calls / n,
                    mem=status_kb(relay.proc.pid, "VmHWM") / 1024, mock=busy * 100)
    finally:
        relay.stop()
        shutil.rmtree(relay.dir, ignore_errors=True)


# ---------------------------------------------------------------- Postfix


class Postfix:
    """A private Postfix instance relaying to smtp-sink."""

    def __init__(self, tmp):
        self.etc, self.queue = os.path.join(tmp, "pf-etc"), os.path.join(tmp, "pf-queue")
        self.port, sink_port = free_port(), free_port()
        data = os.path.join(tmp, "pf-data")
        shutil.copytree("/etc/postfix", self.etc, symlinks=True)
        os.makedirs(self.queue)
        os.makedirs(data)
        shutil.chown(data, "postfix")
        settings = dict(
            queue_directory=self.queue, data_directory=data,
            maillog_file=os.path.join(tmp, "postfix.log"), maillog_file_prefixes=tmp,
            myhostname="bench.local", mydestination="", relayhost=f"[127.0.0.1]:{sink_port}",
            mynetworks="127.0.0.0/8", inet_interfaces="127.0.0.1", inet_protocols="ipv4",
            alias_maps="", alias_database="", local_recipient_maps="",
            smtpd_relay_restrictions="permit_mynetworks, reject", smtpd_tls_security_level="none",
            smtp_tls_security_level="none", compatibility_level="3.6",
            default_destination_concurrency_limit="20", smtp_dns_support_level="disabled",
        )
        subprocess.run(["postconf", "-c", self.etc, "-e", *(f"{k}={v}" for k, v in settings.items())], check=True)
        master = os.path.join(self.etc, "master.cf")
        lines = open(master).read().splitlines()
        out = []
        for line in lines:
            if line.startswith("smtp ") and " inet " in line:
                line = f"127.0.0.1:{self.port} inet n - n - - smtpd"
            out.append(line)
        open(master, "w").write("\n".join(out) + "\n")
        subprocess.run(["postconf", "-c", self.etc, "-F", "*/*/chroot = n"], check=True)
        self.sink_out = open(os.path.join(tmp, "sink.out"), "wb")
        self.sink = subprocess.Popen(["smtp-sink", "-u", "nobody", "-c", f"127.0.0.1:{sink_port}", "1000"], stdout=self.sink_out)
        subprocess.run(["postfix", "-c", self.etc, "start"], check=True, capture_output=True)
        wait_port(self.port)
        with open(os.path.join(self.queue, "pid", "master.pid")) as f:
            self.master = int(f.read().split()[0])

    def pids(self):
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(self.master)], capture_output=True, text=True).stdout
        return [self.master] + [int(p) for p in out.split()]

    def cpu(self):
        total = 0
        for pid in self.pids():
            try:
                total += cpu_ticks(pid, children=pid == self.master)
            except (OSError, ValueError):
                pass
        return total / TICK

    def pss_mb(self):
        total, procs = 0, 0
        for pid in self.pids():
            try:
                with open(f"/proc/{pid}/smaps_rollup") as f:
                    total += next(int(l.split()[1]) for l in f if l.startswith("Pss:"))
                procs += 1
            except (OSError, StopIteration):
                pass
        return total / 1024, procs

    def queued(self):
        count = 0
        for sub in ("maildrop", "incoming", "active", "deferred", "hold"):
            for _, _, files in os.walk(os.path.join(self.queue, sub)):
                count += len(files)
        return count

    def stop(self):
        subprocess.run(["postfix", "-c", self.etc, "stop"], capture_output=True)
        self.sink.terminate()
        self.sink.wait()


def run_postfix(pf, size, sessions, n):
    cpu0 = pf.cpu()
    start = time.monotonic()
    accepted = smtp_source(pf.port, n, size, sessions)
    wait_until("Postfix to empty its queue", lambda: pf.queued() == 0)
    e2e = time.monotonic() - start
    cpu = pf.cpu() - cpu0
    pss, procs = pf.pss_mb()
    return dict(acc=n / accepted, e2e=n / e2e, cpu=cpu * 1000 / n, calls=None, mem=pss, procs=procs, mock=None)


# ---------------------------------------------------------------- latency and fsyncs


async def latency_client(port, n, size, sessions):
    body = b"From: bench@example.com\r\nTo: rcpt@example.org\r\nSubject: latency\r\n\r\n"
    body += b"".join(b"%075d\r\n" % i for i in range(max(1, (size - len(body)) // 77)))
    waits = []

    async def reply(reader):
        while True:
            line = await reader.readline()
            if line[3:4] != b"-":
                return line

    async def session(count):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await reply(reader)
        writer.write(b"EHLO bench\r\n")
        await reply(reader)
        for _ in range(count):
            for cmd in (b"MAIL FROM:<bench@example.com>\r\n", b"RCPT TO:<rcpt@example.org>\r\n", b"DATA\r\n"):
                writer.write(cmd)
                await reply(reader)
            writer.write(body)
            await writer.drain()
            t0 = time.perf_counter()
            writer.write(b".\r\n")
            line = await reply(reader)
            waits.append(time.perf_counter() - t0)
            if not line.startswith(b"250"):
                sys.exit(f"DATA answered {line!r}")
        writer.write(b"QUIT\r\n")
        writer.close()

    async def sessions_of(count):
        # A session stays under the daemon's smtp.max_transactions (1000).
        while count > 0:
            await session(min(count, 500))
            count -= 500

    await asyncio.gather(*(sessions_of(n // sessions) for _ in range(sessions)))
    return waits


def percentiles(waits):
    waits = sorted(waits)
    return waits[len(waits) // 2] * 1000, waits[min(len(waits) - 1, int(len(waits) * 0.99))] * 1000


def fsync_tally(tmp, mock, n, deliver):
    """fsyncs by file over `n` messages: accepted and delivered, or (with the
    API paced at 1 msg/s) accepted only. Returns (tally, messages delivered)."""
    mock.call("POST", "/__reset")
    relay = Relay(tmp, mock.port, None if deliver else {"POSTRELAY_DELIVERY__RATE_LIMIT": "1"})
    out = os.path.join(tmp, "strace.out")
    tracer = subprocess.Popen(["strace", "-f", "-y", "-qq", "-e", "trace=fsync,fdatasync,syncfs",
                               "-o", out, "-p", str(relay.proc.pid)])
    time.sleep(1)  # strace attaches to every thread before it returns to us
    try:
        smtp_source(relay.port, n, 2048, 20)
        if deliver:
            wait_until("delivery", lambda: mock.stats()["emails"] >= n)
            wait_until("the queue to empty", lambda: relay.queued() == 0)
    finally:
        tracer.send_signal(signal.SIGINT)
        tracer.wait()
        relay.stop()
    tally = {}
    for line in open(out):
        if "sync(" not in line or "resumed" in line:
            continue
        path = line.split("<", 1)[1].split(">", 1)[0]
        kind = ("log segment" if path.endswith(".log") else
                "log tombstones" if path.endswith(".done") else
                "log/ directory" if path.endswith("/log") else
                "message file" if path.endswith(".eml") else
                "record file" if ".json" in path or path.endswith(".tmp") else
                "queue/ directory" if path.endswith("/queue") else
                "failed/ directory" if path.endswith("/failed") else "other: " + path)
        tally[kind] = tally.get(kind, 0) + 1
    shutil.rmtree(relay.dir, ignore_errors=True)
    return tally, mock.stats()["emails"]


def print_fsyncs(tmp, mock):
    n = min(N, 1000)
    for deliver in (False, True):
        tally, delivered = fsync_tally(tmp, mock, n, deliver)
        what = "accepted and delivered" if deliver else f"accepted only ({delivered} delivered meanwhile)"
        print(f"\nfsyncs per message (strace, {n} x 2 KB over 20 sessions, {what}): "
              f"{sum(tally.values()) / n:.2f}")
        for kind, count in sorted(tally.items()):
            print(f"  {kind:<20}{count / n:6.2f}")


# ---------------------------------------------------------------- main


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def main():
    ensure_tools()
    if os.environ.get("NOBUILD") != "1":
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    tmp = tempfile.mkdtemp(prefix="postrelay-bench-")
    os.chmod(tmp, 0o755)  # Postfix daemons run as user postfix
    mock = Mock()
    pf = None
    if os.environ.get("FSYNC_ONLY") == "1":
        try:
            print_fsyncs(tmp, mock)
        finally:
            mock.stop()
            shutil.rmtree(tmp, ignore_errors=True)
        return
    try:
        pf = Postfix(tmp)
        load = open("/proc/loadavg").read().split()[0]
        print(f"# {time.strftime('%Y-%m-%d %H:%M')} · {os.cpu_count()} cores · load {load} · "
              f"N={N} per run · medians of {REPS} · {'QUICK' if QUICK else 'full'}")
        rate, us = mock.ceiling()
        print(f"mock API: {us:.0f} us CPU per request (20 KB bodies): ceiling ~{1e6 / us:.0f} req/s on one core; "
              f"one Python client reached {rate:.0f} req/s. 'mock %' below: the mock's CPU share of one core during a run")
        sink_port = free_port()
        sink = subprocess.Popen(["smtp-sink", "-u", "nobody", f"127.0.0.1:{sink_port}", "1000"])
        wait_port(sink_port)
        ceiling = N / smtp_source(sink_port, N, 2048, 20)
        sink.terminate()
        sink.wait()
        print(f"smtp-source -> smtp-sink (no queue, no API): {ceiling:.0f} msg/s at 2 KB x 20 sessions\n")
        print(f"{'load':<14}{'who':<11}{'accepted/s':>11}{'e2e/s':>8}{'CPU ms':>8}{'API/msg':>8}{'mock %':>7}  memory MB")
        for size in SIZES:
            for sessions in SESSIONS:
                runs = {"postrelay": [], "postfix": []}
                for _ in range(REPS):
                    runs["postrelay"].append(run_relay(tmp, mock, size, sessions, N))
                    runs["postfix"].append(run_postfix(pf, size, sessions, N))
                med = {who: {k: (statistics.median(r[k] for r in rs) if rs[0][k] is not None else None)
                             for k in rs[0]} for who, rs in runs.items()}
                label = f"{size // 1024} KB x {sessions}"
                for who, m in med.items():
                    mem = f"{m['mem']:.1f}" + (f" ({m['procs']:.0f} procs, PSS)" if who == "postfix" else " (RSS)")
                    print(f"{label:<14}{who:<11}{m['acc']:>11.0f}{m['e2e']:>8.0f}{m['cpu']:>8.2f}"
                          f"{fmt(m['calls'], '.2f'):>8}{fmt(m['mock'], '.0f'):>7}  {mem}")
                print(f"{'':<14}{'ratio':<11}{med['postrelay']['acc'] / med['postfix']['acc']:>10.2f}x"
                      f"{med['postrelay']['e2e'] / med['postfix']['e2e']:>7.2f}x")
        print("\nDATA-to-250 (2 KB, own asyncio client):")
        for sessions in SESSIONS:
            relay = Relay(tmp, mock.port)
            try:
                p50, p99 = percentiles(asyncio.run(latency_client(relay.port, LAT_N, 2048, sessions)))
            finally:
                relay.stop()
            q50, q99 = percentiles(asyncio.run(latency_client(pf.port, LAT_N, 2048, sessions)))
            print(f"  {sessions:>2} sessions  postrelay p50 {p50:6.2f} ms  p99 {p99:6.2f} ms   "
                  f"postfix p50 {q50:6.2f} ms  p99 {q99:6.2f} ms")
        print_fsyncs(tmp, mock)
    finally:
        if pf:
            pf.stop()
        mock.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
