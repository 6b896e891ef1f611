#!/usr/bin/env python3
"""What a normal client sees while issue 9's attacks run (items 1 to 3), for one data-plane
binary. Run it for the binary before and after the fix and compare (bench/RESULTS.md).

    python3 bench/hostile.py --data-plane target/release/gw-data-plane \
        --control-plane target/release/gw-control-plane --gwctl target/release/gwctl

Everything runs on loopback: a control plane on a temp database, three Python backends, and
the data plane (under `prlimit --nofile=1024` for the connection flood, so the flood reaches
the limit quickly). Every loop is bounded in count and time; nothing is left running.

Attacks and what is measured:
1. fair blame: 9 malformed-chunk requests and 9 aborted uploads, then 100 normal GETs:
   their success rate (the fix: 100 %; before: endpoints ejected, 503s).
2. silent flood: 3,000 connections that never send a byte, held; meanwhile a normal client
   sends GETs (5 s timeout each) for 15 s: success rate and latency; then after the flood
   ends, 50 more GETs: success rate.
3. stalls: a backend that sends headers then stalls (how long the client is held, capped at
   20 s), and an upload of one byte every 5 s (how long the connection is held, capped at
   20 s). `--stall-args` passes flags to the data plane for this attack only, e.g.
   `--stall-args="--response-body-timeout 5s --request-body-timeout 3s"` (the defaults, 60 s
   and 10 s, are above the 20 s cap and the 5 s gaps).
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Ok(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.reply(b"ok")

    def do_POST(self):
        n = int(self.headers.get("content-length") or 0)
        try:
            while n > 0:
                chunk = self.rfile.read(min(n, 65536))
                if not chunk:
                    return
                n -= len(chunk)
        except OSError:
            return
        self.reply(b"ok")

    def reply(self, body):
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def stalling_backend():
    """Answers headers and 3 of 100 body bytes, then holds the connection."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)

    def serve():
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            def one(c=c):
                try:
                    c.recv(65536)
                    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
                    while c.recv(65536):
                        pass
                except OSError:
                    pass
            threading.Thread(target=one, daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    return srv.getsockname()[1]


def get(port, path="/", timeout=5.0):
    """(status or None, seconds)."""
    t = time.monotonic()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            r.read()
            return r.status, time.monotonic() - t
    except urllib.error.HTTPError as e:
        return e.code, time.monotonic() - t
    except Exception:
        return None, time.monotonic() - t


def wait_ready(admin, deadline=30):
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if get(admin, "/readyz", 1)[0] == 200:
            return
        time.sleep(0.1)
    sys.exit("the data plane never became ready")


class Rig:
    def __init__(self, args, tmp):
        self.args, self.tmp = args, tmp
        self.cp_port = free_port()
        self.cp = subprocess.Popen(
            [args.control_plane, "--listen", f"127.0.0.1:{self.cp_port}",
             "--database", f"sqlite://{tmp}/gw.db"],
            stderr=subprocess.DEVNULL)
        self.backends = []
        for _ in range(3):
            srv = ThreadingHTTPServer(("127.0.0.1", 0), Ok)
            threading.Thread(target=srv.serve_forever, daemon=True).start()
            self.backends.append(srv)
        self.stall_port = stalling_backend()
        time.sleep(0.5)
        eps = sum((["--endpoint", f"http://127.0.0.1:{b.server_address[1]}"] for b in self.backends), [])
        self.gwctl(["service", "add", "demo", "--prefix", "/"] + eps)
        self.gwctl(["service", "add", "stall", "--prefix", "/stall",
                    "--endpoint", f"http://127.0.0.1:{self.stall_port}"])

    def gwctl(self, argv):
        for _ in range(50):
            r = subprocess.run([self.args.gwctl, "--control-plane", f"http://127.0.0.1:{self.cp_port}"] + argv,
                               capture_output=True)
            if r.returncode == 0:
                return
            time.sleep(0.2)
        sys.exit(f"gwctl {argv}: {r.stderr.decode()}")

    def data_plane(self, nofile=None, extra=()):
        self.port, self.admin = free_port(), free_port()
        cmd = [self.args.data_plane, "--control-plane", f"http://127.0.0.1:{self.cp_port}",
               "--listen", f"127.0.0.1:{self.port}", "--admin-listen", f"127.0.0.1:{self.admin}",
               "--cache-file", f"{self.tmp}/dp-{self.port}.cache", "--worker-threads", "2"]
        cmd += list(extra)
        if nofile:
            cmd = ["prlimit", f"--nofile={nofile}:{nofile}", "--"] + cmd
        self.dp = subprocess.Popen(cmd, stderr=open(f"{self.tmp}/dp-{self.port}.log", "w"))
        wait_ready(self.admin)
        # The backends' first health checks.
        time.sleep(1)

    def stop_data_plane(self):
        self.dp.terminate()
        try:
            self.dp.wait(10)
        except subprocess.TimeoutExpired:
            self.dp.kill()

    def close(self):
        self.cp.terminate()
        for b in self.backends:
            b.shutdown()


def raw(port, data, hold=0.0):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(data)
    if hold:
        time.sleep(hold)
    return s


def success(results):
    ok = sum(1 for st, _ in results if st == 200)
    return 100.0 * ok / max(1, len(results))


def attack_blame(rig):
    rig.data_plane()
    for _ in range(9):
        s = raw(rig.port, b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n\r\n")
        try:
            s.recv(4096)
        except OSError:
            pass
        s.close()
    for _ in range(9):
        s = raw(rig.port, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\npartial", hold=0.2)
        s.close()
    time.sleep(0.5)
    results = [get(rig.port, "/", 2) for _ in range(100)]
    rig.stop_data_plane()
    return {"normal_success_pct": success(results)}


def attack_flood(rig, silent=3000):
    rig.data_plane(nofile=1024)
    socks, lock, stop = [], threading.Lock(), threading.Event()

    def opener():
        for _ in range(silent):
            if stop.is_set():
                return
            try:
                s = socket.socket()
                s.settimeout(5)
                s.connect(("127.0.0.1", rig.port))
                with lock:
                    socks.append(s)
            except OSError:
                pass

    t = threading.Thread(target=opener, daemon=True)
    t.start()
    during, end = [], time.monotonic() + 15
    while time.monotonic() < end:
        during.append(get(rig.port, "/", 5))
    stop.set()
    t.join(10)
    still_open = 0
    with lock:
        for s in socks:
            s.setblocking(False)
            try:
                still_open += 1 if s.recv(1) is None else 0
            except BlockingIOError:
                still_open += 1
            except OSError:
                pass
            s.close()
    time.sleep(2)
    after = [get(rig.port, "/", 2) for _ in range(50)]
    rig.stop_data_plane()
    lat = sorted(d for st, d in during if st == 200) or [float("nan")]
    return {
        "silent_opened": len(socks),
        "silent_still_open_after_15s": still_open,
        "normal_during_requests": len(during),
        "normal_during_success_pct": success(during),
        "normal_during_p50_s": round(statistics.median(lat), 3),
        "normal_during_max_s": round(lat[-1], 3),
        "normal_after_success_pct": success(after),
    }


def held_for(s, cap):
    """Seconds until the peer closes `s` (or `cap`)."""
    t = time.monotonic()
    s.settimeout(0.5)
    while time.monotonic() - t < cap:
        try:
            if not s.recv(65536):
                break
        except socket.timeout:
            continue
        except OSError:
            break
    return round(time.monotonic() - t, 2)


def attack_stalls(rig, extra, cap=20.0):
    rig.data_plane(extra=extra)
    s = raw(rig.port, b"GET /stall HTTP/1.1\r\nHost: x\r\n\r\n")
    stalled_response = held_for(s, cap)
    s.close()
    s = raw(rig.port, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
    t = time.monotonic()
    held = cap
    s.settimeout(5)
    while time.monotonic() - t < cap:
        try:
            s.sendall(b"x")
            if not s.recv(65536):
                held = time.monotonic() - t
                break
        except socket.timeout:
            continue
        except OSError:
            held = time.monotonic() - t
            break
    s.close()
    rig.stop_data_plane()
    return {"stalled_response_held_s": stalled_response, "trickle_upload_held_s": round(held, 2)}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data-plane", required=True)
    p.add_argument("--control-plane", required=True)
    p.add_argument("--gwctl", required=True)
    p.add_argument("--label", default="")
    p.add_argument("--stall-args", default="")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rig = Rig(args, tmp)
        try:
            out = {
                "label": args.label,
                "1_fair_blame": attack_blame(rig),
                "2_silent_flood": attack_flood(rig),
                "3_stalls": attack_stalls(rig, args.stall_args.split()),
            }
        finally:
            rig.close()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
