"""Commands that talk to the daemon find it, or say why they cannot."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import main


def test_a_socket_passed_by_systemd_needs_an_explicit_url(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "helpline.toml"
    config.write_text('[http]\nlisten = "systemd:http"\n')
    code = main(["backends", "--config", str(config), "--token", "t"])
    assert code == 2
    err = capsys.readouterr().err
    assert "systemd:http" in err and "--url" in err
