# Local control's control messages (docs/protocol.md#local-control): property count,
# reads of the config and the params, params writes with source "Local",
# statuses for what the app gets wrong, transport-level refusal of what does
# not parse, and a fuzz of the decoder.
from rainmaker import Node, std, log
from rainmaker.sync import Sync, CONFIG, INIT, LOCAL
from rainmaker.lctl import Control, version_json, MAX_PROPS, MAX_VALUE
from rainmaker.prov import pb
from rainmaker.prov.errors import Refused
from rainmaker.prov.protocomm import Protocomm
from rainmaker.prov.sec0 import Sec0
from util import js, h, raises, MemStore, Rand, mutate, report

log.level = -1


class App:
    def __init__(self):
        self.calls = []

    def __call__(self, device, values, source):
        self.calls.append((device.name, dict(values), source))


def setup():
    app = App()
    n = Node("N", "T")
    n.node_id = "N1"
    n.add(std.switch("Switch", cb=app))
    n.add(std.local_control_service("0a1b2c3d", 2))
    s = Sync(n, MemStore())
    assert report(s, 0)[0] == CONFIG
    s.connected()
    assert report(s, 0)[0] == INIT
    assert report(s, 0) is None
    return n, s, app, Control(n, s, lambda: 1000)


# Requests, encoded by hand from the message definitions (field numbers).
def get_count():
    return pb.f_msg(10, b"")  # msg = 0 is omitted on the wire


def get_vals(indices, packed=True):
    if packed:
        body = pb.f_bytes(1, b"".join(pb.varint(i) for i in indices))
    else:
        body = b"".join(pb.varint(1 << 3) + pb.varint(i) for i in indices)
    return pb.f_int(1, 4) + pb.f_msg(12, body)


def set_vals(pairs):
    body = b"".join(pb.f_msg(1, pb.f_int(1, i) + pb.f_bytes(2, v)) for i, v in pairs)
    return pb.f_int(1, 6) + pb.f_msg(14, body)


def reply(data, msg, field):
    items = pb.items(data)
    assert items[0] == (1, msg), items
    assert items[1][0] == field and len(items) == 2, items
    return items[1][1]


def props(data):
    body = reply(data, 5, 13)
    status = pb.get_int(pb.decode(body), 1)
    out = []
    for num, v in pb.items(body):
        if num == 2:
            p = pb.decode(v)
            out.append((pb.get_int(p, 1), p[2].decode(), pb.get_int(p, 3), pb.get_int(p, 4), p.get(5, b"")))
    return status, out


def set_status(data):
    return pb.get_int(pb.decode(reply(data, 7, 15)), 1)


def test_property_count_is_two_in_exact_bytes():
    _, _, _, c = setup()
    assert c.handle(get_count()) == h("08 01 5a 02 10 02")
    assert c.handle(b"") == h("08 01 5a 02 10 02")  # the payload of message 0 may be left out
    assert c.handle(h("08 00 52 00")) == h("08 01 5a 02 10 02")


def test_config_is_property_0_read_only():
    n, _, _, c = setup()
    status, ps = props(c.handle(get_vals([0])))
    assert status == 0 and len(ps) == 1
    st, name, ptype, flags, value = ps[0]
    assert (st, name, ptype, flags) == (0, "config", 1, 1)
    cfg = js(value)
    assert cfg["node_id"] == "N1"
    assert [d["name"] for d in cfg["devices"]] == ["Switch"]
    assert [s["type"] for s in cfg["services"]] == ["esp.service.local_control"]


def test_params_is_property_1_packed_or_not():
    n, _, _, c = setup()
    for packed in (True, False):
        status, ps = props(c.handle(get_vals([1], packed)))
        assert status == 0
        assert ps[0][:4] == (0, "params", 2, 0)
        assert js(ps[0][4]) == js(n.params())
        assert js(ps[0][4])["Local Control"] == {"POP": "0a1b2c3d", "Type": 2}


def test_both_properties_in_one_request_in_the_order_asked():
    _, _, _, c = setup()
    status, ps = props(c.handle(get_vals([1, 0])))
    assert status == 0 and [p[1] for p in ps] == ["params", "config"]
    status, ps = props(c.handle(get_vals([])))
    assert status == 0 and ps == []


def test_index_out_of_range_is_invalid_argument_with_no_values():
    _, _, _, c = setup()
    for idx in ([2], [0, 2], [0xFFFFFFFF]):
        status, ps = props(c.handle(get_vals(idx)))
        assert status == 4 and ps == [], idx


def test_too_many_indices_is_invalid_argument():
    _, _, _, c = setup()
    status, ps = props(c.handle(get_vals([0] * MAX_PROPS)))
    assert status == 0 and len(ps) == MAX_PROPS
    for packed in (True, False):
        status, ps = props(c.handle(get_vals([0] * (MAX_PROPS + 1), packed)))
        assert status == 4 and ps == []


def test_params_write_is_applied_with_source_local_and_reported():
    n, s, app, c = setup()
    assert set_status(c.handle(set_vals([(1, b'{"Switch":{"Power":true}}')]))) == 0
    assert app.calls == [("Switch", {"Power": True}, "Local")]
    assert n.device("Switch")["Power"] is True
    suffix, payload = report(s, 1000)
    assert suffix == LOCAL and js(payload) == {"Switch": {"Power": True}}
    assert c.writes == 1
    # and the next read shows it
    _, ps = props(c.handle(get_vals([1])))
    assert js(ps[0][4])["Switch"]["Power"] is True


def test_write_to_a_read_only_param_is_refused_like_a_cloud_write():
    # The message is fine (status Success); the model refuses the param and
    # reports its current value, as for a cloud write.
    n, s, app, c = setup()
    assert set_status(c.handle(set_vals([(1, b'{"Local Control":{"POP":"x"}}')]))) == 0
    assert n.device("Local Control")["POP"] == "0a1b2c3d"
    suffix, payload = report(s, 1000)
    assert suffix == LOCAL and js(payload) == {"Local Control": {"POP": "0a1b2c3d"}}


def test_writing_config_or_a_missing_property_is_invalid_argument_and_nothing_applies():
    n, s, app, c = setup()
    ok = b'{"Switch":{"Power":true}}'
    for pairs in ([(0, b"{}")], [(2, ok)], [(1, ok), (0, b"{}")], [(1, ok), (7, ok)]):
        assert set_status(c.handle(set_vals(pairs))) == 4, pairs
    assert app.calls == [] and n.device("Switch")["Power"] is False
    assert report(s, 1000) is None


def test_a_value_that_is_not_a_json_object_is_invalid_argument():
    n, s, app, c = setup()
    deep = b'{"Switch":' + b"[" * 40 + b"]" * 40 + b"}"
    for v in (b"", b"not json", b"[1,2]", b'"x"', b"\xff\xfe", b'{"Switch":', deep,
              b'{"a":"' + b"x" * MAX_VALUE + b'"}'):
        assert set_status(c.handle(set_vals([(1, v)]))) == 4, v[:20]
    assert app.calls == [] and report(s, 1000) is None


def test_too_many_values_is_invalid_argument():
    _, _, app, c = setup()
    ok = b'{"Switch":{"Power":true}}'
    assert set_status(c.handle(set_vals([(1, ok)] * (MAX_PROPS + 1)))) == 4
    assert app.calls == []
    assert set_status(c.handle(set_vals([]))) == 0  # nothing to set is fine


def test_malformed_messages_fail_at_transport_level():
    _, _, app, c = setup()
    cases = [
        h("08 01"),  # a reply type
        h("08 02"), h("08 03"), h("08 05"), h("08 07"), h("08 08"),  # not requests
        h("08 04"),  # get values without its payload
        h("08 06"),  # set values without its payload
        h("08 04 60 01"),  # payload field as a varint
        h("08 06 70 01"),
        h("08 04 62 05 0a"),  # truncated
        h("08 06 72 03 0a 02 08"),  # PropertyValue cut short
        h("08 06 72 02 08 01"),  # PropertyValue as a varint
        h("08 06 72 04 0a 02 10 01"),  # PropertyValue.value as a varint
        h("08 06 72 07 0a 05 08 80 80 80 80 10"),  # index above uint32
        h("ff ff ff ff ff ff ff ff ff ff ff"),
        h("0b"),  # a group
    ]
    for data in cases:
        e = raises(Exception, c.handle, data)
        assert isinstance(e, (ValueError, Refused)), (data, e)
    assert app.calls == []


def test_version_json_and_protocomm_endpoint_names():
    n, s, app, c = setup()
    sec = Sec0()
    v = version_json(sec)
    assert js(v) == {"local_ctrl": {"ver": "v1.0", "sec_ver": 0, "sec_patch_ver": 0}}
    pc = Protocomm(sec, {"esp_local_ctrl/control": c.handle},
                   ("esp_local_ctrl/version", "esp_local_ctrl/session"), v)
    assert pc.request("esp_local_ctrl/version", b"---") == v
    assert not pc.known("proto-ver") and not pc.known("prov-session")
    raises(Refused, pc.request, "esp_local_ctrl/control", get_count())  # no session yet
    pc.request("esp_local_ctrl/session", pb.f_msg(10, pb.f_msg(20, b"")))
    assert pc.request("esp_local_ctrl/control", get_count()) == h("08 01 5a 02 10 02")


def test_fuzz_never_anything_but_a_reply_or_a_handled_error():
    n, s, app, c = setup()
    r = Rand(7)
    # (no read of the config here: building it is slow and the parser is the point)
    seeds = [get_count(), get_vals([2, 1]), get_vals([1], False),
             set_vals([(1, b'{"Switch":{"Power":false}}')]), set_vals([(0, b"{}"), (1, b"{}")])]
    replies = 0
    for i in range(600):
        if i % 3 == 0:
            data = r.bytes(r.next(40))
        else:
            data = mutate(r, seeds[r.next(len(seeds))])
        try:
            out = c.handle(data)
        except (ValueError, Refused):
            continue
        replies += 1
        assert pb.items(out)[0][0] == 1  # every reply starts with its type
    assert replies > 30  # the mutations do not only make garbage


def test_pb_items_keeps_repeated_fields_and_varints_is_bounded():
    data = h("08 01 08 02 12 02 05 06 0d 00 00 00 00 08 03")  # 1, 1, 2:bytes, fixed32 (skipped), 1
    assert pb.items(data) == [(1, 1), (1, 2), (2, b"\x05\x06"), (0, None), (1, 3)]
    assert pb.decode(data) == {1: 3, 2: b"\x05\x06"}  # the last value wins, as before
    raises(ValueError, pb.items, data, 4)
    assert pb.varints(h("01 ac 02 00"), 3) == [1, 300, 0]
    raises(ValueError, pb.varints, h("01 ac 02 00"), 2)
    raises(ValueError, pb.varints, h("01 ac"), 5)  # cut varint
