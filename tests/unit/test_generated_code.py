"""The committed generated code matches protos/ and imports as rectune.v1.*_pb2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_is_fresh() -> None:
    result = subprocess.run(
        [sys.executable, "scripts/gen_protos.py", "--check"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_generated_modules_import_by_package_path() -> None:
    from rectune.v1 import common_pb2, policy_pb2

    request = policy_pb2.RecommendRequest(user_id="u1", k=5)
    request.history.add(user_id="u1", item_id="i1", value=4.0)
    configuration = common_pb2.Configuration(strategy="als")
    configuration.params["factors"].int_value = 64
    assert configuration.params["factors"].WhichOneof("kind") == "int_value"
    assert policy_pb2.RecommendRequest.FromString(request.SerializeToString()) == request
