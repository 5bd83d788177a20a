"""gRPC glue of PolicyService: convert -> call the core -> convert."""

from __future__ import annotations

from typing import Any

from rectune.v1 import policy_pb2, policy_pb2_grpc
from services.common import convert as shared
from services.common import prototime
from services.policy import convert
from services.policy.core.service import PolicyCore


class PolicyServicer(policy_pb2_grpc.PolicyServiceServicer):
    def __init__(self, core: PolicyCore) -> None:
        self.core = core

    def Recommend(self, request: policy_pb2.RecommendRequest, context: Any) -> policy_pb2.RecommendResponse:
        decision = self.core.recommend(
            request.request_id, request.user_id, dict(request.context), request.k, shared.interactions(request.history)
        )
        return convert.recommend_response(decision)

    def RecordFeedback(
        self, request: policy_pb2.RecordFeedbackRequest, context: Any
    ) -> policy_pb2.RecordFeedbackResponse:
        result = self.core.record_feedback(
            request.event_id,
            request.decision_id,
            convert.kind(request.kind),
            request.custom_name,
            request.item_id,
            request.value,
            prototime.seconds(request.time) if request.HasField("time") else None,
        )
        return policy_pb2.RecordFeedbackResponse(duplicate=result.duplicate, arm_id=result.arm_id)

    def PutArm(self, request: policy_pb2.PutArmRequest, context: Any) -> policy_pb2.PutArmResponse:
        state = (
            convert.state(request.initial_state, "initial_state")
            if request.initial_state
            else shared.STATES[policy_pb2.ARM_STATE_ACTIVE]
        )
        arm = self.core.put_arm(
            request.arm_id,
            shared.configuration(request.configuration, request.HasField("configuration")),
            convert.origin(request.origin),
            request.exposure_cap,
            state,
            request.reason,
        )
        return policy_pb2.PutArmResponse(arm=convert.arm_message(arm))

    def SetArmState(self, request: policy_pb2.SetArmStateRequest, context: Any) -> policy_pb2.SetArmStateResponse:
        arm = self.core.set_arm_state(request.arm_id, convert.state(request.state, "state"), request.reason)
        return policy_pb2.SetArmStateResponse(arm=convert.arm_message(arm))

    def ListArms(self, request: policy_pb2.ListArmsRequest, context: Any) -> policy_pb2.ListArmsResponse:
        states = [convert.state(s, f"states[{i}]") for i, s in enumerate(request.states)]
        return policy_pb2.ListArmsResponse(arms=[convert.arm_message(a) for a in self.core.list_arms(states)])

    def GetPolicySettings(
        self, request: policy_pb2.GetPolicySettingsRequest, context: Any
    ) -> policy_pb2.GetPolicySettingsResponse:
        return policy_pb2.GetPolicySettingsResponse(settings=convert.settings_message(self.core.settings()))

    def UpdatePolicySettings(
        self, request: policy_pb2.UpdatePolicySettingsRequest, context: Any
    ) -> policy_pb2.UpdatePolicySettingsResponse:
        updated = self.core.update_settings(convert.settings_changes(request))
        return policy_pb2.UpdatePolicySettingsResponse(settings=convert.settings_message(updated))

    def RollbackChampion(
        self, request: policy_pb2.RollbackChampionRequest, context: Any
    ) -> policy_pb2.RollbackChampionResponse:
        arm, replaced = self.core.rollback_champion(request.reason)
        return policy_pb2.RollbackChampionResponse(arm=convert.arm_message(arm), replaced_arm_id=replaced)
