# Time-series samples (rainmaker.series): batched tsdata, one-by-one
# simple_tsdata, nothing before the clock is set, bounded while offline.
import json
from rainmaker import Node, Device, Param, std, READ, SIMPLE_TS, TIME_SERIES
from rainmaker.series import Series, TSDATA, SIMPLE
from rainmaker.sync import Sync

T0 = 1767225600  # 2026-01-01


class Clock:
    def __init__(self, t=T0):
        self.t = t

    def __call__(self):
        return self.t


def node():
    n = Node("N", "T")
    n.add(std.temperature_sensor("Temp", 20.0))
    d = Device("Meter", "esp.device.other")
    d.add(Param("Watts", 0, "int", "esp.param.power-meter", READ | SIMPLE_TS))
    d.add(Param("Volts", 230.0, "float", "esp.param.voltage", READ | TIME_SERIES))
    n.add(d)
    return n


def test_a_batch_carries_many_samples_in_one_message():
    clock = Clock()
    n = node()
    s = Series(clock, batch=5)
    Sync(n, None, series=s)
    temp = n.device("Temp")
    for i in range(4):
        clock.t += 30
        temp.update("Temperature", 20.5 + i)
    assert s.take(clock.t) is None  # 4 < 5 and young
    clock.t += 30
    temp.update("Temperature", 30.0)
    suffix, payload = s.take(clock.t)
    assert suffix == TSDATA
    body = json.loads(payload)
    assert body["ts_data_version"] == "2021-09-13"
    assert body["ts_data"] == [{
        "name": "Temp.Temperature", "type": "esp.param.temperature", "dt": "float",
        "records": [{"t": T0 + 30 * (i + 1), "v": v} for i, v in enumerate([20.5, 21.5, 22.5, 23.5, 30.0])]}]
    assert s.take(clock.t) is None and not s.samples


def test_an_old_sample_goes_out_without_a_full_batch_and_params_are_grouped():
    clock = Clock()
    n = node()
    s = Series(clock, batch=100, age=300)
    Sync(n, None, series=s)
    n.device("Temp").update("Temperature", 21.0)
    n.device("Meter").update("Volts", 231.0)
    n.device("Temp").update("Temperature", 22.0)
    clock.t += 299
    assert s.take(clock.t) is None
    clock.t += 1
    body = json.loads(s.take(clock.t)[1])
    assert [(d["name"], [r["v"] for r in d["records"]]) for d in body["ts_data"]] == [
        ("Temp.Temperature", [21.0, 22.0]), ("Meter.Volts", [231.0])]


def test_simple_ts_goes_one_by_one_and_first():
    clock = Clock()
    n = node()
    s = Series(clock, batch=100)
    Sync(n, None, series=s)
    n.device("Temp").update("Temperature", 21.0)
    n.device("Meter").update("Watts", 5)
    n.device("Meter").update("Watts", 6)
    suffix, payload = s.take(clock.t)
    assert suffix == SIMPLE
    assert json.loads(payload) == {"name": "Meter.Watts", "type": "esp.param.power-meter", "dt": "int",
                                   "t": T0, "v": 5}
    assert json.loads(s.take(clock.t)[1])["v"] == 6
    assert s.take(clock.t) is None  # the tsdata sample waits for its batch
    assert s.take(clock.t, flush=True)[0] == TSDATA


def test_nothing_is_recorded_before_the_clock_is_set():
    clock = Clock(946684800 + 100)  # an ESP32 that has not been to NTP yet
    n = node()
    s = Series(clock)
    Sync(n, None, series=s)
    n.device("Temp").update("Temperature", 25.0)
    assert s.samples == [] and s.take(clock.t, flush=True) is None


def test_offline_samples_are_bounded_the_oldest_go():
    clock = Clock()
    n = node()
    s = Series(clock, batch=1000, limit=10)
    Sync(n, None, series=s)
    for i in range(25):
        clock.t += 1
        n.device("Temp").update("Temperature", float(i))
    assert len(s.samples) == 10 and s.dropped == 15
    recs = json.loads(s.take(clock.t, flush=True)[1])["ts_data"][0]["records"]
    assert [r["v"] for r in recs] == [float(i) for i in range(15, 25)]


def test_a_big_backlog_is_cut_into_messages_under_the_size_limit():
    clock = Clock()
    n = node()
    s = Series(clock, batch=10, limit=400)
    Sync(n, None, series=s)
    for i in range(300):
        clock.t += 1
        n.device("Temp").update("Temperature", 21.0 + (i % 7))
    total = 0
    while True:
        item = s.take(clock.t, flush=True)
        if item is None:
            break
        assert len(item[1]) <= 3100
        total += len(json.loads(item[1])["ts_data"][0]["records"])
    assert total == 300


def test_a_refused_write_is_not_a_sample():
    clock = Clock()
    n = node()
    s = Series(clock)
    sync = Sync(n, None, series=s)
    sync.remote(b'{"Temp":{"Temperature":1.0}}', 0)  # read-only: refused, re-reported
    assert s.samples == []
