#!/usr/bin/env python3
"""A fast stand-in for Postmark's /email and /email/batch, for the benchmarks.

    python3 bench/mockapi.py PORT              # serve until killed
    python3 bench/mockapi.py ceiling PORT      # measure a running mock's ceiling

Answers every POST /email with Postmark's 200 and every POST /email/batch
with one 200 element per message, over HTTP/1.1 keep-alive, on asyncio (one
process, no framework). Control endpoints for the benchmark scripts:

    GET  /__stats        {"calls": n, "emails": n, "batch_calls": n}
    POST /__mode/200     answer normally (the default)
    POST /__mode/503     answer 503 with a Postmark error body (API down)
    POST /__reset        zero the counters

`ceiling PORT PID` drives the mock with 20 keep-alive connections posting
20 KB bodies for 3 s from one Python process and prints two figures: the
requests/s it saw (a lower bound: that client is no faster than the server)
and the mock's CPU per request from /proc/PID/stat, whose inverse is the
mock's ceiling on one core whatever the machine's load.
"""

import asyncio
import json
import os
import sys
import time

try:
    # Two to three times faster than json on batch bodies of 20 KB messages,
    # which keeps the mock's share of a 2-core machine small.
    from orjson import loads
except ImportError:
    from json import loads

STATS = {"calls": 0, "emails": 0, "batch_calls": 0}
MODE = {"status": 200}

OK_ONE = {
    "To": "recipient@example.org",
    "SubmittedAt": "2026-03-01T10:00:00.1234567-05:00",
    "MessageID": "b7bc2f4a-e38e-4336-af7d-e6c392c2f817",
    "ErrorCode": 0,
    "Message": "OK",
}
OK_ONE_BYTES = json.dumps(OK_ONE).encode()
DOWN = json.dumps({"ErrorCode": 0, "Message": "Service Unavailable"}).encode()


def response(status, body):
    reason = {200: "OK", 404: "Not Found", 503: "Service Unavailable"}[status]
    return (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode() + body


def answer(method, path, body):
    if path == "/__stats":
        return response(200, json.dumps(STATS).encode())
    if path.startswith("/__mode/"):
        MODE["status"] = int(path.rsplit("/", 1)[1])
        return response(200, b"{}")
    if path == "/__reset":
        for k in STATS:
            STATS[k] = 0
        return response(200, b"{}")
    if method != "POST" or path not in ("/email", "/email/batch"):
        return response(404, b"{}")
    STATS["calls"] += 1
    if MODE["status"] != 200:
        return response(MODE["status"], DOWN)
    if path == "/email":
        STATS["emails"] += 1
        return response(200, OK_ONE_BYTES)
    n = len(loads(body))
    STATS["batch_calls"] += 1
    STATS["emails"] += n
    return response(200, b"[" + b",".join([OK_ONE_BYTES] * n) + b"]")


class Conn(asyncio.Protocol):
    """HTTP/1.1 keep-alive, Content-Length bodies (what reqwest sends)."""

    def connection_made(self, transport):
        self.transport = transport
        self.buf = bytearray()
        # Once a request's head is in: (head, where its body starts, where it ends).
        self.request = None

    def data_received(self, data):
        # A bytearray grows in place and the head is parsed once, so a
        # 2 MB batch body arriving in pieces costs linear time, not quadratic.
        self.buf += data
        while True:
            if self.request is None:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = bytes(self.buf[:end])
                length = 0
                at = head.lower().find(b"content-length:")
                if at >= 0:
                    length = int(head[at + 15:].split(b"\r\n", 1)[0])
                self.request = (head, end + 4, end + 4 + length)
            head, start, stop = self.request
            if len(self.buf) < stop:
                return
            body = bytes(self.buf[start:stop])
            del self.buf[:stop]
            self.request = None
            method, path, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
            self.transport.write(answer(method, path, body))


async def serve(port):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Conn, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


async def ceiling(port, conns=20, seconds=3.0, size=20_000):
    body = json.dumps({"From": "a@example.com", "TextBody": "x" * size}).encode()
    request = (
        f"POST /email HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode() + body
    done = [0]
    stop = time.monotonic() + seconds

    async def one():
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.monotonic() < stop:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            done[0] += 1
        writer.close()

    start = time.monotonic()
    await asyncio.gather(*(one() for _ in range(conns)))
    return done[0] / (time.monotonic() - start)


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    if sys.argv[1] == "ceiling":
        port, pid = int(sys.argv[2]), int(sys.argv[3])
        before = cpu_seconds(pid)
        rate = asyncio.run(ceiling(port))
        used = cpu_seconds(pid) - before
        print(f"{rate:.0f} {used / (rate * 3.0) * 1e6:.0f}")
    else:
        asyncio.run(serve(int(sys.argv[1])))


if __name__ == "__main__":
    main()
