"""Facts about the rectune.v1 contracts that the runtime needs: names and idempotency."""

from __future__ import annotations

PACKAGE = "rectune.v1"
EMBEDDING_SERVICE = f"{PACKAGE}.EmbeddingService"
SCORING_SERVICE = f"{PACKAGE}.ScoringService"
POLICY_SERVICE = f"{PACKAGE}.PolicyService"
METRICS_SERVICE = f"{PACKAGE}.MetricsService"

# RPCs safe to retry on UNAVAILABLE: reads, and writes made idempotent by an id in the
# request (request_id, event_id, decision_id) or by upsert semantics.
IDEMPOTENT_METHODS: dict[str, tuple[str, ...]] = {
    EMBEDDING_SERVICE: ("EmbedTexts", "EncodeUser", "GetModelInfo"),
    SCORING_SERVICE: (
        "UpsertItems",
        "RankItems",
        "ScoreItems",
        "FitConfiguration",
        "EvaluateConfiguration",
        "DescribeSearchSpace",
    ),
    POLICY_SERVICE: ("Recommend", "RecordFeedback", "ListArms", "GetPolicySettings"),
    METRICS_SERVICE: (
        "RecordEvents",
        "RecordDecisions",
        "GetArmStats",
        "GetTimeSeries",
        "ExportDecisions",
    ),
}

# RPCs that change which configurations serve traffic: only the tuner and operators
# (the admin token) may call them when auth is on.
ADMIN_METHODS: tuple[str, ...] = tuple(
    f"/{POLICY_SERVICE}/{name}" for name in ("PutArm", "SetArmState", "UpdatePolicySettings", "RollbackChampion")
)
