"""Settings shared by every service: where to listen, TLS, auth, logging, outgoing calls."""

from __future__ import annotations

import math
from dataclasses import dataclass

from services.common.config import SettingsError, option
from services.common.storage import IN_MEMORY_REFUSED, in_memory_sqlite
from services.common.targets import AddressError, grpc_target


@dataclass(frozen=True)
class ClientSettings:
    """How a rectune process logs and calls the services (every service, and the tuner)."""

    log_format: str = option(
        env="RECTUNE_LOG_FORMAT", default="auto", help="json, console, or auto (console on a terminal)"
    )
    log_level: str = option(env="RECTUNE_LOG_LEVEL", default="info", help="debug, info, warning, error")
    # Outgoing calls to other rectune services.
    client_deadline_seconds: float = option(
        env="RECTUNE_CLIENT_DEADLINE_SECONDS",
        default=5.0,
        help="deadline of outgoing calls that set none themselves",
    )
    client_token: str = option(env="RECTUNE_CLIENT_TOKEN", default="", help="bearer token sent on outgoing calls")
    client_ca: str = option(
        env="RECTUNE_CLIENT_CA",
        default="",
        help="PEM CA bundle to verify servers; enables TLS on outgoing calls",
    )
    client_cert: str = option(env="RECTUNE_CLIENT_CERT", default="", help="PEM client certificate (mTLS)")
    client_key: str = option(env="RECTUNE_CLIENT_KEY", default="", help="PEM key of --client-cert")
    client_dns_interval_seconds: float = option(
        env="RECTUNE_CLIENT_DNS_INTERVAL_SECONDS",
        default=30.0,
        help="least time between two DNS lookups of a peer's name (one follows each connection a "
        "server closes at its maximum age, and finds the replicas added since)",
    )

    def __post_init__(self) -> None:
        check_client_settings(self)


@dataclass(frozen=True)
class ServerSettings(ClientSettings):
    """How a rectune service listens, authenticates and logs."""

    port: int = option(env="PORT", default=0, help="port to listen on; 0 picks a free one and logs it")
    host: str = option(
        env="RECTUNE_HOST",
        default="127.0.0.1",
        help="address to bind; 0.0.0.0 in containers (then turn auth on)",
    )
    grace_seconds: float = option(
        env="RECTUNE_GRACE_SECONDS",
        default=10.0,
        help="on SIGTERM, in-flight RPCs get this long to finish",
    )
    max_workers: int = option(env="RECTUNE_MAX_WORKERS", default=16, help="threads serving RPCs")
    max_connection_age_seconds: float = option(
        env="RECTUNE_MAX_CONNECTION_AGE_SECONDS",
        default=60.0,
        help="close each client connection after this long (clients reconnect and see new replicas); 0 = never",
    )
    max_connection_age_grace_seconds: float = option(
        env="RECTUNE_MAX_CONNECTION_AGE_GRACE_SECONDS",
        default=0.0,
        help="calls in flight on a connection closed for its age get this long to finish; 0 = as long as they "
        "take (fits, screens and streams run for minutes; new calls go to a new connection meanwhile)",
    )
    tls_cert: str = option(env="RECTUNE_TLS_CERT", default="", help="PEM server certificate; enables TLS")
    tls_key: str = option(env="RECTUNE_TLS_KEY", default="", help="PEM private key of --tls-cert")
    tls_client_ca: str = option(
        env="RECTUNE_TLS_CLIENT_CA",
        default="",
        help="PEM CA bundle; when set, clients must present a certificate it signed (mTLS)",
    )
    auth_token: str = option(
        env="RECTUNE_AUTH_TOKEN",
        default="",
        help="when set, every RPC but health checks needs 'authorization: Bearer <token>'",
    )
    admin_token: str = option(
        env="RECTUNE_ADMIN_TOKEN",
        default="",
        help="when set, arm- and settings-changing RPCs accept only this token",
    )
    health_port: int = option(
        env="RECTUNE_HEALTH_PORT",
        default=0,
        help="also serve grpc.health.v1 alone on this plaintext port (for probes when TLS or auth is on); 0 = off",
    )
    prometheus_port: int = option(
        env="RECTUNE_PROMETHEUS_PORT", default=0, help="serve Prometheus metrics at /metrics on this port; 0 = off"
    )

    def __post_init__(self) -> None:
        check_server_settings(self)


_LOG_FORMATS = ("auto", "json", "console")
_LOG_LEVELS = ("debug", "info", "warning", "error")


def check_client_settings(settings: ClientSettings) -> None:
    """Refuse logging and outgoing-call settings that cannot work, naming the flag and the rule."""
    if bool(settings.client_cert) != bool(settings.client_key):
        raise SettingsError("--client-cert and --client-key: set both or neither")
    if settings.log_format not in _LOG_FORMATS:
        raise SettingsError(f"--log-format: must be one of {', '.join(_LOG_FORMATS)}, got {settings.log_format!r}")
    if settings.log_level not in _LOG_LEVELS:
        raise SettingsError(f"--log-level: must be one of {', '.join(_LOG_LEVELS)}, got {settings.log_level!r}")
    if settings.client_deadline_seconds <= 0:
        raise SettingsError(f"--client-deadline-seconds: must be > 0, got {settings.client_deadline_seconds}")
    if not 0 < settings.client_dns_interval_seconds < math.inf:
        raise SettingsError(
            f"--client-dns-interval-seconds: must be a finite number > 0, got {settings.client_dns_interval_seconds}"
        )


def check_server_settings(settings: ServerSettings) -> None:
    """Refuse combinations that cannot work, naming the flag and the rule."""
    check_client_settings(settings)
    if not 0 <= settings.port <= 65535:
        raise SettingsError(f"--port (env PORT): must be between 0 and 65535, got {settings.port}")
    for flag, extra_port in (("--health-port", settings.health_port), ("--prometheus-port", settings.prometheus_port)):
        if not 0 <= extra_port <= 65535:
            raise SettingsError(f"{flag}: must be between 0 and 65535, got {extra_port}")
    extra_ports = [p for p in (settings.port, settings.health_port, settings.prometheus_port) if p]
    if len(extra_ports) != len(set(extra_ports)):
        raise SettingsError("--port, --health-port and --prometheus-port: must all differ")
    if settings.grace_seconds < 0:
        raise SettingsError(f"--grace-seconds: must be >= 0, got {settings.grace_seconds}")
    if settings.max_workers < 1:
        raise SettingsError(f"--max-workers: must be >= 1, got {settings.max_workers}")
    for flag, seconds in (
        ("--max-connection-age-seconds", settings.max_connection_age_seconds),
        ("--max-connection-age-grace-seconds", settings.max_connection_age_grace_seconds),
    ):
        if not seconds >= 0:
            raise SettingsError(f"{flag}: must be >= 0, got {seconds}")
    if bool(settings.tls_cert) != bool(settings.tls_key):
        raise SettingsError("--tls-cert and --tls-key: set both or neither")
    if settings.tls_client_ca and not settings.tls_cert:
        raise SettingsError("--tls-client-ca: needs --tls-cert and --tls-key (mTLS runs over TLS)")
    if settings.admin_token and not settings.auth_token:
        raise SettingsError("--admin-token: needs --auth-token (the token for non-admin RPCs)")


def check_database_url(url: str) -> None:
    """A SQLite file or a PostgreSQL URL; not an in-memory SQLite database (see in_memory_sqlite)."""
    where = "--database-url (env RECTUNE_DATABASE_URL)"
    if not url.startswith(("sqlite", "postgresql")):
        raise SettingsError(f"{where}: must be a sqlite or postgresql URL, got {url!r}")
    if in_memory_sqlite(url):
        raise SettingsError(f"{where}: {IN_MEMORY_REFUSED}, got {url!r}")


def check_address(flag: str, env: str, address: str) -> None:
    """A peer address: one endpoint or several replicas, in a form services.common.targets accepts."""
    try:
        grpc_target(address)
    except AddressError as exc:
        raise SettingsError(f"{flag} (env {env}): {exc}") from None
