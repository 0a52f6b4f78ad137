# The SessionData envelope shared by Security 1 and 2 (docs/provisioning.md#session-messages):
# check the scheme, then route command 0 and command 1 to the scheme.
from . import pb
from .errors import Refused

IDLE = 0
WAIT_CMD1 = 1


def route(sec, data, ver, field):
    """Decode a prov-session request for scheme `ver` (its oneof is `field`)."""
    # Views, not copies, down to the fields the scheme takes (pb.py).
    d = pb.decode(memoryview(data))
    if pb.get_int(d, 2) != ver:
        raise Refused("security scheme mismatch")
    s = pb.get_msg(d, field)
    msg = pb.get_int(s, 1)
    if msg == 0:
        return sec._cmd0(pb.get_msg(s, 20))
    if msg == 2:
        if sec.state != WAIT_CMD1:
            raise Refused("session command 1 out of order")
        return sec._cmd1(pb.get_msg(s, 22))
    raise Refused("unknown security %d message %d" % (ver, msg))
