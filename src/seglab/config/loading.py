"""YAML loading, `--set` overrides, the resolved dump and the differences between two configs."""
from __future__ import annotations

import copy
import math
import os
from pathlib import Path
from typing import Any, Optional, Union

import yaml
from pydantic import BaseModel, ValidationError

from ..errors import ConfigError
from .schema import Config


def _format_error(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    # Pydantic puts union branch names and tags into loc; keep only the user's keys.
    loc = [str(p) for p in first["loc"] if not (isinstance(p, str) and ("[" in p or p.startswith("function-")))]
    path = ".".join(loc) or "(top level)"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key"
        parent = _schema_at(loc[:-1])
        if parent is not None:
            msg += f"; allowed: {', '.join(parent.model_fields)}"
    elif first["type"] == "literal_error":
        msg = "bad value " + repr(first.get("input")) + "; " + msg.lower()
    elif "input" in first and first["type"] not in ("missing",) and not isinstance(first["input"], dict):
        msg = f"{msg} (got {first['input']!r})"
    more = len(err.errors()) - 1
    tail = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    msg = msg.removeprefix("Value error, ")
    return f"{source}: {path}: {msg}{tail}" if loc else f"{source}: {msg}{tail}"


def _schema_at(path: list[str]):
    cls: Any = Config
    for key in path:
        field = cls.model_fields.get(key)
        if field is None:
            return None
        ann = field.annotation
        args = [a for a in getattr(ann, "__args__", ()) if isinstance(a, type) and issubclass(a, BaseModel)]
        cls = args[0] if args else ann
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)):
            return None
    return cls


class DuplicateKeyError(yaml.YAMLError):
    """A mapping that gives one key twice (YAML keeps the last one silently)."""

    def __init__(self, key: Any, first: int, second: int) -> None:
        super().__init__(f"key {key!r} is given twice (lines {first} and {second}); keep one of them")


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load that refuses a key given twice in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)  # type: ignore[no-untyped-call]
            line = key_node.start_mark.line + 1
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise DuplicateKeyError(key, seen[key], line)
            seen.setdefault(key, line)
        return super().construct_mapping(node, deep=deep)


def read_yaml(text: str) -> Any:
    """YAML text -> Python values, as yaml.safe_load, refusing duplicate keys (DuplicateKeyError)."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


def parse_override(text: str) -> tuple[list[str], Any]:
    """'train.epochs=5' -> (['train', 'epochs'], 5); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. train.epochs=5")
    key, _, raw = text.partition("=")
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {text!r}: expected a dotted key such as train.epochs")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def changed_config(cfg: Config, changes: dict[str, Any], source: str) -> Config:
    """A validated copy of the read-only `cfg` with dotted `changes` (e.g. {"output.name": "trial_0001"}).
    augment.mean / std that the config filled in itself (not given) stay unfilled in the copy, so they are
    decided again for its settings: a pretrained encoder's own normalisation (engine/parts) is not taken
    for one the user gave."""
    raw = cfg.to_dict()
    for key in ("mean", "std"):
        if key not in cfg.augment.model_fields_set:
            raw["augment"].pop(key, None)
    for key, value in changes.items():
        set_dotted(raw, key.split("."), value, f"{source}: {key}")
    return config_from_dict(raw, source)


def set_dotted(raw: dict[str, Any], keys: list[str], value: Any, where: str) -> None:
    """raw[k1][k2]... = value, creating sections on the way; `where` names the setting in the error."""
    node = raw
    for i, k in enumerate(keys[:-1]):
        nxt = node.get(k)
        if nxt is None:
            nxt = node[k] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"{where}: {'.'.join(keys[: i + 1])} is not a config section")
        node = nxt
    node[keys[-1]] = value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """`--set KEY=VALUE` overrides applied to a raw config dict (a new dict; YAML-parsed values)."""
    for text in overrides:
        keys, value = parse_override(text)
        old = raw.get(keys[0]) if len(keys) == 1 else None
        switch = isinstance(value, dict) and "name" in value and isinstance(old, dict) and value["name"] != old.get("name")
        if isinstance(value, dict) and isinstance(old, dict) and set(old) - set(value) and not switch:
            # a whole section given as a mapping would silently drop the config's other settings in it (unless
            # it names another model, loss, ...: the old one's options would not apply to it)
            lost = sorted(set(old) - set(value))
            dotted = " ".join(f"--set {keys[0]}.{k}={yaml_inline(v)}" for k, v in value.items()) or f"--set {keys[0]}.KEY=VALUE"
            raise ConfigError(f"--set {text}: a mapping would replace the whole {keys[0]} section, dropping its "
                              f"{', '.join(lost[:4])}{' ...' if len(lost) > 4 else ''}; set options one by one: {dotted}")
        set_dotted(raw, keys, value, f"--set {text}")
    return raw


def config_from_dict(raw: dict[str, Any], source: str = "config", overrides: Optional[list[str]] = None) -> Config:
    """A validated Config from a raw dict plus overrides; ConfigError names `source` and the key."""
    raw = apply_overrides(copy.deepcopy(raw), overrides or [])  # the caller's nested sections stay as they were
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_error(err, source)) from None
    keys = {o.split("=", 1)[0].strip() for o in overrides or []}
    if "train.epochs" in keys and "train.time_budget" not in keys and cfg.train.time_budget is not None:
        # A budgeted run plans its own length: the override would be silently ignored.
        raise ConfigError(f"{source}: --set train.epochs has no effect while train.time_budget is "
                          f"{cfg.train.time_budget}; add --set train.time_budget=null to train a fixed number of epochs")
    return cfg


def load_config(path: Union[str, os.PathLike], overrides: Optional[list[str]] = None) -> Config:
    """Read a YAML experiment file, apply `--set` overrides and validate."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    try:
        raw = read_yaml(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}); "
                          "save the config as UTF-8") from None
    except DuplicateKeyError as exc:
        raise ConfigError(f"{p}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{p}: not valid YAML{where}") from None
    if raw is None:
        raise ConfigError(f"{p}: the config is empty; start from one in configs/ (or `seglab demo` for the built-in data)")
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: expected a mapping of sections (data, model, train, ...)")
    if "data" not in raw:
        raise ConfigError(f"{p}: no data: section (which images and masks to train on); "
                          "write data: {kind: synthetic} to mean the built-in shapes")
    return config_from_dict(raw, str(p), overrides)


def config_differences(a: Config, b: Config, limit: int = 3, sections: Optional[tuple[str, ...]] = None) -> str:
    """The settings where two configs differ, e.g. "model.base_channels (32 vs 16)"; "" when they are the
    same run (where a run folder is, output.*, and where its data is, data.root, are not compared: a moved
    run or moved data is the same run). `sections` limits it to some, e.g. ("data",)."""
    def flat(d: Any, prefix: str = "") -> dict[str, Any]:
        if isinstance(d, dict):
            out: dict[str, Any] = {}
            for k, v in d.items():
                out.update(flat(v, f"{prefix}{k}."))
            return out
        return {prefix[:-1]: d}

    def same(x: Any, y: Any) -> bool:  # data.nodata: .nan is one setting, though NaN != NaN
        return x == y or (isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y))

    fa, fb = flat(a.to_dict()), flat(b.to_dict())
    keys = [k for k in dict.fromkeys([*fa, *fb]) if not k.startswith("output.") and k != "data.root"
            and not same(fa.get(k), fb.get(k)) and (sections is None or k.split(".")[0] in sections)]
    shown = ", ".join(f"{k} ({fa.get(k)!r} vs {fb.get(k)!r})" for k in keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def dump_config(cfg: Config) -> str:
    """The resolved config as YAML, without the data settings that do not apply to its data.kind (a
    folder dataset has no `synthetic:` block); loading it back gives the same config."""
    d = cfg.to_dict()
    data = d["data"]
    if data["kind"] != "synthetic":
        data.pop("synthetic")
    if data["kind"] != "merged":
        data.pop("sources")
        data.pop("balance_sources")
    return yaml.safe_dump(d, sort_keys=False)


def yaml_inline(value: Any) -> str:
    """`value` as one line of YAML (flow style), as a config file or an override would write it."""
    return yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("...").strip()
