"""Find a transport class by name through the ``broker_sched.transports`` entry points.

Built-in backends are registered the same way as third-party ones, so adding a broker
never touches the core. Entry points are read on each call: cheap, and it keeps no
module-global state that tests would have to reset.
"""

from __future__ import annotations

import difflib
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

from broker_sched.errors import UnknownTransport
from transports.base import BackendSettings, Transport

if TYPE_CHECKING:
    from broker_sched.config import Settings

GROUP = "broker_sched.transports"


def available() -> list[str]:
    return sorted(ep.name for ep in entry_points(group=GROUP))


def resolve(name: str) -> type[Transport]:
    """The class registered as ``name``; :class:`UnknownTransport` with a suggestion if none."""
    matches = [ep for ep in entry_points(group=GROUP) if ep.name == name]
    if not matches:
        known = available()
        close = difflib.get_close_matches(name, known, n=1)
        raise UnknownTransport(name, known, close[0] if close else None)
    cls = matches[0].load()
    if not (isinstance(cls, type) and issubclass(cls, Transport)):
        raise TypeError(f"entry point {name!r} is {cls!r}, not a Transport subclass")
    return cls


def settings_sections() -> dict[str, type[BackendSettings]]:
    """Every registered backend's settings model by section name, in name order."""
    sections: dict[str, type[BackendSettings]] = {}
    for name in available():
        cls = resolve(name)
        if cls.settings_section is None or cls.settings_model is None:
            continue
        known = sections.setdefault(cls.settings_section, cls.settings_model)
        if known is not cls.settings_model:
            raise TypeError(
                f"transport {name!r} registers {cls.settings_model.__name__} for section "
                f"[{cls.settings_section}], which another transport holds as {known.__name__}"
            )
    return sections


def transport_from_settings(settings: Settings, name: str | None = None) -> Transport:
    """An unconnected transport for ``name`` (default: ``settings.transport``)."""
    return resolve(name or settings.transport).from_settings(settings)
