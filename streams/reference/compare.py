"""A readable difference between the state a log must leave and the stored one."""

from __future__ import annotations

from streams.reference.world import State

SHOWN = 12  # lines shown per section


def _mapping(name: str, want: dict, got: dict) -> list[str]:
    lines = []
    for key in sorted(set(want) | set(got), key=str):
        if key not in got:
            lines.append(f"  {key}: missing (expected {want[key]!r})")
        elif key not in want:
            lines.append(f"  {key}: unexpected {got[key]!r}")
        elif want[key] != got[key]:
            lines.append(f"  {key}: expected {want[key]!r}, stored {got[key]!r}")
    return _section(name, lines)


def _section(name: str, lines: list[str]) -> list[str]:
    if not lines:
        return []
    more = [f"  ... and {len(lines) - SHOWN} more"] if len(lines) > SHOWN else []
    return [f"{name} ({len(lines)} differ):", *lines[:SHOWN], *more]


def _profiles(want: dict[str, dict], got: dict[str, dict]) -> list[str]:
    lines = []
    for pid in sorted(set(want) | set(got)):
        a, b = want.get(pid), got.get(pid)
        if a is None or b is None:
            which = "missing" if b is None else "unexpected"
            doc = a or b
            lines.append(f"  {pid}: {which}, identifiers {doc['identifiers']}, "
                         f"{doc['counts']['total']} events")
            continue
        for key in sorted(a.keys() | b.keys()):
            if a.get(key) != b.get(key):
                lines.append(f"  {pid}.{key}: expected {a.get(key)!r}, stored {b.get(key)!r}")
    return _section("profiles", lines)


def _redirects(want: State, got: State) -> list[str]:
    lines = []
    for old, new in sorted(want.redirects.items()):
        if got.redirects.get(old) != new:
            lines.append(f"  {old}: expected -> {new}, stored -> {got.redirects.get(old)}")
    for old, new in sorted(got.redirects.items()):
        if old not in want.redirects and want.allowed_redirects.get(old) != new:
            lines.append(f"  {old}: stored -> {new}, allowed "
                         f"{want.allowed_redirects.get(old)}")
    return _section("redirects (profile_id_to_survivor)", lines)


def state_diff(want: State, got: State, dead: bool = False) -> str:
    """Every difference between the expected state ``want`` and the stored ``got``
    (empty when they agree): profiles field by field, identifier owners, merges, where
    each event counts, skipped events, redirects, forgotten digests; dead letters too
    when ``dead``. Pure."""
    lines = [*_profiles(want.profiles, got.profiles),
             *_mapping("identifier owners", want.owners, got.owners),
             *_section("merges", [f"  missing {m}" for m in want.merges
                                  if m not in got.merges]
                       + [f"  unexpected {m}" for m in got.merges if m not in want.merges]),
             *_mapping("events (profile they count in)", want.events, got.events),
             *_mapping("skipped events", want.skipped, got.skipped),
             *_redirects(want, got),
             *_section("forgotten digests", [] if want.forgotten == got.forgotten else [
                 f"  expected {len(want.forgotten)}, stored {len(got.forgotten)}"])]
    if dead:
        lines += _mapping("dead letters", dict(want.dead), dict(got.dead))
    return "\n".join(lines)
