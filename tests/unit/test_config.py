"""The config: defaults that run, every problem named by key path and line, secrets."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config, parse_config, token_value
from tests.conftest import REPO


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    return [str(p) for p in info.value.problems]


def test_empty_config_runs_on_safe_defaults() -> None:
    config = parse_config("")
    assert str(config.core.http.listen) == "127.0.0.1:8080"
    assert config.core.store.durability == "power"
    assert config.core.store.url == ""
    assert config.core.http.tokens == {}
    assert config.core.first_response.targets.chat == 13
    assert config.core.first_response.targets.voice == 4
    assert config.core.first_response.targets.email == 180
    assert config.core.ingest.idempotency_window == 7 * 86400
    assert config.components == ()


def test_the_example_config_is_valid() -> None:
    config = load_config(REPO / "config" / "helpline.example.toml")
    assert str(config.core.http.listen) == "127.0.0.1:8080"


def test_unknown_keys_are_errors_with_path_and_line() -> None:
    found = problems('[http]\nlisten = "127.0.0.1:9000"\nlistne = "x"\n\n[store]\nduribility = 1\n')
    assert "http.listne (line 3): unknown key" in found[0]
    assert "store.duribility (line 6): unknown key" in found[1]


def test_every_problem_is_reported_in_one_run() -> None:
    found = problems(
        '[http]\nlisten = "nowhere"\nmax_body_size = "huge"\n'
        '[store]\ndurability = "sometimes"\n'
        '[ingest]\nidempotency_window = "forever"\n'
        "[connectors.mail]\nport = 25\n"
        '[backends.desk]\ntype = "zendesk9"\n'
    )
    joined = "\n".join(found)
    assert len(found) == 6, joined
    assert "http.listen (line 2)" in joined and "HOST:PORT" in joined
    assert "http.max_body_size (line 3)" in joined and "not a size" in joined
    assert "store.durability (line 5)" in joined
    assert "ingest.idempotency_window (line 7)" in joined and "not a duration" in joined
    assert "connectors.mail.type" in joined and "names its type" in joined
    assert "backends.desk.type (line 11)" in joined and "unknown backend type 'zendesk9'" in joined


def test_toml_syntax_errors_carry_the_line() -> None:
    found = problems('[http]\nlisten = "127.0.0.1:1"\ntokens = [\n')
    assert "not valid TOML" in found[0]
    assert "(line " in found[0]


def test_component_sections_are_validated_by_their_own_model() -> None:
    found = problems(
        '[connectors.probe]\ntype = "tests.plugins:Probe"\nmarker = "/tmp/x"\nsurprise = 1\n'
    )
    assert found == [
        "connectors.probe.surprise (line 4): unknown key (not part of this section; "
        "check its spelling)"
    ]
    config = parse_config('[connectors.probe]\ntype = "tests.plugins:Probe"\nmarker = "/tmp/x"\n')
    (spec,) = config.components
    assert (spec.kind, spec.name, spec.key) == ("connector", "probe", "connectors.probe")


def test_secrets_from_file_env_and_credentials_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "api").write_text("from-file\n")
    monkeypatch.setenv("HL_TEST_TOKEN", "from-env")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    config = parse_config(
        f'[http.tokens.a]\nsecret = {{ file = "{tmp_path}/api" }}\n'
        '[http.tokens.b]\nsecret = { env = "HL_TEST_TOKEN" }\n'
        '[http.tokens.c]\nsecret = { file = "$CREDENTIALS_DIRECTORY/api" }\ntrusted = true\n'
        '[http.tokens.d]\nsecret = "inline"\n'
    )
    tokens = config.core.http.tokens
    assert [token_value(tokens[k]) for k in "abcd"] == [
        "from-file",
        "from-env",
        "from-file",
        "inline",
    ]
    assert tokens["c"].trusted and not tokens["a"].trusted
    assert "from-file" not in repr(config)  # secrets never show in reprs or logs


def test_missing_secrets_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    found = problems(
        '[http.tokens.a]\nsecret = { file = "/nonexistent/helpline-token" }\n'
        '[http.tokens.b]\nsecret = { env = "HL_SURELY_UNSET_VAR" }\n'
        '[http.tokens.c]\nsecret = { file = "$CREDENTIALS_DIRECTORY/x" }\n'
        '[http.tokens.d]\nsecret = { url = "x" }\n'
    )
    joined = "\n".join(found)
    assert "http.tokens.a.secret" in joined and "cannot read secret file" in joined
    assert "HL_SURELY_UNSET_VAR is not set" in joined
    assert "$CREDENTIALS_DIRECTORY" in joined and "LoadCredential" in joined
    assert "http.tokens.d.secret" in joined


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
        timeout=60,
    )


def test_check_config_says_ok_or_names_every_problem(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text('[http]\nlisten = "127.0.0.1:8099"\n')
    result = run_cli("check-config", "--config", str(good))
    assert (result.returncode, result.stdout.strip()) == (0, "ok")

    bad = tmp_path / "bad.toml"
    bad.write_text('[http]\nlisten = "x"\nbogus = 1\n')
    result = run_cli("check-config", "--config", str(bad))
    assert result.returncode == 78
    assert "2 problems" in result.stderr
    assert "http.listen (line 2)" in result.stderr
    assert "http.bogus (line 3): unknown key" in result.stderr


def test_run_refuses_a_bad_config_with_ex_config(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[store]\nmax_pending = 0\n")
    result = run_cli("run", "--config", str(bad), "--state-dir", str(tmp_path / "s"))
    assert result.returncode == 78
    assert "store.max_pending (line 2)" in result.stderr


def test_raw_mail_is_kept_at_least_the_idempotency_window() -> None:
    (found,) = problems('[ingest]\nidempotency_window = "14d"\n[retention]\nraw_mail = "10d"\n')
    assert found.startswith("retention.raw_mail (line 4): 10d is shorter than")
    assert "ingest.idempotency_window (14d)" in found
    assert parse_config('[retention]\nraw_mail = "7d"\n').core.retention.raw_mail == 7 * 86400


def test_auto_ack_templates_are_checked_when_loaded() -> None:
    out = '[connectors.out]\ntype = "smtp_out"\nrelay = "127.0.0.1:25"\n'
    found = problems(out + 'auto_ack_subject = "We got it"\nauto_ack_text = "Ref {ticket"\n')
    assert found[0].startswith("connectors.out.auto_ack_subject (line 4)")
    assert "must contain {ticket}" in found[0]
    assert found[1].startswith("connectors.out.auto_ack_text (line 5)")
    assert "it may use {ticket}, {subject}" in found[1]
    found = problems(out + 'auto_ack_text = "Dear {name}"\nauto_ack_window = "0s"\n')
    assert "connectors.out.auto_ack_text (line 4)" in found[0] and "{subject}" in found[0]
    assert found[1].startswith("connectors.out.auto_ack_window (line 5)")
