"""Old config against new: which components to stop, start or leave running.

A component restarts only if its own section changed. Core keys that cannot
change under a running process (the store, the HTTP listener) are named so
the operator knows a restart is needed; the rest apply at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.config import ComponentSpec, Config

# Core keys read only at start; everything else in the core sections applies live.
RESTART_ONLY = {
    "store": None,  # every key
    "http": {"listen", "max_body_size", "keepalive_timeout"},
    "daemon": None,
    "logging": None,
    "near_duplicates": {"link_index_entries"},  # the store's in-memory index
}


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    stop: tuple[str, ...]
    start: tuple[ComponentSpec, ...]
    unchanged: tuple[str, ...]
    restart_required: tuple[str, ...]

    @property
    def changes_components(self) -> bool:
        return bool(self.stop or self.start)


def plan(old: Config, new: Config) -> ReloadPlan:
    before = {spec.key: spec for spec in old.components}
    after = {spec.key: spec for spec in new.components}
    stop = [key for key, spec in before.items() if key not in after or after[key].raw != spec.raw]
    start = [spec for key, spec in after.items() if key not in before or key in stop]
    unchanged = [key for key in before if key in after and key not in stop]
    needs_restart = []
    for section, keys in RESTART_ONLY.items():
        old_values = getattr(old.core, section).model_dump()
        new_values = getattr(new.core, section).model_dump()
        for key in sorted(set(old_values) | set(new_values)):
            if (keys is None or key in keys) and old_values.get(key) != new_values.get(key):
                needs_restart.append(f"{section}.{key}")
    return ReloadPlan(tuple(stop), tuple(start), tuple(unchanged), tuple(needs_restart))
