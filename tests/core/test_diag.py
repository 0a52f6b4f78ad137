# Failures named by their cause (rainmaker.diag), with the values MicroPython
# really raises: OSError(code) with no text, mbedTLS codes below zero, and
# ValueError carrying mbedTLS's verification text.
import errno
from rainmaker import diag
from rainmaker.mqtt import MQTTError

CFG = {"mqtt_host": "10.0.0.5", "mqtt_port": 8883, "server_hostname": "broker.lan"}


def explain(e, state="connecting"):
    return diag.explain(e, state, CFG)


def test_tls_verification_texts_name_the_fix():
    tag, text = explain(ValueError("\nThe certificate Common Name (CN) does not match with the expected CN\n"))
    assert tag == "tls" and "not for 'broker.lan'" in text and "server_hostname" in text
    assert "expired" in explain(ValueError("The certificate validity has expired"))[1]
    assert "clock" in explain(ValueError("The certificate validity starts in the future"))[1]
    text = explain(ValueError("The certificate is not correctly signed by the trusted CA"))[1]
    assert "certs/ca.der" in text


def test_the_broker_refusing_our_certificate_is_named():
    for code in (32, errno.ECONNRESET):  # EPIPE (absent from MicroPython's errno), ECONNRESET
        tag, text = explain(OSError(code))
        assert tag == "tls" and "certs/node.crt.der" in text, code
    assert "certs/node.crt.der" in explain(OSError(-0x7780))[1]
    assert "certs/node.crt.der" in explain(OSError("connection closed by broker"))[1]
    # once online, a reset is only a reset
    assert explain(OSError(errno.ECONNRESET), "online") == ("mqtt", "online: ECONNRESET")


def test_network_failures_name_the_broker_address():
    assert "nothing accepts connections at 10.0.0.5:8883" in explain(OSError(errno.ECONNREFUSED))[1]
    assert "no answer from 10.0.0.5:8883" in explain(OSError(errno.ETIMEDOUT))[1]
    assert explain(OSError(-0x1234))[1] == "TLS error -0x1234 while connecting"


def test_memory_and_protocol_errors_and_the_unexpected():
    assert "out of memory while subscribing" in explain(MemoryError(), "subscribing")[1]
    assert explain(MQTTError("no SUBACK"))[1] == "no SUBACK"
    assert explain(KeyError("x")) == (None, None)  # the caller prints its traceback
    assert explain(ValueError("bad"), "online") == (None, None)
    assert diag.why(OSError(32)) == "EPIPE" and diag.why(OSError(errno.ECONNREFUSED)) == "ECONNREFUSED"
