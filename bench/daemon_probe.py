"""Helpers for bench/daemon.sh (run with python3).

  daemon_probe.py drop URL TOKEN CSV [CHUNK]
      Drops every address of a drops CSV (ts,addr,location) through
      POST /api/v1/cr/drop in lists of CHUNK; prints "dropped N in S s".

  daemon_probe.py latency URL TOKEN NETNS PEER COUNT PREFIX
      For COUNT addresses PREFIX.0.1, PREFIX.0.2 …, already dropped and released:
      sends one UDP datagram from the address out of network namespace NETNS towards
      PEER and measures the time until a block manager's long poll of
      /bhr/api/queue/<ident> returns the new block. Prints the latencies' percentiles.
"""

import csv
import http.client
import json
import subprocess
import sys
import threading
import time
import urllib.parse

SENDER = r"""
import socket, sys, time
peer = sys.argv[1]
for line in sys.stdin:
    a = line.strip()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((a, 0))
    t = time.time()
    s.sendto(b"catchd bench", (peer, 9999))
    s.close()
    print(t, flush=True)
"""


def conn(url):
    u = urllib.parse.urlparse(url)
    return http.client.HTTPConnection(u.hostname, u.port, timeout=120)


def request(c, method, path, token, body=None):
    headers = {"Authorization": "Token " + token}
    if body is not None:
        body = json.dumps(body)
        headers["Content-Type"] = "application/json"
    c.request(method, path, body=body, headers=headers)
    r = c.getresponse()
    data = r.read()
    if r.status >= 300:
        raise SystemExit("%s %s: %d %s" % (method, path, r.status, data[:300]))
    return json.loads(data)


def drop(url, token, path, chunk=20000):
    c = conn(url)
    with open(path) as f:
        rows = [r["addr"] for r in csv.DictReader(f)]
    start = time.time()
    for i in range(0, len(rows), chunk):
        items = [{"addr": a, "location": "bench"} for a in rows[i:i + chunk]]
        out = request(c, "POST", "/api/v1/cr/drop", token, items)
        bad = [o for o in out if "error" in o]
        if bad:
            raise SystemExit("refused: %s" % bad[:3])
    took = time.time() - start
    print("dropped %d in %.1f s (%.0f/s)" % (len(rows), took, len(rows) / took))


def latency(url, token, netns, peer, count, prefix):
    addrs = ["%s.%d.%d" % (prefix, 1 + i // 250, 1 + i % 250) for i in range(count)]
    arrived = {}
    cond = threading.Condition()
    stop = False

    def poller():
        c = conn(url)
        while not stop:
            rows = request(c, "GET", "/bhr/api/queue/bench-latency?timeout=5", token)
            t = time.time()
            if rows:
                request(c, "POST", "/bhr/api/set_blocked_multi/bench-latency", token,
                        {"ids": [r["id"] for r in rows]})
                with cond:
                    for r in rows:
                        arrived.setdefault(r["cidr"].split("/")[0], t)
                    cond.notify_all()

    th = threading.Thread(target=poller, daemon=True)
    th.start()
    sender = subprocess.Popen(
        ["ip", "netns", "exec", netns, "python3", "-c", SENDER, peer],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
    time.sleep(0.5)
    lat = []
    for a in addrs:
        sender.stdin.write(a + "\n")
        sender.stdin.flush()
        t0 = float(sender.stdout.readline())
        with cond:
            ok = cond.wait_for(lambda: a in arrived, timeout=10)
        if not ok:
            raise SystemExit("no block for %s within 10 s" % a)
        lat.append((arrived[a] - t0) * 1000)
        time.sleep(0.01)
    stop = True
    sender.stdin.close()
    sender.wait()
    lat.sort()

    def pct(p):
        return lat[min(len(lat) - 1, int(round(p / 100 * (len(lat) - 1))))]

    print("latency ms over %d: min %.2f p50 %.2f p90 %.2f p99 %.2f max %.2f"
          % (len(lat), lat[0], pct(50), pct(90), pct(99), lat[-1]))


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "drop":
        drop(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]) if len(sys.argv) > 5 else 20000)
    elif cmd == "latency":
        latency(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6]), sys.argv[7])
    else:
        raise SystemExit(__doc__)
