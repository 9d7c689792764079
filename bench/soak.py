#!/usr/bin/env python3
"""Hundreds of `kill -9`s under a sustained SMTP load: is every acknowledged
message delivered, and is every duplicate explained?

    N=300 python3 bench/soak.py [path/to/postrelay]   # default: target/release/postrelay
    SEED=42 N=50 python3 bench/soak.py                # replay the kill points

CLIENTS threads (default 3) send continuously over SMTP, each message with a
unique subject, and record the ones that got `250` (with their queue id). The
daemon is killed N times at random points (delays KILL_MIN..KILL_MAX ms,
seeded; the seed is printed) and restarted on the same spool. A mock Postmark
(`/email` and `/email/batch`, API_DELAY ms per call) counts what it accepted
per subject, and when each call arrived and was answered. At the end the
daemon runs until the queue is empty, and the script prints:

  acknowledged              messages that got 250
  lost                      acknowledged but never accepted by the API
  duplicates                subjects the API accepted more than once
    explained (marker)      named by a "may duplicate" line at a restart
                            (the in-flight markers)
    explained (in flight)   the API accepted it more often than the daemon
                            logged "message delivered" for its id: a kill
                            came between a call and the recording of its
                            outcome (for a message whose 250 was lost to a
                            kill, so without an id: a call for it arrived
                            before a kill and was answered at most WINDOW ms
                            before it)
    unexplained             neither

DRAIN (default 1800) bounds the wait for the queue to empty. Exit status
1 when a message was lost or still queued, a duplicate is unexplained, or an
entry ended broken/parked. Builds nothing: `cargo build --release` first.
"""

import json
import os
import random
import re
import shutil
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

N = int(os.environ.get("N", "200"))
CLIENTS = int(os.environ.get("CLIENTS", "3"))
KILL_MIN = int(os.environ.get("KILL_MIN", "150"))
KILL_MAX = int(os.environ.get("KILL_MAX", "900"))
API_DELAY = float(os.environ.get("API_DELAY", "20")) / 1000
WINDOW = float(os.environ.get("WINDOW", "500")) / 1000
SMTP_PORT = int(os.environ.get("PORT", "12601"))
DRAIN = float(os.environ.get("DRAIN", "1800"))

LOCK = threading.Lock()
CALLS = []  # (subjects, t_arrived, t_answered or None)
KILLS = []  # kill times


class Api(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        many = isinstance(body, list)
        msgs = body if many else [body]
        call = [[m.get("Subject", "") for m in msgs], time.monotonic(), None]
        with LOCK:
            CALLS.append(call)
        time.sleep(API_DELAY)
        results = [
            {"ErrorCode": 0, "Message": "OK", "MessageID": "soak-%d" % i,
             "To": m.get("To"), "SubmittedAt": "2026-03-01T10:00:00Z"}
            for i, m in enumerate(msgs)
        ]
        out = json.dumps(results if many else results[0]).encode()
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the daemon was killed mid-call: the API accepted all the same
        finally:
            call[2] = time.monotonic()


def load(client, acked, stop):
    n = 0
    conn = None
    while not stop.is_set():
        try:
            if conn is None:
                conn = smtplib.SMTP("127.0.0.1", SMTP_PORT, timeout=10)
                conn.ehlo("soak.example")
            subject = "soak-%d-%d" % (client, n)
            n += 1
            conn.mail("soak@example.com")
            conn.rcpt("rcpt@example.org")
            msg = ("From: soak@example.com\r\nTo: rcpt@example.org\r\n"
                   "Subject: %s\r\n\r\nsoak\r\n" % subject)
            code, reply = conn.data(msg.encode())
            if code == 250:
                with LOCK:
                    acked[subject] = reply.decode().rsplit(" ", 1)[-1]
            else:
                conn.rset()
        except (OSError, smtplib.SMTPException) as e:
            if os.environ.get("DEBUG"):
                print("client %d: %r" % (client, e), flush=True)
            conn = None
            time.sleep(0.02)


def start(binary, tmp, log):
    env = {
        "PATH": os.environ.get("PATH", ""),
        "RUST_LOG": "info",
        "POSTRELAY_SMTP__LISTEN": "127.0.0.1:%d" % SMTP_PORT,
        "POSTRELAY_SPOOL__DIR": os.path.join(tmp, "spool"),
        "POSTRELAY_SPOOL__MIN_FREE_SPACE": "0",
        "POSTRELAY_SENDMAIL__MAILDROP": os.path.join(tmp, "maildrop"),
    }
    p = subprocess.Popen([binary, "--config", os.path.join(tmp, "postrelay.toml")],
                         env=env, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            # Serving once the greeting comes (the port is bound earlier).
            with socket.create_connection(("127.0.0.1", SMTP_PORT), timeout=5) as probe:
                if probe.recv(64).startswith(b"220"):
                    return p
        except OSError:
            if p.poll() is not None:
                sys.exit("the daemon exited at start; see its log")
            time.sleep(0.02)
    sys.exit("the daemon did not start")


def main():
    binary = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "target/release/postrelay")
    seed = int(os.environ.get("SEED", random.randrange(1 << 32)))
    rng = random.Random(seed)
    print("soak: %d kills, %d clients, seed %d (SEED=%d replays), %s" % (N, CLIENTS, seed, seed, binary))
    api = ThreadingHTTPServer(("127.0.0.1", 0), Api)
    threading.Thread(target=api.serve_forever, daemon=True).start()
    tmp = tempfile.mkdtemp(prefix="postrelay-soak")
    cfg = os.path.join(tmp, "postrelay.toml")
    with open(cfg, "w") as f:
        f.write('backend = "postmark"\n[postmark]\nserver_token = "soak-server-token"\napi_url = "http://127.0.0.1:%d"\n'
                '[delivery]\nretry_initial = "100ms"\nretry_max = "500ms"\nrate_limit = 0\n' % api.server_port)
    os.chmod(cfg, 0o600)
    log_path = os.path.join(tmp, "daemon.log")
    log = open(log_path, "ab")
    acked, stop = {}, threading.Event()
    started = time.time()
    daemon = start(binary, tmp, log)
    loaders = [threading.Thread(target=load, args=(c, acked, stop)) for c in range(CLIENTS)]
    for t in loaders:
        t.start()
    for k in range(N):
        time.sleep(rng.uniform(KILL_MIN, KILL_MAX) / 1000)
        daemon.kill()
        with LOCK:
            KILLS.append(time.monotonic())
        daemon.wait()
        daemon = start(binary, tmp, log)
        if (k + 1) % 50 == 0:
            print("  %d kills, %d acknowledged so far" % (k + 1, len(acked)), flush=True)
    time.sleep(0.5)
    stop.set()
    print("  load stopped; draining the queue", flush=True)
    for t in loaders:
        t.join()

    def accepted():
        counts = {}
        with LOCK:
            for subjects, _, answered in CALLS:
                for s in subjects:
                    counts[s] = counts.get(s, 0) + 1
        return counts

    deadline = time.time() + DRAIN
    queue = os.path.join(tmp, "spool", "queue")
    cfg = os.path.join(tmp, "postrelay.toml")

    def queued_ids():
        """Ids still queued, in the log or as files, as `postrelay queue list` reads them."""
        env = {"PATH": os.environ.get("PATH", ""),
               "POSTRELAY_SPOOL__DIR": os.path.join(tmp, "spool")}
        out = subprocess.run([binary, "--config", cfg, "queue", "list", "--json"],
                             env=env, capture_output=True, text=True)
        return {m["id"] for m in json.loads(out.stdout or "[]")} if out.returncode == 0 else None

    while time.time() < deadline:
        if queued_ids() == set():
            got = accepted()
            if all(s in got for s in acked):
                break
        time.sleep(0.2)
    daemon.terminate()
    daemon.wait()
    log.close()
    elapsed = time.time() - started

    counts = accepted()
    # Still queued when the drain deadline passed: late, not lost.
    still = queued_ids() or set()
    queued = sorted(s for s in acked if s not in counts and acked[s] in still)
    late = set(queued)
    lost = sorted(s for s in acked if s not in counts and s not in late)
    dups = sorted(s for s, n in counts.items() if n > 1)
    text = open(log_path, errors="replace").read()
    may_dup = set(re.findall(r"may duplicate.*?id=(\w+)|id=(\w+).*?may duplicate", text))
    may_dup = {a or b for a, b in may_dup}
    broken = sum(int(n) for n in re.findall(r" broken=(\d+)", text))
    parked = sum(int(n) for n in re.findall(r" parked=(\d+)", text))
    delivered = {}
    for mid in re.findall(r"message delivered id=(\w+)", text):
        delivered[mid] = delivered.get(mid, 0) + 1
    by_marker, in_flight, unexplained = [], [], []
    for s in dups:
        mid = acked.get(s)
        if mid in may_dup:
            by_marker.append(s)
        elif mid is not None and delivered.get(mid, 0) < counts[s]:
            # The API accepted it more often than the daemon recorded a
            # delivery: a kill came between a call and its recording.
            in_flight.append(s)
        elif mid is None and any(
                a <= k <= (d or k) + WINDOW
                for subjects, a, d in CALLS if s in subjects for k in KILLS):
            # Never acknowledged (the 250 was lost to a kill): by timing.
            in_flight.append(s)
        else:
            unexplained.append(s)
    leftover = ([n for n in os.listdir(queue)] + os.listdir(os.path.join(tmp, "spool", "failed"))
                + sorted(still))

    print("kills                      %d in %.0f s" % (N, elapsed))
    print("acknowledged               %d" % len(acked))
    print("accepted by the API        %d (calls: %d)" % (len(counts), len(CALLS)))
    print("lost                       %d %s" % (len(lost), lost[:10]))
    print("still queued (DRAIN=%ds)   %d" % (DRAIN, len(queued)))
    print("duplicates                 %d" % len(dups))
    print("  explained (marker)       %d" % len(by_marker))
    print("  explained (in flight)    %d" % len(in_flight))
    print("  unexplained              %d %s" % (len(unexplained), unexplained[:10]))
    print("broken / parked entries    %d / %d" % (broken, parked))
    print("left queued or in failed/  %d" % len(leftover))
    for s in unexplained[:5]:
        calls = sorted((a, d) for subjects, a, d in CALLS if s in subjects)
        for a, d in calls:
            near = min(KILLS, key=lambda k: abs(k - a))
            print("    %s: call arrived %+.3f s, answered %s from the nearest kill"
                  % (s, a - near, "never" if d is None else "%+.3f s" % (d - near)))
    bad = lost or unexplained or broken or parked or leftover
    if bad:
        print("daemon log kept in %s" % log_path)
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    api.shutdown()
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
