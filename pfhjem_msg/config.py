"""One TOML file → typed settings. Every problem is collected and reported at once, each
naming the key, so an operator fixes the file in one pass.

Relative paths resolve against the directory of the config file. Secrets (SMTP passwords)
may be given as ``env:NAME`` and are read from the environment.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pfhjem_msg.errors import ConfigError
from pfhjem_msg.kith.apprec import AppRecPolicy
from pfhjem_msg.kith.parse import Limits
from pfhjem_msg.kith.signature import SigningKey

DEFAULT_PATHS = ("/etc/pfhjem-msg/config.toml",)


@dataclass
class KithSettings:
    schemas: Path | None = None
    """A directory of XSD files (e.g. the official set); None = the product's own."""
    limits: Limits = field(default_factory=Limits)
    trust_anchors: Path | None = None
    signing: SigningKey | None = None


@dataclass
class Settings:
    path: Path
    kith: KithSettings = field(default_factory=KithSettings)
    apprec: AppRecPolicy = field(default_factory=AppRecPolicy)
    state_dir: Path = Path("var")
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    """The whole parsed file, for sections that later parts of the product read."""


class _Problems:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.items: list[str] = []

    def add(self, key: str, message: str) -> None:
        self.items.append(f"{key}: {message}")

    def raise_if_any(self) -> None:
        if self.items:
            listing = "\n  ".join(self.items)
            raise ConfigError(f"configuration {self.path} has {len(self.items)} problem(s):\n  {listing}")


def resolve_env(value: str) -> str | None:
    """``env:NAME`` → the environment variable NAME (None if unset); anything else as is."""
    if value.startswith("env:"):
        return os.environ.get(value[4:])
    return value


def _path(base: Path, value: Any, key: str, problems: _Problems, must_exist: bool = False) -> Path | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        problems.add(key, "must be a path (a non-empty string)")
        return None
    path = Path(value)
    if not path.is_absolute():
        path = base / path
    if must_exist and not path.exists():
        problems.add(key, f"{path} does not exist")
    return path


def _int(section: dict[str, Any], key: str, default: int, problems: _Problems, prefix: str) -> int:
    value = section.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        problems.add(f"{prefix}.{key}", "must be a positive whole number")
        return default
    return value


def find_config(explicit: str | None) -> Path:
    """--config, then $PFHJEM_MSG_CONFIG, then the system path."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("PFHJEM_MSG_CONFIG")
    if env:
        return Path(env)
    for candidate in DEFAULT_PATHS:
        if Path(candidate).exists():
            return Path(candidate)
    raise ConfigError("no configuration given: use --config FILE or set PFHJEM_MSG_CONFIG")


def load(path: Path) -> Settings:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read configuration {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"configuration {path} is not valid TOML: {exc}") from exc
    base = path.resolve().parent
    problems = _Problems(path)
    settings = Settings(path=path, raw=raw)

    kith = raw.get("kith", {})
    if not isinstance(kith, dict):
        problems.add("kith", "must be a table")
        kith = {}
    settings.kith.schemas = _path(base, kith.get("schemas"), "kith.schemas", problems, must_exist=True)
    settings.kith.trust_anchors = _path(
        base, kith.get("trust_anchors"), "kith.trust_anchors", problems, must_exist=True
    )
    settings.kith.limits = Limits(
        max_bytes=_int(kith, "max_bytes", Limits.max_bytes, problems, "kith"),
        max_depth=_int(kith, "max_depth", Limits.max_depth, problems, "kith"),
    )
    signing = raw.get("signing")
    if isinstance(signing, dict):
        key = _path(base, signing.get("key"), "signing.key", problems, must_exist=True)
        cert = _path(base, signing.get("cert"), "signing.cert", problems, must_exist=True)
        if key is None or cert is None:
            problems.add("signing", "needs both key and cert")
        elif key.exists() and cert.exists():
            settings.kith.signing = SigningKey.from_files(key, cert)

    apprec = raw.get("apprec", {})
    if not isinstance(apprec, dict):
        problems.add("apprec", "must be a table")
        apprec = {}
    reject = apprec.get("reject_schema_errors", False)
    if not isinstance(reject, bool):
        problems.add("apprec.reject_schema_errors", "must be true or false")
        reject = False
    unknown = apprec.get("unknown_receiver", "apprec_e21")
    if unknown not in ("apprec_e21", "hold"):
        problems.add("apprec.unknown_receiver", 'must be "apprec_e21" or "hold"')
        unknown = "apprec_e21"
    known: set[str] = set()
    for i, m in enumerate(raw.get("municipality", []) or []):
        ids = m.get("her_ids", []) if isinstance(m, dict) else None
        if not isinstance(ids, list) or not all(isinstance(x, str) for x in ids):
            problems.add(f"municipality[{i}].her_ids", "must be a list of strings")
            continue
        known.update(ids)
    settings.apprec = AppRecPolicy(
        reject_schema_errors=reject,
        known_her_ids=frozenset(known) if known else None,
        unknown_receiver=unknown,
    )
    state = raw.get("state_dir", "../var")
    settings.state_dir = _path(base, state, "state_dir", problems) or base / "var"
    problems.raise_if_any()
    return settings
