# Test app (deployed as main.py by tests/test_e2e.py): runtime reconfiguration.
# Writing {"Features":{"Fan":true}} adds a Fan device while the node runs;
# false removes it. The agent must republish the config and the params.
import rainmaker as rm
from rainmaker import std


def on_features(device, values, source):
    if "Fan" in values:
        has = node.device("Fan") is not None
        if values["Fan"] and not has:
            node.add(std.fan("Fan", fan_speed=2))
        elif not values["Fan"] and has:
            node.remove("Fan")


node = rm.Node("Reconfig", "Test", fw_version="2.0.0")
features = rm.Device("Features", "esp.device.other", on_features)
features.add(rm.Param("Fan", False, "bool", "esp.param.toggle", rm.READ | rm.WRITE, ui_type="esp.ui.toggle"))
node.add(features)
rm.run(node)
