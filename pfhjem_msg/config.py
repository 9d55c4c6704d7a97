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
from typing import Any, Literal, cast

from pfhjem_msg.errors import ConfigError
from pfhjem_msg.kith.apprec import AppRecPolicy
from pfhjem_msg.kith.parse import Limits
from pfhjem_msg.kith.signature import SenderTrust, SigningKey
from pfhjem_msg.pathway import MatcherConfig
from pfhjem_msg.retry import RetryPolicy
from pfhjem_msg.transport.smtp import SmtpSettings

DEFAULT_PATHS = ("/etc/pfhjem-msg/config.toml",)


@dataclass
class KithSettings:
    schemas: Path | None = None
    """A directory of XSD files (e.g. the official set); None = the product's own."""
    limits: Limits = field(default_factory=Limits)
    trust_anchors: Path | None = None
    signing: SigningKey | None = None
    crl_dir: Path | None = None
    """Certificate revocation lists (DER or PEM) that operations refresh; no network is used."""
    require_signature: bool = False
    """Reject unsigned messages (a sender's own setting in ``senders`` takes precedence)."""
    senders: dict[str, SenderTrust] = field(default_factory=dict)
    """Per sender HER-id: its organisation number and its own signature requirement."""


Transport = Literal["dir", "smtp", "hub"]


@dataclass(frozen=True)
class Destination:
    """Where a delivery goes: a directory, an e-mail address, or the hub's outbox (to a
    HER-id, for the hub to send as a KITH message)."""

    name: str
    her_id: str | None
    transport: Transport
    path: Path | None = None
    address: str | None = None
    group: str | None = None
    """Unix group that may read what is delivered here (files 0640, directories 0750)."""

    def describe(self) -> str:
        if self.transport == "dir":
            return f"dir:{self.path}"
        if self.transport == "smtp":
            return f"smtp:{self.address}"
        return "hub"


@dataclass(frozen=True)
class Municipality:
    name: str
    her_ids: tuple[str, ...]
    case_unit: Destination
    default: Destination
    """Where unmarked messages go (the case unit unless configured otherwise)."""
    kreftkoordinator: Destination | None = None


@dataclass(frozen=True)
class SmtpIntakeSettings:
    """The SMTP listener and the limits that keep a flood from starving the rest of the daemon."""

    host: str = "127.0.0.1"
    port: int = 2525
    max_connections: int = 100
    idle_timeout_seconds: float = 30.0
    max_message_bytes: int | None = None
    """None: the same as ``[kith] max_bytes``."""
    max_recipients: int = 20
    allow: tuple[str, ...] = ()
    """Client networks (``10.0.0.0/8``, ``127.0.0.1``) that may connect; empty: any."""
    tls_cert: Path | None = None
    tls_key: Path | None = None
    """With both set, STARTTLS is offered."""


@dataclass(frozen=True)
class IntakeSettings:
    spool: Path | None = None
    settle_seconds: float = 1.0
    """A spool file must be unchanged this long before it is taken (the hub may still write)."""
    poll_seconds: float = 1.0
    smtp: SmtpIntakeSettings | None = None
    """None: no SMTP intake."""


@dataclass(frozen=True)
class RetentionSettings:
    payload_days: int | None = None
    """Delete originals and payloads of finished messages after this many days (None: keep)."""
    metadata_days: int | None = None
    """Delete finished messages' rows, events and deliveries after this many days (None: keep)."""


@dataclass(frozen=True)
class FollowupSettings:
    closing_reminder_days: int = 14
    """The second reminder goes this many days before a window closes."""
    sweep_minutes: float = 10.0
    """How often the daemon looks for reminders that are due."""


@dataclass
class Settings:
    path: Path
    kith: KithSettings = field(default_factory=KithSettings)
    apprec: AppRecPolicy = field(default_factory=AppRecPolicy)
    state_dir: Path = Path("var")
    municipalities: list[Municipality] = field(default_factory=list)
    hub_outbox: Path = Path("var/outbox")
    hub_group: str | None = None
    """Unix group of the hub, which may read the outbox (files 0640, directories 0750)."""
    gp_registry: Path | None = None
    pathway: MatcherConfig = field(default_factory=MatcherConfig)
    intake: IntakeSettings = field(default_factory=IntakeSettings)
    smtp: SmtpSettings = field(default_factory=SmtpSettings)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    sweep_seconds: float = 2.0
    workers: int = 1
    """Processes that read and decide messages (1: the daemon's own process)."""
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    followups: FollowupSettings = field(default_factory=FollowupSettings)
    metrics_address: tuple[str, int] | None = None
    """Where the Prometheus endpoint listens (host, port); None: off."""
    metrics_refresh_seconds: float = 15.0
    """How often the gauges (messages by state, oldest unfinished, …) are read from the store."""
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
        path = (base / path).resolve()
    if must_exist and not path.exists():
        problems.add(key, f"{path} does not exist")
    return path


def _int(section: dict[str, Any], key: str, default: int, problems: _Problems, prefix: str) -> int:
    value = section.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        problems.add(f"{prefix}.{key}", "must be a positive whole number")
        return default
    return value


def default_workers() -> int:
    """One drafting process per core, at most four: beyond that the store is the limit."""
    return max(1, min(4, os.cpu_count() or 1))


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
    settings.kith.crl_dir = _path(base, kith.get("crl_dir"), "kith.crl_dir", problems, must_exist=True)
    require = kith.get("require_signature", False)
    if not isinstance(require, bool):
        problems.add("kith.require_signature", "must be true or false")
        require = False
    settings.kith.require_signature = require
    settings.kith.senders = _senders(kith.get("sender", []), problems)
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
    for m in raw.get("municipality", []) if isinstance(raw.get("municipality", []), list) else []:
        ids = m.get("her_ids", []) if isinstance(m, dict) else []
        known.update(x for x in ids if isinstance(x, str)) if isinstance(ids, list) else None
    settings.apprec = AppRecPolicy(
        reject_schema_errors=reject,
        known_her_ids=frozenset(known) if known else None,
        unknown_receiver=unknown,
    )
    state = raw.get("state_dir", "../var")
    settings.state_dir = _path(base, state, "state_dir", problems) or base / "var"
    hub = raw.get("hub", {}) if isinstance(raw.get("hub", {}), dict) else {}
    settings.hub_outbox = (
        _path(base, hub.get("outbox"), "hub.outbox", problems) or settings.state_dir / "outbox"
    )
    settings.hub_group = _group(hub.get("group"), "hub.group", problems)
    settings.municipalities = _municipalities(raw.get("municipality", []), base, settings.state_dir, problems)
    registry = raw.get("gp_registry")
    if registry is not None:
        if not isinstance(registry, dict):
            problems.add("gp_registry", "must be a table with a file key")
        else:
            settings.gp_registry = _path(
                base, registry.get("file"), "gp_registry.file", problems, must_exist=True
            )
    pathway = raw.get("pathway", {})
    if isinstance(pathway, dict):
        phrases = pathway.get("phrases", [])
        negations = pathway.get("negations", [])
        for setting, value in (("pathway.phrases", phrases), ("pathway.negations", negations)):
            if not isinstance(value, list) or not all(isinstance(x, str) and x.strip() for x in value):
                problems.add(setting, "must be a list of non-empty strings")
        if isinstance(phrases, list) and isinstance(negations, list):
            settings.pathway = MatcherConfig(tuple(map(str, phrases)), tuple(map(str, negations)))
    settings.intake = _intake(raw.get("intake", {}), base, settings.state_dir, problems)
    settings.smtp = _smtp(raw.get("smtp", {}), problems)
    settings.retry = _retry(raw.get("retry", {}), problems)
    daemon = raw.get("daemon", {}) if isinstance(raw.get("daemon", {}), dict) else {}
    settings.sweep_seconds = _number(daemon, "sweep_seconds", 2.0, problems, "daemon")
    settings.workers = _int(daemon, "workers", default_workers(), problems, "daemon")
    settings.retention = _retention(raw.get("retention", {}), problems)
    followups = raw.get("followups", {}) if isinstance(raw.get("followups", {}), dict) else {}
    settings.followups = FollowupSettings(
        closing_reminder_days=_int(followups, "closing_reminder_days", 14, problems, "followups"),
        sweep_minutes=_number(followups, "sweep_minutes", 10.0, problems, "followups"),
    )
    settings.metrics_address = _metrics(raw.get("metrics", {}), problems)
    metrics_section = raw.get("metrics", {}) if isinstance(raw.get("metrics", {}), dict) else {}
    settings.metrics_refresh_seconds = _number(metrics_section, "refresh_seconds", 15.0, problems, "metrics")
    problems.raise_if_any()
    return settings


def _number(section: dict[str, Any], key: str, default: float, problems: _Problems, prefix: str) -> float:
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        problems.add(f"{prefix}.{key}", "must be a number of seconds, zero or more")
        return default
    return float(value)


def _intake(section: Any, base: Path, state_dir: Path, problems: _Problems) -> IntakeSettings:
    if not isinstance(section, dict):
        problems.add("intake", "must be a table")
        return IntakeSettings()
    spool = _path(base, section.get("spool"), "intake.spool", problems) if "spool" in section else None
    smtp = section.get("smtp")
    smtp_settings = None
    if smtp is not None:
        if not isinstance(smtp, dict):
            problems.add("intake.smtp", "must be a table with host and port")
        else:
            smtp_settings = _smtp_intake(smtp, base, problems)
    return IntakeSettings(
        spool=spool,
        settle_seconds=_number(section, "settle_seconds", 1.0, problems, "intake"),
        poll_seconds=_number(section, "poll_seconds", 1.0, problems, "intake"),
        smtp=smtp_settings,
    )


def _smtp_intake(smtp: dict[str, Any], base: Path, problems: _Problems) -> SmtpIntakeSettings:
    d = SmtpIntakeSettings()
    host = smtp.get("host", d.host)
    port = smtp.get("port", d.port)
    if not isinstance(host, str) or not host:
        problems.add("intake.smtp.host", "must be a host name or address")
        host = d.host
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port < 65536:
        problems.add("intake.smtp.port", "must be a port number (0 picks a free one)")
        port = d.port
    allow = smtp.get("allow", [])
    if not isinstance(allow, list) or not all(isinstance(x, str) and x for x in allow):
        problems.add("intake.smtp.allow", 'must be a list of addresses or networks, e.g. ["10.0.0.0/8"]')
        allow = []
    max_message = smtp.get("max_message_bytes")
    if max_message is not None and (
        not isinstance(max_message, int) or isinstance(max_message, bool) or max_message <= 0
    ):
        problems.add("intake.smtp.max_message_bytes", "must be a positive whole number")
        max_message = None
    cert = _path(base, smtp.get("tls_cert"), "intake.smtp.tls_cert", problems, must_exist=True)
    key = _path(base, smtp.get("tls_key"), "intake.smtp.tls_key", problems, must_exist=True)
    if (cert is None) != (key is None):
        problems.add("intake.smtp", "tls_cert and tls_key go together")
    return SmtpIntakeSettings(
        host=host,
        port=port,
        max_connections=_int(smtp, "max_connections", d.max_connections, problems, "intake.smtp"),
        idle_timeout_seconds=_number(
            smtp, "idle_timeout_seconds", d.idle_timeout_seconds, problems, "intake.smtp"
        ),
        max_message_bytes=max_message,
        max_recipients=_int(smtp, "max_recipients", d.max_recipients, problems, "intake.smtp"),
        allow=tuple(map(str, allow)),
        tls_cert=cert,
        tls_key=key,
    )


def _group(value: Any, key: str, problems: _Problems) -> str | None:
    if value is not None and (not isinstance(value, str) or not value):
        problems.add(key, "must be the name of a Unix group")
        return None
    return value


def _senders(value: Any, problems: _Problems) -> dict[str, SenderTrust]:
    out: dict[str, SenderTrust] = {}
    if not isinstance(value, list):
        problems.add("kith.sender", "must be an array of tables ([[kith.sender]])")
        return out
    for i, item in enumerate(value):
        key = f"kith.sender[{i}]"
        if not isinstance(item, dict):
            problems.add(key, "must be a table")
            continue
        her_id = item.get("her_id")
        if not (isinstance(her_id, str) and her_id.isdigit()):
            problems.add(f"{key}.her_id", "must be a HER-id written as a string of digits")
            continue
        org = item.get("organisation_number")
        if org is not None and not (isinstance(org, str) and org.isdigit() and len(org) == 9):
            problems.add(f"{key}.organisation_number", "must be a 9-digit organisation number as a string")
            org = None
        require = item.get("require_signature")
        if require is not None and not isinstance(require, bool):
            problems.add(f"{key}.require_signature", "must be true or false")
            require = None
        out[her_id] = SenderTrust(her_id, org, require)
    return out


def _smtp(section: Any, problems: _Problems) -> SmtpSettings:
    if not isinstance(section, dict):
        problems.add("smtp", "must be a table")
        return SmtpSettings()
    password = section.get("password")
    if isinstance(password, str):
        resolved = resolve_env(password)
        if resolved is None:
            problems.add("smtp.password", f"names the environment variable {password[4:]}, which is not set")
        password = resolved
    port = section.get("port", 25)
    if not isinstance(port, int) or isinstance(port, bool):
        problems.add("smtp.port", "must be a port number")
        port = 25
    return SmtpSettings(
        host=str(section.get("host", "127.0.0.1")),
        port=port,
        starttls=bool(section.get("starttls", False)),
        username=section.get("username"),
        password=password,
        sender=str(section.get("sender", "pfhjem-msg@localhost")),
        timeout=_number(section, "timeout", 30.0, problems, "smtp"),
    )


def _retry(section: Any, problems: _Problems) -> RetryPolicy:
    if not isinstance(section, dict):
        problems.add("retry", "must be a table")
        return RetryPolicy()
    d = RetryPolicy()
    return RetryPolicy(
        max_attempts=_int(section, "max_attempts", d.max_attempts, problems, "retry"),
        base_seconds=_number(section, "base_seconds", d.base_seconds, problems, "retry"),
        factor=_number(section, "factor", d.factor, problems, "retry"),
        max_seconds=_number(section, "max_seconds", d.max_seconds, problems, "retry"),
        jitter=_number(section, "jitter", d.jitter, problems, "retry"),
        pipeline_attempts=_int(section, "pipeline_attempts", d.pipeline_attempts, problems, "retry"),
    )


def _retention(section: Any, problems: _Problems) -> RetentionSettings:
    if not isinstance(section, dict):
        problems.add("retention", "must be a table")
        return RetentionSettings()
    days: dict[str, int | None] = {}
    for key in ("payload_days", "metadata_days"):
        value = section.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            problems.add(f"retention.{key}", "must be a whole number of days, 1 or more")
            value = None
        days[key] = value
    payload, metadata = days["payload_days"], days["metadata_days"]
    if payload and metadata and metadata < payload:
        problems.add("retention.metadata_days", "must not be shorter than payload_days")
    return RetentionSettings(payload, metadata)


def _metrics(section: Any, problems: _Problems) -> tuple[str, int] | None:
    if not isinstance(section, dict):
        problems.add("metrics", "must be a table")
        return None
    address = section.get("address")
    if address is None:
        return None
    host, _, port = str(address).rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        problems.add("metrics.address", 'must be "host:port", e.g. "127.0.0.1:9464"')
        return None
    return host.strip("[]"), int(port)


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-") or "unit"


def _destination(
    value: Any, key: str, base: Path, default_dir: Path, problems: _Problems
) -> Destination | None:
    if not isinstance(value, dict):
        problems.add(key, 'must be a table such as { her_id = "…", name = "…" }')
        return None
    name = value.get("name")
    her_id = value.get("her_id")
    if not isinstance(name, str) or not name:
        problems.add(f"{key}.name", "is required")
        name = "?"
    if her_id is not None and not (isinstance(her_id, str) and her_id.isdigit()):
        problems.add(f"{key}.her_id", "must be a HER-id written as a string of digits")
        her_id = None
    transport = value.get("transport", "dir")
    if transport not in ("dir", "smtp", "hub"):
        problems.add(f"{key}.transport", 'must be "dir", "smtp" or "hub"')
        return None
    path = None
    address = None
    if transport == "dir":
        path = _path(base, value.get("path"), f"{key}.path", problems) or default_dir / _slug(name)
    elif transport == "smtp":
        address = value.get("address")
        if not isinstance(address, str) or "@" not in address:
            problems.add(f"{key}.address", "must be an e-mail address for transport smtp")
    elif her_id is None:
        problems.add(f"{key}.her_id", "is required for transport hub")
    group = _group(value.get("group"), f"{key}.group", problems)
    return Destination(name, her_id, cast(Transport, transport), path, address, group)


def _municipalities(value: Any, base: Path, state_dir: Path, problems: _Problems) -> list[Municipality]:
    out: list[Municipality] = []
    if not isinstance(value, list):
        problems.add("municipality", "must be an array of tables ([[municipality]])")
        return out
    seen: dict[str, str] = {}
    for i, m in enumerate(value):
        key = f"municipality[{i}]"
        if not isinstance(m, dict):
            problems.add(key, "must be a table")
            continue
        name = m.get("name")
        if not isinstance(name, str) or not name:
            problems.add(f"{key}.name", "is required")
            continue
        ids = m.get("her_ids")
        if not isinstance(ids, list) or not ids or not all(isinstance(x, str) and x.isdigit() for x in ids):
            problems.add(f"{key}.her_ids", "must be a non-empty list of HER-ids written as strings")
            continue
        for her in ids:
            if her in seen:
                problems.add(f"{key}.her_ids", f"HER-id {her} is already {seen[her]}'s")
            seen[her] = name
        units = state_dir / "case-units"
        case_unit = _destination(m.get("case_unit"), f"{key}.case_unit", base, units, problems)
        default = case_unit
        if "default" in m:
            default = _destination(m["default"], f"{key}.default", base, units, problems)
        coordinator = None
        if "kreftkoordinator" in m:
            coordinator = _destination(
                m["kreftkoordinator"], f"{key}.kreftkoordinator", base, units, problems
            )
        if case_unit is not None and default is not None:
            out.append(Municipality(name, tuple(ids), case_unit, default, coordinator))
    return out
