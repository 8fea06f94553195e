"""Config validation: every error names the key, the meter id and what was expected."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from meterd.config import ConfigError, load_config, parse_config
from meterd.leaks.config import leaks_config, parse_leaks
from meterd.secrets import read_secret

BASE = """
[site]
timezone = "Asia/Shanghai"
[[links]]
name = "gw-north"
url = "tcp://127.0.0.1:502"
"""


def _load(tmp_path: Path, body: str):
    p = tmp_path / "meterd.toml"
    p.write_text(BASE + textwrap.dedent(body))
    return load_config(p)


def _error(tmp_path: Path, body: str) -> str:
    with pytest.raises(ConfigError) as exc:
        _load(tmp_path, body)
    return str(exc.value)


def test_valid_modbus_and_mqtt_meters(tmp_path):
    cfg = _load(tmp_path, """
        [mqtt]
        url = "mqtt://127.0.0.1:1883"
        [[meters]]
        id = "north-main-elec"
        kind = "electricity"
        campus = "north"
        building = "substation"
        link = "gw-north"
        unit_id = 1
        profile = "eastron-sdm630"
        [[meters]]
        id = "north-canteen1-elec"
        kind = "electricity"
        campus = "north"
        building = "canteen-1"
        canteen = "canteen-1"
        parent = "north-main-elec"
        link = "gw-north"
        unit_id = 3
        profile = "chint-dtsu666"
        function = 4
        [[meters]]
        id = "north-water-main"
        kind = "water"
        mqtt_topic = "campus/north/water/main"
    """)
    canteen = cfg.meter("north-canteen1-elec")
    assert canteen.tags == {"meter": "north-canteen1-elec", "campus": "north",
                            "building": "canteen-1", "canteen": "canteen-1"}
    assert cfg.profile_for(canteen).function == 4
    assert cfg.all_profiles()["chint-dtsu666"].function == 3  # the override is per meter only


def test_error_names_meter_key_and_expectation(tmp_path):
    msg = _error(tmp_path, """
        [[meters]]
        id = "dorm-7-elec"
        kind = "electricity"
        link = "gw-north"
        unit_id = 300
        profile = "eastron-sdm120"
    """)
    assert "meters[id=dorm-7-elec].unit_id" in msg and "247" in msg and "300" in msg


@pytest.mark.parametrize(("body", "expected"), [
    ('[[meters]]\nid = "m1"\nkind = "steam"\nmqtt_topic = "t"\n', "meters[id=m1].kind"),
    ('[[meters]]\nid = "m1"\nkind = "water"\nlink = "nope"\nunit_id = 1\nprofile = "eastron-sdm120"\n',
     "meters[id=m1].link: no [[links]] named 'nope'"),
    ('[[meters]]\nid = "m1"\nkind = "water"\nlink = "gw-north"\nunit_id = 1\nprofile = "acme"\n',
     "meters[id=m1].profile: unknown profile 'acme'"),
    ('[[meters]]\nid = "m1"\nkind = "water"\nmqtt_topic = "t"\n',
     "meters[id=m1].mqtt_topic: needs an [mqtt]"),
    ('[[meters]]\nid = "m1"\nkind = "water"\n', "meters[id=m1]: set either 'link'"),
    ('[[meters]]\nid = "m1"\nkind = "water"\nmqtt_topic = "t"\nparent = "zz"\n[mqtt]\n',
     "meters[id=m1].parent: no meter with id 'zz'"),
    ('[[meters]]\nid = "m1"\nkind = "water"\nlink = "gw-north"\nunit_id = 1\nprofile = "eastron-sdm120"\n',
     "meters[id=m1].profile: 'eastron-sdm120' reads ['current_l1_a'"),
    ('[influxdb]\napi = "v2"\n', "influxdb: api = 'v2' needs both 'org' and 'bucket'"),
    ('[influxdb]\nurl = "ftp://x"\n', "influxdb.url: expected an http:// or https:// URL"),
    ('[influxdb]\npasword_file = "x"\n', "influxdb.pasword_file"),
    ('[[links]]\nname = "gw2"\nurl = "udp://x:1"\n', "links[name=gw2].url: expected tcp://"),
    ('[[links]]\nname = "gw-north"\nurl = "tcp://x:1"\n', "links: duplicate name 'gw-north'"),
])
def test_errors_name_the_key(tmp_path, body, expected):
    assert expected in _error(tmp_path, body)


def test_user_profile_in_config(tmp_path):
    cfg = _load(tmp_path, """
        [profiles.acme-flow]
        function = 3
        registers = [
          { field = "volume_m3", address = 100, type = "uint32", order = "CDAB", scale = 0.001 },
          { field = "flow_m3h", address = 102, type = "int16", scale = 0.01, offset = 0.0 },
        ]
        [[meters]]
        id = "w1"
        kind = "water"
        link = "gw-north"
        unit_id = 9
        profile = "acme-flow"
    """)
    prof = cfg.profile_for(cfg.meter("w1"))
    assert [r.field for r in prof.registers] == ["volume_m3", "flow_m3h"]
    assert prof.registers[0].order == "CDAB" and prof.registers[0].width == 2


def test_bad_register_type_named(tmp_path):
    msg = _error(tmp_path, """
        [profiles.bad]
        function = 3
        registers = [{ field = "volume_m3", address = 1, type = "float16" }]
    """)
    assert "profiles.bad.registers[0].type" in msg and "float32" in msg


def test_missing_file_and_bad_toml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")
    (tmp_path / "bad.toml").write_text("[site\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(tmp_path / "bad.toml")


def test_secret_from_file_or_env_never_inline(tmp_path, monkeypatch):
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    assert read_secret(secret, "METERD_TEST_PW") == "s3cret"
    monkeypatch.setenv("METERD_TEST_PW", "from-env")
    assert read_secret(None, "METERD_TEST_PW") == "from-env"
    msg = _error(tmp_path, '[influxdb]\npassword = "s3cret"\n')
    assert "influxdb.password" in msg and "s3cret" not in msg


def test_bad_timezone(tmp_path):
    with pytest.raises(ConfigError, match=r"site\.timezone: expected an IANA time zone"):
        parse_config({"site": {"timezone": "Mars/Olympus"}})


def test_leak_rules_switch_off_with_false_and_bad_values_are_named():
    s = parse_leaks({"night": {"cusum_h": False, "strong_factor": False, "day_scaling": False,
                               "mad_efficiency": False}})
    assert s.night.cusum_h is None and s.night.strong_factor is None and not s.night.day_scaling
    assert s.night.mad_efficiency is None
    with pytest.raises(ConfigError, match=r"leaks\.night\.scaling_days"):
        parse_leaks({"night": {"scaling_days": 7}})
    with pytest.raises(ConfigError, match=r"leaks\.night\.mad_efficiency"):
        parse_leaks({"night": {"mad_efficiency": 1.5}})
    s = parse_leaks({"steps": {"spread_days": False}})
    assert s.steps.spread_days is None and parse_leaks({}).steps.spread_days == 10.0
    with pytest.raises(ConfigError, match=r"leaks\.steps\.spread_days"):
        parse_leaks({"steps": {"spread_days": 1}})
    with pytest.raises(ConfigError, match=r"leaks\.steps\.spread_days"):
        parse_leaks({"steps": {"spread_days": True}})
    with pytest.raises(ConfigError, match=r"mad_efficiency: .*expected a number, or false"):
        parse_leaks({"night": {"mad_efficiency": True}})


def test_leak_rules_named_meters_and_buildings_must_exist():
    """A typo in ``reverse.meters`` or ``out_of_hours.buildings`` would leave that rule
    watching nothing: the error names the key and the unknown names."""
    cfg = parse_config({
        "mqtt": {"url": "mqtt://127.0.0.1:1883"},
        "meters": [{"id": "fs1", "kind": "water", "mqtt_topic": "m/fs1", "building": "lib"}],
        "leaks": {"reverse": {"enabled": True, "meters": ["fs1"]},
                  "out_of_hours": {"buildings": ["lib"]}}})
    assert leaks_config(cfg).reverse.meters == ["fs1"]
    bad = cfg.model_copy(update={"leaks": {"reverse": {"meters": ["fs1", "fs9", "fs0"]}}})
    with pytest.raises(ConfigError, match=r"leaks\.reverse\.meters: not a water meter: 'fs0', 'fs9'"):
        leaks_config(bad)
    bad = cfg.model_copy(update={"leaks": {"out_of_hours": {"buildings": ["libary"]}}})
    with pytest.raises(ConfigError, match=r"out_of_hours\.buildings: not a building .*'libary'"):
        leaks_config(bad)
