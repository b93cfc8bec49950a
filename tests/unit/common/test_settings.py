"""ServerSettings: env vars, CLI flags over env, validation of TLS and token options."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from services.common.settings import ServerSettings


def test_env_vars_and_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEGIBILITY_PORT", "6001")
    monkeypatch.setenv("LEGIBILITY_MAX_MESSAGE_BYTES", "1024")
    monkeypatch.setenv("LEGIBILITY_REFLECTION", "false")
    settings = ServerSettings()
    assert (settings.port, settings.max_message_bytes, settings.reflection) == (6001, 1024, False)
    settings = ServerSettings.from_cli(["--port", "7001", "--grace-period-s", "3.5"], prog="test")
    assert (settings.port, settings.grace_period_s, settings.max_message_bytes) == (7001, 3.5, 1024)


def test_invalid_values_name_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEGIBILITY_PORT", "70000")
    with pytest.raises(ValidationError) as info:
        ServerSettings()
    assert info.value.errors()[0]["loc"] == ("port",)


def test_tls_and_token_options_are_validated(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="tls_cert_file and tls_key_file"):
        ServerSettings(tls_cert_file=tmp_path / "cert.pem")
    with pytest.raises(ValidationError, match="mTLS"):
        ServerSettings(tls_client_ca_file=tmp_path / "ca.pem")
    with pytest.raises(ValidationError, match="not both"):
        ServerSettings(auth_token="a", auth_token_file=tmp_path / "t")
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        ServerSettings(auth_token_file=empty).resolved_auth_token()
    assert ServerSettings().resolved_auth_token() is None
    assert ServerSettings(auth_token="abc").resolved_auth_token() == "abc"
    assert "abc" not in repr(ServerSettings(auth_token="abc"))  # SecretStr keeps it out of logs
