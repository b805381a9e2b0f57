"""The example config documents every core key, so no setting is a secret of the code."""

from __future__ import annotations

from pydantic import BaseModel

from gateway.config import CoreConfig, find_line
from tests.conftest import REPO

EXAMPLE = REPO / "config" / "helpline.example.toml"
# Tables whose keys are names the operator chooses, documented by a commented template.
TEMPLATES = {("http", "tokens"), ("connectors",), ("backends",)}


def keys(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for name, field in model.model_fields.items():
        path = (*prefix, name)
        if path in TEMPLATES:
            continue
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            found.extend(keys(kind, path))
        else:
            found.append(path)
    return found


def test_every_core_key_is_in_the_example() -> None:
    text = EXAMPLE.read_text()
    # Commented-out keys count: strip one leading "# " so they are found as keys.
    uncommented = "\n".join(
        line[2:] if line.startswith("# ") and "=" in line else line for line in text.splitlines()
    )
    lines = uncommented.splitlines()

    def documented(path: tuple[str, ...]) -> bool:
        line = find_line(uncommented, path)  # falls back to the table's line: check the key
        return line is not None and lines[line - 1].strip().startswith(f"{path[-1]} =")

    missing = [".".join(p) for p in keys(CoreConfig) if not documented(p)]
    assert not missing, f"keys missing from {EXAMPLE.name}: {missing}"
