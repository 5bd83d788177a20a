"""Settings: flags beat environment beat defaults; missing and malformed values fail fast."""

from __future__ import annotations

import pytest

from services.common.config import SettingsError, describe, load_settings
from services.common.settings import ServerSettings
from services.policy.__main__ import PolicyServerSettings

PEERS = {"RECTUNE_SCORING_ADDRESS": "127.0.0.1:1", "RECTUNE_METRICS_ADDRESS": "127.0.0.1:2"}


def test_defaults_apply_when_nothing_is_set() -> None:
    settings = load_settings(ServerSettings, [], {})
    assert settings.port == 0
    assert settings.host == "127.0.0.1"
    assert settings.auth_token == ""


def test_environment_beats_default_and_flag_beats_environment() -> None:
    from_env = load_settings(ServerSettings, [], {"PORT": "5000", "RECTUNE_GRACE_SECONDS": "2.5"})
    assert (from_env.port, from_env.grace_seconds) == (5000, 2.5)
    from_flag = load_settings(ServerSettings, ["--port", "6000"], {"PORT": "5000"})
    assert from_flag.port == 6000


def test_settings_are_frozen() -> None:
    settings = load_settings(ServerSettings, [], {})
    with pytest.raises(AttributeError):
        settings.port = 1  # type: ignore[misc]


def test_missing_required_address_names_flag_and_variable() -> None:
    with pytest.raises(SettingsError) as error:
        load_settings(PolicyServerSettings, [], {"RECTUNE_METRICS_ADDRESS": "127.0.0.1:2"})
    assert str(error.value) == (
        "--scoring-address (env RECTUNE_SCORING_ADDRESS) is required: host:port of ScoringService"
    )


def test_empty_required_address_is_missing() -> None:
    with pytest.raises(SettingsError, match=r"--metrics-address .* is required"):
        load_settings(PolicyServerSettings, [], {**PEERS, "RECTUNE_METRICS_ADDRESS": ""})


def test_malformed_address_is_refused() -> None:
    with pytest.raises(SettingsError) as error:
        load_settings(PolicyServerSettings, ["--scoring-address", "localhost"], PEERS)
    assert str(error.value) == (
        "--scoring-address (env RECTUNE_SCORING_ADDRESS): must be host:port with a port in 1..65535, got 'localhost'"
    )


def test_malformed_number_names_its_source() -> None:
    with pytest.raises(SettingsError) as error:
        load_settings(ServerSettings, [], {"PORT": "eighty"})
    assert str(error.value) == "PORT: must be int, got 'eighty'"
    with pytest.raises(SettingsError) as error:
        load_settings(ServerSettings, ["--port", "x"], {})
    assert str(error.value) == "--port: must be int, got 'x'"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--port", "70000"], "--port (env PORT): must be between 0 and 65535, got 70000"),
        (["--tls-cert", "c.pem"], "--tls-cert and --tls-key: set both or neither"),
        (["--admin-token", "a"], "--admin-token: needs --auth-token (the token for non-admin RPCs)"),
        (["--log-format", "xml"], "--log-format: must be one of auto, json, console, got 'xml'"),
        (["--max-workers", "0"], "--max-workers: must be >= 1, got 0"),
    ],
)
def test_inconsistent_settings_are_refused(argv: list[str], message: str) -> None:
    with pytest.raises(SettingsError) as error:
        load_settings(ServerSettings, argv, {})
    assert str(error.value) == message


def test_describe_lists_every_setting_with_its_variable() -> None:
    rows = {name: (flag, env) for name, flag, env, _default, _required in describe(PolicyServerSettings)}
    assert rows["port"] == ("--port", "PORT")
    assert rows["scoring_address"] == ("--scoring-address", "RECTUNE_SCORING_ADDRESS")
