#!/usr/bin/env python3
"""Writes the fuzz targets' seed corpus from protocol-spec/vectors.

    python3 fuzz/seeds.py [CORPUS_DIR]      # default: fuzz/corpus

Every frame a vector holds (inputs and expected outputs) becomes a seed of the
target that reads such frames; long-poll bodies are built from the same frames
(ndjson batches and single frames), and cluster frames wrap the vectors'
topics, events and payloads. Seeds are named by the hash of their bytes, so a
rerun adds nothing new and the fuzzer's own finds in the same folder are kept.
The corpus is not committed: scripts/fuzz runs this before every run.
"""

import base64
import hashlib
import json
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
VECTORS = os.path.join(HERE, "..", "protocol-spec", "vectors")


def load_vectors():
    out = []
    for name in sorted(os.listdir(VECTORS)):
        if name.endswith(".json"):
            with open(os.path.join(VECTORS, name)) as f:
                out.extend(json.load(f)["vectors"])
    return out


def frames(vectors):
    """(serializer, is_binary, bytes) of every frame the vectors hold."""
    for v in vectors:
        ser = v.get("serializer")
        if ser is None:
            continue
        if "text" in v:
            yield ser, False, v["text"].encode()
        if "hex" in v:
            yield ser, True, bytes.fromhex(v["hex"])
        if "expect_text" in v:
            yield ser, False, v["expect_text"].encode()
        if "expect_hex" in v:
            yield ser, True, bytes.fromhex(v["expect_hex"])


def cluster_frame_broadcast(node, vsn, seq, topic, event, payload):
    def s(x):
        b = x.encode()
        return struct.pack(">H", len(b)) + b

    return bytes([1, 1]) + s(node) + struct.pack(">QQ", vsn, seq) + s(topic) + s(event) + payload


def cluster_frame_gossip(node, vsn, gossip):
    b = node.encode()
    return bytes([1, 0]) + struct.pack(">H", len(b)) + b + struct.pack(">Q", vsn) + gossip


GOSSIP = [
    {"type": "hello", "from": {"name": "a", "vsn": 1}, "clock": 0},
    {"type": "goodbye", "from": {"name": "a", "vsn": 1}},
    {"type": "transfer_req", "from": {"name": "a", "vsn": 1}, "to": {"name": "b", "vsn": 2}, "have": 3},
    {"type": "heartbeat", "from": {"name": "a", "vsn": 1}, "clock": 4},
    {"type": "heartbeat", "from": {"name": "a", "vsn": 1}, "clock": 2, "delta": {"start": 0, "ops": [
        {"op": "join", "topic": "room:1", "conn": 1, "key": "u1",
         "meta": {"phx_ref": "F1", "online_at": 1.5, "device": "web"}},
        {"op": "leave", "topic": "room:1", "conn": 1, "key": "u1"}]}},
    {"type": "transfer_ack", "from": {"name": "b", "vsn": 2}, "to": {"name": "a", "vsn": 1},
     "transfer": {"kind": "full", "data": {"clock": 2, "entries": [
         {"topic": "room:1", "conn": 7, "key": "u2", "seq": 2,
          "meta": {"phx_ref": "F2", "phx_ref_prev": "F1", "n": -3}}]}}},
    {"type": "transfer_ack", "from": {"name": "b", "vsn": 2}, "to": {"name": "a", "vsn": 1},
     "transfer": {"kind": "delta", "delta": {"start": 5, "ops": []}}},
]


def main():
    corpus = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "corpus")
    vectors = load_vectors()
    targets = ["v1_json", "v2_json", "v2_binary", "longpoll_body", "cluster_frame", "phoenix_token", "jwt"]
    seeds = {t: set() for t in targets}
    v2_lines = []
    for ser, binary, data in frames(vectors):
        if ser == "1.0.0":
            seeds["v1_json"].add(data)
            seeds["longpoll_body"].add(b"\x02" + data)
        elif binary:
            seeds["v2_binary"].add(data)
            v2_lines.append(base64.b64encode(data))
        else:
            seeds["v2_json"].add(data)
            seeds["longpoll_body"].add(b"\x00" + data)
            v2_lines.append(data)
    # ndjson batches as phoenix.js sends them: a few frames each, JSON and base64 lines mixed.
    for i in range(0, len(v2_lines), 4):
        seeds["longpoll_body"].add(b"\x01" + b"\n".join(v2_lines[i : i + 4]))
    for v in vectors:
        i = v.get("input")
        if not isinstance(i, dict) or "topic" not in i:
            continue
        payload = bytes.fromhex(i["payload_hex"]) if "payload_hex" in i else json.dumps(i.get("payload", {})).encode()
        event = i.get("event", "phx_reply")
        seeds["cluster_frame"].add(cluster_frame_broadcast("node-a", 1, 7, i["topic"], event, payload))
    for v in vectors:
        if "json" in v:  # presence payloads, as metas inside gossip would carry them
            seeds["cluster_frame"].add(cluster_frame_broadcast("n", 2, 1, "room:lobby", "presence_diff", v["json"].encode()))
    for g in GOSSIP:
        body = json.dumps({"v": 1, "msg": g}, separators=(",", ":")).encode()
        seeds["cluster_frame"].add(cluster_frame_gossip(g["from"]["name"], g["from"]["vsn"], body))
        seeds["cluster_frame"].add(body)
    # Tokens signed by the real Phoenix (crates/runtime/tests/vectors): each whole
    # token, and its signed message (an Erlang term) for the target's signing half.
    tokens = os.path.join(HERE, "..", "crates", "runtime", "tests", "vectors")
    for name in sorted(os.listdir(tokens)):
        if name.startswith("phoenix-token-") and name.endswith(".json"):
            with open(os.path.join(tokens, name)) as f:
                for t in json.load(f)["tokens"]:
                    seeds["phoenix_token"].add(t["token"].encode())
                    message = t["token"].split(".")[1]
                    seeds["phoenix_token"].add(base64.urlsafe_b64decode(message + "=" * (-len(message) % 4)))
    # JWT claims as a backend would write them.
    for claims in [
        {"sub": "42", "exp": 4102444800},
        {"sub": 42, "name": "Ann", "exp": 4102444800, "iat": 1700000000},
        {"sub": "ann", "exp": 1, "nbf": 4102444800},
        {"name": "no sub", "exp": 4102444800},
    ]:
        seeds["jwt"].add(json.dumps(claims, separators=(",", ":")).encode())
    total = 0
    for target, datas in seeds.items():
        d = os.path.join(corpus, target)
        os.makedirs(d, exist_ok=True)
        for data in datas:
            with open(os.path.join(d, "seed-" + hashlib.sha1(data).hexdigest()), "wb") as f:
                f.write(data)
        total += len(datas)
        print(f"{target}: {len(datas)} seeds")
    if any(not s for s in seeds.values()):
        sys.exit("a target got no seeds: are the vectors there?")


if __name__ == "__main__":
    main()
