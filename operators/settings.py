"""Where the operators' tools find the services: by default, where ``make up`` starts them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from services.common.clients import ClientOptions, client_options_from
from services.common.config import SettingsError, option
from services.common.settings import ClientSettings, check_address, check_database_url

# The fixed local ports of `make up` (Makefile: EMBEDDING_PORT ... METRICS_PORT).
LOCAL_POLICY = "127.0.0.1:50053"
LOCAL_SCORING = "127.0.0.1:50052"
LOCAL_METRICS = "127.0.0.1:50054"
LOCAL_AUDIT = "sqlite:///rectune-tuner.db"
DASHBOARD_PORT = 8050


@dataclass(frozen=True)
class OperatorSettings(ClientSettings):
    """The `rectune` command and its dashboard."""

    policy_address: str = option(
        env="RECTUNE_POLICY_ADDRESS", default=LOCAL_POLICY, help="host:port of PolicyService (arms, settings)"
    )
    scoring_address: str = option(
        env="RECTUNE_SCORING_ADDRESS", default=LOCAL_SCORING, help="host:port of ScoringService (model freshness)"
    )
    metrics_address: str = option(
        env="RECTUNE_METRICS_ADDRESS", default=LOCAL_METRICS, help="host:port of MetricsService (statistics)"
    )
    database_url: str = option(
        env="RECTUNE_DATABASE_URL",
        default=LOCAL_AUDIT,
        help="SQLAlchemy URL of the tuner's audit table (what `tuner run` writes)",
    )
    admin_token: str = option(
        env="RECTUNE_ADMIN_TOKEN",
        default="",
        help="sent on calls that change arms or settings (PolicyService's --admin-token); the dashboard "
        "asks the same token of whoever changes an arm from the page",
    )
    dashboard_host: str = option(
        env="RECTUNE_DASHBOARD_HOST", default="127.0.0.1", help="address the dashboard binds; 0.0.0.0 in a pod"
    )
    dashboard_port: int = option(env="RECTUNE_DASHBOARD_PORT", default=DASHBOARD_PORT, help="the dashboard's port")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_address("--policy-address", "RECTUNE_POLICY_ADDRESS", self.policy_address)
        check_address("--scoring-address", "RECTUNE_SCORING_ADDRESS", self.scoring_address)
        check_address("--metrics-address", "RECTUNE_METRICS_ADDRESS", self.metrics_address)
        check_database_url(self.database_url)
        if not 0 <= self.dashboard_port <= 65535:
            raise SettingsError(f"--dashboard-port: must be between 0 and 65535, got {self.dashboard_port}")

    def reading_options(self) -> ClientOptions:
        """Calls that read: the client token (the admin token is accepted too)."""
        options = client_options_from(self)
        return options if options.token else dataclasses.replace(options, token=self.admin_token)

    def admin_options(self) -> ClientOptions:
        """Calls that change arms or settings: the admin token when there is one."""
        options = client_options_from(self)
        return dataclasses.replace(options, token=self.admin_token) if self.admin_token else options
