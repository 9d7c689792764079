#!/usr/bin/env python3
"""Peak memory of the relay under the two SMTP loads that used to blow it up.

    python3 bench/memory.py [path/to/postrelay]    # default: target/release/postrelay
    ONLY=large python3 bench/memory.py             # one load only

Each load runs against a fresh daemon (dry-run backend, temporary spool):

  header-flood x1   one 9.8 MB message made of 700 000 short header lines
  header-flood x5   five of them on five connections at once
  large x20         twenty 10 MB messages (a 7.4 MB PDF attachment each)
                    on twenty connections at once

Prints, per load, the SMTP replies seen and the daemon's peak RSS (VmHWM from
/proc, so no sampling can miss the peak). Builds nothing: run
`cargo build --release` first.
"""

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

PORT = int(os.environ.get("PORT", "12598"))


def header_flood():
    lines = [b"X-H%06d: v\r\n" % i for i in range(700_000)]
    head = b"From: a@example.com\r\nTo: r@example.org\r\nSubject: flood\r\n"
    return head + b"".join(lines) + b"\r\nbody\r\n"


def large_message():
    import base64

    payload = base64.encodebytes(os.urandom(7_400_000)).replace(b"\n", b"\r\n")
    return (
        b"From: a@example.com\r\nTo: r@example.org\r\nSubject: large\r\n"
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nsee attachment\r\n"
        b"--b\r\nContent-Type: application/pdf\r\n"
        b'Content-Disposition: attachment; filename="report.pdf"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n" + payload + b"--b--\r\n"
    )


def reply(f):
    lines = []
    while True:
        line = f.readline()
        if not line:
            return b"(closed)"
        lines.append(line)
        if line[3:4] != b"-":
            return lines[-1].strip()


def send(message, out, i):
    try:
        s = socket.create_connection(("127.0.0.1", PORT), timeout=300)
        f = s.makefile("rb")
        reply(f)
        for cmd in (b"EHLO bench", b"MAIL FROM:<a@example.com>", b"RCPT TO:<r@example.org>", b"DATA"):
            s.sendall(cmd + b"\r\n")
            reply(f)
        s.sendall(message + b".\r\n")
        out[i] = reply(f).decode(errors="replace")[:60]
        s.sendall(b"QUIT\r\n")
        s.close()
    except OSError as e:
        out[i] = f"error: {e}"


def wait_port():
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", PORT), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit("relay did not start")


def run(binary, name, message, clients):
    spool = tempfile.mkdtemp(prefix="postrelay-mem-")
    env = dict(os.environ)
    env.update(
        POSTRELAY_SPOOL__DIR=os.path.join(spool, "spool"),
        POSTRELAY_SMTP__LISTEN=f"127.0.0.1:{PORT}",
        POSTRELAY_SMTP__MAX_CONNECTIONS="100",
        POSTRELAY_LOG__LEVEL="error",
    )
    proc = subprocess.Popen([binary, "serve"], env=env, stderr=subprocess.DEVNULL)
    try:
        wait_port()
        out = [None] * clients
        threads = [threading.Thread(target=send, args=(message, out, i)) for i in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with open(f"/proc/{proc.pid}/status") as st:
            hwm = next(int(l.split()[1]) for l in st if l.startswith("VmHWM"))
        replies = {}
        for r in out:
            r = re.sub(r"queued as \S+", "queued as <id>", r or "")
            replies[r] = replies.get(r, 0) + 1
        print(f"{name:<16} {len(message) / 1e6:5.1f} MB x{clients:<3} peak RSS {hwm / 1024:7.1f} MB   replies: {replies}")
        sys.stdout.flush()
    finally:
        proc.terminate()
        proc.wait()
        shutil.rmtree(spool, ignore_errors=True)


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else "target/release/postrelay"
    flood = header_flood()
    large = large_message()
    only = os.environ.get("ONLY")
    for name, message, clients in (("header-flood", flood, 1), ("header-flood", flood, 5), ("large", large, 20)):
        if only in (None, name):
            run(binary, name, message, clients)


if __name__ == "__main__":
    main()
