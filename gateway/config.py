"""The configuration: TOML, validated by declared models, errors named by key path.

Core sections are modelled here. Each `[connectors.NAME]` and `[backends.NAME]`
section is validated by the model its `type` declares (found through the
registry), so an implementation owns its keys. Every problem of a file is
collected and reported in one run, with the line where it can be found.
"""

from __future__ import annotations

import ipaddress
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from gateway import registry
from gateway.business_hours import CalendarConfig
from gateway.config_types import Listen, ListenAddress, Secret, Section, parse_listen
from gateway.units import ByteSize, Duration, format_duration

CHANNELS = ("email", "webform", "chat", "voice", "api")
Channel = Literal["email", "webform", "chat", "voice", "api"]


class StoreConfig(Section):
    url: str = ""  # empty: sqlite:///<state dir>/helpline.db
    durability: Literal["power", "process"] = "power"
    max_pending: int = Field(default=2000, ge=1, le=1_000_000)
    max_batch: int = Field(default=256, ge=1, le=10_000)
    checkpoint_interval: Duration = 1.0

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        if value and not value.startswith("sqlite:///"):
            raise ValueError(
                f"{value!r}: only sqlite:///PATH is supported by this version "
                "(postgresql:// comes with the scale-out work)"
            )
        return value


class TokenConfig(Section):
    secret: Secret
    trusted: bool = False  # may its messages merge contacts (single point of contact)


class HttpConfig(Section):
    listen: Listen = Field(default_factory=lambda: parse_listen("127.0.0.1:8080"))
    tokens: dict[str, TokenConfig] = Field(default_factory=dict)
    metrics_token: Secret | None = None
    public_url: str = ""
    trusted_proxies: list[str] = Field(default_factory=list)
    max_body_size: ByteSize = 1024 * 1024
    keepalive_timeout: Duration = 75.0
    # The sign-in token of GET /dashboard. Unset: any API token signs in.
    dashboard_token: Secret | None = None
    # How long a dashboard sign-in lasts before the token is asked for again.
    dashboard_session: Duration = Field(default=12 * 3600.0, ge=60, le=30 * 86400)

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                ipaddress.ip_network(entry.strip(), strict=False)
            except ValueError as err:
                raise ValueError(f"{entry!r} is not an IP address or CIDR range") from err
        return value

    @field_validator("public_url")
    @classmethod
    def _absolute(cls, value: str) -> str:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError(f"{value!r} must start with http:// or https://")
        return value.rstrip("/")


class IngestConfig(Section):
    idempotency_window: Duration = 7 * 86400.0
    max_text_size: ByteSize = 256 * 1024
    # One attachment larger than this is listed but not stored.
    max_attachment_size: ByteSize = 25 * 1024 * 1024
    # All stored attachments together; past it new ones are listed but not stored.
    attachment_quota: ByteSize = 10 * 1024**3


# Providers where "ann+anything@" reaches "ann@": folded so one person is one handle.
SUBADDRESS_DOMAINS = (
    "gmail.com",
    "googlemail.com",
    "outlook.com",
    "hotmail.com",
    "live.com",
    "icloud.com",
    "me.com",
    "fastmail.com",
    "proton.me",
    "protonmail.com",
)


class IdentityConfig(Section):
    # Region for phone numbers written without a country code, e.g. "DE".
    default_region: str | None = None
    # Domains whose mailbox names differ by letter case (rare); elsewhere Ann@ is ann@.
    case_sensitive_domains: list[str] = Field(default_factory=list)
    # Domains where a sub-address tag is folded away: ann+news@gmail.com is ann@gmail.com.
    subaddress_domains: list[str] = Field(default_factory=lambda: list(SUBADDRESS_DOMAINS))
    subaddress_separator: str = Field(default="+", min_length=1, max_length=1)

    @field_validator("case_sensitive_domains", "subaddress_domains")
    @classmethod
    def _domains(cls, value: list[str]) -> list[str]:
        for domain in value:
            if "@" in domain or "." not in domain or " " in domain:
                raise ValueError(f"{domain!r} is not a domain name such as 'example.com'")
        return [d.lower().strip() for d in value]

    @field_validator("default_region")
    @classmethod
    def _region(cls, value: str | None) -> str | None:
        if value is not None and (len(value) != 2 or not value.isalpha()):
            raise ValueError(f"{value!r} is not a two-letter region code such as 'DE'")
        return value.upper() if value else value


class ConversationsConfig(Section):
    reopen_window: Duration = 7 * 86400.0
    max_reference_age: Duration = 365 * 86400.0
    # How a conversation's number appears in mail subjects, so a reply that lost its
    # threading headers still finds its conversation. {number} is the conversation number.
    ticket_token: str = "[#HL-{number}]"

    @field_validator("ticket_token")
    @classmethod
    def _has_number(cls, value: str) -> str:
        if value.count("{number}") != 1 or len(value) < 10:
            raise ValueError(
                f"{value!r} must contain {{number}} exactly once and some fixed text around it, "
                "like '[#HL-{number}]'"
            )
        return value


class NearDuplicatesConfig(Section):
    # A message nearly the same as one its sender sent within this window is flagged.
    window: Duration = 86400.0
    threshold: float = Field(default=0.6, gt=0.0, le=1.0)
    # Earlier messages compared at most, newest first: keeps the check O(1) per message.
    max_candidates: int = Field(default=20, ge=1, le=200)
    # Only the start of a long text is fingerprinted, so its cost is bounded too.
    max_text: ByteSize = 4096
    # The same text from an anonymous visitor and another contact this close together
    # raises a link suggestion (never a merge); "the same" means at least this similar.
    anonymous_window: Duration = 600.0
    anonymous_threshold: float = Field(default=0.9, gt=0.0, le=1.0)
    # Messages whose keys for that check are held in memory (about 600 bytes each); with
    # more than this many messages within anonymous_window it looks back less far.
    link_index_entries: int = Field(default=20_000, ge=100, le=1_000_000)


class RetentionConfig(Section):
    # How long message text, subjects and senders are kept in helpline's own store
    # (the ticket system keeps the record); older content becomes a tombstone.
    message_content: Duration = 730 * 86400.0
    # How long mail is kept as it arrived once it became an event; pending and failed
    # raw mail stays (for recovery and for an operator). At least the idempotency window.
    raw_mail: Duration = 30 * 86400.0
    sweep_interval: Duration = 3600.0

    @field_validator("message_content")
    @classmethod
    def _at_least_a_day(cls, value: float) -> float:
        if value < 86400:
            raise ValueError("keep message content at least a day ('1d')")
        return value


class FirstResponseTargets(Section):
    email: Duration = 180.0
    webform: Duration = 180.0
    chat: Duration = 13.0
    voice: Duration = 4.0
    api: Duration = 180.0


class FirstResponseConfig(Section):
    targets: FirstResponseTargets = Field(default_factory=FirstResponseTargets)
    # Channels whose targets count only opening hours: channel -> a [business_hours.NAME]
    # calendar. A channel not named here counts real time.
    business_hours: dict[Channel, str] = Field(default_factory=dict)
    # A customer's own send time (a mail's Date) is shown, never trusted: it is clamped to
    # no later than helpline's accept time and no earlier than this before it.
    max_skew: Duration = Field(default=86400.0, ge=0)


class LoggingConfig(Section):
    format: Literal["auto", "json", "console"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


class DaemonConfig(Section):
    drain_timeout: Duration = 10.0
    stop_timeout: Duration = 5.0


class CoreConfig(Section):
    store: StoreConfig = Field(default_factory=StoreConfig)
    http: HttpConfig = Field(default_factory=HttpConfig)
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    identity: IdentityConfig = Field(default_factory=IdentityConfig)
    conversations: ConversationsConfig = Field(default_factory=ConversationsConfig)
    retention: RetentionConfig = Field(default_factory=RetentionConfig)
    near_duplicates: NearDuplicatesConfig = Field(default_factory=NearDuplicatesConfig)
    first_response: FirstResponseConfig = Field(default_factory=FirstResponseConfig)
    # Opening hours a first-response target may be counted in: NAME -> calendar.
    business_hours: dict[str, CalendarConfig] = Field(default_factory=dict)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    daemon: DaemonConfig = Field(default_factory=DaemonConfig)
    connectors: dict[str, dict[str, Any]] = Field(default_factory=dict)
    backends: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _calendars_exist(self) -> CoreConfig:
        for channel, name in self.first_response.business_hours.items():
            if name not in self.business_hours:
                known = ", ".join(sorted(self.business_hours)) or "none is defined"
                raise ValueError(
                    f"first_response.business_hours.{channel} names calendar {name!r}, but "
                    f"there is no [business_hours.{name}] table ({known})"
                )
        return self


@dataclass(frozen=True, slots=True)
class ComponentSpec:
    """One `[connectors.NAME]` or `[backends.NAME]` section, validated by its type."""

    kind: registry.Kind
    name: str
    type: str
    settings: BaseModel
    raw: dict[str, Any]

    @property
    def key(self) -> str:
        return f"{self.kind}s.{self.name}"


@dataclass(frozen=True, slots=True)
class Config:
    core: CoreConfig
    components: tuple[ComponentSpec, ...]
    source: Path | None = None

    @property
    def listen(self) -> ListenAddress:
        return self.core.http.listen


@dataclass(frozen=True, slots=True)
class Problem:
    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f" (line {self.line})" if self.line else ""
        return f"{self.path or '<file>'}{where}: {self.message}"


@dataclass
class ConfigError(Exception):
    problems: list[Problem] = field(default_factory=list)
    source: Path | None = None

    def __str__(self) -> str:
        head = f"{self.source}: " if self.source else ""
        return head + "; ".join(str(p) for p in self.problems)


def _dotted(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc)


def _problems(err: ValidationError, prefix: tuple[str, ...], text: str) -> list[Problem]:
    found = []
    for item in err.errors():
        loc = prefix + tuple(str(p) for p in item["loc"])
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key (not part of this section; check its spelling)"
        elif message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        found.append(Problem(_dotted(loc), message, find_line(text, loc)))
    return found


def find_line(text: str, loc: tuple[str, ...]) -> int | None:
    """Best-effort line of a key: its `[table]` header, then the `key =` under it."""
    if not text or not loc:
        return None
    for depth in range(len(loc), 0, -1):
        table, key = loc[: depth - 1], loc[depth - 1]
        current: tuple[str, ...] = ()
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if line.startswith("[") and not line.startswith("[["):
                current = tuple(p.strip().strip('"') for p in line.strip("[]").split("."))
                if current == (*table, key):
                    return number
                continue
            name = line.split("=", 1)[0].strip().strip('"')
            if "=" in line and current == table and name == key:
                return number
    return None


def _validate_components(
    data: dict[str, Any], text: str
) -> tuple[list[ComponentSpec], list[Problem]]:
    """Each component section against its type's model, independently of the core's result."""
    specs: list[ComponentSpec] = []
    problems: list[Problem] = []
    kinds: tuple[registry.Kind, ...] = ("connector", "backend")
    for kind in kinds:
        section = data.get(f"{kind}s", {})
        if not isinstance(section, dict):
            continue  # the core model reports it
        for name, raw in section.items():
            loc = (f"{kind}s", name)
            if not isinstance(raw, dict):
                problems.append(Problem(_dotted(loc), "must be a table", find_line(text, loc)))
                continue
            type_name = raw.get("type")
            if not isinstance(type_name, str) or not type_name:
                problems.append(
                    Problem(
                        _dotted((*loc, "type")),
                        "missing: every section names its type",
                        find_line(text, loc),
                    )
                )
                continue
            try:
                factory = registry.resolve(kind, type_name)
            except registry.UnknownType as err:
                problems.append(
                    Problem(_dotted((*loc, "type")), str(err), find_line(text, (*loc, "type")))
                )
                continue
            body = {k: v for k, v in raw.items() if k != "type"}
            try:
                settings = factory.config_model.model_validate(body)
            except ValidationError as err:
                problems.extend(_problems(err, loc, text))
                continue
            specs.append(ComponentSpec(kind, name, type_name, settings, raw))
    return specs, problems


def _cross_checks(core: CoreConfig, text: str) -> list[Problem]:
    """Rules between keys of different sections, named by the key an operator would change."""
    raw, window = core.retention.raw_mail, core.ingest.idempotency_window
    if raw >= window:
        return []
    message = (
        f"{format_duration(raw)} is shorter than ingest.idempotency_window "
        f"({format_duration(window)}): keep the mail as it arrived at least as long as a "
        "repeated delivery of it is recognised"
    )
    return [Problem("retention.raw_mail", message, find_line(text, ("retention", "raw_mail")))]


def _in_file_order(problems: list[Problem]) -> list[Problem]:
    return sorted(problems, key=lambda p: (p.line is None, p.line or 0, p.path))


def parse_config(text: str, source: Path | None = None) -> Config:
    """Validate a whole file; raise ConfigError listing every problem in it."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        found = re.search(r"at line (\d+)", str(err))
        line = int(found.group(1)) if found else len(text.splitlines()) or None
        raise ConfigError([Problem("", f"not valid TOML: {err}", line)], source) from err
    problems: list[Problem] = []
    core: CoreConfig | None = None
    try:
        core = CoreConfig.model_validate(data)
    except ValidationError as err:
        problems.extend(_problems(err, (), text))
    if core is not None:
        problems.extend(_cross_checks(core, text))
    specs, component_problems = _validate_components(data, text)
    problems.extend(component_problems)
    if problems or core is None:
        raise ConfigError(_in_file_order(problems), source)
    return Config(core=core, components=tuple(specs), source=source)


def load_config(path: Path | None) -> Config:
    """The built-in defaults when no file is given; otherwise the file, fully checked."""
    if path is None:
        return parse_config("")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(
            [Problem("", f"cannot read the config file: {err.strerror}")], path
        ) from err
    return parse_config(text, path)


def token_value(token: TokenConfig) -> str:
    return token.secret.get_secret_value()


def secret_value(secret: SecretStr | None) -> str | None:
    return secret.get_secret_value() if secret is not None else None
