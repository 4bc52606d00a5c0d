"""A stand-in Zeek node on a ZeroMQ cluster bus, written with pyzmq and its own small
Broker binary reader and writer (independent of catchd's codec), for catchd's tests.

    zeek_bus.py listen XPUB SECONDS TOPIC...   print every message received, one JSON line
    zeek_bus.py send XSUB TOPIC NODE FORMAT HEX [HEX...]
                                               publish raw payloads once a subscriber asks
    zeek_bus.py frames XSUB TOPIC FRAMES_JSON  publish arbitrary multipart messages
    zeek_bus.py netcontrol XPUB XSUB TOPIC     drive the NetControl backend contract

Printed messages look like {"topic": ..., "sender": ..., "format": ..., "frames": 4,
"name": ..., "args": [...]} with args decoded to plain JSON values.
"""

import json
import struct
import sys
import time

import zmq


# ----- a minimal broker-bin-v1 reader/writer -----

def varint(n):
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def read_varint(b, i):
    n, shift = 0, 0
    while True:
        c = b[i]
        i += 1
        n |= (c & 0x7F) << shift
        shift += 7
        if not c & 0x80:
            return n, i


def read(b, i=0):
    tag = b[i]
    i += 1
    if tag == 0:
        return None, i
    if tag == 1:
        return bool(b[i]), i + 1
    if tag == 2:
        return struct.unpack(">Q", b[i:i + 8])[0], i + 8
    if tag in (3, 9, 10):
        v = struct.unpack(">q", b[i:i + 8])[0]
        kind = {3: "int", 9: "time", 10: "interval"}[tag]
        return (v if tag == 3 else {kind: v}), i + 8
    if tag == 4:
        return struct.unpack(">d", b[i:i + 8])[0], i + 8
    if tag in (5, 11):
        n, i = read_varint(b, i)
        s = b[i:i + n].decode()
        return (s if tag == 5 else {"enum": s}), i + n
    if tag == 6:
        raw = b[i:i + 16]
        if raw[:12] == b"\0" * 10 + b"\xff\xff":
            return ".".join(str(x) for x in raw[12:]), i + 16
        return raw.hex(), i + 16
    if tag == 7:
        raw, ln = b[i:i + 16], b[i + 16]
        if raw[:12] == b"\0" * 10 + b"\xff\xff":
            return "%s/%d" % (".".join(str(x) for x in raw[12:]), ln - 96), i + 17
        return "%s/%d" % (raw.hex(), ln), i + 17
    if tag == 8:
        return {"port": struct.unpack(">H", b[i:i + 2])[0], "proto": b[i + 2]}, i + 3
    if tag in (12, 14):
        n, i = read_varint(b, i)
        xs = []
        for _ in range(n):
            x, i = read(b, i)
            xs.append(x)
        return (xs if tag == 14 else {"set": xs}), i
    if tag == 13:
        n, i = read_varint(b, i)
        kv = []
        for _ in range(n):
            k, i = read(b, i)
            v, i = read(b, i)
            kv.append([k, v])
        return {"table": kv}, i
    raise ValueError("unknown tag %d" % tag)


def count(n):
    return b"\x02" + struct.pack(">Q", n)


def string(s):
    s = s.encode()
    return b"\x05" + varint(len(s)) + s


def vector(*items):
    return b"\x0e" + varint(len(items)) + b"".join(items)


def event(name, *args):
    return vector(count(1), count(1), vector(string(name), vector(*args)))


def decode_event(payload):
    v, end = read(payload)
    assert end == len(payload), "trailing bytes"
    assert v[0] == 1 and v[1] == 1, "not a Zeek event envelope"
    return v[2][0], v[2][1]


def describe(frames):
    d = {"frames": len(frames)}
    if len(frames) == 4:
        d["topic"] = frames[0].decode()
        d["sender"] = frames[1].decode()
        d["format"] = frames[2].decode()
        if d["format"] == "broker-bin-v1":
            d["name"], d["args"] = decode_event(frames[3])
        else:
            d["payload"] = frames[3].decode(errors="replace")
    return d


# ----- sockets -----

def subscriber(ctx, xpub, topics):
    s = ctx.socket(zmq.SUB)
    s.connect(xpub)
    for t in topics:
        s.setsockopt(zmq.SUBSCRIBE, t.encode())
    return s


def publisher(ctx, xsub, topic, timeout=10.0):
    """An XPUB connected to the proxy, returned once a subscriber for topic shows up."""
    p = ctx.socket(zmq.XPUB)
    p.setsockopt(zmq.XPUB_VERBOSE, 1)
    p.connect(xsub)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if p.poll(100):
            sub = p.recv()
            if sub[:1] == b"\x01" and topic.encode().startswith(sub[1:]):
                return p
    raise SystemExit("no subscriber for %s" % topic)


def listen(xpub, seconds, topics):
    ctx = zmq.Context()
    s = subscriber(ctx, xpub, topics)
    print(json.dumps({"ready": True}), flush=True)
    deadline = time.time() + float(seconds)
    while time.time() < deadline:
        if s.poll(100):
            print(json.dumps(describe(s.recv_multipart())), flush=True)


def send(xsub, topic, node, fmt, payloads):
    ctx = zmq.Context()
    p = publisher(ctx, xsub, topic)
    for h in payloads:
        p.send_multipart([topic.encode(), node.encode(), fmt.encode(), bytes.fromhex(h)])
    time.sleep(0.2)


def frames(xsub, topic, spec):
    ctx = zmq.Context()
    p = publisher(ctx, xsub, topic)
    for msg in json.loads(spec):
        p.send_multipart([bytes.fromhex(f) for f in msg])
    time.sleep(0.2)


def netcontrol(xpub, xsub, topic, add_rule_hex):
    """broker_add_rule (the spec's vector), its answer, then broker_remove_rule."""
    ctx = zmq.Context()
    sub = subscriber(ctx, xpub, [topic])
    pub = publisher(ctx, xsub, topic)
    time.sleep(0.2)
    node = "zeek_manager_test"

    def ask(payload):
        pub.send_multipart([topic.encode(), node.encode(), b"broker-bin-v1", payload])
        deadline = time.time() + 10
        while time.time() < deadline:
            if sub.poll(100):
                f = sub.recv_multipart()
                if f[1] == node.encode():
                    continue  # our own request, relayed back by the proxy
                return describe(f), f[3]
        raise SystemExit("no answer")

    add = bytes.fromhex(add_rule_hex)
    answer, raw = ask(add)
    # The rule must come back byte for byte: the second argument of the answer.
    name, args = decode_event(add)
    _, start = read(raw, 0)
    rule_bytes = add[add.index(b"\x0e\x0e\x0b"):]  # the 14-field rule vector
    answer["rule_echoed"] = rule_bytes in raw
    print(json.dumps(answer), flush=True)
    # broker_remove_rule(0, r, "test over")
    body = rule_bytes
    remove = (vector(count(1), count(1),
                     vector(string("NetControl::broker_remove_rule"),
                            b"\x0e\x03" + count(0) + body + string("test over"))))
    answer, raw = ask(remove)
    answer["rule_echoed"] = rule_bytes in raw
    print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    cmd, rest = sys.argv[1], sys.argv[2:]
    if cmd == "listen":
        listen(rest[0], rest[1], rest[2:])
    elif cmd == "send":
        send(rest[0], rest[1], rest[2], rest[3], rest[4:])
    elif cmd == "frames":
        frames(rest[0], rest[1], rest[2])
    elif cmd == "netcontrol":
        netcontrol(rest[0], rest[1], rest[2], rest[3])
    else:
        raise SystemExit("unknown command " + cmd)
