"""Experiment configs: one YAML file per experiment, validated into dataclasses.

``--set model.cell=lstm`` style overrides are applied before validation, and every error
names the offending field (``model.cel: unknown field``), so a typo never silently falls
back to a default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path

import yaml

from data_prep.config_checks import ConfigError


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` refusing a key given twice in one mapping: PyYAML keeps the
    last one, so two ``training:`` sections would silently lose the first."""

    def construct_mapping(self, node, deep=False):
        first = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if key in first:
                raise ConfigError(f"{key_node.start_mark.name}:{line}: duplicate key {key!r} "
                                  f"(first at line {first[key]})")
            first[key] = line
        return super().construct_mapping(node, deep)


def parse_yaml(text: str, name: str):
    """``text`` parsed as YAML (``name``: the file or option it came from, for errors)."""
    loader = _UniqueKeyLoader(text)
    loader.name = name
    try:
        return loader.get_single_data()
    except yaml.YAMLError as e:
        raise ConfigError(f"{name}: invalid YAML: {e}") from e
    finally:
        loader.dispose()


def load_yaml(path: str | Path, _including: tuple = ()) -> dict:
    """Read a config file. ``base: other.yaml`` (a path relative to this file) starts from
    that file's settings; this file's sections are merged over them, field by field, and
    its ``name`` defaults to its file name (a derived experiment gets its own run)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, not a config file")
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    data = parse_yaml(path.read_text(encoding="utf-8"), str(path))
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config sections at the top level")
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"{path}: base: expected the path of another config file, got {base!r}")
    base_path = path.parent / base
    if base_path.resolve() in _including + (path.resolve(),):
        raise ConfigError(f"{path}: base: {base} includes itself")
    try:
        parent = load_yaml(base_path, _including + (path.resolve(),))
    except ConfigError as e:
        raise ConfigError(f"{path}: base: {e}") from e
    return _merge(parent, {"name": path.stem, **data})


def _merge(base: dict, update: dict) -> dict:
    """``update`` over ``base``: sections are merged recursively, other values replaced."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(merged.get(key), dict) and (value is None or isinstance(value, dict)):
            # An empty section ("training:" alone reads as null) keeps the base's fields.
            merged[key] = _merge(merged[key], value or {})
        else:
            merged[key] = value
    return merged


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply ``key.path=value`` overrides; values are parsed as YAML (``1e-3``, ``[1, 2]``)."""
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value, for example model.cell=lstm")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node = data
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {key}: {part!r} is not a section")
        node[parts[-1]] = parse_yaml(raw, f"--set {key}")
    return data


def _check_type(value, annotation, where: str, hidden=()):
    """Validate (and lightly coerce: int -> float) one value against a type annotation
    (``hidden``: see ``build``)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _check_type(value, option, where, hidden)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item_type,) = typing.get_args(annotation) or (typing.Any,)
        return [_check_type(v, item_type, f"{where}[{i}]", hidden) for i, v in enumerate(value)]
    if dataclasses.is_dataclass(annotation):
        return build(annotation, value, where, hidden)
    if annotation is typing.Any:
        return value
    if annotation is float and not isinstance(value, bool) and isinstance(value, (int, str)):
        # YAML 1.1 reads "1e-3" (no dot) as a string; accept any numeric spelling.
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if annotation is bool and not isinstance(value, bool):
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if annotation is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if not isinstance(value, annotation):
        raise ConfigError(f"{where}: expected {annotation.__name__}, got {value!r}")
    return value


def without_retired_fields(cls, data):
    """``data`` (a mapping for dataclass ``cls``) without the fields that ``cls`` and its
    sections do not have."""
    if not isinstance(data, dict):
        return data
    hints = typing.get_type_hints(cls)
    kept = {}
    for name in {f.name for f in dataclasses.fields(cls)} & set(data):
        section = next((t for t in (hints[name], *typing.get_args(hints[name]))
                        if dataclasses.is_dataclass(t)), None)
        kept[name] = (without_retired_fields(section, data[name]) if section
                      else data[name])
    return kept


def build(cls, data, where: str = "", hidden=()):
    """Build dataclass ``cls`` from a mapping, rejecting unknown fields and wrong types.

    ``hidden``: dotted fields the pipeline sets itself, left out of the known fields an
    error offers; a class lists its own in ``SET_BY_PIPELINE``.
    """
    hidden = getattr(cls, "SET_BY_PIPELINE", hidden)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    prefix = f"{where}." if where else ""
    unknown = sorted(set(data) - names)
    if unknown:
        known = sorted(n for n in names if prefix + n not in hidden)
        raise ConfigError(f"{prefix}{unknown[0]}: unknown field; known fields: {', '.join(known)}")
    kwargs = {}
    for name in (f.name for f in dataclasses.fields(cls) if f.name in data):  # in field order
        kwargs[name] = _check_type(data[name], hints[name], prefix + name, hidden)
    try:
        obj = cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{where or 'config'}: {e}") from e
    if hasattr(obj, "validate"):
        obj.validate(where)
    return obj


def load_config(cls, path, overrides: list[str] | None = None, recorded: bool = False):
    """Read ``path``, apply ``overrides`` and validate into dataclass ``cls``.

    An invalid field is blamed on where its value came from: the ``--set`` that gave
    it (or its section), else the file. ``recorded``: ``path`` is a run's config.yaml,
    which lists every field of the version that wrote it; the fields this version no
    longer has are dropped rather than refused (they no longer do anything).
    """
    overrides = overrides or []
    data = load_yaml(path)
    if recorded:
        data = without_retired_fields(cls, data)
    data = apply_overrides(data, overrides)
    try:
        return build(cls, data)
    except ConfigError as e:
        field = str(e).split(":", 1)[0]
        culprit = next((o for o in reversed(overrides) if _related(field, o.split("=", 1)[0])),
                       None)
        # A check across fields names one of them; the --set may have changed another.
        section = field.rpartition(".")[0]
        neighbour = next((o for o in reversed(overrides)
                          if section and o.split("=", 1)[0].strip().startswith(section + ".")),
                         None)
        source = (f"--set {culprit}" if culprit
                  else f"{path}, with --set {neighbour}" if neighbour else str(path))
        raise ConfigError(f"{e} (from {source})") from None


def _related(field: str, key: str) -> bool:
    """Whether ``field`` and an override's ``key`` name the same field or one holds the other."""
    key = key.strip()
    return field == key or field.startswith(key + ".") or key.startswith(field + ".")
