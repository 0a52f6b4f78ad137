# Node model and node config JSON (docs/protocol.md#node-config): field names, types, key order.
from rainmaker import Node, Device, Param, READ, WRITE, PERSIST, TIME_SERIES
from rainmaker import std
from rainmaker.node import encode
from util import raises, js

# The Switch device as the SDK's helpers build it (docs/protocol.md#standard-types), byte for byte.
SPEC_SWITCH = (
    '{"name":"Switch","type":"esp.device.switch","primary":"Power","params":['
    '{"name":"Name","type":"esp.param.name","data_type":"string","properties":["read","write"]},'
    '{"name":"Power","type":"esp.param.power","data_type":"bool","properties":["read","write"],'
    '"ui_type":"esp.ui.toggle"}]}'
)


def example():
    n = Node("Example Light", "Lightbulb", fw_version="1.0.0", model="rm-example", platform="esp32")
    n.node_id = "N1"
    n.add(std.lightbulb("Light"))
    n.add(std.temperature_sensor("Temperature", 21.5))
    return n


def test_switch_matches_spec_example_exactly():
    assert std.switch("Switch").config() == SPEC_SWITCH


def test_node_config_top_level_order_and_fields():
    cfg = example().config()
    assert cfg.startswith('{"node_id":"N1","config_version":"2020-03-20","info":{"name":"Example Light",'
                          '"fw_version":"1.0.0","type":"Lightbulb","model":"rm-example",'
                          '"project_name":"rm-example","platform":"esp32"},"devices":[')
    d = js(cfg)
    assert d["services"] == []  # emitted empty when there are devices but no services
    assert "attributes" not in d  # present only with at least one attribute
    light, temp = d["devices"]
    assert light["type"] == "esp.device.lightbulb" and light["primary"] == "Power"
    assert [p["name"] for p in light["params"]] == ["Name", "Power", "Brightness", "Hue", "Saturation"]
    b = light["params"][2]
    assert b == {"name": "Brightness", "type": "esp.param.brightness", "data_type": "int",
                 "properties": ["read", "write"], "bounds": {"min": 0, "max": 100, "step": 1},
                 "ui_type": "esp.ui.slider"}
    assert light["params"][3]["bounds"] == {"min": 0, "max": 360, "step": 1}
    assert light["params"][3]["ui_type"] == "esp.ui.hue-slider"
    t = temp["params"][1]
    assert t["data_type"] == "float" and t["properties"] == ["read", "time_series"]
    assert "persist" not in js(cfg)["devices"][0]["params"][0]["properties"]


def test_every_field_has_the_spec_type():
    d = js(example().config())
    for dev in d["devices"] + d["services"]:
        assert isinstance(dev["name"], str) and dev["type"].startswith("esp.")
        for p in dev["params"]:
            assert p["data_type"] in ("bool", "int", "float", "string", "object", "array")
            assert isinstance(p["properties"], list)
            for k in p:
                assert k in ("name", "type", "data_type", "properties", "bounds", "valid_strs", "ui_type")


def test_fan_and_services_and_attributes():
    n = Node("N", "T")
    n.attrs.append(("serial", "42"))
    n.add(std.fan("Fan", fan_speed=3))
    svc = Device("Time", "esp.service.time", service=True)
    svc.add(Param("TZ", "", "string", "esp.param.tz"))
    n.add(svc)
    d = js(n.config())
    assert d["attributes"] == [{"name": "serial", "value": "42"}]
    assert d["devices"][0]["params"][2]["bounds"] == {"min": 0, "max": 5, "step": 1}
    assert d["services"][0]["name"] == "Time"


def test_step_zero_omitted_and_valid_strs_and_array_bounds():
    p = Param("Mode", "eco", valid_strs=["eco", "turbo"], ui_type="esp.ui.dropdown")
    assert js(p.config())["valid_strs"] == ["eco", "turbo"]
    f = Param("Level", 1.5, bounds=(0.0, 10.0))
    assert js(f.config())["bounds"] == {"min": 0.0, "max": 10.0}
    a = Param("Schedules", [], "array", "esp.param.schedules", bounds=(0, 10))
    assert js(a.config())["bounds"] == {"max": 10}


def test_params_json_all_and_subset():
    n = example()
    light = n.device("Light")
    assert js(n.params()) == {
        "Light": {"Name": "Light", "Power": False, "Brightness": 100, "Hue": 0, "Saturation": 100},
        "Temperature": {"Name": "Temperature", "Temperature": 21.5},
    }
    assert n.params({light.param("Power")}) == '{"Light":{"Power":false}}'


def test_float_encoding_like_the_sdk():
    assert encode("float", 25.5) == "25.50000"
    assert encode("float", float("nan")) == "null"
    assert encode("int", 3) == "3"
    assert encode("string", 'a"b') == '"a\\"b"'


def test_param_checks():
    p = std.brightness()
    assert p.check(50) == (None, 50)
    assert p.check(101)[0] == "101 is outside 0..100"
    assert "integer" in p.check(25.5)[0]  # a float never matches an int param
    assert "integer" in p.check(True)[0]  # bool is not an int here, unlike Python
    b = std.power()
    assert b.check(1) == (None, True) and b.check(0) == (None, False)  # as the SDK parser
    assert "true or false" in b.check("on")[0]
    f = std.temperature()
    assert f.check(3) == (None, 3.0)
    assert "number" in f.check("3")[0]
    s = Param("Mode", "a", valid_strs=["a", "b"])
    assert "not one of" in s.check("c")[0]
    assert "outside 32-bit" in Param("I", 0).check(2 ** 31)[0]
    o = Param("O", {})
    assert "object" in o.check([])[0]
    a = Param("A", [], bounds=(0, 2))
    assert "max is 2" in a.check([1, 2, 3])[0]


def test_model_errors_are_clear():
    raises(ValueError, Param, "", 1)
    raises(ValueError, Param, "a.b", 1)
    raises(ValueError, Param, "x", None)  # cannot infer a type
    raises(ValueError, Param, "x", 5, bounds=(0, 3))  # initial value out of bounds
    raises(ValueError, Param, "x", 5, bounds=(3, 0))
    raises(ValueError, Param, "x", "s", bounds=(0, 3))
    raises(ValueError, Param, "x", 1, valid_strs=["a"])
    raises(ValueError, Param, "x", 1.0, props=READ | TIME_SERIES | 8)
    d = std.switch("S")
    raises(ValueError, d.add, std.power())  # duplicate
    n = Node("N", "T")
    n.add(d)
    raises(ValueError, n.add, std.switch("S"))
    e = raises(ValueError, d.update, "Power", "yes")
    assert str(e).startswith("S.Power must be true or false")
    raises(KeyError, d.update, "Nope", 1)
    raises(KeyError, n.remove, "Nope")


def test_update_and_item_access():
    d = std.lightbulb("L")
    d.update("Brightness", 40)
    d["Power"] = True
    assert d["Brightness"] == 40 and d["Power"] is True


def test_config_pieces_join_to_the_config_and_none_is_the_whole():
    # The agent publishes the config from pieces (no block of its whole size);
    # they must join to exactly the config text, whatever the node holds.
    bare = Node("N", "T")
    bare.node_id = "N1"
    lights = example()
    with_svc = example()
    with_svc.add(std.time_service())
    with_svc.attrs.append(("serial", "42"))
    only_svc = Node("N", "T")
    only_svc.node_id = "N1"
    only_svc.add(std.system_service())
    for n in (bare, lights, with_svc, only_svc):
        whole = n.config()
        pieces = n.config(True)
        # bytes, encoded piece by piece: the text of the whole config is never alive twice
        assert all(isinstance(p, bytes) for p in pieces)
        assert b"".join(pieces).decode() == whole
        js(whole)
        if n.devices:
            assert max(len(p) for p in pieces) < len(whole) * 3 // 4
    assert "devices" not in js(bare.config())
    assert js(only_svc.config())["devices"] == [] and len(js(only_svc.config())["services"]) == 1
    assert js(with_svc.config())["attributes"] == [{"name": "serial", "value": "42"}]
