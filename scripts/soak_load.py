#!/usr/bin/env python3
"""Churning load for scripts/soak.sh: python3 scripts/soak_load.py HOST PORT SECONDS

Runs for SECONDS against a tcpool echo server on HOST:PORT (loopback only), from several
threads at once:

  churn      connect, one message, read its echo, close (over and over)
  resets     connect, send half a line, close with SO_LINGER 0 (an RST), sometimes before
             the echo was read
  slow       send 1 MiB while reading it back in small sips with pauses (back-pressure)
  idle       hold a few dozen silent or once-spoken connections, let them go, again
  half-close send lines, shut the write side, read every echo to the end
  steady     one connection doing exact round trips the whole time

Every well-behaved flow checks its echo byte for byte. Prints one summary line; exits 1 if any
well-behaved flow got a wrong or missing answer, 2 on bad arguments.
"""

import random
import socket
import struct
import sys
import threading
import time

TIMEOUT = 10.0


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {}
        self.failures = []

    def add(self, what, n=1):
        with self.lock:
            self.counts[what] = self.counts.get(what, 0) + n

    def fail(self, what):
        with self.lock:
            if len(self.failures) < 20:
                self.failures.append(what)
            self.counts["failures"] = self.counts.get("failures", 0) + 1


def connect(addr):
    s = socket.create_connection(addr, timeout=TIMEOUT)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def read_exact(s, n):
    out = bytearray()
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            break
        out += chunk
    return bytes(out)


def read_to_close(s):
    out = bytearray()
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return bytes(out)
        out += chunk


def reset(s):
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()


def churn(addr, until, tally, rng, name):
    n = 0
    while time.monotonic() < until:
        msg = f"{name} {n} {'c' * rng.randrange(1, 200)}\n".encode()
        try:
            with connect(addr) as s:
                s.sendall(msg)
                got = read_exact(s, len(msg))
            if got != msg:
                tally.fail(f"{name}: echo {got[:40]!r} for {msg[:40]!r}")
            tally.add("churn")
        except OSError as e:
            tally.fail(f"{name}: {e}")
        n += 1
        time.sleep(0.002)


def resets(addr, until, tally, rng):
    while time.monotonic() < until:
        try:
            s = connect(addr)
            kind = rng.randrange(3)
            if kind == 1:
                s.sendall(b"half a li")
            elif kind == 2:
                s.sendall(b"x" * rng.randrange(1, 100_000))
            reset(s)
            tally.add("resets")
        except OSError:
            # Not a failure of the server's: a reset may race with our own writes.
            tally.add("reset-errors")
        time.sleep(0.01)


def send_quietly(s, data):
    try:
        s.sendall(data)
    except OSError:
        pass  # the reading side reports what went wrong


def slow_reader(addr, until, tally, rng, name):
    size = 1 << 20
    while time.monotonic() < until:
        # Odd bytes only: never a newline, so never a `quit` line.
        payload = bytes(rng.getrandbits(8) | 1 for _ in range(256)) * (size // 256)
        try:
            with connect(addr) as s:
                sender = threading.Thread(target=send_quietly, args=(s, payload), daemon=True)
                sender.start()
                got = bytearray()
                while len(got) < size and time.monotonic() < until + TIMEOUT:
                    chunk = s.recv(min(4096, size - len(got)))
                    if not chunk:
                        break
                    got += chunk
                    time.sleep(0.005)
                sender.join(TIMEOUT)
            if bytes(got) != payload:
                tally.fail(f"{name}: {len(got)} of {size} bytes echoed correctly")
            tally.add("slow-bytes", len(got))
        except OSError as e:
            tally.fail(f"{name}: {e}")


def idle(addr, until, tally, rng):
    while time.monotonic() < until:
        held = []
        try:
            for i in range(rng.randrange(10, 60)):
                s = connect(addr)
                if i % 2:
                    s.sendall(b"once\n")
                    if read_exact(s, 5) != b"once\n":
                        tally.fail("idle: wrong echo")
                held.append(s)
            tally.add("idle", len(held))
            time.sleep(rng.uniform(0.2, 1.0))
        except OSError as e:
            tally.fail(f"idle: {e}")
        finally:
            for s in held:
                s.close()


def half_close(addr, until, tally, rng):
    while time.monotonic() < until:
        lines = b"".join(f"line {i}\n".encode() for i in range(rng.randrange(1, 500)))
        try:
            with connect(addr) as s:
                s.sendall(lines)
                s.shutdown(socket.SHUT_WR)
                got = read_to_close(s)
            if got != lines:
                tally.fail(f"half-close: {len(got)} of {len(lines)} bytes")
            tally.add("half-close")
        except OSError as e:
            tally.fail(f"half-close: {e}")
        time.sleep(0.02)


def steady(addr, until, tally):
    rtts = []
    try:
        with connect(addr) as s:
            n = 0
            while time.monotonic() < until:
                msg = f"steady {n}\r\n".encode()
                sent = time.monotonic()
                s.sendall(msg)
                got = read_exact(s, len(msg))
                rtts.append(time.monotonic() - sent)
                if got != msg:
                    tally.fail(f"steady: {got!r} for {msg!r}")
                    return
                n += 1
                time.sleep(0.0005)
            tally.add("steady", n)
    except OSError as e:
        tally.fail(f"steady: {e}")
    if rtts:
        rtts.sort()
        p99 = rtts[min(len(rtts) - 1, int(len(rtts) * 0.99))]
        # The well-behaved client's view while the hostile flows run (Python's own overhead
        # included, so these are upper bounds).
        tally.add("steady_p99_us", int(p99 * 1e6))
        tally.add("steady_worst_us", int(rtts[-1] * 1e6))


def main():
    if len(sys.argv) != 4:
        print(__doc__.strip().splitlines()[0], file=sys.stderr)
        return 2
    host, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    if host not in ("127.0.0.1", "localhost"):
        print("soak_load: loopback only", file=sys.stderr)
        return 2
    addr = ("127.0.0.1", port)
    until = time.monotonic() + seconds
    tally = Tally()
    rng = random.Random(0x7C9001)
    jobs = [
        (churn, (addr, until, tally, random.Random(rng.random()), "churn-a")),
        (churn, (addr, until, tally, random.Random(rng.random()), "churn-b")),
        (churn, (addr, until, tally, random.Random(rng.random()), "churn-c")),
        (resets, (addr, until, tally, random.Random(rng.random()))),
        (slow_reader, (addr, until, tally, random.Random(rng.random()), "slow-a")),
        (slow_reader, (addr, until, tally, random.Random(rng.random()), "slow-b")),
        (idle, (addr, until, tally, random.Random(rng.random()))),
        (half_close, (addr, until, tally, random.Random(rng.random()))),
        (steady, (addr, until, tally)),
    ]
    threads = [threading.Thread(target=f, args=a, daemon=True) for f, a in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 3 * TIMEOUT)
    hung = sum(t.is_alive() for t in threads)
    if hung:
        tally.fail(f"{hung} load thread(s) did not finish")
    counts = " ".join(f"{k}={v}" for k, v in sorted(tally.counts.items()))
    print(f"load: {counts}", flush=True)
    for f in tally.failures:
        print(f"load failure: {f}", flush=True)
    return 1 if tally.failures or tally.counts.get("failures") else 0


if __name__ == "__main__":
    sys.exit(main())
