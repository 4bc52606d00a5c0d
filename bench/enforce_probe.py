"""Helper of bench/enforce.sh, run inside the guard namespace.

  enforce_probe.py URL ADMIN_TOKEN MANAGER_TOKEN BACKEND COUNT SAMPLES

1. bulk: one mblock of COUNT /32 blocks; times until the manager (ident fw) has
   acknowledged all of them (queue/fw empty) and the backend holds them;
2. latency: SAMPLES times, POST /bhr/api/block of one new address, then polls the backend
   until the rule is there. Prints the numbers.
"""

import json
import subprocess
import sys
import time
import urllib.request

url, admin, manager, backend, count, samples = sys.argv[1:7]
count, samples = int(count), int(samples)


def req(method, path, token, body=None):
    data = json.dumps(body).encode() if body is not None else None
    r = urllib.request.Request(url + path, data=data, method=method)
    r.add_header("Authorization", "Token " + token)
    if data is not None:
        r.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(r, timeout=120) as resp:
        return json.loads(resp.read())


def held():
    if backend == "nftables":
        out = subprocess.run(["nft", "-j", "list", "set", "inet", "catchd", "h4"],
                             capture_output=True, text=True).stdout
        return len(json.loads(out)["nftables"][1]["set"].get("elem", []))
    out = subprocess.run(["iptables", "-S", "CATCHD"], capture_output=True, text=True).stdout
    return sum(1 for l in out.splitlines() if l.startswith("-A CATCHD -s"))


def present(addr):
    if backend == "nftables":
        return subprocess.run(["nft", "get", "element", "inet", "catchd", "h4", "{ %s }" % addr],
                              capture_output=True).returncode == 0
    return subprocess.run(["iptables", "-C", "CATCHD", "-s", addr, "-j", "DROP"],
                          capture_output=True).returncode == 0


addrs = ["10.%d.%d.%d" % (100 + i // 62500, (i // 250) % 250, 1 + i % 250) for i in range(count)]
records = [{"cidr": a, "source": "bench", "why": "bench", "duration": 3600} for a in addrs]
t0 = time.time()
req("POST", "/bhr/api/mblock", admin, records)
t1 = time.time()
while True:
    q = req("GET", "/bhr/api/queue/fw", manager)
    if not q:
        break
    time.sleep(0.02)
t2 = time.time()
n = held()
print("bulk: mblock of %d took %.2f s; all applied and acknowledged %.2f s after it "
      "(%.0f blocks/s); backend holds %d" % (count, t1 - t0, t2 - t1, count / (t2 - t1), n))

lat = []
for i in range(samples):
    a = "10.250.%d.%d" % (i // 250, 1 + i % 250)
    t = time.time()
    req("POST", "/bhr/api/block", admin, {"cidr": a, "source": "bench", "why": "lat", "duration": 3600})
    while not present(a):
        pass
    lat.append((time.time() - t) * 1000)
lat.sort()
pct = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]
print("latency POST block -> rule present (ms): p50 %.1f  p90 %.1f  max %.1f  (n=%d)"
      % (pct(0.5), pct(0.9), lat[-1], len(lat)))
