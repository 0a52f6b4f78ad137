# prov-config, prov-ctrl, prov-scan and cloud_user_assoc handlers
# (docs/provisioning.md#endpoints): exact encodings, validation, the Wi-Fi
# state machine.
from rainmaker.prov import pb
from rainmaker.prov.netconfig import NetConfig, CONNECTED, CONNECTING, DISCONNECTED, FAILED, NOT_FOUND, AUTH_ERROR
from rainmaker.prov.scan import Scan
from rainmaker.prov.assoc import UserAssoc
from rainmaker.prov.errors import Refused
from provclient import get_status, set_config, apply_config
from util import raises, h


def test_credentials_state_machine_and_status_encodings():
    n = NetConfig()
    assert n.config(get_status()) == h("08 01 5a 02 10 02")  # Disconnected
    assert n.config(apply_config()) == h("08 05 7a 02 08 05")  # apply before set: InternalError
    assert n.config(set_config(b"Home", b"secret123")) == h("08 03 6a 00")
    assert n.take() is None
    assert n.config(apply_config()) == h("08 05 7a 00")
    assert n.take() == ("Home", "secret123") and n.take() is None
    assert n.config(get_status()) == h("08 01 5a 04 10 01 5a 00")  # Connecting, empty field 11
    assert n.config(set_config(b"Other", b"x")) == h("08 03 6a 02 08 05")  # busy
    n.attempt_failed(2)
    assert n.config(get_status()) == h("08 01 5a 06 10 01 62 02 08 02")
    n.failed(AUTH_ERROR)
    assert n.config(get_status()) == h("08 01 5a 04 10 03 50 00")  # reason 0 written (oneof)
    n.failed(NOT_FOUND)
    assert n.config(get_status()) == h("08 01 5a 04 10 03 50 01")
    # new credentials are accepted after a failure, with or without prov-ctrl reset
    assert n.config(set_config(b"Home", b"right-pass")) == h("08 03 6a 00")
    assert n.ctrl(h("08 01 5a 00")) == h("08 02 62 00")  # reset: Success
    assert n.state == DISCONNECTED and n.creds is None
    n.config(set_config(b"Home", b"right-pass"))
    n.config(apply_config())
    n.take()
    assert n.ctrl(h("08 01 5a 00")) == h("08 02 10 05 62 00")  # reset while connecting: InternalError
    n.connected("192.168.1.7", 3, "Home", h("020304050607"), 6)
    assert not n.reported
    st = n.config(get_status())
    assert st == h("08 01 5a 21 5a 1f 0a 0b") + b"192.168.1.7" + h("10 03 1a 04") + b"Home" + h("22 06 02 03 04 05 06 07 28 06")
    assert n.reported and n.state == CONNECTED
    assert n.ctrl(h("08 03 6a 00")) == h("08 04 72 00")  # reprov after success
    assert n.reprov and n.state == DISCONNECTED


def test_set_config_validation():
    n = NetConfig()
    assert n.config(set_config(b"", b"pw")) == h("08 03 6a 02 08 04")
    assert n.config(set_config(b"s" * 33, b"pw")) == h("08 03 6a 02 08 04")
    assert n.config(set_config(b"s", b"p" * 64)) == h("08 03 6a 02 08 04")
    assert n.config(set_config(b"s", b"pw", b"\x01" * 5)) == h("08 03 6a 02 08 04")
    assert n.config(set_config(b"\xff\xfe", b"pw")) == h("08 03 6a 02 08 04")
    assert n.config(set_config(b"s" * 32, b"p" * 63, b"\x01" * 6)) == h("08 03 6a 00")
    assert n.creds is not None and n.pending is None  # kept in RAM until applied
    raises(Refused, n.config, h("08 09"))  # unknown message
    raises(ValueError, n.config, h("08 02"))  # set without its payload
    raises(Refused, n.ctrl, h("08 00"))


def _aps(count):
    return [(b"net%d" % i, bytes([2, 0, 0, 0, 0, i]), 1 + i % 11, -90 + i, i % 5, False) for i in range(count)]


def test_scan_sorts_caps_and_bounds_results():
    s = Scan(lambda: _aps(20) + [(b"bad-bssid", b"\x01", 1, -1, 0, False)])
    assert s.handle(h("08 02 62 00")) == h("08 03 6a 00")  # nothing scanned yet
    raises(Refused, s.handle, h("08 04 72 04 08 00 10 01"))
    assert s.handle(h("52 00")) == h("08 01 5a 00")  # start (blocking or not): done when answered
    assert s.handle(h("08 02 62 00")) == h("08 03 6a 04 08 01 10 10")  # finished, 16 results
    raw = pb.get_bytes(pb.decode(s.handle(h("08 04 72 04 08 00 10 02"))), 15)
    assert raw[0] == 0x0A  # repeated entries, field 1
    first = pb.decode(raw[2:2 + raw[1]])
    assert pb.get_bytes(pb.decode(raw[2 + raw[1] + 2:]), 1) == b"net18"
    assert pb.get_bytes(first, 1) == b"net19" and pb.get_int(first, 3, 2 ** 64) == 2 ** 64 - 71
    assert pb.get_bytes(first, 4) == bytes([2, 0, 0, 0, 0, 19]) and pb.get_int(first, 2) == 9
    raises(Refused, s.handle, h("08 04 72 04 08 0f 10 02"))  # past the 16 entries
    raises(ValueError, s.handle, h("08 04"))  # result without its payload


def test_scan_radio_error_is_a_status():
    def broken():
        raise OSError(5)

    s = Scan(broken)
    assert s.handle(h("52 00")) == h("08 01 10 05 5a 00")


def test_user_assoc_spec_example_and_invalid_input():
    a = UserAssoc("N1")
    assert a.handle(h("52 08 0a 02 75 31 12 02 73 31")) == h("08 01 5a 04 12 02 4e 31")
    assert a.mapping == ("u1", "s1")
    b = UserAssoc("N1")
    assert b.handle(h("52 04 0a 02 75 31")) == h("08 01 5a 02 08 01")  # no secret: InvalidParam
    assert b.handle(h("52 02 12 00")) == h("08 01 5a 02 08 01")
    assert b.handle(h("52 05 0a 03 ff fe fd")) == h("08 01 5a 02 08 01")  # not UTF-8
    assert b.handle(h("08 00")) == h("08 01 5a 02 08 01")  # command without payload
    assert b.handle(h("08 01")) == b""  # other message types: empty answer
    assert b.mapping is None
    raises(ValueError, b.handle, h("52 ff"))
