"""Service name, PoP, QR payload and the stored Security 2 secrets (docs/provisioning.md#identity)."""
import json

from rainmaker.prov import srp
from rainmaker.prov.ident import Ident
from rainmaker.prov.sec0 import Sec0
from rainmaker.prov.sec1 import Sec1
from rainmaker.prov.sec2 import Sec2

R = bytes(range(64))


def test_name_pop_and_qr_from_the_factory_random(tmp_path):
    i = Ident({"random": R.hex(), "prov_sec": 1}, str(tmp_path / "prov.json"))
    assert i.name == "PROV_3d3e3f" and i.pop == "00010203"
    assert i.qr() == '{"ver":"v1","name":"PROV_3d3e3f","pop":"00010203","transport":"softap"}'
    assert isinstance(i.security(), Sec1)
    assert not (tmp_path / "prov.json").exists()  # nothing to keep: the bundle has the random
    i0 = Ident({"random": R.hex(), "prov_sec": 0}, str(tmp_path / "prov.json"))
    assert i0.qr() == '{"ver":"v1","name":"PROV_3d3e3f","transport":"softap"}' and isinstance(i0.security(), Sec0)
    bad = Ident({"random": R.hex(), "prov_sec": 7}, str(tmp_path / "prov.json"))
    assert bad.sec == 2  # refused setting: the SDK default


def test_random_is_made_once_and_kept(tmp_path):
    path = str(tmp_path / "prov.json")
    a = Ident({}, path)
    b = Ident({"random": "not hex"}, path)
    assert a.random == b.random and len(a.random) == 64
    assert json.loads((tmp_path / "prov.json").read_text())["random"] == a.random.hex()


def test_sec2_salt_and_verifier_made_once_per_pop(tmp_path):
    path = str(tmp_path / "prov.json")
    i = Ident({"random": R.hex()}, path)
    sec = i.security()
    assert isinstance(sec, Sec2)
    stored = json.loads((tmp_path / "prov.json").read_text())["sec2"]
    salt, ver = bytes.fromhex(stored["salt"]), bytes.fromhex(stored["verifier"])
    assert len(salt) == 16 and salt[0] != 0
    assert ver == srp.verifier(salt, b"wifiprov", b"00010203")
    assert Ident({"random": R.hex()}, path).sec2_secrets() == (salt, ver)  # reused
    other = bytes([9]) + R[1:]
    s2, v2 = Ident({"random": other.hex()}, path).sec2_secrets()  # another PoP: new secrets
    assert s2 != salt and v2 == srp.verifier(s2, b"wifiprov", other[:4].hex().encode())


def test_unload_drops_every_provisioning_module():
    import sys
    import rainmaker
    import rainmaker.prov
    from rainmaker.prov import httpd, protocomm, sec2  # noqa: F401

    saved = {k: v for k, v in sys.modules.items() if k.startswith("rainmaker.prov")}
    try:
        assert "rainmaker.prov.sec2" in saved
        rainmaker.prov.unload()
        assert not [m for m in sys.modules if m.startswith("rainmaker.prov")]
        assert not hasattr(rainmaker, "prov")
    finally:  # other tests hold these modules' classes: put them back
        sys.modules.update(saved)
        rainmaker.prov = saved["rainmaker.prov"]
