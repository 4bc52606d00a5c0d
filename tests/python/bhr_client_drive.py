"""Drives a running catchd with the real bhr-client package (1.6) and checks the results.

Run by tests/it/serve/bhr_client.rs with BHR_HOST, BLOCKER_TOKEN, MANAGER_TOKEN and
ADMIN_PASSWORD set; prints one line per check and exits non-zero on the first failure.
"""

import os
import sys
import threading
import time
from datetime import datetime, timedelta

import requests
from bhr_client.block_manager import BlockManager
from bhr_client.rest import login

HOST = os.environ["BHR_HOST"]
blocker = login(HOST, token=os.environ["BLOCKER_TOKEN"])
admin = login(HOST, username="admin", password=os.environ["ADMIN_PASSWORD"])
bgp1 = login(HOST, token=os.environ["MANAGER_TOKEN"], ident="bgp1")
bgp2 = login(HOST, token=os.environ["MANAGER_TOKEN"], ident="bgp2")
bgp3 = login(HOST, token=os.environ["MANAGER_TOKEN"], ident="bgp3")

checks = 0


def check(cond, what, got=None):
    global checks
    checks += 1
    if not cond:
        print("FAIL:", what, "" if got is None else "-- got %r" % (got,))
        sys.exit(1)
    print("ok:", what)


def ts(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def http_error(fn, *args, **kw):
    try:
        fn(*args, **kw)
    except requests.HTTPError as e:
        return e.response
    return None


# --- block ---
b = blocker.block("192.0.2.10", "test", "because", duration=300)
check(b["cidr"] == "192.0.2.10", "block echoes the cidr as sent", b)
check(b["who"] == "blocker" and b["source"] == "test" and b["why"] == "because", "block fields", b)
check(b["url"].startswith(HOST + "/bhr/api/blocks/"), "block url is absolute", b["url"])
check(b["set_blocked"] == b["url"] + "set_blocked/", "set_blocked link", b)
check(ts(b["unblock_at"]) - ts(b["added"]) == timedelta(seconds=300), "duration 300", b)
check(list(b.keys()) == ["who", "url", "cidr", "source", "why", "added", "unblock_at",
                         "skip_whitelist", "set_blocked"], "block field order", list(b.keys()))

dup = blocker.block("192.0.2.10", "other", "again", duration="1d")
check(dup["cidr"] == "192.0.2.10/32" and dup["source"] == "test", "duplicate returns the stored block", dup)
check(dup["unblock_at"] == b["unblock_at"], "the client's extend=False leaves the end alone", dup)

r = http_error(blocker.block, "1.0.0.0/8", "test", "too wide")
check(r is not None and r.status_code == 400, "a too-short prefix is a 400", r)
check(r.json() == {"non_field_errors": ["Prefix length in 1.0.0.0/8 is too small"]},
      "non_field_errors shape (bhr-bro relies on it)", r.json())
r = http_error(blocker.block, "banana", "test", "bad")
check(r is not None and r.status_code == 400 and "cidr" in r.json(), "an invalid cidr is a 400", r and r.text)
r = http_error(blocker.block, "192.0.2.1", "test", "bad", duration="5w")
check(r.json() == {"duration": ["Invalid duration"]}, "invalid duration", r.json())

# --- mblock ---
records = [dict(cidr="10.5.%d.%d" % (i // 250, i % 250), duration=3600, source="feed", why="list")
           for i in range(100)]
out = blocker.mblock(records)
check(len(out) == 100 and out[0]["cidr"] == "10.5.0.0", "mblock of 100", len(out))
r = http_error(blocker.mblock, [dict(cidr="192.0.2.200", source="s", why="w", duration=60),
                                dict(cidr="1.0.0.0/8", source="s", why="w", duration=60)])
check(r.status_code == 400 and r.json() == [{}, {"non_field_errors": ["Prefix length in 1.0.0.0/8 is too small"]}],
      "mblock refuses all when one item is bad", r.json())
check(blocker.query("192.0.2.200") == [], "nothing from the refused mblock was created")

# --- query / stats ---
q = blocker.query("192.0.2.10")
check(len(q) == 1 and q[0]["cidr"] == "192.0.2.10/32", "query", q)
q = blocker.query("10.5.0.0/24")
check(len(q) == 100, "query of a network finds the blocks within it", len(q))
s = blocker.stats()
check(s == {"block_pending": 101, "unblock_pending": 0, "current": 0, "expected": 101,
            "sources": {"feed": 100, "test": 1}}, "stats", s)

# --- get_list / get_expected ---
rows = list(admin.get_list())
check(len(rows) == 101, "get_list returns every expected block", len(rows))
check(set(rows[0].keys()) == {"cidr", "who", "source", "why", "added", "unblock_at"}, "get_list columns", rows[0])
test_rows = list(admin.get_list(source="test"))
check([r["cidr"] for r in test_rows] == ["192.0.2.10/32"], "get_list by source", test_rows)
last = sorted(rows, key=lambda r: r["added"])[-1]
since = list(admin.get_list(since=last["added"]))
check([r["cidr"] for r in since] == [last["cidr"]], "get_list since is inclusive", since)
e = blocker.get_expected()
check(len(e) == 101 and set(e[0].keys()) == {"cidr"}, "get_expected", len(e))
check(blocker.get_expected(source="test") == [{"cidr": "192.0.2.10/32"}], "get_expected by source")

# --- two idents ---
q1 = bgp1.get_block_queue()
check(len(q1) == 101, "bgp1 queue", len(q1))
check(list(q1[0].keys()) == ["id", "cidr", "set_blocked", "added"], "queue row shape", q1[0])
check([ts(r["added"]) for r in q1] == sorted(ts(r["added"]) for r in q1), "queue oldest first")
check(bgp1.set_blocked(q1[:50]) == {"status": "ok"}, "set_blocked")
check(len(bgp1.get_block_queue()) == 51, "bgp1 queue shrinks")
check(len(bgp2.get_block_queue()) == 101, "bgp2 queue is separate")
check(bgp1.set_blocked(q1[:50]) == {"status": "ok"}, "set_blocked again is harmless")
q2 = bgp2.get_block_queue()
bgp2.set_blocked(q2)
check(bgp2.get_block_queue() == [], "bgp2 queue empty after set_blocked")
late = bgp2.get_block_queue(added_since=q2[-1]["added"])
check(late == [], "added_since with nothing new")
s = blocker.stats()
check(s["current"] == 101 and s["block_pending"] == 0, "every block is installed somewhere", s)

check(admin.unblock_now("192.0.2.10", "false positive") == {"status": "ok"}, "unblock_now")
r = http_error(admin.unblock_now, "192.0.2.10", "again")
check(r.status_code == 400 and r.json() == {"cidr": ["192.0.2.10 is not currently blocked"]}, "unblock_now twice", r.json())
u1 = bgp1.get_unblock_queue()
u2 = bgp2.get_unblock_queue()
check([x["block"]["cidr"] for x in u1] == ["192.0.2.10/32"], "bgp1 unblock queue", u1)
check([x["block"]["cidr"] for x in u2] == ["192.0.2.10/32"], "bgp2 unblock queue", u2)
check(list(u1[0].keys()) == ["id", "block", "ident", "added", "set_unblocked"], "unblock row shape", u1[0])
check(u1[0]["ident"] == "bgp1" and u2[0]["id"] != u1[0]["id"], "entries are per ident", (u1, u2))
check(bgp1.set_unblocked(u1) == {"status": "ok"}, "set_unblocked")
check(bgp1.get_unblock_queue() == [], "bgp1 unblock queue empty")
check(len(bgp2.get_unblock_queue()) == 1, "bgp2 still has its unblock")


# --- a block manager cycle ---
class RecordingBlocker:
    def __init__(self):
        self.blocked = []
        self.unblocked = []

    def block_many(self, records):
        self.blocked.extend(r["cidr"] for r in records)

    def unblock_many(self, records):
        self.unblocked.extend(r["block"]["cidr"] for r in records)


rec3 = RecordingBlocker()
m3 = BlockManager(bgp3, rec3)
check(m3.run_once() is True, "bgp3 run_once did work")
check(len(rec3.blocked) == 100 and "192.0.2.10/32" not in rec3.blocked, "bgp3 blocked every expected block",
      len(rec3.blocked))
check(rec3.unblocked == [], "bgp3 had nothing to unblock")
check(bgp3.get_block_queue() == [], "bgp3 queue empty after the cycle")
check(m3._added_since.endswith("Z"), "the manager's rewound added_since", m3._added_since)

rec2 = RecordingBlocker()
m2 = BlockManager(bgp2, rec2)
check(m2.run_once() is True and rec2.unblocked == ["192.0.2.10/32"] and rec2.blocked == [],
      "bgp2 run_once unblocks first", (rec2.blocked, rec2.unblocked))
check(bgp2.get_unblock_queue() == [], "bgp2 unblock queue empty after the cycle")
# The next cycle long-polls the queue (32 s); a new block must end the wait at once.
threading.Timer(1.0, lambda: blocker.block("198.51.100.9", "test", "late", duration=60)).start()
start = time.time()
did = m2.run_once()
waited = time.time() - start
check(did and rec2.blocked == ["198.51.100.9/32"], "the long poll delivers the new block", rec2.blocked)
check(waited < 20, "the long poll was woken, not timed out", waited)

# --- autoscale ---
blocker.block("192.0.2.77", "test", "first", duration=2)
time.sleep(2.2)
scaled = blocker.block("192.0.2.77", "test", "again", duration=2, autoscale=True)
secs = (ts(scaled["unblock_at"]) - ts(scaled["added"])).total_seconds()
check(secs == 4, "autoscale doubles a quick repeat", secs)

print("all %d checks passed" % checks)
