"""Helper of bench/bgp.sh: times blocks from the BHR API call to the route in the border
router's kernel (BIRD installs what its BGP table takes).

  bgp_probe.py URL ADMIN_TOKEN ROUTER_NS COUNT SAMPLES

1. latency: SAMPLES times, POST /bhr/api/block of one new address, then polls the router
   (every 2 ms) until its blackhole route is there;
2. bulk: COUNT /32 blocks through mblock (chunks of 1000), the router's blackhole routes
   polled every 50 ms; per block, the time from its mblock call to its route; and blocks/s
   from the first call to the last route.
"""

import json
import subprocess
import sys
import time
import urllib.request

url, admin, ns, count, samples = sys.argv[1:6]
count, samples = int(count), int(samples)


def req(method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    r = urllib.request.Request(url + path, data=data, method=method)
    r.add_header("Authorization", "Token " + admin)
    if data is not None:
        r.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(r, timeout=120) as resp:
        return json.loads(resp.read())


def routes():
    out = subprocess.run(["ip", "-n", ns, "-4", "route", "show", "type", "blackhole"],
                         capture_output=True, text=True).stdout
    return {l.split()[1] for l in out.splitlines() if l.startswith("blackhole")}


def present(addr):
    out = subprocess.run(["ip", "-n", ns, "-4", "route", "show", addr, "type", "blackhole"],
                         capture_output=True, text=True).stdout
    return bool(out.strip())


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(len(v) * p))]


lat = []
for i in range(samples):
    a = "10.230.0.%d" % (i + 1)
    t0 = time.time()
    req("POST", "/bhr/api/block", {"cidr": a, "source": "bench", "why": "bench", "duration": 3600})
    while not present(a):
        if time.time() - t0 > 120:
            sys.exit("no route for %s after 120 s" % a)
        time.sleep(0.002)
    lat.append((time.time() - t0) * 1000)
    time.sleep(0.2)
print("single block -> route: p50 %.1f ms, p99 %.1f ms, max %.1f ms (%d samples)"
      % (pct(lat, 0.5), pct(lat, 0.99), max(lat), len(lat)))

addrs = ["10.%d.%d.%d" % (231 + i // 62500, (i // 250) % 250, 1 + i % 250) for i in range(count)]
called = {}
seen = {}
t_start = time.time()
for i in range(0, count, 1000):
    chunk = addrs[i:i + 1000]
    req("POST", "/bhr/api/mblock",
        [{"cidr": a, "source": "bench", "why": "bench", "duration": 3600} for a in chunk])
    now = time.time()
    for a in chunk:
        called[a] = now
deadline = time.time() + 600
while len(seen) < count and time.time() < deadline:
    now = time.time()
    for r in routes():
        if r in called and r not in seen:
            seen[r] = now
    time.sleep(0.05)
if len(seen) < count:
    sys.exit("only %d of %d routes after 600 s" % (len(seen), count))
bulk = [(seen[a] - called[a]) * 1000 for a in addrs]
total = max(seen.values()) - t_start
print("%d blocks -> routes: %.2f s from the first mblock to the last route, %.0f blocks/s; "
      "per block p50 %.0f ms, p99 %.0f ms" % (count, total, count / total, pct(bulk, 0.5), pct(bulk, 0.99)))
