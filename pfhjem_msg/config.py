"""One TOML file → typed settings, read and checked once. Every problem is reported at
once, each with its key and line, so an operator fixes the file in one pass.

The file is checked by the model in ``config_model.py`` (unknown keys, types, ranges); what
comes out is the plain, picklable :class:`Settings` the rest of the product uses, and that
the daemon hands to its worker processes so they never read the file themselves. Relative
paths resolve against the directory of the config file. Secrets (SMTP passwords) may be
given as ``env:NAME`` and are read from the environment.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pfhjem_msg.config_lines import Loc, key_lines
from pfhjem_msg.config_problems import ConfigProblems, Problem, problem_at
from pfhjem_msg.edi2.settings import Edi2Settings, HelseIdSettings
from pfhjem_msg.errors import ConfigError
from pfhjem_msg.kith.apprec import AppRecPolicy
from pfhjem_msg.kith.parse import Limits
from pfhjem_msg.kith.signature import SenderTrust, SigningKey
from pfhjem_msg.lifecycle import DestinationTransport
from pfhjem_msg.pathway import MatcherConfig
from pfhjem_msg.retry import RetryPolicy
from pfhjem_msg.transport.smtp import SmtpSettings

if TYPE_CHECKING:
    from pfhjem_msg import config_model as model

DEFAULT_PATHS = ("/etc/pfhjem-msg/config.toml",)
MASK = "********"
ENV_PREFIX = "env:"
__all__ = ["ConfigError", "ConfigProblems", "Settings", "default_workers", "effective", "find_config", "load"]


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


Transport = DestinationTransport


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

    @property
    def target(self) -> str | None:
        """The directory or the e-mail address a delivery here names (its ``target`` column)."""
        if self.transport == "dir":
            return str(self.path)
        return self.address if self.transport == "smtp" else None


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
    send_via: Literal["outbox", "edi2"] = "outbox"
    """How answers to messages from the spool or SMTP are sent (``[hub] send_via``)."""
    edi2: Edi2Settings | None = None
    """The message service and its HelseID client; None: EDI 2.0 is not used."""
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
    store_url: str | None = field(default=None, repr=False)
    """PostgreSQL (``[store] url``, which may hold a password: never shown); None: the SQLite
    file in ``state_dir``."""
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    """The parsed file as written (every key of it is also in a typed field above)."""


def resolve_env(value: str) -> str | None:
    """``env:NAME`` → the environment variable NAME (None if unset); anything else as is."""
    if value.startswith(ENV_PREFIX):
        return os.environ.get(value[len(ENV_PREFIX) :])
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
    """Read, validate and convert the file once; raise :class:`ConfigProblems` (a
    ConfigError) listing every problem, or ConfigError when the file cannot be read."""
    return _load(path)[1]


def effective(path: Path) -> dict[str, Any]:
    """The configuration as it runs, in the file's own layout: defaults filled in, paths
    resolved, passwords masked (an ``env:NAME`` reference is shown, never its value)."""
    file, _ = _load(path)
    data = file.model_dump(mode="json")
    password = data["smtp"].get("password")
    if password is not None and not password.startswith(ENV_PREFIX):
        data["smtp"]["password"] = MASK
    if data.get("edi2"):
        data["edi2"]["helseid"]["private_key"] = MASK  # not even where the key lies
    if data["store"].get("url"):
        from pfhjem_msg.store.url import masked

        data["store"]["url"] = masked(data["store"]["url"])
    return data


def _load(path: Path) -> tuple[model.ConfigFile, Settings]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"cannot read configuration {path}: {exc.strerror}; check the path and its permissions"
        ) from exc
    except UnicodeDecodeError as exc:
        raise ConfigProblems(path, [Problem("(file)", f"is not UTF-8 text (byte {exc.start})")]) from exc
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        at = re.search(r"at line (\d+)", str(exc))
        problem = Problem("(file)", f"is not valid TOML: {exc}", int(at.group(1)) if at else None)
        raise ConfigProblems(path, [problem]) from exc
    # pydantic and the model are imported here, not at the top, so that worker processes and
    # commands that never read a configuration do not pay for building them
    from pydantic import ValidationError

    from pfhjem_msg import config_model as model
    from pfhjem_msg.config_problems import from_validation

    lines = key_lines(text)
    try:
        file = model.ConfigFile.model_validate(raw, context={"base": path.resolve().parent})
    except ValidationError as exc:
        raise ConfigProblems(path, from_validation(exc, model.ConfigFile, lines, raw)) from exc
    problems = _group_dirs_in_state_dir(file, lines, raw)
    signing = None
    if file.signing is not None:
        try:
            signing = SigningKey.from_files(file.signing.key, file.signing.cert)
        except ConfigError as exc:
            problems.append(problem_at(("signing",), str(exc), lines, raw))
    if problems:
        raise ConfigProblems(path, problems)
    return file, _settings(path, file, raw, signing)


def _group_dirs_in_state_dir(
    f: model.ConfigFile, lines: dict[Loc, int], raw: dict[str, Any]
) -> list[Problem]:
    """A directory another group is to read must lie outside the state directory, which stays
    0700: inside it the group cannot reach its files, however they are shared. Part of loading,
    so a start and a reload refuse it as ``config check`` does."""
    assert f.state_dir is not None and f.hub.outbox is not None  # filled by the model
    wanted: list[tuple[Loc, Path, str | None]] = [(("hub", "outbox"), f.hub.outbox, f.hub.group)]
    for i, m in enumerate(f.municipality):
        for role in ("case_unit", "default", "kreftkoordinator"):
            d = getattr(m, role)
            if d is not None and d.transport == "dir" and d.path is not None:
                wanted.append((("municipality", i, role, "path"), d.path, d.group))
    state = f.state_dir.resolve()
    out: list[Problem] = []
    seen: set[Path] = set()
    for loc, directory, group in wanted:
        where = directory.resolve()
        if group is None or where in seen or not where.is_relative_to(state):
            continue
        seen.add(where)
        what = str(directory) if _written(raw, loc) else f"the default, {directory},"
        message = (
            f"{what} lies inside state_dir {f.state_dir}, which stays 0700, so group {group!r} cannot "
            "reach it; give it a directory outside state_dir (and list that in the unit's ReadWritePaths=)"
        )
        out.append(problem_at(loc, message, lines, raw))
    return out


def _written(raw: Any, loc: Loc) -> bool:
    """Is the key at ``loc`` in the file, rather than a default filled in?"""
    for part in loc:
        if isinstance(raw, list) and isinstance(part, int) and part < len(raw):
            raw = raw[part]
            continue
        if not (isinstance(raw, dict) and part in raw):
            return False
        raw = raw[part]
    return True


def _settings(path: Path, f: model.ConfigFile, raw: dict[str, Any], signing: SigningKey | None) -> Settings:
    """The validated file as the types the rest of the product uses."""
    assert f.state_dir is not None and f.hub.outbox is not None and f.daemon.workers is not None  # filled
    limits = Limits(**{name.name: getattr(f.kith, name.name) for name in fields(Limits)})
    smtp_in = f.intake.smtp
    password = resolve_env(f.smtp.password) if f.smtp.password is not None else None
    metrics_address = None
    if f.metrics.address is not None:
        host, _, port = f.metrics.address.rpartition(":")
        metrics_address = (host.strip("[]"), int(port))
    return Settings(
        path=path.absolute(),  # logged, and read again on a reload whatever the working directory
        kith=KithSettings(
            schemas=f.kith.schemas,
            limits=limits,
            trust_anchors=f.kith.trust_anchors,
            signing=signing,
            crl_dir=f.kith.crl_dir,
            require_signature=f.kith.require_signature,
            senders={
                s.her_id: SenderTrust(s.her_id, s.organisation_number, s.require_signature)
                for s in f.kith.sender
            },
        ),
        apprec=AppRecPolicy(
            reject_schema_errors=f.apprec.reject_schema_errors,
            known_her_ids=frozenset(h for m in f.municipality for h in m.her_ids) or None,
            unknown_receiver=f.apprec.unknown_receiver,
        ),
        state_dir=f.state_dir,
        municipalities=[_municipality(m) for m in f.municipality],
        hub_outbox=f.hub.outbox,
        hub_group=f.hub.group,
        send_via=f.hub.send_via,
        edi2=_edi2(f),
        gp_registry=f.gp_registry.file if f.gp_registry else None,
        pathway=MatcherConfig(tuple(f.pathway.phrases), tuple(f.pathway.negations)),
        intake=IntakeSettings(
            spool=f.intake.spool,
            settle_seconds=f.intake.settle_seconds,
            poll_seconds=f.intake.poll_seconds,
            smtp=None
            if smtp_in is None
            else SmtpIntakeSettings(
                host=smtp_in.host,
                port=smtp_in.port,
                max_connections=smtp_in.max_connections,
                idle_timeout_seconds=smtp_in.idle_timeout_seconds,
                max_message_bytes=smtp_in.max_message_bytes,
                max_recipients=smtp_in.max_recipients,
                allow=tuple(smtp_in.allow),
                tls_cert=smtp_in.tls_cert,
                tls_key=smtp_in.tls_key,
            ),
        ),
        smtp=SmtpSettings(
            host=f.smtp.host,
            port=f.smtp.port,
            starttls=f.smtp.starttls,
            username=f.smtp.username,
            password=password,
            sender=f.smtp.sender,
            timeout=f.smtp.timeout,
        ),
        retry=RetryPolicy(**f.retry.model_dump()),
        sweep_seconds=f.daemon.sweep_seconds,
        workers=f.daemon.workers,
        retention=RetentionSettings(f.retention.payload_days, f.retention.metadata_days),
        followups=FollowupSettings(f.followups.closing_reminder_days, f.followups.sweep_minutes),
        metrics_address=metrics_address,
        metrics_refresh_seconds=f.metrics.refresh_seconds,
        store_url=f.store.url,
        raw=raw,
    )


def _edi2(f: model.ConfigFile) -> Edi2Settings | None:
    i, e = f.intake.edi2, f.edi2
    if i is None or e is None:
        return None
    h = e.helseid
    helseid = HelseIdSettings(h.token_url, h.client_id, h.scope, h.private_key, h.dpop, h.audience,
                              timeout=i.timeout_seconds)  # fmt: skip
    return Edi2Settings(i.base_url, tuple(i.her_ids or ()), helseid, i.source_system, i.poll_seconds,
                        i.timeout_seconds, i.batch)  # fmt: skip


def _municipality(m: model.Municipality) -> Municipality:
    assert m.default is not None  # filled by the model
    coordinator = _destination(m.kreftkoordinator) if m.kreftkoordinator else None
    return Municipality(
        m.name, tuple(m.her_ids), _destination(m.case_unit), _destination(m.default), coordinator
    )


def _destination(d: model.Destination) -> Destination:
    return Destination(d.name, d.her_id, d.transport, d.path, d.address, d.group)
