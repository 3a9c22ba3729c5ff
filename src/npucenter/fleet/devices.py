"""The fleet file's ``fallback_devices:``: an ordered list of device types to try after ``device``.

Services and jobs both take it (device-type fungibility, docs/admission.md): admission places
each replica or job on ``device`` if it has quota and room there, else on the first listed
fallback that has. This module parses the list; :class:`~npucenter.fleet.spec.FleetSpec`
checks that each type has a server group. Pure: no I/O.
"""

from __future__ import annotations

from typing import Any

from npucenter.errors import InvalidConfigError

__all__ = ["fallback_devices_from"]


def fallback_devices_from(primary: str, value: Any, *, field: str, owner: str) -> tuple[str, ...]:
    """The fallback device types of one entry (``()`` when the key is absent or null).

    ``field`` names the key in errors (``services.fallback_devices``), ``owner`` the entry
    (``service 'chat'``).

    Raises:
        InvalidConfigError: not a list of device names, an empty list, or a device type listed
            twice (``device`` included; names compare case-insensitively).
    """
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        raise InvalidConfigError(
            field, value, f"{owner}: must be a list of device types, e.g. [atom, h100]"
        )
    if not value:
        raise InvalidConfigError(
            field, [], f"{owner}: empty; list at least one device type, or leave the key out"
        )
    out: list[str] = []
    seen = {primary.lower()}
    for item in value:
        if not isinstance(item, str) or not item.strip():
            raise InvalidConfigError(field, item, f"{owner}: each entry must be a device name")
        name = item.strip()
        if name.lower() in seen:
            raise InvalidConfigError(
                field,
                list(value),
                f"{owner}: lists {name!r} twice (it is the entry's device; list only the "
                "types to try after it)"
                if name.lower() == primary.lower()
                else f"{owner}: lists {name!r} twice",
            )
        seen.add(name.lower())
        out.append(name)
    return tuple(out)
