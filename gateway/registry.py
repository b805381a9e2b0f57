"""Config `type` names joined to their implementations, imported only when chosen.

The core never imports a connector or a backend: this table of import strings
is the one place where a name meets its code, so a missing optional extra is
a config error for the section that asks for it, not an import error at start.
A `type` may also be a "package.module:Class" import string, which is how a
site plugs in a component of its own.
"""

from __future__ import annotations

import importlib
from typing import Literal

from gateway.component import ComponentFactory

Kind = Literal["connector", "backend"]

# Each channel and backend adds its line here as it lands.
CONNECTOR_TYPES: dict[str, str] = {
    "smtp": "connectors.mail.smtp:SmtpConnector",
    "lmtp": "connectors.mail.smtp:LmtpConnector",
    "smtp_out": "connectors.mail.outbound:SmtpOutConnector",
    "imap": "connectors.mail.imap:ImapConnector",
}
BACKEND_TYPES: dict[str, str] = {
    "webhook": "gateway.backends.webhook:WebhookBackend",
    "rt": "gateway.backends.rt:RtBackend",
    "zammad": "gateway.backends.zammad:ZammadBackend",
    "zendesk": "gateway.backends.zendesk:ZendeskBackend",
    "freshdesk": "gateway.backends.freshdesk:FreshdeskBackend",
    "chatwoot": "gateway.backends.chatwoot:ChatwootBackend",
}


class UnknownType(LookupError):
    """The config names a type that does not exist or cannot be imported."""


def known_types(kind: Kind) -> list[str]:
    return sorted(CONNECTOR_TYPES if kind == "connector" else BACKEND_TYPES)


def resolve(kind: Kind, type_name: str) -> ComponentFactory:
    table = CONNECTOR_TYPES if kind == "connector" else BACKEND_TYPES
    target = table.get(type_name)
    if target is None:
        if ":" not in type_name:
            known = ", ".join(known_types(kind)) or "none built in yet"
            raise UnknownType(
                f"unknown {kind} type {type_name!r} (known: {known}; "
                "or give a 'package.module:Class' import string)"
            )
        target = type_name
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise UnknownType(
            f"{kind} type {type_name!r} cannot be loaded: {err} "
            "(is the optional extra that provides it installed?)"
        ) from err
    factory = getattr(module, attr, None)
    if factory is None or not hasattr(factory, "config_model"):
        raise UnknownType(f"{target!r} is not a helpline component (no config_model)")
    return factory  # type: ignore[no-any-return]
