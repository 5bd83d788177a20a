"""PolicyService over gRPC with real ScoringService (MovieLens) and MetricsService on loopback."""

from __future__ import annotations

import time

import grpc
import pytest
from google.protobuf.field_mask_pb2 import FieldMask

from rectune.domain.configuration import Configuration
from rectune.v1 import common_pb2, metrics_pb2, policy_pb2, policy_pb2_grpc, scoring_pb2
from services.common.convert import configuration_message
from tests.conftest import MOVIELENS, UNUSED_PEER
from tests.rpc import error_of

pytestmark = pytest.mark.integration


@pytest.fixture
def suite(start_service, tmp_path):
    """Scoring and metrics, and a function that starts a policy service against them."""
    scoring = start_service("scoring", dataset=str(MOVIELENS))
    metrics = start_service("metrics")
    database = f"sqlite:///{tmp_path / 'policy.db'}"

    def policy(metrics_address: str | None = None, scoring_address: str | None = None):
        return start_service(
            "policy",
            scoring_address=scoring_address or scoring.address,
            metrics_address=metrics_address or metrics.address,
            database_url=database,
            outbox_interval_seconds=0.2,
            guardrail_interval_seconds=0.2,
            belief_cache_seconds=0.0,
            seed=7,
        )

    return scoring, metrics, policy


def configuration(strategy: str, **params) -> common_pb2.Configuration:
    return configuration_message(Configuration(strategy, params))


def put(stub, arm_id: str, strategy: str, state=policy_pb2.ARM_STATE_ACTIVE, cap: float = 0.0, **params):
    origin = policy_pb2.ARM_ORIGIN_CONTROL if state == policy_pb2.ARM_STATE_CHAMPION else policy_pb2.ARM_ORIGIN_MANUAL
    request = policy_pb2.PutArmRequest(
        arm_id=arm_id,
        configuration=configuration(strategy, **params),
        origin=origin,
        initial_state=state,
        exposure_cap=cap,
    )
    return stub.PutArm(request, timeout=60).arm


def recommend(
    stub: policy_pb2_grpc.PolicyServiceStub, request_id: str, user_id: str = "196", k: int = 5
) -> policy_pb2.RecommendResponse:
    return stub.Recommend(policy_pb2.RecommendRequest(request_id=request_id, user_id=user_id, k=k), timeout=30)


def click(
    stub: policy_pb2_grpc.PolicyServiceStub, event_id: str, decision_id: str
) -> policy_pb2.RecordFeedbackResponse:
    request = policy_pb2.RecordFeedbackRequest(
        event_id=event_id, decision_id=decision_id, kind=common_pb2.EVENT_KIND_CLICK
    )
    return stub.RecordFeedback(request, timeout=10)


def arms_by_id(stub) -> dict[str, policy_pb2.Arm]:
    return {arm.arm_id: arm for arm in stub.ListArms(policy_pb2.ListArmsRequest(), timeout=10).arms}


def wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.1)


def test_arms_are_registered_once_with_a_single_champion(suite) -> None:
    _, _, policy = suite
    stub = policy().stub
    assert error_of(lambda: put(stub, "knn", "item_knn")) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "initial_state: the first arm must be the champion (the control)",
    )
    champion = put(stub, "pop", "popularity", policy_pb2.ARM_STATE_CHAMPION)
    assert (champion.state, champion.exposure_cap) == (policy_pb2.ARM_STATE_CHAMPION, 1.0)
    knn = put(stub, "knn", "item_knn", cap=0.3)
    assert (knn.exposure_cap, knn.origin) == (0.3, policy_pb2.ARM_ORIGIN_MANUAL)
    # The same configuration, defaults spelled out, is the same arm.
    assert error_of(lambda: put(stub, "knn2", "item_knn", neighbours=100)) == (
        grpc.StatusCode.ALREADY_EXISTS,
        "configuration: equals the configuration of arm 'knn'",
    )
    assert error_of(lambda: put(stub, "bad", "als", factors=2)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "configuration.params['factors']: must be between 8 and 512, got 2",
    )
    assert error_of(lambda: put(stub, "pop2", "popularity", policy_pb2.ARM_STATE_CHAMPION, half_life_days=3.0)) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "initial_state: a champion exists; register as ACTIVE and promote it with SetArmState",
    )
    promoted = stub.SetArmState(
        policy_pb2.SetArmStateRequest(arm_id="knn", state=policy_pb2.ARM_STATE_CHAMPION), timeout=10
    )
    assert promoted.arm.state == policy_pb2.ARM_STATE_CHAMPION
    assert arms_by_id(stub)["pop"].state == policy_pb2.ARM_STATE_ACTIVE
    assert error_of(
        lambda: stub.SetArmState(
            policy_pb2.SetArmStateRequest(arm_id="zz", state=policy_pb2.ARM_STATE_ACTIVE), timeout=10
        )
    ) == (
        grpc.StatusCode.NOT_FOUND,
        "arm_id: no arm 'zz'",
    )


def test_recommend_is_idempotent_by_request_id_and_logs_a_propensity(suite) -> None:
    _, _, policy = suite
    stub = policy().stub
    put(stub, "pop", "popularity", policy_pb2.ARM_STATE_CHAMPION)
    put(stub, "knn", "item_knn", cap=0.5)
    first = recommend(stub, "r1")
    again = recommend(stub, "r1")
    assert first == again
    assert len(first.items) == 5 and not first.degraded
    # Two arms with no evidence yet: each is the best draw half the time (1,000 Monte-Carlo
    # samples: 0.016 standard error), under knn's cap of 0.5 and pop's minimum share of 0.2.
    assert first.propensity_samples == 1000 and abs(first.propensity - 0.5) < 0.07
    chosen = [recommend(stub, f"spread-{n}").arm_id for n in range(200)]
    assert abs(chosen.count("knn") / 200 - 0.5) < 0.15  # both arms are served, about evenly
    assert error_of(lambda: recommend(stub, "r2", k=0)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "k: must be between 1 and 1000, got 0",
    )
    assert error_of(lambda: stub.Recommend(policy_pb2.RecommendRequest(user_id="1", k=1), timeout=10))[0] == (
        grpc.StatusCode.INVALID_ARGUMENT
    )


def test_feedback_is_idempotent_and_reaches_metrics_through_the_outbox(suite) -> None:
    _, metrics, policy = suite
    stub = policy().stub
    put(stub, "pop", "popularity", policy_pb2.ARM_STATE_CHAMPION)
    decisions = [recommend(stub, f"r{n}", user_id=str(n + 1)) for n in range(20)]
    for n, decision in enumerate(decisions[:8]):
        assert click(stub, f"c{n}", decision.decision_id).duplicate is False
        assert click(stub, f"c{n}", decision.decision_id).duplicate is True  # replayed: acknowledged, not counted
    posterior = arms_by_id(stub)["pop"].posterior
    assert (posterior.impressions, posterior.clicks, posterior.reward_sum) == (20, 8, 8.0)

    def counted() -> tuple[int, int]:
        stats = metrics.stub.GetArmStats(metrics_pb2.GetArmStatsRequest(arm_ids=["pop"]), timeout=10).stats[0]
        return stats.impressions, stats.clicks

    wait_for(lambda: counted() == (20, 8))
    exported = metrics.stub.ExportDecisions(metrics_pb2.ExportDecisionsRequest(), timeout=10).decisions
    assert len(exported) == 20 and all(d.decision.propensity == 1.0 for d in exported)
    assert error_of(lambda: click(stub, "c99", "no-such-decision")) == (
        grpc.StatusCode.NOT_FOUND,
        "decision_id: no decision 'no-such-decision' (unknown, or older than the reward window)",
    )


def test_feedback_after_the_reward_window_is_refused(suite) -> None:
    _, _, policy = suite
    stub = policy().stub
    put(stub, "pop", "popularity", policy_pb2.ARM_STATE_CHAMPION)
    settings = policy_pb2.PolicySettings()
    settings.reward_window.FromMilliseconds(300)
    stub.UpdatePolicySettings(
        policy_pb2.UpdatePolicySettingsRequest(settings=settings, update_mask=FieldMask(paths=["reward_window"])),
        timeout=10,
    )
    decision = recommend(stub, "r-late")
    time.sleep(0.5)
    code, details = error_of(lambda: click(stub, "late", decision.decision_id))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert details == f"decision_id: decision '{decision.decision_id}' is older than the reward window (0 s)"


def test_restart_keeps_arms_posteriors_and_unsent_events_then_the_outbox_drains(suite) -> None:
    _, metrics, policy = suite
    down = policy(metrics_address=UNUSED_PEER)  # MetricsService unreachable
    put(down.stub, "pop", "popularity", policy_pb2.ARM_STATE_CHAMPION)
    decisions = [recommend(down.stub, f"r{n}", user_id=str(n + 1)) for n in range(12)]
    for n, decision in enumerate(decisions[:5]):
        click(down.stub, f"c{n}", decision.decision_id)
    down.service.stop(0)  # killed mid-run, nothing delivered
    back = policy()  # restarted on the same database, MetricsService reachable again
    posterior = arms_by_id(back.stub)["pop"].posterior
    assert (posterior.impressions, posterior.clicks) == (12, 5)

    def counted() -> tuple[int, int]:
        stats = metrics.stub.GetArmStats(metrics_pb2.GetArmStatsRequest(arm_ids=["pop"]), timeout=10).stats[0]
        return stats.impressions, stats.clicks

    wait_for(lambda: counted() == (12, 5))
    assert recommend(back.stub, "r0", user_id="1") == decisions[0]  # decisions survived too


def test_scoring_failure_degrades_to_the_last_good_list_then_popularity(suite) -> None:
    scoring, _, policy = suite
    stub = policy().stub
    put(stub, "knn", "item_knn", policy_pb2.ARM_STATE_CHAMPION)
    served = recommend(stub, "before", user_id="196")
    scoring.service.stop(0)
    again = recommend(stub, "after", user_id="196")
    assert again.degraded and [i.item_id for i in again.items] == [i.item_id for i in served.items]
    assert again.degraded_reason.endswith("; served the champion's last list for this user")
    stranger = recommend(stub, "stranger", user_id="1")
    assert stranger.degraded and list(stranger.items) == []
    # Scoring was just found unreachable: the policy does not call it again for the
    # fallback (each call would wait for its deadline), and says so.
    assert stranger.degraded_reason.startswith("scoring unavailable for arm knn: ")
    assert stranger.degraded_reason.endswith("; no list to fall back on")


def test_settings_update_by_field_mask_with_precise_errors(suite) -> None:
    _, _, policy = suite
    stub = policy().stub
    assert stub.GetPolicySettings(policy_pb2.GetPolicySettingsRequest(), timeout=10).settings.algorithm == "thompson"
    change = policy_pb2.UpdatePolicySettingsRequest(
        settings=policy_pb2.PolicySettings(algorithm="epsilon_greedy", epsilon=0.2),
        update_mask=FieldMask(paths=["algorithm", "epsilon"]),
    )
    updated = stub.UpdatePolicySettings(change, timeout=10).settings
    assert (updated.algorithm, updated.epsilon, updated.discount) == ("epsilon_greedy", 0.2, 0.9997)
    bad = policy_pb2.UpdatePolicySettingsRequest(
        settings=policy_pb2.PolicySettings(algorithm="greedy"), update_mask=FieldMask(paths=["algorithm"])
    )
    assert error_of(lambda: stub.UpdatePolicySettings(bad, timeout=10)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "settings.algorithm: must be one of thompson, discounted_thompson, ucb1, epsilon_greedy, got 'greedy'",
    )
    unknown = policy_pb2.UpdatePolicySettingsRequest(update_mask=FieldMask(paths=["colour"]))
    code, details = error_of(lambda: stub.UpdatePolicySettings(unknown, timeout=10))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith(
        "update_mask.paths[0]: unknown field 'colour'"
    )


def test_the_guardrail_pauses_an_arm_that_hurts_and_says_why(suite) -> None:
    _, _, policy = suite
    stub = policy().stub
    put(stub, "pop", "popularity", policy_pb2.ARM_STATE_CHAMPION)
    put(stub, "knn", "item_knn", cap=0.5)
    # Uniform traffic (epsilon-greedy with epsilon 1), so that the challenger keeps getting impressions.
    settings = policy_pb2.PolicySettings(
        algorithm="epsilon_greedy",
        epsilon=1.0,
        guardrail=policy_pb2.GuardrailSettings(enabled=True, delta=0.0, threshold=0.95, min_impressions=30),
    )
    paths = ["algorithm", "epsilon", "guardrail.min_impressions", "guardrail.delta"]
    stub.UpdatePolicySettings(
        policy_pb2.UpdatePolicySettingsRequest(settings=settings, update_mask=FieldMask(paths=paths)), timeout=10
    )
    n = 0
    while arms_by_id(stub)["knn"].state != policy_pb2.ARM_STATE_PAUSED:
        assert n < 2000, "the guardrail never fired"
        decision = recommend(stub, f"g{n}", user_id=str(n % 900 + 1))
        if decision.arm_id == "pop":
            click(stub, f"gc{n}", decision.decision_id)  # the champion is always clicked, the challenger never
        n += 1
    knn = arms_by_id(stub)["knn"]
    assert knn.posterior.impressions >= 30
    assert knn.state_reason.startswith("guardrail: P(CTR < champion CTR - 0) = ")


def test_two_replicas_on_one_postgresql_share_arms_and_counts(start_service, postgres_admin_url) -> None:
    from tests.postgres import create_database

    scoring = start_service("scoring", dataset=str(MOVIELENS))
    metrics = start_service("metrics")
    database = create_database(postgres_admin_url, "policy_replicas")
    replicas = [
        start_service(
            "policy",
            scoring_address=scoring.address,
            metrics_address=metrics.address,
            database_url=database,
            belief_cache_seconds=0.0,
            outbox_interval_seconds=0.2,
        ).stub
        for _ in range(2)
    ]
    put(replicas[0], "pop", "popularity", policy_pb2.ARM_STATE_CHAMPION)
    assert set(arms_by_id(replicas[1])) == {"pop"}
    decisions = [recommend(replicas[n % 2], f"r{n}", user_id=str(n + 1)) for n in range(10)]
    assert recommend(replicas[1], "r0", user_id="1") == decisions[0]  # the same request on the other replica
    for n, decision in enumerate(decisions[:4]):
        click(replicas[(n + 1) % 2], f"c{n}", decision.decision_id)
    assert click(replicas[0], "c0", decisions[0].decision_id).duplicate is True
    for stub in replicas:
        posterior = arms_by_id(stub)["pop"].posterior
        assert (posterior.impressions, posterior.clicks) == (10, 4)


def test_clicks_go_back_to_scoring_as_interactions(suite) -> None:
    scoring, _, policy = suite
    stub = policy().stub
    put(stub, "pop", "popularity", policy_pb2.ARM_STATE_CHAMPION)

    def interactions() -> int:
        shape = scoring.stub.DescribeSearchSpace(scoring_pb2.DescribeSearchSpaceRequest(), timeout=10).data_shape
        return int(shape.interactions)

    before = interactions()
    for n in range(5):
        decision = recommend(stub, f"i{n}", user_id=str(n + 10))
        request = policy_pb2.RecordFeedbackRequest(
            event_id=f"ic{n}", decision_id=decision.decision_id, kind=common_pb2.EVENT_KIND_CLICK, item_id="1600"
        )
        stub.RecordFeedback(request, timeout=10)
    wait_for(lambda: interactions() == before + 5)
