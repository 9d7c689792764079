#!/usr/bin/env python3
"""Hostile SMTP clients: the daemon's peak memory during each attack, and how
long a well-behaved client waits for its 250 meanwhile.

    python3 bench/hostile.py [path/to/postrelay]   # default: target/release/postrelay
    ONLY=rcpt-10k DURATION=20 python3 bench/hostile.py

Each attack runs for DURATION seconds (default 10) against a fresh daemon
(dry-run backend, temporary spool, default limits), from ATTACKERS
connections (default 90, under the default max_connections of 100) spread
over several loopback source addresses (127.0.0.2, .3, ...: the per-address
cap of 20 does not stop them). The good client sends from 127.0.0.1 every
0.5 s; a 421 (no slot) or a timeout counts as a failure.

  baseline         no attack
  idle             connections that never say a word
  slowloris-cmd    one byte of a command every 100 ms per connection
  slowloris-data   one byte of DATA every 100 ms per connection
  pipelined-flood  5 connections writing commands without reading replies
  rcpt-10k         5 connections, each MAIL then 10 000 pipelined RCPTs,
                   again and again

(The 9.8 MB header flood is bench/memory.py's header-flood x5.) Prints, per
attack: the daemon's RSS before, its peak (VmHWM from /proc: no sampling
can miss it), the good client's p50 and worst time to 250, and its failures.
Builds nothing: run `cargo build --release` first.
"""

import os
import shutil
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time

PORT = int(os.environ.get("PORT", "12602"))
DURATION = float(os.environ.get("DURATION", "10"))
ATTACKERS = int(os.environ.get("ATTACKERS", "90"))
PER_IP = 18


def status_kib(pid, key):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def start(binary, tmp):
    cfg = os.path.join(tmp, "postrelay.toml")
    with open(cfg, "w") as f:
        f.write("")
    env = {
        "PATH": os.environ.get("PATH", ""),
        "RUST_LOG": "warn",
        "POSTRELAY_SMTP__LISTEN": "127.0.0.1:%d" % PORT,
        "POSTRELAY_SPOOL__DIR": os.path.join(tmp, "spool"),
        "POSTRELAY_SPOOL__MIN_FREE_SPACE": "0",
        "POSTRELAY_SENDMAIL__MAILDROP": os.path.join(tmp, "maildrop"),
    }
    p = subprocess.Popen([binary, "--config", cfg], env=env, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "log"), "wb"))
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", PORT), timeout=5) as s:
                if s.recv(64).startswith(b"220"):
                    return p
        except OSError:
            time.sleep(0.05)
    sys.exit("the daemon did not start")


def conn(i):
    """A connection from 127.0.0.(2 + i // PER_IP), past the 220."""
    s = socket.socket()
    s.bind(("127.0.0.%d" % (2 + i // PER_IP), 0))
    s.settimeout(30)
    s.connect(("127.0.0.1", PORT))
    s.recv(512)
    return s


def talk(s, line):
    s.sendall(line)
    return s.recv(4096)


def trickle(prelude):
    def attack(stop):
        socks = []
        for i in range(ATTACKERS):
            try:
                s = conn(i)
                for line in prelude:
                    talk(s, line)
                socks.append(s)
            except OSError:
                pass
        while not stop.is_set() and socks:
            for s in list(socks):
                try:
                    s.sendall(b"x")
                except OSError:
                    socks.remove(s)
            time.sleep(0.1)
    return attack


def idle(stop):
    socks = []
    for i in range(ATTACKERS):
        try:
            socks.append(conn(i))
        except OSError:
            pass
    stop.wait()


def flood(stop):
    chunk = b"NOOP\r\nRSET\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\n" * 1000

    def one(i):
        try:
            s = conn(i)
            s.settimeout(1)
            while not stop.is_set():
                try:
                    s.sendall(chunk)
                except socket.timeout:
                    pass
        except OSError:
            pass
    run_all(one, 5, stop)


def rcpts(stop):
    many = b"".join(b"RCPT TO:<r%d@example.org>\r\n" % i for i in range(10_000))

    def one(i):
        while not stop.is_set():
            try:
                s = conn(i)
                talk(s, b"EHLO many.example\r\n")
                s.sendall(b"MAIL FROM:<a@example.com>\r\n" + many)
                while s.recv(65536):
                    pass
            except OSError:
                pass
    run_all(one, 5, stop)


def run_all(fn, n, stop):
    ts = [threading.Thread(target=fn, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    stop.wait()
    for t in ts:
        t.join(5)


ATTACKS = {
    "baseline": lambda stop: stop.wait(),
    "idle": idle,
    "slowloris-cmd": trickle([b"EHLO slow.example\r\n"]),
    "slowloris-data": trickle([b"EHLO slow.example\r\n", b"MAIL FROM:<a@example.com>\r\n",
                               b"RCPT TO:<b@example.org>\r\n", b"DATA\r\n"]),
    "pipelined-flood": flood,
    "rcpt-10k": rcpts,
}


def good_client(stop, times, failures):
    n = 0
    while not stop.is_set():
        started = time.monotonic()
        try:
            with smtplib.SMTP("127.0.0.1", PORT, timeout=30) as c:
                c.sendmail("good@example.com", ["rcpt@example.org"],
                           "Subject: good-%d\r\n\r\nhello\r\n" % n)
            times.append(time.monotonic() - started)
        except (OSError, smtplib.SMTPException) as e:
            failures.append(repr(e)[:80])
        n += 1
        stop.wait(0.5)


def main():
    binary = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "target/release/postrelay")
    only = os.environ.get("ONLY")
    print("%-16s %10s %10s %9s %9s %s" % ("attack", "rss KiB", "peak KiB", "p50 ms", "worst ms", "good-client failures"))
    for name, attack in ATTACKS.items():
        if only and name != only:
            continue
        tmp = tempfile.mkdtemp(prefix="postrelay-hostile")
        daemon = start(binary, tmp)
        before = status_kib(daemon.pid, "VmRSS")
        stop = threading.Event()
        attacker = threading.Thread(target=attack, args=(stop,))
        attacker.start()
        time.sleep(1)
        times, failures = [], []
        good = threading.Thread(target=good_client, args=(stop, times, failures))
        good.start()
        time.sleep(DURATION)
        peak = status_kib(daemon.pid, "VmHWM")
        stop.set()
        good.join()
        attacker.join(10)
        daemon.kill()
        daemon.wait()
        shutil.rmtree(tmp, ignore_errors=True)
        times.sort()
        p50 = times[len(times) // 2] * 1000 if times else float("nan")
        worst = times[-1] * 1000 if times else float("nan")
        print("%-16s %10d %10d %9.1f %9.1f %d %s" % (name, before, peak, p50, worst, len(failures),
                                                   failures[:1] if failures else ""), flush=True)


if __name__ == "__main__":
    main()
