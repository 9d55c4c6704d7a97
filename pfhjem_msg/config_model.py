"""The configuration file as a declarative, strictly typed model (pydantic).

Each section is a model that forbids unknown keys and coerces nothing: ``"false"`` is not a
boolean and ``25`` is not a host name. Ranges are part of the types. Paths are resolved
against the configuration file's directory (handed in as validation context ``base``).
Defaults that depend on other keys (the hub outbox under ``state_dir``, a destination's
directory, the number of workers) are filled in once the whole file is valid, so the model
is the effective configuration that ``config show`` prints and ``config.load`` converts.

The keys of ``[kith]`` that limit untrusted input are made from the fields of
:class:`~pfhjem_msg.kith.parse.Limits`, so a new limit there is a new key here.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import types
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from pfhjem_msg import __version__
from pfhjem_msg.config import ENV_PREFIX, MASK, default_workers
from pfhjem_msg.kith.apprec import AppRecPolicy
from pfhjem_msg.kith.parse import Limits
from pfhjem_msg.lifecycle import DestinationTransport
from pfhjem_msg.lock import LOCK_NAME
from pfhjem_msg.retry import RetryPolicy
from pfhjem_msg.transport.dir import gid_of
from pfhjem_msg.transport.smtp import SmtpSettings


def _problem(kind: str, message: str, key: str | None = None) -> PydanticCustomError:
    """A problem in our own wording. A check of a whole table passes ``key``, the dotted path
    (list positions as numbers) of the key inside the table the problem is about, so the
    report can name that key and its line."""
    return PydanticCustomError(kind, message, {"key": key} if key else None)


def _resolve(value: Any, info: ValidationInfo) -> Path:
    """A path from the file (text) or a default (a Path), made absolute."""
    if not isinstance(value, str | Path) or not str(value):
        raise _problem("path_type", "must be a path written in quotes")
    path = Path(value)
    if not path.is_absolute():
        base = (info.context or {}).get("base", Path.cwd())
        path = (Path(base) / path).resolve()
    return path


STATE_DIR_EXAMPLE = 'state_dir = "/var/lib/pfhjem-msg"'
"""What to write: the systemd unit's ``StateDirectory=``."""


def _masked(what: str, advice: str = "", subject: str = "is") -> PydanticCustomError:
    """The output of ``config show`` reused as a file would otherwise run with the mask as the
    password (or look for a key file of that name)."""
    return _problem(
        "masked",
        f"{subject} the mask `config show` prints in place of the secret, not the secret: "
        f"put the real {what} back{advice}",
    )


def _state_dir(value: Any, info: ValidationInfo) -> Path:
    """Required: a default beside the file put the store in ``/etc/var`` for the system's
    ``/etc/pfhjem-msg/config.toml``, where nobody would look for it (or back it up)."""
    if value is None:
        raise _problem(
            "state_dir_missing",
            f"is required: set the directory for the store and its lock, e.g. {STATE_DIR_EXAMPLE} (the "
            "systemd unit's StateDirectory=); write it at the top of the file, before the first [section]"
            + _earlier_state_dir(info),
        )
    return _resolve(value, info)


def _earlier_state_dir(info: ValidationInfo) -> str:
    """Where versions before 0.3 kept the state when the key was left out (``../var`` beside
    the file), if a store is there: the operator must point at it, not start an empty one."""
    from pfhjem_msg.store import SQLITE_NAME

    base = Path((info.context or {}).get("base", Path.cwd()))
    earlier = (base / ".." / "var").resolve()
    if not any((earlier / name).exists() for name in (SQLITE_NAME, LOCK_NAME)):
        return ""
    return (
        f"; an earlier version kept the state in {earlier} (its default, ../var beside this file): "
        f'write state_dir = "{earlier}" to go on with it, or move it'
    )


def _secret_file(value: Any, info: ValidationInfo) -> Path:
    if value == MASK:
        raise _masked("path of the key file")
    return _resolve(value, info)


def _file(path: Path) -> Path:
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "does not exist"
        raise _problem("path_missing", f"{path} {what}; correct the path")
    return path


def _directory(path: Path) -> Path:
    if not path.is_dir():
        what = "is not a directory" if path.exists() else "does not exist"
        raise _problem("path_missing", f"{path} {what}; create it or correct the path")
    return path


def _her_id(value: str) -> str:
    if not value.isdigit():
        raise _problem("her_id", 'must be a HER-id: digits written in quotes, e.g. "8300010"')
    return value


def _org_number(value: str) -> str:
    if not (value.isdigit() and len(value) == 9):
        raise _problem(
            "organisation_number", 'must be a 9-digit organisation number in quotes, e.g. "974589095"'
        )
    return value


def _network(value: str) -> str:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise _problem("network", 'must be an address or network, e.g. "10.0.0.0/8" or "127.0.0.1"') from None
    return value


def _address(value: str) -> str:
    local, at, domain = value.rpartition("@")
    if not (at and local and domain) or any(c.isspace() for c in value):
        raise _problem("address", 'must be an e-mail address, e.g. "postmottak@fjordvik.kommune.no"')
    return value


def _secret(value: str) -> str:
    if value == MASK:
        raise _masked("password", '; better: "env:NAME", read from the environment')
    if value.startswith(ENV_PREFIX) and os.environ.get(value[len(ENV_PREFIX) :]) is None:
        raise _problem(
            "env_missing",
            f"names the environment variable {value[len(ENV_PREFIX) :]}, which is not set; "
            "set it for the daemon (e.g. in the systemd unit's EnvironmentFile)",
        )
    return value


def _url(value: str) -> str:
    scheme, sep, rest = value.partition("://")
    if not sep or scheme not in ("https", "http") or not rest or any(c.isspace() for c in value):
        raise _problem("url", 'must be an https:// URL, e.g. "https://api.hn-tjener.prod.melding.nhn.no"')
    return value


def _store_url(value: str) -> str:
    """A PostgreSQL URL as libpq reads it, checked here so a typo is a line-numbered problem
    rather than a failure to connect at the daemon's start."""
    from urllib.parse import urlsplit

    example = '"postgresql://pfhjem@db.example.no:5432/pfhjem_msg"'
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise _problem("store_url", f"is not a URL with a valid port, e.g. {example}") from None
    if parts.scheme not in ("postgresql", "postgres") or any(c.isspace() for c in value):
        raise _problem("store_url", f"must be a postgresql:// URL, e.g. {example}")
    if not parts.path.strip("/"):
        raise _problem("store_url", f"must name the database after the host, e.g. {example}")
    better = "better: leave it out of the URL and give it in ~/.pgpass or PGPASSWORD for the service user"
    if parts.password == MASK:
        raise _masked("password", f"; {better}", subject="has as its password")
    if any(
        name.strip().lower() == "password"
        for name, _, _ in (p.partition("=") for p in parts.query.split("&"))
    ):
        # config show, errors and logs mask only the password before the host
        raise _problem("store_url", f"must not carry the password as ?password=: {better}")
    return value


def _unix_group(value: str) -> str:
    """Checked here, not when the first delivery is due, so that ``config check`` names it and
    a reload naming a missing group is rejected with its line."""
    try:
        gid_of(value)
    except KeyError:
        raise _problem(
            "group", f"there is no Unix group {value!r}; create it (groupadd) or correct it"
        ) from None
    return value


def _host_port(value: str) -> str:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise _problem("host_port", 'must be "host:port" with a port 1–65535, e.g. "127.0.0.1:9464"')
    return value


RelPath = Annotated[Path, BeforeValidator(_resolve)]
ExistingFile = Annotated[Path, BeforeValidator(_resolve), AfterValidator(_file)]
ExistingDir = Annotated[Path, BeforeValidator(_resolve), AfterValidator(_directory)]
Text = Annotated[str, Field(min_length=1)]
HerId = Annotated[str, AfterValidator(_her_id)]
Count = Annotated[int, Field(ge=1)]
Days = Annotated[int, Field(ge=1)]
Seconds = Annotated[float, Field(ge=0)]
Interval = Annotated[float, Field(gt=0)]
Port = Annotated[int, Field(ge=1, le=65535)]
Secret = Annotated[str, AfterValidator(_secret)]
SecretFile = Annotated[Path, BeforeValidator(_secret_file), AfterValidator(_file)]
"""A file whose path ``config show`` masks (it says where a private key lies)."""
Group = Annotated[str, Field(min_length=1), AfterValidator(_unix_group)]
Email = Annotated[str, AfterValidator(_address)]
PositiveHerId = Annotated[int, Field(ge=1)]
"""A HER-id as the message service takes it: a number (``[intake.edi2] her_ids``)."""


class Section(BaseModel):
    """Strict, closed: every key must be known and of its own type."""

    model_config = ConfigDict(strict=True, extra="forbid", validate_default=True)


def _limit_fields() -> dict[str, Any]:
    """``[kith]`` keys from :class:`Limits`: whole numbers and numbers must be positive."""
    hints = typing.get_type_hints(Limits)
    out: dict[str, Any] = {}
    for f in dataclasses.fields(Limits):
        kind = hints[f.name]
        optional = typing.get_origin(kind) in (Union, types.UnionType) and type(None) in typing.get_args(kind)
        inner = next((a for a in typing.get_args(kind) if a is not type(None)), kind) if optional else kind
        if inner is int:
            inner = Count
        elif inner is float:
            inner = Interval
        default: Any = None
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        out[f.name] = (inner | None if optional else inner, default)
    return out


class Sender(Section):
    her_id: HerId
    organisation_number: Annotated[str, AfterValidator(_org_number)] | None = None
    require_signature: bool | None = None


class KithBase(Section):
    schemas: ExistingDir | None = None
    trust_anchors: ExistingFile | None = None
    crl_dir: ExistingDir | None = None
    require_signature: bool = False
    sender: list[Sender] = []

    @model_validator(mode="after")
    def _one_entry_per_sender(self) -> KithBase:
        seen = [s.her_id for s in self.sender]
        twice = sorted({h for h in seen if seen.count(h) > 1})
        if twice:
            raise _problem(
                "duplicate", f"HER-id {', '.join(twice)} has more than one [[kith.sender]]", "sender"
            )
        return self


if TYPE_CHECKING:
    Kith = KithBase
else:
    Kith = create_model("Kith", __base__=KithBase, **_limit_fields())


class Signing(Section):
    key: ExistingFile
    cert: ExistingFile


class Apprec(Section):
    reject_schema_errors: bool = AppRecPolicy.reject_schema_errors
    unknown_receiver: Literal["apprec_e21", "hold"] = "apprec_e21"


class Destination(Section):
    name: Text
    her_id: HerId | None = None
    transport: DestinationTransport = "dir"
    path: RelPath | None = None
    address: Email | None = None
    group: Group | None = None

    @model_validator(mode="after")
    def _what_the_transport_needs(self) -> Destination:
        if self.transport == "smtp" and self.address is None:
            raise _problem("required", 'is required for transport "smtp"', "address")
        if self.transport in ("hub", "edi2") and self.her_id is None:
            raise _problem("required", f'is required for transport "{self.transport}"', "her_id")
        return self


class Municipality(Section):
    name: Text
    her_ids: Annotated[list[HerId], Field(min_length=1)]
    case_unit: Destination
    default: Destination | None = None
    kreftkoordinator: Destination | None = None


class Hub(Section):
    outbox: RelPath | None = None
    group: Group | None = None
    send_via: Literal["outbox", "edi2"] = "outbox"
    """How answers to messages from the spool or SMTP go: the outbox, or the message service."""


class GpRegistry(Section):
    file: ExistingFile


class Pathway(Section):
    phrases: list[Text] = []
    negations: list[Text] = []


class IntakeSmtp(Section):
    host: Text = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 2525
    """0: the system picks a free port (tests)."""
    max_connections: Count = 100
    idle_timeout_seconds: Interval = 30.0
    max_message_bytes: Count | None = None
    max_recipients: Count = 20
    allow: list[Annotated[str, AfterValidator(_network)]] = []
    tls_cert: ExistingFile | None = None
    tls_key: ExistingFile | None = None

    @model_validator(mode="after")
    def _tls_pair(self) -> IntakeSmtp:
        if (self.tls_cert is None) != (self.tls_key is None):
            missing = "tls_key" if self.tls_key is None else "tls_cert"
            raise _problem("required", "tls_cert and tls_key go together: set both or neither", missing)
        return self


class IntakeEdi2(Section):
    base_url: Annotated[str, AfterValidator(_url)]
    her_ids: list[PositiveHerId] | None = None
    """None until the whole file is valid: then every HER-id of every municipality."""
    source_system: Text = f"pfhjem-msg, v{__version__}"
    poll_seconds: Interval = 10.0
    timeout_seconds: Interval = 30.0
    batch: Annotated[int, Field(ge=1, le=100)] = 100


class Intake(Section):
    spool: RelPath | None = None
    settle_seconds: Seconds = 1.0
    poll_seconds: Interval = 1.0
    smtp: IntakeSmtp | None = None
    edi2: IntakeEdi2 | None = None


class HelseId(Section):
    token_url: Annotated[str, AfterValidator(_url)]
    client_id: Text
    scope: Text
    private_key: SecretFile
    dpop: bool = True
    audience: Text | None = None


class Edi2(Section):
    helseid: HelseId


class Smtp(Section):
    host: Text = SmtpSettings.host
    port: Port = SmtpSettings.port
    starttls: bool = SmtpSettings.starttls
    username: Text | None = None
    password: Secret | None = None
    sender: Email = SmtpSettings.sender
    timeout: Interval = SmtpSettings.timeout


class Retry(Section):
    max_attempts: Count = RetryPolicy.max_attempts
    base_seconds: Seconds = RetryPolicy.base_seconds
    factor: Annotated[float, Field(ge=1)] = RetryPolicy.factor
    """Below 1 the waits would shrink; 0 would make every wait after the first 0."""
    max_seconds: Seconds = RetryPolicy.max_seconds
    jitter: Annotated[float, Field(ge=0, le=1)] = RetryPolicy.jitter
    pipeline_attempts: Count = RetryPolicy.pipeline_attempts


class Daemon(Section):
    workers: Count | None = None
    """None until the whole file is valid: then one per core, at most four."""
    sweep_seconds: Interval = 2.0


class Retention(Section):
    payload_days: Days | None = None
    metadata_days: Days | None = None

    @model_validator(mode="after")
    def _history_outlives_payload(self) -> Retention:
        p, m = self.payload_days, self.metadata_days
        if p is not None and m is not None and m < p:
            raise _problem("range", f"must not be shorter than payload_days ({p})", "metadata_days")
        return self


class Followups(Section):
    closing_reminder_days: Days = 14
    sweep_minutes: Interval = 10.0


class Store(Section):
    url: Annotated[str, AfterValidator(_store_url)] | None = None
    """None: the SQLite file in state_dir."""


class Metrics(Section):
    address: Annotated[str, AfterValidator(_host_port)] | None = None
    refresh_seconds: Interval = 15.0


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-") or "unit"


class ConfigFile(Section):
    state_dir: Annotated[Path | None, BeforeValidator(_state_dir)] = None
    """Required (the validator refuses None, with what to write)."""
    kith: Kith = Field(default_factory=Kith)
    signing: Signing | None = None
    apprec: Apprec = Apprec()
    municipality: list[Municipality] = []
    hub: Hub = Hub()
    gp_registry: GpRegistry | None = None
    pathway: Pathway = Pathway()
    intake: Intake = Intake()
    smtp: Smtp = Smtp()
    retry: Retry = Retry()
    daemon: Daemon = Daemon()
    retention: Retention = Retention()
    followups: Followups = Followups()
    metrics: Metrics = Metrics()
    edi2: Edi2 | None = None
    store: Store = Store()

    @field_validator("municipality")
    @classmethod
    def _her_ids_once(cls, municipalities: list[Municipality]) -> list[Municipality]:
        seen: dict[str, str] = {}
        for i, m in enumerate(municipalities):
            for her in m.her_ids:
                if her in seen:
                    raise _problem("duplicate", f"HER-id {her} is already {seen[her]}'s", f"{i}.her_ids")
                seen[her] = m.name
        return municipalities

    @model_validator(mode="after")
    def _edi2_complete(self) -> ConfigFile:
        """The message service needs both its address ([intake.edi2]) and the HelseID client
        ([edi2.helseid]), whether for intake or only for sending."""
        if self.intake.edi2 is not None and self.edi2 is None:
            raise _problem("required", "needs [edi2.helseid] (the HelseID client): add it", "intake.edi2")
        if self.intake.edi2 is not None:
            return self
        if self.hub.send_via == "edi2":
            raise _problem("required", "needs [intake.edi2] (the message service's base_url) and "
                           "[edi2.helseid]: add them", "hub.send_via")  # fmt: skip
        for i, m in enumerate(self.municipality):
            for role in ("case_unit", "default", "kreftkoordinator"):
                d = getattr(m, role)
                if d is not None and d.transport == "edi2":
                    raise _problem("required", "needs [intake.edi2] (the message service's base_url) and "
                                   "[edi2.helseid]: add them", f"municipality.{i}.{role}.transport")  # fmt: skip
        return self

    @model_validator(mode="after")
    def _fill_derived_defaults(self) -> ConfigFile:
        """Defaults that depend on other keys, so what is shown is what runs."""
        if self.intake.edi2 is not None and self.intake.edi2.her_ids is None:
            self.intake.edi2.her_ids = [int(h) for m in self.municipality for h in m.her_ids]
            if not self.intake.edi2.her_ids:
                raise _problem(
                    "required", "is required when no [[municipality]] gives HER-ids", "intake.edi2.her_ids"
                )
        assert self.state_dir is not None  # required: refused without
        if self.hub.outbox is None:
            self.hub.outbox = self.state_dir / "outbox"
        if self.daemon.workers is None:
            self.daemon.workers = default_workers()
        if self.intake.smtp is not None and self.intake.smtp.max_message_bytes is None:
            self.intake.smtp.max_message_bytes = getattr(self.kith, "max_bytes", None)
        units = self.state_dir / "case-units"
        for m in self.municipality:
            if m.default is None:
                m.default = m.case_unit.model_copy()
            for d in (m.case_unit, m.default, m.kreftkoordinator):
                if d is not None and d.transport == "dir" and d.path is None:
                    d.path = units / _slug(d.name)
        return self
