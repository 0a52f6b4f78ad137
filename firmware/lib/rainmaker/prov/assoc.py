# cloud_user_assoc (docs/provisioning.md#user-association): the phone hands over
# the user id and a secret; the node answers with its node id and later
# publishes user/mapping on MQTT.
from micropython import const
from . import pb

_INVALID_PARAM = const(1)
_MAX = const(128)  # bytes per field


class UserAssoc:
    def __init__(self, node_id):
        self.node_id = node_id
        self.mapping = None  # (user_id, secret_key)

    def handle(self, plain):
        d = pb.decode(plain)
        if pb.get_int(d, 1) != 0:  # not TypeCmdSetUserMapping
            return b""
        try:
            cmd = pb.get_msg(d, 10)
            user = pb.get_bytes(cmd, 1, 1, _MAX).decode()
            secret = pb.get_bytes(cmd, 2, 1, _MAX).decode()
        except (ValueError, UnicodeError):
            return pb.f_int(1, 1) + pb.f_msg(11, pb.f_int(1, _INVALID_PARAM))
        self.mapping = (user, secret)
        return pb.f_int(1, 1) + pb.f_msg(11, pb.f_bytes(2, self.node_id.encode()))
