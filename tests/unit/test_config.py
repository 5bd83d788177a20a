"""Settings: flags beat environment beat defaults; missing and malformed values fail fast."""

from __future__ import annotations

import pytest

from services.common.config import SettingsError, describe, load_settings
from services.common.settings import ServerSettings
from services.common.targets import AddressError, grpc_target
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
        "--scoring-address (env RECTUNE_SCORING_ADDRESS) is required: "
        "ScoringService replicas that rank (host:port, dns:///name:port or a list of IP endpoints)"
    )


def test_empty_required_address_is_missing() -> None:
    with pytest.raises(SettingsError, match=r"--metrics-address .* is required"):
        load_settings(PolicyServerSettings, [], {**PEERS, "RECTUNE_METRICS_ADDRESS": ""})


@pytest.mark.parametrize(
    ("address", "rule"),
    [
        ("localhost", "each endpoint must be host:port with a port in 1..65535, got 'localhost'"),
        ("dns:///scoring", "each endpoint must be host:port with a port in 1..65535, got 'scoring'"),
        ("127.0.0.1:1,127.0.0.1:0", "each endpoint must be host:port with a port in 1..65535, got '127.0.0.1:0'"),
        (
            "localhost:1,localhost:2",
            "a list of endpoints must name IP addresses ('localhost' is a name): "
            "use one DNS name that resolves to every replica (dns:///name:port)",
        ),
        ("127.0.0.1:1,[::1]:2", "a list of endpoints must be all IPv4 or all IPv6"),
        (
            "dns://10.0.0.10:53",
            "a dns:// address is dns:///host:port or dns://server:port/host:port, got 'dns://10.0.0.10:53'",
        ),
        ("dns://10.0.0.10/scoring:1", "each endpoint must be host:port with a port in 1..65535, got '10.0.0.10'"),
        ("ipv4:127.0.0.1:1,[::1]:2", "every endpoint of the list must be an IPv4 address, got '::1'"),
        ("", "must name at least one endpoint (host:port)"),
    ],
)
def test_malformed_address_is_refused_naming_the_rule(address: str, rule: str) -> None:
    assert grpc_target_error(address) == rule
    if address:  # an empty one is missing (test_empty_required_address_is_missing)
        with pytest.raises(SettingsError) as error:
            load_settings(PolicyServerSettings, ["--scoring-address", address], PEERS)
        assert str(error.value) == f"--scoring-address (env RECTUNE_SCORING_ADDRESS): {rule}"


def grpc_target_error(address: str) -> str:
    with pytest.raises(AddressError) as error:
        grpc_target(address)
    return str(error.value)


@pytest.mark.parametrize(
    ("address", "target"),
    [
        ("scoring:50052", "scoring:50052"),
        ("dns:///scoring:50052", "dns:///scoring:50052"),
        ("dns://127.0.0.1:5353/scoring.rectune.test:50052", "dns://127.0.0.1:5353/scoring.rectune.test:50052"),
        ("127.0.0.1:1,127.0.0.1:2", "ipv4:127.0.0.1:1,127.0.0.1:2"),
        ("[::1]:1,[::1]:2", "ipv6:[::1]:1,[::1]:2"),
        ("ipv4:127.0.0.1:1,127.0.0.2:1", "ipv4:127.0.0.1:1,127.0.0.2:1"),
    ],
)
def test_an_address_may_name_several_replicas(address: str, target: str) -> None:
    assert grpc_target(address) == target
    assert load_settings(PolicyServerSettings, ["--scoring-address", address], PEERS).scoring_address == address


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
        (["--client-dns-interval-seconds", "0"], "--client-dns-interval-seconds: must be a finite number > 0, got 0.0"),
        (
            ["--client-dns-interval-seconds", "nan"],
            "--client-dns-interval-seconds: must be a finite number > 0, got nan",
        ),
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


def test_scoring_fit_threads_are_zero_or_more() -> None:
    from services.scoring.__main__ import ScoringSettings

    environment = {"RECTUNE_EMBEDDING_ADDRESS": "127.0.0.1:1"}
    assert load_settings(ScoringSettings, [], environment).fit_threads == 0
    assert load_settings(ScoringSettings, ["--fit-threads", "1"], environment).fit_threads == 1
    with pytest.raises(SettingsError) as error:
        load_settings(ScoringSettings, ["--fit-threads", "-1"], environment)
    assert str(error.value) == "--fit-threads: must be >= 0, got -1"
