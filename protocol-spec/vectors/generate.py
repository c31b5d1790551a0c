import json, os
V2SER="phoenix v1.8.12 lib/phoenix/socket/serializers/v2_json_serializer.ex"
V1SER="phoenix v1.8.12 lib/phoenix/socket/serializers/v1_json_serializer.ex"
MSG="phoenix v1.8.12 lib/phoenix/socket/message.ex"
JSSER="phoenix v1.8.12 assets/js/phoenix/serializer.js"
SOCK="phoenix v1.8.12 lib/phoenix/socket.ex"
PRES="phoenix v1.8.12 lib/phoenix/presence.ex"
SHARD="phoenix_pubsub v2.2.0 lib/phoenix/tracker/shard.ex"
def h(*parts):
    out=b""
    for p in parts:
        out+= p if isinstance(p,bytes) else (bytes(p) if isinstance(p,list) else p.encode())
    return out.hex()
def m(jr,r,t,e,payload=None,payload_hex=None):
    d={"join_ref":jr,"ref":r,"topic":t,"event":e}
    if payload_hex is not None: d["payload_hex"]=payload_hex
    else: d["payload"]=payload
    return d
files={}
# ---------------- V2 JSON ----------------
v=[]
def dec(name,text,expect=None,error=None,src=V2SER,vsn="2.0.0"):
    d={"name":name,"op":"decode","vsn":vsn,"text":text,"source":src}
    if error: d["error"]=error
    else: d["expect"]=expect
    v.append(d)
dec("v2 heartbeat", '[null,"1","phoenix","heartbeat",{}]', m(None,"1","phoenix","heartbeat",{}), src="phoenix v1.8.12 assets/test/socket_test.js")
dec("v2 join", '["11","1","room:lobby","phx_join",{"user":"a"}]', m("11","1","room:lobby","phx_join",{"user":"a"}))
dec("v2 push with nested payload", '["11","3","room:lobby","new_msg",{"body":"hi","n":[1,2,{"x":null}]}]', m("11","3","room:lobby","new_msg",{"body":"hi","n":[1,2,{"x":None}]}))
dec("v2 null join_ref and ref", '[null,null,"t","e",{"m":1}]', m(None,None,"t","e",{"m":1}))
dec("v2 empty payload object", '["1","2","t","e",{}]', m("1","2","t","e",{}))
dec("v2 non-object payload is accepted on decode", '["1","2","t","e","text"]', m("1","2","t","e","text"))
dec("v2 array payload", '["1","2","t","e",[1,2]]', m("1","2","t","e",[1,2]))
dec("v2 null payload", '["1","2","t","e",null]', m("1","2","t","e",None))
dec("v2 extra trailing elements are ignored", '["1","2","t","e",{},"extra",7]', m("1","2","t","e",{}))
dec("v2 unicode topic and event", '["1","2","sala:café☕","olá",{"ü":"ß"}]', m("1","2","sala:café☕","olá",{"ü":"ß"}))
dec("v2 escaped strings", '["1","2","a\\"b","e\\n",{}]', m("1","2","a\"b","e\n",{}))
dec("v2 whitespace around elements", ' [ "1" , "2" , "t" , "e" , { } ] ', m("1","2","t","e",{}))
dec("v2 not json", '[null,"1","phoenix"', error="invalid_json")
dec("v2 garbage", 'hello', error="invalid_json")
dec("v2 empty text", '', error="invalid_json")
dec("v2 object instead of array", '{"topic":"t","event":"e","payload":{},"ref":"1"}', error="not_an_array")
dec("v2 string instead of array", '"x"', error="not_an_array")
dec("v2 four elements", '["1","2","t","e"]', error="wrong_arity")
dec("v2 empty array", '[]', error="wrong_arity")
dec("v2 numeric topic", '["1","2",5,"e",{}]', error="wrong_field_type")
dec("v2 null topic", '["1","2",null,"e",{}]', error="wrong_field_type")
dec("v2 numeric refs are accepted, as Phoenix does not check their type", '[1,2,"t","e",{}]', m(1,2,"t","e",{}))
dec("v2 boolean ref", '["1",true,"t","e",{}]', error="wrong_field_type")
dec("v2 object event", '["1","2","t",{},{}]', error="wrong_field_type")
dec("v2 trailing garbage after array", '["1","2","t","e",{}] x', error="invalid_json")
def enc(op,name,inp,expect_text=None,expect_hex=None,error=None,src=V2SER,vsn="2.0.0"):
    d={"name":name,"op":op,"vsn":vsn,"input":inp,"source":src}
    if error: d["error"]=error
    elif expect_hex is not None: d["expect_hex"]=expect_hex
    else: d["expect_text"]=expect_text
    v.append(d)
enc("encode_message","v2 push has null ref", m("11",None,"room:lobby","joined",{"status":"connected"}), '["11",null,"room:lobby","joined",{"status":"connected"}]')
enc("encode_message","v2 push with null refs", m(None,None,"t","e",{"m":1}), '[null,null,"t","e",{"m":1}]')
enc("encode_message","v2 phx_close carries ref = join_ref", m("11","11","room:lobby","phx_close",{}), '["11","11","room:lobby","phx_close",{}]', src=SOCK)
enc("encode_message","v2 phx_error 1.8 payload", m("11","11","room:lobby","phx_error",{"reason":"channel_crash"}), '["11","11","room:lobby","phx_error",{"reason":"channel_crash"}]', src=SOCK)
enc("encode_message","v2 push payload must be an object", m("1",None,"t","e",[1]), error="payload_not_object")
enc("encode_message","v2 push string payload refused", m("1",None,"t","e","s"), error="payload_not_object")
enc("encode_broadcast","v2 broadcast has null refs", {"topic":"t","event":"e","payload":{"m":1}}, '[null,null,"t","e",{"m":1}]')
enc("encode_broadcast","v2 broadcast payload must be an object", {"topic":"t","event":"e","payload":3}, error="payload_not_object")
enc("encode_reply","v2 heartbeat reply", {"join_ref":None,"ref":"1","topic":"phoenix","status":"ok","response":{}}, '[null,"1","phoenix","phx_reply",{"response":{},"status":"ok"}]', src="phoenix v1.8.12 test/phoenix/integration/websocket_channels_test.exs")
enc("encode_reply","v2 join ok reply", {"join_ref":"11","ref":"1","topic":"room:lobby","status":"ok","response":{"topic":"room:lobby"}}, '["11","1","room:lobby","phx_reply",{"response":{"topic":"room:lobby"},"status":"ok"}]')
enc("encode_reply","v2 unmatched topic reply has null join_ref", {"join_ref":None,"ref":"1","topic":"unmatched-topic","status":"error","response":{"reason":"unmatched topic"}}, '[null,"1","unmatched-topic","phx_reply",{"response":{"reason":"unmatched topic"},"status":"error"}]', src=SOCK)
enc("encode_reply","v2 reply response may be any JSON", {"join_ref":"1","ref":"2","topic":"t","status":"ok","response":[1,"a"]}, '["1","2","t","phx_reply",{"response":[1,"a"],"status":"ok"}]')
enc("encode_reply","v2 custom status", {"join_ref":"1","ref":"2","topic":"t","status":"ignored","response":{}}, '["1","2","t","phx_reply",{"response":{},"status":"ignored"}]', src="phoenix v1.8.12 lib/phoenix/channel.ex")
enc("encode_reply","v2 numeric refs are echoed as numbers", {"join_ref":1,"ref":2,"topic":"t","status":"ok","response":{}}, '[1,2,"t","phx_reply",{"response":{},"status":"ok"}]')
enc("encode_message","v2 string escaping", m("1",None,"t\"q","e\u0001",{}), '["1",null,"t\\"q","e\\u0001",{}]')
enc("encode_client","v2 client heartbeat", m(None,"1","phoenix","heartbeat",{}), '[null,"1","phoenix","heartbeat",{}]', src=JSSER)
enc("encode_client","v2 client join", m("0","1","t","e",{"foo":1}), '["0","1","t","e",{"foo":1}]', src="phoenix v1.8.12 assets/test/serializer_test.js")
def decs(name,text=None,hexs=None,expect=None,error=None,src=V2SER,vsn="2.0.0"):
    d={"name":name,"op":"decode_server","vsn":vsn,"source":src}
    if text is not None: d["text"]=text
    else: d["hex"]=hexs
    if error: d["error"]=error
    else: d["expect"]=expect
    v.append(d)
decs("v2 client reads a reply", text='["11","1","room:lobby","phx_reply",{"response":{"a":1},"status":"ok"}]', expect={"kind":"reply","join_ref":"11","ref":"1","topic":"room:lobby","status":"ok","response":{"a":1}}, src=JSSER)
decs("v2 client reads a broadcast", text='[null,null,"t","e",{"m":1}]', expect=dict(kind="message",**m(None,None,"t","e",{"m":1})), src=JSSER)
decs("v2 client reply without status is an error", text='["1","1","t","phx_reply",{"response":{}}]', error="wrong_field_type")
files["v2_json.json"]=v
# ---------------- V1 JSON ----------------
v=[]
dec("v1 heartbeat", '{"topic":"phoenix","event":"heartbeat","payload":{},"ref":"1"}', m(None,"1","phoenix","heartbeat",{}), src=V1SER, vsn="1.0.0")
dec("v1 join with join_ref", '{"topic":"room:lobby","event":"phx_join","payload":{},"ref":"1","join_ref":"1"}', m("1","1","room:lobby","phx_join",{}), src=V1SER, vsn="1.0.0")
dec("v1 null ref", '{"topic":"t","event":"e","payload":{"a":1},"ref":null}', m(None,None,"t","e",{"a":1}), src=V1SER, vsn="1.0.0")
dec("v1 any payload type", '{"topic":"t","event":"e","payload":"just text","ref":"2"}', m(None,"2","t","e","just text"), src=V1SER, vsn="1.0.0")
dec("v1 keys in any order, extra keys ignored", '{"ref":"3","extra":true,"payload":[1],"event":"e","topic":"t"}', m(None,"3","t","e",[1]), src=MSG, vsn="1.0.0")
dec("v1 missing topic", '{"event":"e","payload":{},"ref":"1"}', error="missing_key", src=MSG, vsn="1.0.0")
dec("v1 missing event", '{"topic":"t","payload":{},"ref":"1"}', error="missing_key", src=MSG, vsn="1.0.0")
dec("v1 missing payload", '{"topic":"t","event":"e","ref":"1"}', error="missing_key", src=MSG, vsn="1.0.0")
dec("v1 missing ref", '{"topic":"t","event":"e","payload":{}}', error="missing_key", src=MSG, vsn="1.0.0")
dec("v1 array is refused", '[null,"1","phoenix","heartbeat",{}]', error="not_an_object", src="phoenix v1.8.12 test/phoenix/socket/v1_json_serializer_test.exs", vsn="1.0.0")
dec("v1 not json", '{"topic":', error="invalid_json", src=V1SER, vsn="1.0.0")
dec("v1 numeric topic", '{"topic":1,"event":"e","payload":{},"ref":"1"}', error="wrong_field_type", src=V1SER, vsn="1.0.0")
enc("encode_message","v1 push: keys event, payload, ref, topic; no join_ref", m("1",None,"t","e",{"m":1}), '{"event":"e","payload":{"m":1},"ref":null,"topic":"t"}', src="phoenix v1.8.12 test/phoenix/socket/v1_json_serializer_test.exs", vsn="1.0.0")
enc("encode_message","v1 phx_close has ref null when the join had no join_ref", m(None,None,"t","phx_close",{}), '{"event":"phx_close","payload":{},"ref":null,"topic":"t"}', src="phoenix v1.8.12 test/phoenix/integration/long_poll_channels_test.exs", vsn="1.0.0")
enc("encode_message","v1 push payload may be any JSON", m("1",None,"t","e",[1,2]), '{"event":"e","payload":[1,2],"ref":null,"topic":"t"}', src=V1SER, vsn="1.0.0")
enc("encode_broadcast","v1 broadcast like a push with ref null", {"topic":"t","event":"e","payload":{"m":1}}, '{"event":"e","payload":{"m":1},"ref":null,"topic":"t"}', src=V1SER, vsn="1.0.0")
enc("encode_reply","v1 reply", {"join_ref":"1","ref":"2","topic":"t","status":"ok","response":{"a":1}}, '{"event":"phx_reply","payload":{"response":{"a":1},"status":"ok"},"ref":"2","topic":"t"}', src="phoenix v1.8.12 test/phoenix/socket/v1_json_serializer_test.exs", vsn="1.0.0")
enc("encode_reply","v1 heartbeat reply", {"join_ref":None,"ref":"5","topic":"phoenix","status":"ok","response":{}}, '{"event":"phx_reply","payload":{"response":{},"status":"ok"},"ref":"5","topic":"phoenix"}', src=V1SER, vsn="1.0.0")
enc("encode_message","v1 has no binary frames", m("1",None,"t","e",payload_hex="0102"), error="binary_needs_v2", src=V1SER, vsn="1.0.0")
enc("encode_client","v1 client object includes join_ref", m("1","2","t","e",{}), '{"event":"e","join_ref":"1","payload":{},"ref":"2","topic":"t"}', src=MSG, vsn="1.0.0")
decs("v1 client reads a reply", text='{"event":"phx_reply","payload":{"response":{},"status":"ok"},"ref":"2","topic":"t"}', expect={"kind":"reply","join_ref":None,"ref":"2","topic":"t","status":"ok","response":{}}, src=V1SER, vsn="1.0.0")
files["v1_json.json"]=v
# ---------------- V2 binary ----------------
v=[]
def decb(name,hexs,expect=None,error=None,src=V2SER,vsn="2.0.0"):
    d={"name":name,"op":"decode","vsn":vsn,"hex":hexs,"source":src}
    if error: d["error"]=error
    else: d["expect"]=expect
    v.append(d)
decb("binary client push, worked example", h([0,2,3,5,5],"12","123","topic","event",[0x65,0x66,0x67]), m("12","123","topic","event",payload_hex="656667"), src="phoenix v1.8.12 test/phoenix/socket/v2_json_serializer_test.exs")
decb("binary client push with empty refs reads them as null", h([0,0,0,1,1],"t","e",[1]), m(None,None,"t","e",payload_hex="01"))
decb("binary client push with empty payload", h([0,1,1,1,1],"1","2","t","e"), m("1","2","t","e",payload_hex=""))
decb("binary client push with unicode topic sized in bytes", h([0,1,1,len("sala:café".encode()),1],"1","2","sala:café","e",[9]), m("1","2","sala:café","e",payload_hex="09"), src=JSSER)
decb("binary client push with 255-byte topic", h([0,1,1,255,1],"1","2","t"*255,"e",[7]), m("1","2","t"*255,"e",payload_hex="07"))
decb("binary empty frame", "", error="binary_too_short")
decb("binary header cut short", h([0,1,1]), error="binary_too_short")
decb("binary size field points past the end", h([0,1,1,9,1],"1","2","t"), error="binary_too_short")
decb("binary unknown kind", h([7,0,0,0,0]), error="unknown_binary_kind")
decb("binary reply from a client is refused", h([1,0,0,1,2],"t","ok"), error="server_only_binary_kind")
decb("binary broadcast from a client is refused", h([2,1,1],"t","e"), error="server_only_binary_kind")
decb("binary invalid utf-8 topic", h([0,1,1,1,1],"1","2",[0xff],"e"), error="invalid_utf8")
decb("binary frame on a V1 socket", h([0,1,1,1,1],"1","2","t","e"), error="binary_needs_v2", src=V1SER, vsn="1.0.0")
enc("encode_message","binary server push: 4-byte header, no ref", m("12",None,"topic","event",payload_hex="656667"), expect_hex=h([0,2,5,5],"12","topic","event",[0x65,0x66,0x67]), src="phoenix v1.8.12 test/phoenix/socket/v2_json_serializer_test.exs")
enc("encode_reply","binary reply: 5-byte header", {"join_ref":"12","ref":"123","topic":"topic","status":"ok","response_hex":"656667"}, expect_hex=h([1,2,3,5,2],"12","123","topic","ok",[0x65,0x66,0x67]), src="phoenix v1.8.12 test/phoenix/socket/v2_json_serializer_test.exs")
enc("encode_broadcast","binary broadcast: 3-byte header", {"topic":"topic","event":"event","payload_hex":"656667"}, expect_hex=h([2,5,5],"topic","event",[0x65,0x66,0x67]), src="phoenix v1.8.12 test/phoenix/socket/v2_json_serializer_test.exs")
enc("encode_message","binary push with null join_ref writes an empty field", m(None,None,"t","e",payload_hex="00"), expect_hex=h([0,0,1,1],"t","e",[0]))
enc("encode_broadcast","binary 255-byte topic fits", {"topic":"x"*255,"event":"e","payload_hex":""}, expect_hex=h([2,255,1],"x"*255,"e"))
enc("encode_broadcast","binary 256-byte topic does not fit", {"topic":"x"*256,"event":"e","payload_hex":""}, error="field_too_long", src="phoenix v1.8.12 test/phoenix/socket/v2_json_serializer_test.exs")
enc("encode_message","binary 256-byte event does not fit", m("1",None,"t","e"*256,payload_hex=""), error="field_too_long")
enc("encode_reply","binary 256-byte ref does not fit", {"join_ref":"1","ref":"r"*256,"topic":"t","status":"ok","response_hex":""}, error="field_too_long")
enc("encode_reply","binary 256-byte join_ref does not fit", {"join_ref":"j"*256,"ref":"1","topic":"t","status":"ok","response_hex":""}, error="field_too_long")
enc("encode_client","binary client push: 5-byte header with ref", m("12","123","topic","event",payload_hex="656667"), expect_hex=h([0,2,3,5,5],"12","123","topic","event",[0x65,0x66,0x67]), src=JSSER)
enc("encode_client","binary client push with multibyte topic counts bytes", m("1","2","ü","e",payload_hex="01"), expect_hex=h([0,1,1,2,1],"1","2","ü","e",[1]), src="phoenix v1.8.12 assets/test/serializer_test.js")
decs("binary client reads a push (ref null)", hexs=h([0,2,5,5],"12","topic","event",[1]), expect=dict(kind="message",**m("12",None,"topic","event",payload_hex="01")), src=JSSER)
decs("binary client reads a reply", hexs=h([1,2,3,5,2],"12","123","topic","ok",[1,2]), expect={"kind":"reply","join_ref":"12","ref":"123","topic":"topic","status":"ok","response_hex":"0102"}, src=JSSER)
decs("binary client reads a broadcast", hexs=h([2,5,5],"topic","event",[3]), expect=dict(kind="message",**m(None,None,"topic","event",payload_hex="03")), src=JSSER)
decs("binary client: truncated reply", hexs=h([1,2,3,5,2],"12"), error="binary_too_short", src=JSSER)
files["v2_binary.json"]=v
# ---------------- vsn ----------------
v=[]
def neg(name,param,expect=None,error=None):
    d={"name":name,"op":"negotiate","vsn_param":param,"source":"phoenix v1.8.12 lib/phoenix/socket.ex (negotiate_serializer/2, Elixir Version ~> requirements)"}
    if error: d["error"]=error
    else: d["expect_serializer"]=expect
    v.append(d)
neg("no vsn means 1.0.0", None, "1.0.0")
neg("1.0.0", "1.0.0", "1.0.0")
neg("1.0.7 matches ~> 1.0.0", "1.0.7", "1.0.0")
neg("2.0.0", "2.0.0", "2.0.0")
neg("2.0.5 matches ~> 2.0.0", "2.0.5", "2.0.0")
neg("2.1.0 is refused", "2.1.0", error="unsupported_vsn")
neg("1.1.0 is refused", "1.1.0", error="unsupported_vsn")
neg("3.0.0 is refused", "3.0.0", error="unsupported_vsn")
neg("123.1.1 is refused", "123.1.1", error="unsupported_vsn")
neg("not semver", "abc", error="unsupported_vsn")
neg("two components", "2.0", error="unsupported_vsn")
neg("empty", "", error="unsupported_vsn")
neg("leading zero", "02.0.0", error="unsupported_vsn")
neg("pre-release of 2.0.0 sorts below it", "2.0.0-rc.1", error="unsupported_vsn")
neg("pre-release of 2.0.1 is above 2.0.0", "2.0.1-dev", "2.0.0")
neg("build metadata is allowed", "2.0.0+build.5", "2.0.0")
files["vsn.json"]=v
# ---------------- presence ----------------
v=[]
def pres(name,op,json_text,src=PRES):
    v.append({"name":name,"op":op,"json":json_text,"source":src})
pres("presence_state with one key, one meta","presence_state",'{"u1":{"metas":[{"name":"u1","phx_ref":"F1s2rfEAbzTWKgAB"}]}}')
pres("presence_state, multi-device key keeps meta order","presence_state",'{"u1":{"metas":[{"device":"phone","phx_ref":"AAAAAAAAAAAAAAAB"},{"device":"laptop","phx_ref":"AAAAAAAAAAAAAAAC"}]}}')
pres("presence_state empty","presence_state",'{}')
pres("presence_state integer key is a string","presence_state",'{"1":{"metas":[{"phx_ref":"AAAAAAAAAAAAAAAD"}]}}')
pres("presence_diff join only, leaves present and empty","presence_diff",'{"joins":{"u1":{"metas":[{"name":"u1","phx_ref":"AAAAAAAAAAAAAAAE"}]}},"leaves":{}}')
pres("presence_diff leave only","presence_diff",'{"joins":{},"leaves":{"u1":{"metas":[{"name":"u1","phx_ref":"AAAAAAAAAAAAAAAE"}]}}}')
pres("presence_diff update: join carries phx_ref_prev","presence_diff",'{"joins":{"u1":{"metas":[{"name":"updated","phx_ref":"AAAAAAAAAAAAAAAG","phx_ref_prev":"AAAAAAAAAAAAAAAF"}]}},"leaves":{"u1":{"metas":[{"name":"u1","phx_ref":"AAAAAAAAAAAAAAAF"}]}}}', src=SHARD)
files["presence.json"]=v
total=0
for f,vs in files.items():
    total+=len(vs)
    with open(f,"w") as fh: json.dump({"vectors":vs},fh,indent=1,ensure_ascii=False); fh.write("\n")
print("total",total)
