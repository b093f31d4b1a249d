"""What the collector adds to an event's ``context`` from the request, as Segment's own
servers do: ``ip`` (the caller's address) when the SDK left it out, and, from
``context.userAgent``, the browser (``context.browser``), operating system
(``context.os``) and device kind (``context.device.type``: desktop, mobile, tablet or
bot, with manufacturer and model when the agent names them). Browser SDKs send only the
user agent; with this, web events carry device information as app and watch events do.

Values the SDK did send (non-empty) are never overwritten. The user agent is parsed with ua-parser
(Browserscope's rules, kept current by its maintainers in ua-parser-builtins); parses
are cached, since one visitor sends the same agent with every event. Pure, apart from
that cache.
"""

from __future__ import annotations

import functools
from typing import Any

from ua_parser import parse

MAX_USER_AGENT = 512  # longer agents are cut before parsing (and before caching)

_DESKTOP_OS = ("windows", "mac os x", "linux", "ubuntu", "fedora", "debian", "chrome os",
               "freebsd", "openbsd", "netbsd", "solaris")


def _kind(user_agent: str, os_name: str, device_family: str, brand: str) -> str:
    lowered = user_agent.lower()
    if device_family == "Spider":
        return "bot"
    if "ipad" in lowered or "tablet" in lowered or "tablet" in brand.lower():
        return "tablet"
    if os_name == "Android" and "mobile" not in lowered:
        return "tablet"  # Android browsers on phones say "Mobile"; tablets do not
    if "mobi" in lowered or "iphone" in lowered or os_name in ("iOS", "Android"):
        return "mobile"
    return "desktop" if os_name.lower() in _DESKTOP_OS or not device_family else "mobile"


@functools.lru_cache(maxsize=4096)
def describe_user_agent(user_agent: str) -> dict[str, dict[str, str]]:
    """``{"browser": {...}, "os": {...}, "device": {...}}`` for a user agent string, each
    with only the values the agent names (``name``/``version``; ``type``,
    ``manufacturer``, ``model``). Cached; never raises for odd input."""
    agent = user_agent[:MAX_USER_AGENT]
    result = parse(agent)
    out: dict[str, dict[str, str]] = {}
    ua = result.user_agent
    if ua is not None and ua.family != "Other":
        version = ".".join(p for p in (ua.major, ua.minor, ua.patch) if p)
        out["browser"] = {"name": ua.family, **({"version": version} if version else {})}
    os_name = ""
    if result.os is not None and result.os.family != "Other":
        os_name = result.os.family
        version = ".".join(p for p in (result.os.major, result.os.minor, result.os.patch) if p)
        out["os"] = {"name": os_name, **({"version": version} if version else {})}
    device = result.device
    family = device.family if device is not None and device.family != "Other" else ""
    brand = (device.brand or "") if device is not None else ""
    info = {"type": _kind(agent, os_name, family, brand)}
    if brand and not brand.startswith(("Generic", "Spider")):
        info["manufacturer"] = brand
    if device is not None and device.model and info["type"] != "bot":
        info["model"] = device.model
    out["device"] = info
    return out


def enrich_context(context: Any, ip: str | None) -> dict | None:
    """The event's ``context`` with ``ip`` and the user agent's browser, os and device
    filled in where missing (a new dict; the given one is not changed). Returns
    ``context`` itself when there is nothing to add, None when there is no context and
    no ip."""
    own = context if isinstance(context, dict) else None
    agent = own.get("userAgent") if own is not None else None
    need_ip = bool(ip) and not (own is not None and own.get("ip"))
    if not need_ip and not (isinstance(agent, str) and agent):
        return own
    out = dict(own) if own is not None else {}
    if need_ip:
        out["ip"] = ip
    if isinstance(agent, str) and agent:
        for section, values in describe_user_agent(agent).items():
            current = out.get(section)
            if current is None:
                out[section] = dict(values)
            elif isinstance(current, dict) and any(current.get(k) in (None, "")
                                                   for k in values):
                # RudderStack's SDK sends os {"name": "", "version": ""}: empty is absent.
                out[section] = {**current, **{k: v for k, v in values.items()
                                              if current.get(k) in (None, "")}}
    return out
