"""A small synchronous MQTT client over paho for tests: mutual TLS, CONNACK and SUBACK
waited for, received messages queued."""

import json
import queue
import ssl
import threading

import paho.mqtt.client as mqtt

from tools.broker import client_tls_context

WAIT = 3.0
QUIET = 0.6  # how long to wait for something that must NOT arrive


class Client:
    """A small synchronous wrapper around a paho client for tests."""

    def __init__(self, port, ca_crt, crt=None, key=None, client_id=""):
        self.port = port
        self.messages = queue.Queue()
        self._connack = threading.Event()
        self._subacks = {}
        self._sub_event = threading.Condition()
        self.rc = None
        self.paho = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
        self.paho.tls_set_context(client_tls_context(ca_crt, crt, key))
        self.paho.on_connect = self._on_connect
        self.paho.on_message = lambda c, u, m: self.messages.put((m.topic, m.payload))
        self.paho.on_subscribe = self._on_subscribe
        # A TLS-level refusal shows up as a disconnect, never as a CONNACK.
        self.paho.on_disconnect = lambda *args: self._connack.set()

    def _on_connect(self, client, userdata, flags, rc, props):
        self.rc = rc
        self._connack.set()

    def _on_subscribe(self, client, userdata, mid, rcs, props):
        with self._sub_event:
            self._subacks[mid] = [rc.value for rc in rcs]
            self._sub_event.notify_all()

    def connect(self, keepalive=10):
        """True only if the broker answered CONNACK success within WAIT."""
        try:
            self.paho.connect("127.0.0.1", self.port, keepalive=keepalive)
        except (OSError, ssl.SSLError):
            return False
        self.paho.loop_start()
        ok = self._connack.wait(WAIT) and self.rc is not None and not self.rc.is_failure
        return bool(ok)

    def subscribe(self, topic, qos=1):
        _, mid = self.paho.subscribe(topic, qos)
        with self._sub_event:
            assert self._sub_event.wait_for(lambda: mid in self._subacks, WAIT), "no SUBACK"
            return self._subacks[mid]

    def publish(self, topic, payload, qos=1):
        """Publish (a dict or list is sent as JSON) and wait for the broker to take it."""
        if not isinstance(payload, (bytes, str)):
            payload = json.dumps(payload)
        info = self.paho.publish(topic, payload, qos=qos)
        info.wait_for_publish(WAIT)
        return info

    def get(self, timeout=WAIT):
        return self.messages.get(timeout=timeout)

    def drain(self, quiet=QUIET):
        """All messages arriving until nothing came for `quiet` seconds."""
        got = []
        while True:
            try:
                got.append(self.messages.get(timeout=quiet))
            except queue.Empty:
                return got

    def close(self):
        try:
            self.paho.disconnect()
        finally:
            self.paho.loop_stop()
