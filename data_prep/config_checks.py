"""Field checks for config dataclasses, and the error they raise.

Every config dataclass (in ``models``, ``data_prep`` and ``pipelines``) validates its
own fields with these, so the rules sit beside the fields. Here, in the bottom layer,
because ``models`` and ``data_prep`` may not import ``pipelines``.
"""

from __future__ import annotations

from dataclasses import asdict


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the field."""


def choice(value, options, where: str):
    """Raise ConfigError unless ``value`` is one of ``options``."""
    if value not in options:
        raise ConfigError(f"{where}: must be one of {list(options)}, got {value!r}")


def at_least(section, where: str, minimum, *names: str) -> None:
    """Raise ConfigError unless each field ``names`` of ``section`` is None or >= minimum."""
    for name in names:
        value = getattr(section, name)
        if value is not None and value < minimum:
            raise ConfigError(f"{where}.{name}: must be at least {minimum}, got {value!r}")


def positive(section, where: str, *names: str) -> None:
    """Raise ConfigError unless each field ``names`` of ``section`` is None or > 0."""
    for name in names:
        value = getattr(section, name)
        if value is not None and not value > 0:
            raise ConfigError(f"{where}.{name}: must be positive, got {value!r}")


def fraction(value, where: str) -> None:
    """Raise ConfigError unless 0 <= value < 1 (dropout rates, label smoothing)."""
    if not 0.0 <= value < 1.0:
        raise ConfigError(f"{where}: must be in [0, 1), got {value!r}")


def run_name(value: str, where: str) -> None:
    """Raise ConfigError unless ``value`` names a folder of ``runs/``: not empty, not
    ``.`` or ``..``, no path separator (the run directory is ``runs/<name>``)."""
    if value.strip() in ("", ".", "..") or "/" in value or "\\" in value or "\0" in value:
        raise ConfigError(f"{where}: must name a folder of runs/ (not empty, '.' or '..', "
                          f"no '/' or '\\'), got {value!r}")


def signature_without(section, later: tuple[str, ...]) -> dict:
    """``section``'s fields as a dict for a stage fingerprint, leaving out each field of
    ``later`` that has its default value: fields added after runs were made change no
    fingerprint of those runs until a config sets them."""
    defaults = asdict(type(section)())
    return {k: v for k, v in asdict(section).items() if k not in later or v != defaults[k]}
