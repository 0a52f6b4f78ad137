# Test app (deployed as main.py by tests/test_ota_e2e.py): a plug whose
# fw_version the OTA tests change by shipping a new main.py in a bundle.
import rainmaker as rm
from rainmaker import std

node = rm.Node("OTA Plug", "Switch", fw_version="1.0.0")
node.add(std.switch("Plug"))
rm.run(node)
