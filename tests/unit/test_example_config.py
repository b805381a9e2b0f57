"""The example config documents every core key, so no setting is a secret of the code."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from gateway.config import CoreConfig, find_line
from tests.conftest import REPO

EXAMPLE = REPO / "config" / "helpline.example.toml"
# Tables whose keys are names the operator chooses, documented by a commented template.
TEMPLATES = {("http", "tokens"), ("connectors",), ("backends",), ("business_hours",)}


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


def test_the_commented_connector_examples_are_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    """Uncommented, each documented [connectors.X] example is a valid section of its type."""
    from gateway.config import parse_config

    monkeypatch.setenv("HELPLINE_IMAP_PASSWORD", "from-the-environment")

    blocks: list[list[str]] = []
    for line in EXAMPLE.read_text().splitlines():
        if line.startswith("# [connectors."):
            blocks.append([line[2:]])
        elif blocks and blocks[-1] and line.startswith("# ") and not line.startswith("# # "):
            blocks[-1].append(line[2:])
        elif blocks and not line.startswith("# # "):
            blocks.append([])  # a blank or other line ends the block
    examples = [b for b in blocks if b]
    assert {b[0] for b in examples} == {
        "[connectors.mail]",
        "[connectors.desk]",
        "[connectors.inbox]",
        "[connectors.outbound]",
    }
    for block in examples:
        config = parse_config("\n".join(block) + "\n")
        (spec,) = config.components
        assert spec.type in ("smtp", "lmtp", "imap", "smtp_out")


def _commented_blocks(prefix: str) -> list[tuple[list[str], set[str]]]:
    """Each commented `[prefix.X]` example: its lines (uncommented) and every key it
    names, the optional ones shown as `# # key = ...` included."""
    blocks: list[tuple[list[str], set[str]]] = []
    current: tuple[list[str], set[str]] | None = None
    for line in EXAMPLE.read_text().splitlines():
        if line.startswith(f"# [{prefix}."):
            current = ([line[2:]], set())
            blocks.append(current)
        elif current is not None and line.startswith("# # "):
            if "=" in line and " " not in line[4:].split("=")[0].strip():
                current[1].add(line[4:].split("=")[0].strip())
        elif current is not None and line.startswith("# "):
            current[0].append(line[2:])
            if "=" in line:
                current[1].add(line[2:].split("=")[0].strip())
        else:
            current = None
    return blocks


def test_the_commented_backend_examples_are_valid_and_complete(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Uncommented, each documented [backends.X] example is a valid section of its type,
    and names every key its type has."""
    from gateway import registry
    from gateway.config import parse_config

    secrets = tmp_path / "creds"
    secrets.mkdir()
    names = ["webhook-secret", "zendesk-token", "zendesk-webhook-secret", "rt-token"]
    names += ["zammad-token", "zammad-hook", "freshdesk-key", "freshdesk-hook"]
    names += ["chatwoot-token", "chatwoot-inbox-secret"]
    for name in names:
        value = {"webhook-secret": "whsec_" + "A" * 44, "rt-token": "1-14-" + "0a" * 16}.get(
            name, "s3cret"
        )
        (secrets / name).write_text(value)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(secrets))
    examples = _commented_blocks("backends")
    assert {b[0] for b, _ in examples} == {
        f"[backends.{name}]"
        for name in ("warehouse", "zendesk", "rt", "zammad", "freshdesk", "chatwoot")
    }
    for block, documented in examples:
        config = parse_config("\n".join(block) + "\n")
        (spec,) = config.components
        model = registry.resolve("backend", spec.type).config_model
        missing = (
            set(model.model_fields)
            - documented
            - {"start", "concurrency"}
            - {
                "max_queued",
                "retry_base",
                "timeout",
                "retry_cap",
            }
        )
        assert not missing, f"{block[0]} does not show {sorted(missing)}"


def test_the_commented_calendar_example_is_valid() -> None:
    from gateway.config import parse_config

    lines = EXAMPLE.read_text().splitlines()
    start = lines.index("# [business_hours.office]")
    block = []
    for line in lines[start:]:
        if not line.startswith("# "):
            break
        block.append(line[2:])
    config = parse_config(
        "\n".join(block) + '\n[first_response.business_hours]\nemail = "office"\n'
    )
    assert config.core.business_hours["office"].friday == ["09:00-15:00"]
