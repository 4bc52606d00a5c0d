#!/usr/bin/env python3
"""One hostile-client scenario against a `catchd serve` (see bench/abuse.sh).

usage: abuse_probe.py CATCHD WORKDIR passwords|readers|idle
Prints one line: what was measured.
"""
import base64
import json
import os
import resource
import socket
import subprocess
import sys
import threading
import time
import urllib.request

catchd, work, scenario = sys.argv[1], sys.argv[2], sys.argv[3]
db = os.path.join(work, "d.db")


def user(name, role, password=None):
    args = [catchd, "user", "add", name, "--role", role, "--db", db]
    if password:
        args.append("--password-stdin")
    out = subprocess.run(args, input=(password + "\n") if password else "",
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def start(nofile=None):
    def limit():
        if nofile:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
    p = subprocess.Popen([catchd, "serve", "--listen", "127.0.0.1:0", "--db", db],
                         stderr=subprocess.PIPE, text=True, preexec_fn=limit,
                         env={**os.environ, "RUST_LOG": "catchd=info"})
    for line in p.stderr:
        if "Serving the BHR API on http://" in line:
            addr = line.split("http://")[1].split("/")[0]
            threading.Thread(target=lambda: [None for _ in p.stderr], daemon=True).start()
            host, port = addr.rsplit(":", 1)
            return p, (host, int(port))
    raise SystemExit("did not start")


def mib(pid, field):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(field):
            return int(line.split()[1]) // 1024
    return -1


def request(addr, path, auth=None, body=None, timeout=60):
    req = urllib.request.Request(f"http://{addr[0]}:{addr[1]}{path}", data=body)
    if auth:
        req.add_header("Authorization", auth)
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


if scenario == "passwords":
    user("alice", "user", "the-right-password")
    p, addr = start()
    base = mib(p.pid, "VmRSS:")
    codes = {}
    lock = threading.Lock()

    def flood(i):
        for j in range(2):
            a = "Basic " + base64.b64encode(f"alice:wrong{i}-{j}".encode()).decode()
            try:
                st, _ = request(addr, "/bhr/api/blocks/", a, timeout=300)
            except Exception:
                st = "error"
            with lock:
                codes[st] = codes.get(st, 0) + 1
    ts = [threading.Thread(target=flood, args=(i,)) for i in range(200)]
    t0 = time.time()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    took = time.time() - t0
    peak, after = mib(p.pid, "VmHWM:"), mib(p.pid, "VmRSS:")
    p.kill()
    print(f"RSS {base} MiB before, peak {peak} MiB, {after} MiB after; answers {codes} in {took:.1f} s")
elif scenario == "readers":
    tok = "Token " + user("adm", "admin")
    p, addr = start()
    for k in range(30):
        items = [{"cidr": f"100.{64 + k // 8}.{(k % 8) * 4 + i // 250}.{1 + i % 250}",
                  "source": "flood", "why": "many", "duration": "1d"} for i in range(1000)]
        st, _ = request(addr, "/bhr/api/mblock", tok, json.dumps(items).encode())
        assert st == 201, st
    base = mib(p.pid, "VmRSS:")
    conns = []
    for _ in range(60):
        s = socket.create_connection(addr)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.sendall(f"GET /bhr/api/blocks/ HTTP/1.1\r\nHost: x\r\nAuthorization: {tok}\r\n\r\n".encode())
        conns.append(s)
    time.sleep(3)
    held = mib(p.pid, "VmRSS:")
    p.kill()
    print(f"RSS {base} MiB with 30 000 blocks, {held} MiB with 60 unread listings (+{held - base} MiB)")
elif scenario == "idle":
    p, addr = start(nofile=1024)
    idle = []
    for _ in range(1100):
        try:
            idle.append(socket.create_connection(addr, timeout=2))
        except OSError:
            break
    t0 = time.time()
    try:
        st, _ = request(addr, "/bhr/api/stats", timeout=30)
        res = f"answered {st} after {time.time() - t0:.1f} s"
    except Exception as e:
        res = f"not answered within 30 s ({type(e).__name__})"
    p.kill()
    print(f"{len(idle)} idle connections: a new client {res}")
