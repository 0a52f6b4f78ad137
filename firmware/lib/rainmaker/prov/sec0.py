# Security 0: no authentication, no encryption (docs/provisioning.md#security-0).
from . import pb
from .errors import Refused


class Sec0:
    version = 0
    patch = 0

    def __init__(self):
        self.established = False

    def reset(self):
        self.established = False

    def idle(self):
        pass

    def handshake(self, data):
        d = pb.decode(data)
        if pb.get_int(d, 2) != 0:
            raise Refused("security scheme mismatch")
        pb.get_msg(d, 10)  # a Sec0Payload must be there
        self.established = True
        # SessionData{sec0{msg=S0_Session_Response, sr{status=Success}}}
        return pb.f_msg(10, pb.f_int(1, 1) + pb.f_msg(21, b""))

    def encrypt(self, data):
        return data

    def decrypt(self, data):
        return data
