#!/usr/bin/env python3
"""Writes the test vectors in this folder (see README.md for their format).

Edit the cases here, run `python3 generate.py` in this folder, then
`cargo test -p phx-protocol --test vectors`. The JSON files are what the tests read;
this script only saves typing the hex.

Every vector says whether its expectation is Phoenix's behaviour ("phoenix": "same")
or our choice ("phoenix": "ours", with a "reason"); its "source" is the file that
shows what Phoenix does.
"""
import json

P = "phoenix v1.8.12 "
V2SER = P + "lib/phoenix/socket/serializers/v2_json_serializer.ex"
V1SER = P + "lib/phoenix/socket/serializers/v1_json_serializer.ex"
V2TEST = P + "test/phoenix/socket/v2_json_serializer_test.exs"
V1TEST = P + "test/phoenix/socket/v1_json_serializer_test.exs"
MSG = P + "lib/phoenix/socket/message.ex"
SOCK = P + "lib/phoenix/socket.ex"
SOCK17 = "phoenix v1.7.24 lib/phoenix/socket.ex"
CHAN = P + "lib/phoenix/channel.ex"
JSSER = P + "assets/js/phoenix/serializer.js"
JSTEST = P + "assets/test/serializer_test.js"
JSSOCKTEST = P + "assets/test/socket_test.js"
LPTEST = P + "test/phoenix/integration/long_poll_channels_test.exs"
PRES = P + "lib/phoenix/presence.ex"
SHARD = "phoenix_pubsub v2.2.0 lib/phoenix/tracker/shard.ex"
VSN = (P + "lib/phoenix/socket.ex negotiate_serializer/2; "
       "elixir v1.19.5 lib/elixir/lib/version.ex (parse/1, match?/3 with ~>)")
JSDEC = JSSER + " (binaryDecode: no length or kind checks)"
JASON_DEC = "jason v1.4.5 lib/decoder.ex (Phoenix's JSON library, mix.lock of phoenix v1.8.12)"
JASON_ENC = "jason v1.4.5 lib/encode.ex (escape: :json)"
# Reasons shared by several of our choices.
ANY_TYPE = ("Phoenix's decoder puts any JSON value in the field and fails later, or never; "
            "we refuse the frame at once (1007 on a WebSocket)")
UTF8 = ("Phoenix's V2 decoder takes any bytes in a binary frame's string fields; we require "
        "UTF-8 because topics, events and refs are text everywhere else")
REF_TYPE = ("Phoenix's decoders take a ref of any JSON type and its replies echo it; we accept "
            "strings, numbers and null")
JS_NO_CHECK = ("phoenix.js makes no such check and hands the value on; our client decoder "
               "refuses it")

files = {}
cur = []


def h(*parts):
    """Hex of the concatenation of byte lists, strings (UTF-8) and bytes."""
    out = b""
    for p in parts:
        if isinstance(p, str):
            out += p.encode()
        elif isinstance(p, list):
            out += bytes(p)
        else:
            out += p
    return out.hex()


def m(jr, r, t, e, payload=None, payload_hex=None):
    d = {"join_ref": jr, "ref": r, "topic": t, "event": e}
    if payload_hex is not None:
        d["payload_hex"] = payload_hex
    else:
        d["payload"] = payload
    return d


def add(d, expect=None, error=None, note=None, ours=None):
    if ours:
        d["phoenix"] = "ours"
        d["reason"] = ours
    else:
        d["phoenix"] = "same"
    if error:
        d["error"] = error
    elif expect is not None:
        d.update(expect)
    if note:
        d["note"] = note
    assert d["name"] not in {v["name"] for f in files.values() for v in f} | {v["name"] for v in cur}, d["name"]
    cur.append(d)


def dec(name, ser, src, text=None, hexs=None, expect=None, error=None, note=None, ours=None):
    d = {"name": name, "op": "decode_client", "serializer": ser, "source": src}
    if hexs is not None:
        d["hex"] = hexs
    else:
        d["text"] = text
    add(d, None if expect is None else {"expect": expect}, error, note, ours)


def decs(name, ser, src, text=None, hexs=None, expect=None, error=None, note=None, ours=None):
    d = {"name": name, "op": "decode_server", "serializer": ser, "source": src}
    if hexs is not None:
        d["hex"] = hexs
    else:
        d["text"] = text
    add(d, None if expect is None else {"expect": expect}, error, note, ours)


def enc(op, name, ser, src, inp, text=None, hexs=None, error=None, note=None, ours=None):
    d = {"name": name, "op": op, "serializer": ser, "source": src, "input": inp}
    if hexs is not None:
        add(d, {"expect_hex": hexs}, error, note, ours)
    elif text is not None:
        add(d, {"expect_text": text}, error, note, ours)
    else:
        add(d, None, error, note, ours)


def reply(jr, r, t, status, response=None, response_hex=None):
    d = {"join_ref": jr, "ref": r, "topic": t, "status": status}
    if response_hex is not None:
        d["response_hex"] = response_hex
    else:
        d["response"] = response
    return d


def bcast(t, e, payload=None, payload_hex=None):
    d = {"topic": t, "event": e}
    if payload_hex is not None:
        d["payload_hex"] = payload_hex
    else:
        d["payload"] = payload
    return d


def num(text):
    """A numeric ref whose exact text matters (the vector test reads it without f64)."""
    return {"number": text}


def msg_kind(**kw):
    return dict(kind="message", **kw)


def reply_kind(**kw):
    return dict(kind="reply", **kw)


def done(fname):
    global cur
    files[fname] = cur
    cur = []


V2, V1 = "2.0.0", "1.0.0"

# ====================================================================== V2 JSON
# --- what clients send, as the server decodes it
dec("v2 heartbeat", V2, JSSOCKTEST, '[null,"1","phoenix","heartbeat",{}]',
    expect=m(None, "1", "phoenix", "heartbeat", {}))
dec("v2 join: join_ref equals ref", V2, V2SER, '["1","1","room:lobby","phx_join",{"user":"a"}]',
    expect=m("1", "1", "room:lobby", "phx_join", {"user": "a"}))
dec("v2 push with nested payload", V2, V2SER,
    '["11","3","room:lobby","new_msg",{"body":"hi","n":[1,2,{"x":null}]}]',
    expect=m("11", "3", "room:lobby", "new_msg", {"body": "hi", "n": [1, 2, {"x": None}]}))
dec("v2 leave", V2, V2SER, '["1","5","room:lobby","phx_leave",{}]',
    expect=m("1", "5", "room:lobby", "phx_leave", {}))
dec("v2 null join_ref and ref", V2, V2TEST, '[null,null,"t","e",{"m":1}]',
    expect=m(None, None, "t", "e", {"m": 1}))
dec("v2 empty payload object", V2, V2SER, '["1","2","t","e",{}]', expect=m("1", "2", "t", "e", {}))
dec("v2 string payload is accepted on decode", V2, V2SER, '["1","2","t","e","text"]',
    expect=m("1", "2", "t", "e", "text"))
dec("v2 array payload is accepted on decode", V2, V2SER, '["1","2","t","e",[1,2]]',
    expect=m("1", "2", "t", "e", [1, 2]))
dec("v2 null payload is accepted on decode", V2, V2SER, '["1","2","t","e",null]',
    expect=m("1", "2", "t", "e", None))
dec("v2 number payload is accepted on decode", V2, V2SER, '["1","2","t","e",-1.5]',
    expect=m("1", "2", "t", "e", -1.5))
dec("v2 extra trailing elements are ignored", V2, V2SER, '["1","2","t","e",{},"extra",7]',
    expect=m("1", "2", "t", "e", {}))
dec("v2 trailing elements of any type are ignored", V2, V2SER, '["1","2","t","e",{},{"a":[null]},[],null,true]',
    expect=m("1", "2", "t", "e", {}))
dec("v2 unicode topic and event", V2, V2SER, '["1","2","sala:café☕","olá",{"ü":"ß"}]',
    expect=m("1", "2", "sala:café☕", "olá", {"ü": "ß"}))
dec("v2 escaped strings are unescaped", V2, V2SER, '["1","2","a\\"b","e\\n\\u00e9",{}]',
    expect=m("1", "2", "a\"b", "e\né", {}))
dec("v2 whitespace around elements", V2, V2SER, ' [ "1" , "2" , "t" , "e" , { } ] ',
    expect=m("1", "2", "t", "e", {}))
dec("v2 empty-string refs stay empty strings in JSON", V2, V2SER, '["","","t","e",{}]',
    expect=m("", "", "t", "e", {}))
dec("v2 empty topic and event are accepted", V2, V2SER, '[null,"1","","",{}]',
    expect=m(None, "1", "", "", {}))
dec("v2 numeric refs are accepted", V2, V2SER, '[1,2,"t","e",{}]', expect=m(1, 2, "t", "e", {}),
    note="Phoenix does not check the type of refs; we accept numbers and remember they were numbers")
dec("v2 string join_ref with numeric ref", V2, V2SER, '["1",7,"t","e",{}]', expect=m("1", 7, "t", "e", {}))
dec("v2 refs beyond 64 bits keep every digit", V2, V2SER,
    '[100000000000000000000,-18446744073709551617,"t","e",{}]',
    expect=m(num("100000000000000000000"), num("-18446744073709551617"), "t", "e", {}),
    note="Jason decodes integers of any size and encodes them back digit for digit")
dec("v2 numeric refs keep their written form", V2, V2SER, '[7.0,1e3,"t","e",{}]',
    expect=m(num("7.0"), num("1e3"), "t", "e", {}),
    ours=("Jason decodes 7.0 and 1e3 to floats and writes them back in its own float form; we echo "
          "the text the client wrote"))
dec("v2 escaped control characters in a payload", V2, JASON_DEC,
    '[null,"1","t","e",{"c":"\\u0000\\u0001\\b\\t\\n\\u000b\\f\\r\\u001F"}]',
    expect=m(None, "1", "t", "e", {"c": "\u0000\u0001\b\t\n\u000b\f\r\u001f"}))
dec("v2 raw control character inside a payload string", V2, JASON_DEC,
    '[null,"1","t","e",{"c":"a\u0001b"}]', error="invalid_json")
dec("v2 raw control character inside the topic", V2, JASON_DEC,
    '[null,"1","t\u001f","e",{}]', error="invalid_json")
dec("v2 escaped control characters in topic and event", V2, JASON_DEC,
    '[null,"1","t\\u0000","e\\n",{}]', expect=m(None, "1", "t\u0000", "e\n", {}))
dec("v2 surrogate pair escape in a payload", V2, JASON_DEC,
    '[null,"1","t","e",{"s":"\\ud83d\\ude00"}]', expect=m(None, "1", "t", "e", {"s": "\U0001F600"}))
dec("v2 lone high surrogate escape in a payload", V2, JASON_DEC,
    '[null,"1","t","e",{"s":"\\ud800"}]', error="invalid_json")
dec("v2 lone low surrogate escape in a payload", V2, JASON_DEC,
    '[null,"1","t","e",{"s":"\\udc00"}]', error="invalid_json")
dec("v2 high surrogate escape followed by a non-surrogate", V2, JASON_DEC,
    '[null,"1","t","e",{"s":"\\ud800\\u0041"}]', error="invalid_json")
dec("v2 lone surrogate escape in a payload key", V2, JASON_DEC,
    '[null,"1","t","e",{"\\udbff":1}]', error="invalid_json")
dec("v2 not json", V2, V2SER, '[null,"1","phoenix"', error="invalid_json")
dec("v2 garbage", V2, V2SER, 'hello', error="invalid_json")
dec("v2 empty text", V2, V2SER, '', error="invalid_json")
dec("v2 whitespace only", V2, V2SER, '  \n ', error="invalid_json")
dec("v2 trailing garbage after the array", V2, V2SER, '["1","2","t","e",{}] x', error="invalid_json")
dec("v2 two arrays in one frame", V2, V2SER, '["1","2","t","e",{}]["1","3","t","e",{}]', error="invalid_json")
dec("v2 invalid escape in topic", V2, V2SER, '["1","2","\\x","e",{}]', error="invalid_json")
dec("v2 unterminated payload", V2, V2SER, '["1","2","t","e",{"a":1]', error="invalid_json")
dec("v2 object instead of array", V2, V2SER, '{"topic":"t","event":"e","payload":{},"ref":"1"}',
    error="not_an_array")
dec("v2 string instead of array", V2, V2SER, '"x"', error="not_an_array")
dec("v2 number instead of array", V2, V2SER, '42', error="not_an_array")
dec("v2 null instead of array", V2, V2SER, 'null', error="not_an_array")
dec("v2 boolean instead of array", V2, V2SER, 'true', error="not_an_array")
dec("v2 four elements", V2, V2SER, '["1","2","t","e"]', error="wrong_arity")
dec("v2 one element", V2, V2SER, '[null]', error="wrong_arity")
dec("v2 empty array", V2, V2SER, '[]', error="wrong_arity")
dec("v2 numeric topic", V2, V2SER, '["1","2",5,"e",{}]', error="wrong_field_type", ours=ANY_TYPE)
dec("v2 null topic", V2, V2SER, '["1","2",null,"e",{}]', error="wrong_field_type", ours=ANY_TYPE)
dec("v2 array topic", V2, V2SER, '["1","2",["t"],"e",{}]', error="wrong_field_type", ours=ANY_TYPE)
dec("v2 null event", V2, V2SER, '["1","2","t",null,{}]', error="wrong_field_type", ours=ANY_TYPE)
dec("v2 object event", V2, V2SER, '["1","2","t",{},{}]', error="wrong_field_type", ours=ANY_TYPE)
dec("v2 boolean ref", V2, V2SER, '["1",true,"t","e",{}]', error="wrong_field_type", ours=REF_TYPE)
dec("v2 object join_ref", V2, V2SER, '[{},"1","t","e",{}]', error="wrong_field_type", ours=REF_TYPE)
dec("v2 array ref", V2, V2SER, '["1",["1"],"t","e",{}]', error="wrong_field_type", ours=REF_TYPE)

# --- what servers send
enc("encode_message", "v2 push has null ref", V2, V2SER, m("11", None, "room:lobby", "joined", {"status": "connected"}),
    '["11",null,"room:lobby","joined",{"status":"connected"}]')
enc("encode_message", "v2 push with null refs", V2, V2TEST, m(None, None, "t", "e", {"m": 1}),
    '[null,null,"t","e",{"m":1}]')
enc("encode_message", "v2 push with empty object payload", V2, V2SER, m("1", None, "t", "e", {}),
    '["1",null,"t","e",{}]')
enc("encode_message", "v2 phx_close carries ref = join_ref", V2, SOCK, m("11", "11", "room:lobby", "phx_close", {}),
    '["11","11","room:lobby","phx_close",{}]')
enc("encode_message", "v2 phx_error, 1.8 payload", V2, SOCK,
    m("11", "11", "room:lobby", "phx_error", {"reason": "channel_crash"}),
    '["11","11","room:lobby","phx_error",{"reason":"channel_crash"}]')
enc("encode_message", "v2 phx_error, 1.7 payload", V2, SOCK17, m("11", "11", "room:lobby", "phx_error", {}),
    '["11","11","room:lobby","phx_error",{}]')
enc("encode_message", "v2 presence_state push", V2, PRES,
    m("1", None, "room:lobby", "presence_state", {"u1": {"metas": [{"phx_ref": "F1s2rfEAbzTWKgAB"}]}}),
    '["1",null,"room:lobby","presence_state",{"u1":{"metas":[{"phx_ref":"F1s2rfEAbzTWKgAB"}]}}]')
enc("encode_message", "v2 unicode is written as UTF-8, not escaped", V2, V2SER,
    m("1", None, "sala:café☕", "olá", {"ü": "ß"}), '["1",null,"sala:café☕","olá",{"ü":"ß"}]')
enc("encode_message", "v2 quotes and control characters are escaped as Jason escapes them", V2, JASON_ENC,
    m("1", None, "t\"q", "e\u0001\n\u001f\u007f", {}), '["1",null,"t\\"q","e\\u0001\\n\\u001F\u007f",{}]',
    note="short escapes for \\b \\t \\n \\f \\r, upper-case \\u00XX for other bytes below 0x20, DEL as it is")
enc("encode_message", "v2 push payload must be an object: array", V2, V2TEST, m("1", None, "t", "e", [1]),
    error="payload_not_object")
enc("encode_message", "v2 push payload must be an object: string", V2, V2TEST, m("1", None, "t", "e", "invalid"),
    error="payload_not_object")
enc("encode_message", "v2 push payload must be an object: null", V2, V2SER, m("1", None, "t", "e", None),
    error="payload_not_object")
enc("encode_broadcast", "v2 broadcast has null refs", V2, V2TEST, bcast("t", "e", {"m": 1}),
    '[null,null,"t","e",{"m":1}]')
enc("encode_broadcast", "v2 presence_diff broadcast", V2, PRES,
    bcast("room:lobby", "presence_diff", {"joins": {}, "leaves": {"u1": {"metas": [{"phx_ref": "F1s2rfEAbzTWKgAB"}]}}}),
    '[null,null,"room:lobby","presence_diff",{"joins":{},"leaves":{"u1":{"metas":[{"phx_ref":"F1s2rfEAbzTWKgAB"}]}}}]')
enc("encode_broadcast", "v2 broadcast payload must be an object: string", V2, V2TEST, bcast("t", "e", "invalid"),
    error="payload_not_object")
enc("encode_broadcast", "v2 broadcast payload must be an object: number", V2, V2SER, bcast("t", "e", 3),
    error="payload_not_object")
enc("encode_reply", "v2 heartbeat reply", V2, SOCK, reply(None, "1", "phoenix", "ok", {}),
    '[null,"1","phoenix","phx_reply",{"response":{},"status":"ok"}]')
enc("encode_reply", "v2 join ok reply echoes join_ref and ref", V2, SOCK,
    reply("1", "1", "room:lobby", "ok", {"topic": "room:lobby"}),
    '["1","1","room:lobby","phx_reply",{"response":{"topic":"room:lobby"},"status":"ok"}]')
enc("encode_reply", "v2 unmatched topic reply has null join_ref", V2, SOCK,
    reply(None, "1", "unmatched-topic", "error", {"reason": "unmatched topic"}),
    '[null,"1","unmatched-topic","phx_reply",{"response":{"reason":"unmatched topic"},"status":"error"}]')
enc("encode_reply", "v2 too many channels reply", V2, SOCK,
    reply("9", "9", "room:9", "error", {"reason": "too many channels joined"}),
    '["9","9","room:9","phx_reply",{"response":{"reason":"too many channels joined"},"status":"error"}]')
enc("encode_reply", "v2 join crashed reply", V2, P + "lib/phoenix/channel/server.ex",
    reply("1", "1", "room:lobby", "error", {"reason": "join crashed"}),
    '["1","1","room:lobby","phx_reply",{"response":{"reason":"join crashed"},"status":"error"}]')
enc("encode_reply", "v2 reply response may be any JSON: array", V2, V2SER, reply("1", "2", "t", "ok", [1, "a"]),
    '["1","2","t","phx_reply",{"response":[1,"a"],"status":"ok"}]')
enc("encode_reply", "v2 reply response may be null", V2, V2TEST, reply(None, None, "t", "ok", None),
    '[null,null,"t","phx_reply",{"response":null,"status":"ok"}]')
enc("encode_reply", "v2 custom status", V2, CHAN, reply("1", "2", "t", "ignored", {}),
    '["1","2","t","phx_reply",{"response":{},"status":"ignored"}]')
enc("encode_reply", "v2 numeric refs are echoed as numbers", V2, V2SER, reply(1, 2, "t", "ok", {}),
    '[1,2,"t","phx_reply",{"response":{},"status":"ok"}]')
enc("encode_reply", "v2 refs beyond 64 bits are echoed digit for digit", V2, V2SER,
    reply(num("100000000000000000000"), num("-18446744073709551617"), "t", "ok", {}),
    '[100000000000000000000,-18446744073709551617,"t","phx_reply",{"response":{},"status":"ok"}]')
enc("encode_client", "v2 client heartbeat", V2, JSSOCKTEST, m(None, "1", "phoenix", "heartbeat", {}),
    '[null,"1","phoenix","heartbeat",{}]')
enc("encode_client", "v2 client push", V2, JSTEST, m("0", "1", "t", "e", {"foo": 1}), '["0","1","t","e",{"foo":1}]')
enc("encode_client", "v2 client leave", V2, JSSER, m("3", "8", "room:lobby", "phx_leave", {}),
    '["3","8","room:lobby","phx_leave",{}]')
enc("encode_client", "v2 client payload need not be an object", V2, JSSER, m("3", "9", "t", "e", [1]),
    '["3","9","t","e",[1]]')

# --- what servers send, as clients decode it
decs("v2 client reads a reply", V2, JSSER,
     '["11","1","room:lobby","phx_reply",{"response":{"a":1},"status":"ok"}]',
     expect=reply_kind(join_ref="11", ref="1", topic="room:lobby", status="ok", response={"a": 1}))
decs("v2 client reads a heartbeat reply", V2, JSSER, '[null,"4","phoenix","phx_reply",{"response":{},"status":"ok"}]',
     expect=reply_kind(join_ref=None, ref="4", topic="phoenix", status="ok", response={}))
decs("v2 client reads a reply whose keys come in the other order", V2, JSSER,
     '["1","2","t","phx_reply",{"status":"error","response":{"reason":"x"}}]',
     expect=reply_kind(join_ref="1", ref="2", topic="t", status="error", response={"reason": "x"}))
decs("v2 client reads a broadcast", V2, JSSER, '[null,null,"t","e",{"m":1}]',
     expect=msg_kind(**m(None, None, "t", "e", {"m": 1})))
decs("v2 client reads a push", V2, JSSER, '["3",null,"room:lobby","new_msg",{"body":"hi"}]',
     expect=msg_kind(**m("3", None, "room:lobby", "new_msg", {"body": "hi"})))
decs("v2 client reads phx_close", V2, JSSER, '["3","3","room:lobby","phx_close",{}]',
     expect=msg_kind(**m("3", "3", "room:lobby", "phx_close", {})))
decs("v2 client reads phx_error", V2, JSSER, '["3","3","room:lobby","phx_error",{"reason":"channel_crash"}]',
     expect=msg_kind(**m("3", "3", "room:lobby", "phx_error", {"reason": "channel_crash"})))
decs("v2 client: reply without status", V2, JSSER, '["1","1","t","phx_reply",{"response":{}}]',
     error="wrong_field_type", ours=JS_NO_CHECK)
decs("v2 client: reply without response", V2, JSSER, '["1","1","t","phx_reply",{"status":"ok"}]',
     error="wrong_field_type", ours=JS_NO_CHECK)
decs("v2 client: reply payload not an object", V2, JSSER, '["1","1","t","phx_reply","ok"]',
     error="wrong_field_type", ours=JS_NO_CHECK)
decs("v2 client: numeric status", V2, JSSER, '["1","1","t","phx_reply",{"status":1,"response":{}}]',
     error="wrong_field_type", ours=JS_NO_CHECK)
decs("v2 client: object frame", V2, JSSER, '{"event":"e"}', error="not_an_array")
done("v2_json.json")

# ====================================================================== V1 JSON
dec("v1 heartbeat", V1, V1SER, '{"topic":"phoenix","event":"heartbeat","payload":{},"ref":"1"}',
    expect=m(None, "1", "phoenix", "heartbeat", {}))
dec("v1 message from the V1 serializer test", V1, V1TEST, '{"event":"e","payload":"m","ref":null,"topic":"t"}',
    expect=m(None, None, "t", "e", "m"))
dec("v1 join without join_ref", V1, MSG, '{"topic":"room:lobby","event":"phx_join","payload":{"u":1},"ref":"1"}',
    expect=m(None, "1", "room:lobby", "phx_join", {"u": 1}))
dec("v1 join with join_ref", V1, MSG, '{"topic":"room:lobby","event":"phx_join","payload":{},"ref":"1","join_ref":"1"}',
    expect=m("1", "1", "room:lobby", "phx_join", {}))
dec("v1 explicit null join_ref", V1, MSG, '{"topic":"t","event":"e","payload":{},"ref":"1","join_ref":null}',
    expect=m(None, "1", "t", "e", {}))
dec("v1 null ref", V1, MSG, '{"topic":"t","event":"e","payload":{"a":1},"ref":null}',
    expect=m(None, None, "t", "e", {"a": 1}))
dec("v1 string payload", V1, V1SER, '{"topic":"t","event":"e","payload":"just text","ref":"2"}',
    expect=m(None, "2", "t", "e", "just text"))
dec("v1 number payload", V1, V1SER, '{"topic":"t","event":"e","payload":12,"ref":"2"}',
    expect=m(None, "2", "t", "e", 12))
dec("v1 null payload", V1, V1SER, '{"topic":"t","event":"e","payload":null,"ref":"2"}',
    expect=m(None, "2", "t", "e", None))
dec("v1 keys in any order, extra keys ignored", V1, MSG, '{"ref":"3","extra":true,"payload":[1],"event":"e","topic":"t"}',
    expect=m(None, "3", "t", "e", [1]))
# Jason collects an object's pairs in reverse order and builds the map with
# :maps.from_list, which keeps the last pair of a key: the FIRST in the text.
DUP = JASON_DEC + " object/6 and object_decode_function (:maps.from_list over the reversed pairs)"
dec("v1 duplicate keys: the first one wins", V1, DUP, '{"topic":"a","topic":"b","event":"e","payload":{},"ref":"1"}',
    expect=m(None, "1", "a", "e", {}))
dec("v1 duplicate ref: the first (null) one wins", V1, DUP, '{"topic":"t","ref":null,"event":"e","payload":{},"ref":"9","join_ref":"1","join_ref":"2"}',
    expect=m("1", None, "t", "e", {}))
dec("v1 duplicate payload: the first one wins", V1, DUP, '{"topic":"t","event":"e","payload":{"a":1},"payload":[2],"ref":"1"}',
    expect=m(None, "1", "t", "e", {"a": 1}))
dec("v1 a later duplicate of any type is ignored", V1, DUP, '{"topic":"t","topic":7,"event":"e","event":null,"payload":{},"ref":"1","ref":{}}',
    expect=m(None, "1", "t", "e", {}))
dec("v1 a later duplicate must still be valid JSON", V1, DUP, '{"topic":"t","topic":tru,"event":"e","payload":{},"ref":"1"}',
    error="invalid_json")
dec("v1 a lone surrogate in a later duplicate is refused", V1, DUP, '{"topic":"t","topic":"\\ud800","event":"e","payload":{},"ref":"1"}',
    error="invalid_json")
dec("v1 unicode topic", V1, V1SER, '{"topic":"sala:café☕","event":"olá","payload":{},"ref":"1"}',
    expect=m(None, "1", "sala:café☕", "olá", {}))
dec("v1 numeric refs are accepted", V1, MSG, '{"topic":"t","event":"e","payload":{},"ref":5,"join_ref":4}',
    expect=m(4, 5, "t", "e", {}))
dec("v1 missing topic", V1, MSG, '{"event":"e","payload":{},"ref":"1"}', error="missing_key")
dec("v1 missing event", V1, MSG, '{"topic":"t","payload":{},"ref":"1"}', error="missing_key")
dec("v1 missing payload", V1, MSG, '{"topic":"t","event":"e","ref":"1"}', error="missing_key")
dec("v1 missing ref", V1, MSG, '{"topic":"t","event":"e","payload":{}}', error="missing_key")
dec("v1 empty object", V1, MSG, '{}', error="missing_key")
dec("v1 array is refused", V1, V1TEST, '[null,null,"t","e",{"m":1}]', error="not_an_object")
dec("v1 string is refused", V1, V1SER, '"t"', error="not_an_object")
dec("v1 number is refused", V1, V1SER, '1', error="not_an_object")
dec("v1 null is refused", V1, V1SER, 'null', error="not_an_object")
dec("v1 not json", V1, V1SER, '{"topic":', error="invalid_json")
dec("v1 trailing garbage", V1, V1SER, '{"topic":"t","event":"e","payload":{},"ref":"1"}}', error="invalid_json")
dec("v1 numeric topic", V1, MSG, '{"topic":1,"event":"e","payload":{},"ref":"1"}', error="wrong_field_type", ours=ANY_TYPE)
dec("v1 boolean ref", V1, MSG, '{"topic":"t","event":"e","payload":{},"ref":false}', error="wrong_field_type", ours=REF_TYPE)
dec("v1 object join_ref", V1, MSG, '{"topic":"t","event":"e","payload":{},"ref":"1","join_ref":{}}',
    error="wrong_field_type", ours=REF_TYPE)

enc("encode_message", "v1 push from the V1 serializer test", V1, V1TEST, m(None, None, "t", "e", "m"),
    '{"event":"e","payload":"m","ref":null,"topic":"t"}')
enc("encode_message", "v1 push never writes join_ref", V1, V1TEST, m("1", None, "t", "e", {"m": 1}),
    '{"event":"e","payload":{"m":1},"ref":null,"topic":"t"}')
enc("encode_message", "v1 phx_close has ref null when the join had no join_ref", V1, LPTEST,
    m(None, None, "t", "phx_close", {}), '{"event":"phx_close","payload":{},"ref":null,"topic":"t"}')
enc("encode_message", "v1 phx_error writes the ref it is given", V1, SOCK,
    m("2", "2", "t", "phx_error", {"reason": "channel_crash"}),
    '{"event":"phx_error","payload":{"reason":"channel_crash"},"ref":"2","topic":"t"}')
enc("encode_message", "v1 push payload may be an array", V1, V1SER, m("1", None, "t", "e", [1, 2]),
    '{"event":"e","payload":[1,2],"ref":null,"topic":"t"}')
enc("encode_message", "v1 push payload may be null", V1, V1SER, m(None, None, "t", "e", None),
    '{"event":"e","payload":null,"ref":null,"topic":"t"}')
enc("encode_message", "v1 has no binary pushes", V1, V1SER, m("1", None, "t", "e", payload_hex="0102"),
    error="binary_needs_v2")
enc("encode_broadcast", "v1 broadcast looks like a push with ref null", V1, V1TEST, bcast("t", "e", "m"),
    '{"event":"e","payload":"m","ref":null,"topic":"t"}')
enc("encode_broadcast", "v1 broadcast with object payload", V1, V1SER, bcast("room:lobby", "new_msg", {"body": "hi"}),
    '{"event":"new_msg","payload":{"body":"hi"},"ref":null,"topic":"room:lobby"}')
enc("encode_broadcast", "v1 has no binary broadcasts", V1, V1SER, bcast("t", "e", payload_hex="01"),
    error="binary_needs_v2")
enc("encode_reply", "v1 reply never writes join_ref", V1, V1TEST, reply("1", "2", "t", "ok", {"a": 1}),
    '{"event":"phx_reply","payload":{"response":{"a":1},"status":"ok"},"ref":"2","topic":"t"}')
enc("encode_reply", "v1 heartbeat reply", V1, SOCK, reply(None, "5", "phoenix", "ok", {}),
    '{"event":"phx_reply","payload":{"response":{},"status":"ok"},"ref":"5","topic":"phoenix"}')
enc("encode_reply", "v1 reply with null response", V1, V1TEST, reply(None, "null", "t", "error", None),
    '{"event":"phx_reply","payload":{"response":null,"status":"error"},"ref":"null","topic":"t"}')
enc("encode_reply", "v1 reply echoes a numeric ref", V1, V1SER, reply(None, 9, "t", "ok", {}),
    '{"event":"phx_reply","payload":{"response":{},"status":"ok"},"ref":9,"topic":"t"}')
enc("encode_reply", "v1 has no binary replies", V1, V1SER, reply(None, "1", "t", "ok", response_hex="01"),
    error="binary_needs_v2")
enc("encode_client", "v1 client object includes join_ref", V1, MSG, m("1", "2", "t", "e", {}),
    '{"event":"e","join_ref":"1","payload":{},"ref":"2","topic":"t"}')
enc("encode_client", "v1 client heartbeat", V1, MSG, m(None, "3", "phoenix", "heartbeat", {}),
    '{"event":"heartbeat","join_ref":null,"payload":{},"ref":"3","topic":"phoenix"}')
decs("v1 client reads a reply", V1, V1SER,
     '{"event":"phx_reply","payload":{"response":{},"status":"ok"},"ref":"2","topic":"t"}',
     expect=reply_kind(join_ref=None, ref="2", topic="t", status="ok", response={}))
decs("v1 client reads a broadcast", V1, V1SER, '{"event":"e","payload":{"m":1},"ref":null,"topic":"t"}',
     expect=msg_kind(**m(None, None, "t", "e", {"m": 1})))
decs("v1 client: array frame", V1, V1SER, '[null,null,"t","e",{}]', error="not_an_object")
done("v1_json.json")

# ====================================================================== V2 binary
# --- client pushes, as the server decodes them
dec("binary client push, worked example", V2, V2TEST, hexs=h([0, 2, 3, 5, 5], "12", "123", "topic", "event", [101, 102, 103]),
    expect=m("12", "123", "topic", "event", payload_hex="656667"))
dec("binary client push from the JS test 'encodes'", V2, JSTEST, hexs=h([0, 1, 1, 1, 1], "01te", [1]),
    expect=m("0", "1", "t", "e", payload_hex="01"))
dec("binary client push from the JS test 'encodes variable length segments'", V2, JSTEST,
    hexs=h([0, 2, 1, 3, 2], "101topev", [1]), expect=m("10", "1", "top", "ev", payload_hex="01"))
dec("binary client push with empty refs keeps them as empty strings", V2, V2SER, hexs=h([0, 0, 0, 1, 1], "t", "e", [1]),
    expect=m("", "", "t", "e", payload_hex="01"),
    note="an empty join_ref is not null: in 1.8 it is stale against a channel joined with a join_ref")
dec("binary phx_join with empty join_ref keeps it empty", V2, V2SER,
    hexs=h([0, 0, 1, 10, 8], "1", "room:lobby", "phx_join", "{}"),
    expect=m("", "1", "room:lobby", "phx_join", payload_hex=h("{}")))
dec("binary client push with empty payload", V2, V2SER, hexs=h([0, 1, 1, 1, 1], "1", "2", "t", "e"),
    expect=m("1", "2", "t", "e", payload_hex=""))
dec("binary client push with empty topic and event", V2, V2SER, hexs=h([0, 1, 1, 0, 0], "1", "2", [9]),
    expect=m("1", "2", "", "", payload_hex="09"))
dec("binary client push: payload that looks like JSON stays binary", V2, V2SER,
    hexs=h([0, 1, 1, 1, 1], "1", "2", "t", "e", '{"a":1}'), expect=m("1", "2", "t", "e", payload_hex=h('{"a":1}')))
dec("binary client push with unicode topic sized in bytes", V2, JSSER,
    hexs=h([0, 1, 1, len("sala:café".encode()), 1], "1", "2", "sala:café", "e", [9]),
    expect=m("1", "2", "sala:café", "e", payload_hex="09"))
dec("binary client push with non-ASCII metadata (JS test)", V2, JSTEST,
    hexs=h([0, 4, 1, 10, 2], "🚀", "1", "room:café", "π", [1]), expect=m("🚀", "1", "room:café", "π", payload_hex="01"))
dec("binary client push with 255-byte fields", V2, V2SER,
    hexs=h([0, 255, 255, 255, 255], "j" * 255, "r" * 255, "t" * 255, "e" * 255, [7]),
    expect=m("j" * 255, "r" * 255, "t" * 255, "e" * 255, payload_hex="07"))
dec("binary empty frame", V2, V2SER, hexs="", error="binary_too_short")
dec("binary push with only the kind byte", V2, V2SER, hexs="00", error="binary_too_short")
dec("binary push header cut short", V2, V2SER, hexs=h([0, 1, 1]), error="binary_too_short")
dec("binary push: topic size points past the end", V2, V2SER, hexs=h([0, 1, 1, 9, 1], "1", "2", "t"),
    error="binary_too_short")
dec("binary push: join_ref size points past the end", V2, V2SER, hexs=h([0, 200, 0, 0, 0], "abc"),
    error="binary_too_short")
dec("binary push: event cut by one byte", V2, V2SER, hexs=h([0, 1, 1, 1, 2], "1", "2", "t", "e"),
    error="binary_too_short")
dec("binary unknown kind 3", V2, V2SER, hexs=h([3, 0, 0, 0, 0]), error="unknown_binary_kind")
dec("binary unknown kind 255", V2, V2SER, hexs=h([255, 1, 1, 1, 1], "1", "2", "t", "e"), error="unknown_binary_kind")
dec("binary reply from a client is refused", V2, V2SER, hexs=h([1, 0, 0, 1, 2], "t", "ok"),
    error="server_only_binary_kind")
dec("binary broadcast from a client is refused", V2, V2SER, hexs=h([2, 1, 1], "t", "e"),
    error="server_only_binary_kind")
dec("binary invalid UTF-8 in join_ref", V2, V2SER, hexs=h([0, 1, 1, 1, 1], [0xff], "2", "t", "e"), error="invalid_utf8",
    ours=UTF8)
dec("binary invalid UTF-8 in ref", V2, V2SER, hexs=h([0, 1, 1, 1, 1], "1", [0xfe], "t", "e"), error="invalid_utf8",
    ours=UTF8)
dec("binary invalid UTF-8 in topic", V2, V2SER, hexs=h([0, 1, 1, 1, 1], "1", "2", [0xff], "e"), error="invalid_utf8",
    ours=UTF8)
dec("binary invalid UTF-8 in event", V2, V2SER, hexs=h([0, 1, 1, 1, 1], "1", "2", "t", [0xc0]), error="invalid_utf8",
    ours=UTF8)
dec("binary size field splits a multi-byte character", V2, V2SER,
    hexs=h([0, 1, 1, 4, 1], "1", "2", "caf", "é".encode()[:1], "é".encode()[1:], "e"), error="invalid_utf8", ours=UTF8)
dec("binary payload need not be UTF-8", V2, V2SER, hexs=h([0, 1, 1, 1, 1], "1", "2", "t", "e", [0xff, 0x00]),
    expect=m("1", "2", "t", "e", payload_hex="ff00"))
dec("binary frame on a V1 socket is read as JSON", V1, V1SER + " (decode!/2 ignores the opcode)",
    hexs=h('{"topic":"room:lobby","event":"phx_join","payload":{},"ref":"1"}'),
    expect=m(None, "1", "room:lobby", "phx_join", {}),
    note="the published Python client phx-events sends every message as a binary frame holding V1 JSON")
dec("binary frame on a V1 socket: a V2 binary push is not JSON", V1, V1SER + " (decode!/2 ignores the opcode)",
    hexs=h([0, 1, 1, 1, 1], "1", "2", "t", "e"), error="invalid_json")
dec("binary frame on a V1 socket: bytes that are not UTF-8", V1, JASON_DEC,
    hexs=h('{"topic":"', [0xff], '","event":"e","payload":{},"ref":"1"}'), error="invalid_json")

# --- server frames
enc("encode_message", "binary server push: 4-byte header, no ref", V2, V2TEST,
    m("12", None, "topic", "event", payload_hex="656667"), hexs=h([0, 2, 5, 5], "12", "topic", "event", [101, 102, 103]))
enc("encode_message", "binary server push never writes a ref", V2, V2SER,
    m("12", "99", "topic", "event", payload_hex="656667"), hexs=h([0, 2, 5, 5], "12", "topic", "event", [101, 102, 103]))
enc("encode_message", "binary push with null join_ref writes an empty field", V2, V2SER,
    m(None, None, "t", "e", payload_hex="00"), hexs=h([0, 0, 1, 1], "t", "e", [0]))
enc("encode_message", "binary push with unicode topic sized in bytes", V2, V2SER,
    m("1", None, "sala:café☕", "e", payload_hex=""), hexs=h([0, 1, len("sala:café☕".encode()), 1], "1", "sala:café☕", "e"))
enc("encode_message", "binary push with 255-byte topic fits", V2, V2SER,
    m("1", None, "t" * 255, "e", payload_hex="01"), hexs=h([0, 1, 255, 1], "1", "t" * 255, "e", [1]))
enc("encode_message", "binary push with 256-byte topic does not fit", V2, V2TEST,
    m("12", None, "t" * 256, "event", payload_hex="656667"), error="field_too_long")
enc("encode_message", "binary push with 256-byte event does not fit", V2, V2TEST,
    m("12", None, "topic", "e" * 256, payload_hex="656667"), error="field_too_long")
enc("encode_message", "binary push with 256-byte join_ref does not fit", V2, V2TEST,
    m("j" * 256, None, "topic", "event", payload_hex="656667"), error="field_too_long")
enc("encode_message", "binary push: 128 two-byte characters are 256 bytes", V2, V2SER,
    m("1", None, "é" * 128, "e", payload_hex=""), error="field_too_long")
enc("encode_reply", "binary reply: 5-byte header", V2, V2TEST, reply("12", "123", "topic", "ok", response_hex="656667"),
    hexs=h([1, 2, 3, 5, 2], "12", "123", "topic", "ok", [101, 102, 103]))
enc("encode_reply", "binary reply with null refs writes empty fields", V2, V2SER,
    reply(None, None, "t", "ok", response_hex="01"), hexs=h([1, 0, 0, 1, 2], "t", "ok", [1]))
enc("encode_reply", "binary reply with custom status", V2, V2SER, reply("1", "2", "t", "ignored", response_hex=""),
    hexs=h([1, 1, 1, 1, 7], "1", "2", "t", "ignored"))
enc("encode_reply", "binary reply with 255-byte status fits", V2, V2SER, reply("1", "2", "t", "s" * 255, response_hex=""),
    hexs=h([1, 1, 1, 1, 255], "1", "2", "t", "s" * 255))
enc("encode_reply", "binary reply with 256-byte ref does not fit", V2, V2TEST,
    reply("12", "r" * 256, "topic", "ok", response_hex="656667"), error="field_too_long")
enc("encode_reply", "binary reply with 256-byte join_ref does not fit", V2, V2SER,
    reply("j" * 256, "1", "t", "ok", response_hex=""), error="field_too_long")
enc("encode_reply", "binary reply with 256-byte topic does not fit", V2, V2SER,
    reply("1", "1", "t" * 256, "ok", response_hex=""), error="field_too_long")
enc("encode_reply", "binary reply with 256-byte status does not fit", V2, V2SER,
    reply("1", "1", "t", "s" * 256, response_hex=""), error="field_too_long")
enc("encode_broadcast", "binary broadcast: 3-byte header", V2, V2TEST, bcast("topic", "event", payload_hex="656667"),
    hexs=h([2, 5, 5], "topic", "event", [101, 102, 103]))
enc("encode_broadcast", "binary broadcast with empty payload", V2, V2SER, bcast("t", "e", payload_hex=""),
    hexs=h([2, 1, 1], "t", "e"))
enc("encode_broadcast", "binary broadcast with 255-byte topic fits", V2, V2SER, bcast("x" * 255, "e", payload_hex=""),
    hexs=h([2, 255, 1], "x" * 255, "e"))
enc("encode_broadcast", "binary broadcast with 256-byte topic does not fit", V2, V2TEST,
    bcast("t" * 256, "event", payload_hex="656667"), error="field_too_long")
enc("encode_broadcast", "binary broadcast with 256-byte event does not fit", V2, V2TEST,
    bcast("topic", "e" * 256, payload_hex="656667"), error="field_too_long")

# --- client pushes, as a client encodes them
enc("encode_client", "binary client push: 5-byte header with ref", V2, V2TEST,
    m("12", "123", "topic", "event", payload_hex="656667"), hexs=h([0, 2, 3, 5, 5], "12", "123", "topic", "event", [101, 102, 103]))
enc("encode_client", "binary client push (JS test 'encodes')", V2, JSTEST, m("0", "1", "t", "e", payload_hex="01"),
    hexs=h([0, 1, 1, 1, 1], "01te", [1]))
enc("encode_client", "binary client push (JS test 'encodes variable length segments')", V2, JSTEST,
    m("10", "1", "top", "ev", payload_hex="01"), hexs=h([0, 2, 1, 3, 2], "101topev", [1]))
enc("encode_client", "binary client push with non-ASCII metadata counts bytes (JS test)", V2, JSTEST,
    m("🚀", "1", "room:café", "π", payload_hex="01"), hexs=h([0, 4, 1, 10, 2], "🚀", "1", "room:café", "π", [1]))
enc("encode_client", "binary client push with 256-byte topic does not fit (JS test)", V2, JSTEST,
    m("0", "1", "a" * 256, "e", payload_hex="01"), error="field_too_long")
enc("encode_client", "binary client push with null refs writes empty fields", V2, JSSER,
    m(None, None, "t", "e", payload_hex=""), hexs=h([0, 0, 0, 1, 1], "t", "e"),
    ours=("phoenix.js 1.8 passes a null ref to TextEncoder, which writes the four bytes 'null' "
          "(1.7 throws on it); we write an empty field, as Phoenix's server encoder writes a nil join_ref"))

# --- server frames, as clients decode them
decs("binary client reads a push (ref null)", V2, JSSER, hexs=h([0, 2, 5, 5], "12", "topic", "event", [1]),
     expect=msg_kind(**m("12", None, "topic", "event", payload_hex="01")))
decs("binary client reads a push (JS test)", V2, JSTEST, hexs=h([0, 3, 3, 10], "123", "top", "some-event", [1, 1]),
     expect=msg_kind(**m("123", None, "top", "some-event", payload_hex="0101")))
decs("binary client reads a push with empty join_ref as an empty string", V2, JSSER, hexs=h([0, 0, 1, 1], "t", "e"),
     expect=msg_kind(**m("", None, "t", "e", payload_hex="")))
decs("binary client reads a reply with empty refs as empty strings", V2, JSSER, hexs=h([1, 0, 0, 1, 2], "t", "ok"),
     expect=reply_kind(join_ref="", ref="", topic="t", status="ok", response_hex=""))
decs("binary client reads a reply", V2, V2TEST, hexs=h([1, 2, 3, 5, 2], "12", "123", "topic", "ok", [101, 102, 103]),
     expect=reply_kind(join_ref="12", ref="123", topic="topic", status="ok", response_hex="656667"))
decs("binary client reads a reply (JS test)", V2, JSTEST, hexs=h([1, 3, 2, 3, 2], "10012topok", [1, 1]),
     expect=reply_kind(join_ref="100", ref="12", topic="top", status="ok", response_hex="0101"))
decs("binary client reads a broadcast", V2, V2TEST, hexs=h([2, 5, 5], "topic", "event", [101, 102, 103]),
     expect=msg_kind(**m(None, None, "topic", "event", payload_hex="656667")))
decs("binary client reads a broadcast (JS test)", V2, JSTEST, hexs=h([2, 3, 10], "top", "some-event", [1, 1]),
     expect=msg_kind(**m(None, None, "top", "some-event", payload_hex="0101")))
decs("binary client: truncated reply", V2, JSDEC, hexs=h([1, 2, 3, 5, 2], "12"), error="binary_too_short",
     ours="phoenix.js slices past the end without noticing and decodes short fields; we refuse the frame")
decs("binary client: broadcast header cut short", V2, JSSER, hexs=h([2, 5]), error="binary_too_short")
decs("binary client: push header cut short", V2, JSSER, hexs=h([0, 1, 1]), error="binary_too_short")
decs("binary client: empty frame", V2, JSSER, hexs="", error="binary_too_short")
decs("binary client: unknown kind", V2, JSDEC, hexs=h([9, 0, 0]), error="unknown_binary_kind",
     ours="phoenix.js's binaryDecode returns undefined for an unknown kind; we refuse the frame")
decs("binary client: invalid UTF-8 in status", V2, JSDEC, hexs=h([1, 0, 0, 1, 2], "t", [0xc3, 0x28]),
     error="invalid_utf8", ours="phoenix.js's TextDecoder replaces invalid bytes with U+FFFD; we refuse the frame")
decs("binary client: binary frame on a V1 socket is read as JSON", V1, V1SER,
     hexs=h('{"event":"e","payload":{"m":1},"ref":null,"topic":"t"}'),
     expect=msg_kind(**m(None, None, "t", "e", {"m": 1})),
     ours="Phoenix servers never send binary frames on V1; we read one as the V1 server reads a client's")
done("v2_binary.json")


# ====================================================================== vsn
def neg(name, param, expect=None, error=None, note=None):
    d = {"name": name, "op": "negotiate", "vsn_param": param, "source": VSN}
    add(d, None if expect is None else {"expect_serializer": expect}, error, note)



neg("no vsn means 1.0.0", None, "1.0.0")
neg("1.0.0", "1.0.0", "1.0.0")
neg("1.0.7 matches ~> 1.0.0", "1.0.7", "1.0.0")
neg("2.0.0", "2.0.0", "2.0.0")
neg("2.0.1 matches ~> 2.0.0", "2.0.1", "2.0.0")
neg("2.0.5 matches ~> 2.0.0", "2.0.5", "2.0.0")
neg("a huge patch number still matches", "1.0.99999999999999999999999", "1.0.0",
    note="Elixir integers are unbounded")
neg("pre-release of 2.0.1 is above 2.0.0 and below 2.1.0", "2.0.1-dev", "2.0.0",
    note="Version.match?/2 allows pre-releases by default")
neg("build metadata is ignored", "2.0.0+build.5", "2.0.0")
neg("pre-release and build", "2.0.3-rc.1+sha.5114f85", "2.0.0")
neg("2.1.0 is refused", "2.1.0", error="unsupported_vsn")
neg("2.1.0-rc.1 is refused: ~> never admits its upper bound's pre-releases", "2.1.0-rc.1", error="unsupported_vsn")
neg("1.1.0 is refused", "1.1.0", error="unsupported_vsn")
neg("3.0.0 is refused", "3.0.0", error="unsupported_vsn")
neg("0.0.0 is refused", "0.0.0", error="unsupported_vsn")
neg("123.1.1 is refused", "123.1.1", error="unsupported_vsn")
neg("pre-release of 2.0.0 sorts below it", "2.0.0-rc.1", error="unsupported_vsn")
neg("pre-release of 1.0.0 sorts below it", "1.0.0-beta", error="unsupported_vsn")
neg("not a version", "abc", error="unsupported_vsn")
neg("empty value (vsn=)", "", error="unsupported_vsn")
neg("two components", "2.0", error="unsupported_vsn")
neg("four components", "2.0.0.0", error="unsupported_vsn")
neg("leading v", "v2.0.0", error="unsupported_vsn")
neg("leading space", " 2.0.0", error="unsupported_vsn")
neg("leading zero in major", "02.0.0", error="unsupported_vsn")
neg("leading zero in a numeric pre-release identifier", "2.0.1-01", error="unsupported_vsn")
neg("empty pre-release", "2.0.1-", error="unsupported_vsn")
neg("empty build", "2.0.0+", error="unsupported_vsn")
neg("invalid character in pre-release", "2.0.1-a_b", error="unsupported_vsn")
done("vsn.json")


# ====================================================================== presence payloads
def pres(name, op, json_text, refs, src=PRES):
    """refs: {key: [[phx_ref, phx_ref_prev or None], ...]} for a state;
    {"joins": {...}, "leaves": {...}} of those for a diff."""
    add({"name": name, "op": op, "source": src, "json": json_text, "expect_refs": refs})


pres("presence_state with one key, one meta", "presence_state",
     '{"u1":{"metas":[{"name":"u1","phx_ref":"F1s2rfEAbzTWKgAB"}]}}', {"u1": [["F1s2rfEAbzTWKgAB", None]]})
pres("presence_state, multi-device key keeps meta order", "presence_state",
     '{"u1":{"metas":[{"device":"phone","phx_ref":"AAAAAAAAAAAAAAAB"},{"device":"laptop","phx_ref":"AAAAAAAAAAAAAAAC"}]}}',
     {"u1": [["AAAAAAAAAAAAAAAB", None], ["AAAAAAAAAAAAAAAC", None]]})
pres("presence_state with several keys", "presence_state",
     '{"u1":{"metas":[{"phx_ref":"AAAAAAAAAAAAAAA1"}]},"u2":{"metas":[{"phx_ref":"AAAAAAAAAAAAAAA2"}]}}',
     {"u1": [["AAAAAAAAAAAAAAA1", None]], "u2": [["AAAAAAAAAAAAAAA2", None]]})
pres("presence_state empty", "presence_state", '{}', {})
pres("presence_state integer key is listed as a string", "presence_state",
     '{"1":{"metas":[{"phx_ref":"AAAAAAAAAAAAAAAD"}]}}', {"1": [["AAAAAAAAAAAAAAAD", None]]})
pres("presence_state after an update keeps phx_ref_prev", "presence_state",
     '{"u1":{"metas":[{"status":"away","phx_ref":"AAAAAAAAAAAAAAAG","phx_ref_prev":"AAAAAAAAAAAAAAAF"}]}}',
     {"u1": [["AAAAAAAAAAAAAAAG", "AAAAAAAAAAAAAAAF"]]}, src=SHARD)
pres("presence_state meta with nested fields", "presence_state",
     '{"u1":{"metas":[{"online_at":1700000000,"user":{"name":"Ann","roles":["a","b"]},"phx_ref":"AAAAAAAAAAAAAAAH"}]}}',
     {"u1": [["AAAAAAAAAAAAAAAH", None]]})
pres("presence_state unicode and __proto__ keys", "presence_state",
     '{"__proto__":{"metas":[{"phx_ref":"AAAAAAAAAAAAAAAI"}]},"josé":{"metas":[{"phx_ref":"AAAAAAAAAAAAAAAJ"}]}}',
     {"__proto__": [["AAAAAAAAAAAAAAAI", None]], "josé": [["AAAAAAAAAAAAAAAJ", None]]},
     src=P + "assets/js/phoenix/presence.js")
# A fuzz finding (fuzz/ cluster_frame): without exact float parsing, a meta number
# read and written again came back as another number (1.9e51 → 1.9000000000000002e51).
# Jason reads floats exactly (:erlang.binary_to_float) and writes the shortest form
# that reads back the same (float_to_binary [:short] / fwrite_g).
pres("presence_state meta floats survive a round trip exactly", "presence_state",
     '{"u1":{"metas":[{"big":1900000000000000000000000000000006535286009268011007.5,'
     '"tenth":0.1,"tiny":5e-324,"third":0.3333333333333333,"phx_ref":"AAAAAAAAAAAAAAAO"}]}}',
     {"u1": [["AAAAAAAAAAAAAAAO", None]]},
     src="jason v1.4.5 lib/decoder.ex line 81 (binary_to_float), lib/encode.ex lines 140-145")
pres("presence_diff join only, leaves present and empty", "presence_diff",
     '{"joins":{"u1":{"metas":[{"name":"u1","phx_ref":"AAAAAAAAAAAAAAAE"}]}},"leaves":{}}',
     {"joins": {"u1": [["AAAAAAAAAAAAAAAE", None]]}, "leaves": {}})
pres("presence_diff leave only", "presence_diff",
     '{"joins":{},"leaves":{"u1":{"metas":[{"name":"u1","phx_ref":"AAAAAAAAAAAAAAAE"}]}}}',
     {"joins": {}, "leaves": {"u1": [["AAAAAAAAAAAAAAAE", None]]}})
pres("presence_diff empty", "presence_diff", '{"joins":{},"leaves":{}}', {"joins": {}, "leaves": {}})
pres("presence_diff update: one diff, join carries phx_ref_prev = the leave's phx_ref", "presence_diff",
     '{"joins":{"u1":{"metas":[{"name":"updated","phx_ref":"AAAAAAAAAAAAAAAG","phx_ref_prev":"AAAAAAAAAAAAAAAF"}]}},'
     '"leaves":{"u1":{"metas":[{"name":"u1","phx_ref":"AAAAAAAAAAAAAAAF"}]}}}',
     {"joins": {"u1": [["AAAAAAAAAAAAAAAG", "AAAAAAAAAAAAAAAF"]]}, "leaves": {"u1": [["AAAAAAAAAAAAAAAF", None]]}},
     src=SHARD)
pres("presence_diff second update: the leave carries the earlier phx_ref_prev", "presence_diff",
     '{"joins":{"u1":{"metas":[{"phx_ref":"AAAAAAAAAAAAAAAK","phx_ref_prev":"AAAAAAAAAAAAAAAG"}]}},'
     '"leaves":{"u1":{"metas":[{"phx_ref":"AAAAAAAAAAAAAAAG","phx_ref_prev":"AAAAAAAAAAAAAAAF"}]}}}',
     {"joins": {"u1": [["AAAAAAAAAAAAAAAK", "AAAAAAAAAAAAAAAG"]]},
      "leaves": {"u1": [["AAAAAAAAAAAAAAAG", "AAAAAAAAAAAAAAAF"]]}}, src=SHARD)
pres("presence_state entry with keys beside metas (fetch/2)", "presence_state",
     '{"7":{"metas":[{"phx_ref":"AAAAAAAAAAAAAAAN"}],"user":{"id":7,"name":"Ann"}}}',
     {"7": [["AAAAAAAAAAAAAAAN", None]]})
pres("presence_diff keys beside metas in both halves (fetch/2)", "presence_diff",
     '{"joins":{"7":{"metas":[{"phx_ref":"AAAAAAAAAAAAAAAP","phx_ref_prev":"AAAAAAAAAAAAAAAN"}],"user":{"name":"Ann"}}},'
     '"leaves":{"7":{"metas":[{"phx_ref":"AAAAAAAAAAAAAAAN"}],"user":{"name":"Ann"}}}}',
     {"joins": {"7": [["AAAAAAAAAAAAAAAP", "AAAAAAAAAAAAAAAN"]]},
      "leaves": {"7": [["AAAAAAAAAAAAAAAN", None]]}})
pres("presence_diff leave carries the full previous meta, phx_ref_prev included", "presence_diff",
     '{"joins":{},"leaves":{"u1":{"metas":[{"status":"away","online_at":1700000000,'
     '"phx_ref":"AAAAAAAAAAAAAAAQ","phx_ref_prev":"AAAAAAAAAAAAAAAG"}]}}}',
     {"joins": {}, "leaves": {"u1": [["AAAAAAAAAAAAAAAQ", "AAAAAAAAAAAAAAAG"]]}}, src=SHARD)
pres("presence_diff joins and leaves of different keys", "presence_diff",
     '{"joins":{"u2":{"metas":[{"phx_ref":"AAAAAAAAAAAAAAAL"}]}},"leaves":{"u3":{"metas":[{"phx_ref":"AAAAAAAAAAAAAAAM"}]}}}',
     {"joins": {"u2": [["AAAAAAAAAAAAAAAL", None]]}, "leaves": {"u3": [["AAAAAAAAAAAAAAAM", None]]}})
done("presence.json")

total = 0
for fname, vs in files.items():
    total += len(vs)
    with open(fname, "w") as fh:
        json.dump({"vectors": vs}, fh, indent=1, ensure_ascii=False)
        fh.write("\n")
print("total", total)
