# A JSON document in a file, replaced atomically.
#
# The new content goes to "<path>.tmp" first and is renamed over the old file:
# on LittleFS (the ESP32 default) rename is atomic, so a reset or power cut
# during a write leaves either the old or the new document, never half of one.
import json
import os
from . import log


class Store:
    def __init__(self, path):
        self.path = path

    def load(self):
        try:
            with open(self.path) as f:
                data = json.load(f)
        except OSError:
            return {}  # never written yet
        except ValueError as e:
            log.error("store", "%s is corrupt (%s); starting from defaults" % (self.path, e))
            return {}
        if not isinstance(data, dict):
            log.error("store", "%s does not hold an object; starting from defaults" % self.path)
            return {}
        return data

    def save(self, data):
        tmp = self.path + ".tmp"
        try:
            with open(tmp, "w") as f:
                json.dump(data, f)
            os.rename(tmp, self.path)
        except OSError as e:
            # Filesystem full or failing: keep the old file, say so, go on.
            log.error("store", "could not write %s: %s" % (self.path, e))
            try:
                os.remove(tmp)
            except OSError:
                pass
            return False
        return True
