"""docs/configuration.md and deploy/meterd.example.toml cover every key of the config models.

The key, type and default columns of the reference are derived from the pydantic models
(meterd/config.py, meterd/profiles/__init__.py); only the meanings are hand-written. Print a fresh
skeleton with ``.venv/bin/python tests/test_config_docs.py`` after adding a field.
"""

from __future__ import annotations

import json
import re
import tomllib
import types
from datetime import date
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from meterd.config import Config, load_config

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "configuration.md"
EXAMPLE = REPO / "deploy" / "meterd.example.toml"

SCALARS = {str: "string", int: "integer", float: "float", bool: "boolean", Path: "path",
           date: "date", Any: "any"}


def _model(ann: Any) -> tuple[type[BaseModel] | None, str]:
    """The model nested in a field's annotation and how: ``table``, ``array`` or ``map``."""
    args = [a for a in get_args(ann) if a is not type(None)]
    origin = get_origin(ann)
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann, "table"
    if origin in (Union, types.UnionType) and len(args) == 1:
        return _model(args[0])
    if origin in (list, tuple) and args and _model(args[0])[1] == "table":
        return _model(args[0])[0], "array"
    if origin is dict and _model(args[1])[1] == "table":
        return _model(args[1])[0], "map"
    return None, ""


def sections(model: type[BaseModel] = Config, title: str = "top level",
             prefix: str = "") -> list[tuple[str, type[BaseModel]]]:
    """Every TOML section of the config with its model, in declaration order."""
    out = [(title, model)]
    for key, field in model.model_fields.items():
        sub, how = _model(field.annotation)
        if sub is None:
            continue
        path = f"{prefix}{key}"
        child = {"table": f"[{path}]", "array": f"[[{path}]]", "map": f"[{path}.NAME]"}[how]
        out += sections(sub, child, f"{path}.NAME." if how == "map" else f"{path}.")
    return out


def type_name(ann: Any) -> str:
    origin, args = get_origin(ann), get_args(ann)
    if ann in SCALARS:
        return SCALARS[ann]
    if origin is Literal:
        return " | ".join(json.dumps(a) for a in args)
    if origin in (Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return " or ".join(type_name(a) for a in inner) + (" or unset" if len(inner) < len(args)
                                                           else "")
    sub, how = _model(ann)
    if sub is not None:
        return {"table": "table", "array": "array of tables", "map": "tables by name"}[how]
    if origin is tuple and args and args[-1] is not Ellipsis:
        return "[" + ", ".join(type_name(a) for a in args) + "]"
    if origin in (list, tuple):
        inner = type_name(args[0])
        return "array of tables" if inner == "table of any" else f"array of {inner}"
    if origin is dict:
        return f"table of {type_name(args[1])}"
    raise TypeError(f"no documentation name for {ann!r}")


def default_text(field: Any) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
        return "section defaults" if isinstance(value, BaseModel) else json.dumps(value)
    if field.default is PydanticUndefined:
        return "required"
    if field.default is None:
        return "unset"
    if isinstance(field.default, Path):
        return json.dumps(str(field.default))
    return json.dumps(field.default)


def reference() -> dict[str, dict[str, tuple[str, str]]]:
    """section -> key -> (type, default), as the doc's tables must show them."""
    return {title: {k: (type_name(f.annotation), default_text(f))
                    for k, f in model.model_fields.items()}
            for title, model in sections()}


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def skeleton() -> str:
    out = []
    for title, rows in reference().items():
        out += [f"## {title}", "", "| key | type | default | meaning |", "| --- | --- | --- | --- |"]
        out += [f"| `{k}` | {_cell(t)} | {_cell(d)} | |" for k, (t, d) in rows.items()]
        out.append("")
    return "\n".join(out)


ROW = re.compile(r"^\| `(?P<key>[^`]+)` \| (?P<type>.*?) \| (?P<default>.*?) \| (?P<meaning>.*) \|$")


def documented() -> dict[str, dict[str, tuple[str, str, str]]]:
    """section -> key -> (type, default, meaning) parsed from docs/configuration.md."""
    out: dict[str, dict[str, tuple[str, str, str]]] = {}
    rows: dict[str, tuple[str, str, str]] | None = None
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            rows = out.setdefault(line[3:].strip(), {})
        elif rows is not None and (m := ROW.match(line)):
            unescape = lambda s: s.replace("\\|", "|").strip()  # noqa: E731
            rows[m["key"]] = (unescape(m["type"]), unescape(m["default"]), m["meaning"].strip())
    return out


# ----------------------------------------------------------------------------- the reference


def test_every_section_of_the_models_has_a_table() -> None:
    missing = set(reference()) - set(documented())
    assert not missing, f"docs/configuration.md lacks sections {sorted(missing)}:\n{skeleton()}"


def test_every_model_field_is_documented_with_its_type_and_default() -> None:
    doc = documented()
    for section, rows in reference().items():
        got = doc.get(section, {})
        missing = sorted(set(rows) - set(got))
        assert not missing, f"docs/configuration.md ## {section}: undocumented keys {missing}"
        stale = sorted(set(got) - set(rows))
        assert not stale, f"docs/configuration.md ## {section}: keys not in the model {stale}"
        for key, (typ, default) in rows.items():
            assert got[key][:2] == (typ, default), f"## {section} `{key}`: want {typ} / {default}"
            assert len(got[key][2]) > 10, f"## {section} `{key}`: write what it means"


def test_reference_shape_sees_nested_sections() -> None:
    ref = reference()
    assert ref["[[meters]]"]["kind"][1] == "required"
    assert ref["[profiles.NAME]"]["registers"][0] == "array of tables"
    assert ref["[[profiles.NAME.registers]]"]["order"] == ('"ABCD" | "CDAB" | "BADC" | "DCBA"',
                                                          '"ABCD"')
    assert ref["[influxdb]"]["password_file"] == ("path or unset", "unset")


# ----------------------------------------------------------------------------- the example


def _keys_used(raw: Any, model: type[BaseModel], title: str, seen: dict[str, set[str]]) -> None:
    """Collect which keys of each section the example sets (arrays: over all their items)."""
    items = raw if isinstance(raw, list) else [raw]
    for item in items:
        seen.setdefault(title, set()).update(item)
        for key, field in model.model_fields.items():
            sub, how = _model(field.annotation)
            if sub is None or key not in item:
                continue
            path = title.strip("[]").removeprefix("top level")
            path = f"{path}.{key}" if path else key
            if how == "map":
                for value in item[key].values():
                    _keys_used(value, sub, f"[{path}.NAME]", seen)
            else:
                _keys_used(item[key], sub, f"[[{path}]]" if how == "array" else f"[{path}]", seen)


def test_example_config_loads() -> None:
    cfg = load_config(EXAMPLE)
    assert cfg.site.timezone == "Asia/Shanghai"
    assert cfg.profile_for(cfg.meter("canteen-a-kitchen")).registers[0].order == "CDAB"


def test_example_config_sets_every_key() -> None:
    with EXAMPLE.open("rb") as fh:
        raw = tomllib.load(fh)
    seen: dict[str, set[str]] = {}
    _keys_used(raw, Config, "top level", seen)
    # Owned by the leak, canteen, alert and report features; absent means their defaults.
    feature_sections = {"leaks", "canteens", "alerts", "reports"}
    for section, rows in reference().items():
        want = set(rows) - (feature_sections if section == "top level" else set())
        missing = sorted(want - seen.get(section, set()))
        assert not missing, f"deploy/meterd.example.toml {section}: add {missing}"


def test_every_example_key_is_commented_where_first_used() -> None:
    first: dict[str, str] = {}
    for line in EXAMPLE.read_text(encoding="utf-8").splitlines():
        if m := re.match(r"^([a-z_]+) = ", line):
            first.setdefault(m[1], line)
    bare = [line for line in first.values() if "#" not in line]
    assert not bare, f"explain these in deploy/meterd.example.toml: {bare}"


def test_detection_doc_covers_every_leaks_key() -> None:
    """docs/detection.md's key table names every field of the ``[leaks]`` models."""
    from meterd.leaks.config import LeaksConfig

    rows = [line for line in (REPO / "docs" / "detection.md").read_text(encoding="utf-8")
            .splitlines() if line.startswith("| `")]
    missing = []
    for key, field in LeaksConfig.model_fields.items():
        sub = field.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            in_section = [r for r in rows if r.startswith(f"| `{key}.")]
            missing += [f"{key}.{k}" for k in sub.model_fields
                        if not any(f"`{k}`" in r or f"`{key}.{k}`" in r for r in in_section)]
        elif not any(f"`{key}`" in r for r in rows):
            missing.append(key)
    assert not missing, f"docs/detection.md: document {missing}"


if __name__ == "__main__":
    print(skeleton())
