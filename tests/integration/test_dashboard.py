"""The dashboard in a real headless Chromium (Debian's, driven by Selenium) against real
services: the arms appear, the numbers on the page are MetricsService's, and a pause from
the page reaches PolicyService only with the admin token and a confirmation."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from operators.dashboard import create_app
from operators.settings import OperatorSettings
from rectune.domain.arms import ArmOrigin
from rectune.domain.configuration import Configuration
from rectune.v1 import common_pb2, metrics_pb2, policy_pb2
from tests.conftest import MOVIELENS
from tuner.audit import AuditLog
from tuner.controller import Action, ActionKind, Plan

pytestmark = pytest.mark.integration

ADMIN_TOKEN = "operator-secret"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def wait_for(condition: Callable[[], Any], timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    # make test installs Debian's chromium and chromium-driver; without them this fails, loudly.
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1400,1200"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    yield driver
    driver.quit()


@pytest.fixture
def served(start_service, tmp_path):
    """Real services with two arms and some traffic, and the dashboard over them on a free port."""
    scoring = start_service("scoring", dataset=str(MOVIELENS))
    metrics = start_service("metrics")
    policy = start_service(
        "policy",
        scoring_address=scoring.address,
        metrics_address=metrics.address,
        admin_token=ADMIN_TOKEN,
        auth_token="reader",
        outbox_interval_seconds=0.2,
    )
    admin = [("authorization", f"Bearer {ADMIN_TOKEN}")]
    for arm_id, strategy, state in (("control", "popularity", "CHAMPION"), ("knn", "item_knn", "ACTIVE")):
        request = policy_pb2.PutArmRequest(
            arm_id=arm_id,
            configuration=common_pb2.Configuration(strategy=strategy),
            initial_state=policy_pb2.ArmState.Value(f"ARM_STATE_{state}"),
            exposure_cap=0.5,
            origin=policy_pb2.ARM_ORIGIN_MANUAL,
        )
        policy.stub.PutArm(request, metadata=admin, timeout=120)
    send_traffic(policy, admin)
    audit_url = f"sqlite:///{tmp_path / 'tuner.db'}"
    record_a_cycle(audit_url)
    settings = OperatorSettings(
        policy_address=policy.address,
        scoring_address=scoring.address,
        metrics_address=metrics.address,
        database_url=audit_url,
        admin_token=ADMIN_TOKEN,
    )
    url, stop = serve_in_thread(settings)
    yield url, policy, metrics, admin, scoring
    stop()


def send_traffic(policy, admin) -> None:
    """300 decisions, a click on every fifth; then waits until MetricsService has them all."""
    for n in range(300):
        decision = policy.stub.Recommend(
            policy_pb2.RecommendRequest(request_id=f"r{n}", user_id=str(1 + n % 50), k=5), metadata=admin, timeout=10
        )
        if n % 5 == 0:
            click = policy_pb2.RecordFeedbackRequest(
                event_id=f"e{n}",
                decision_id=decision.decision_id,
                kind=common_pb2.EVENT_KIND_CLICK,
                item_id=decision.items[0].item_id,
            )
            policy.stub.RecordFeedback(click, metadata=admin, timeout=10)


def record_a_cycle(audit_url: str) -> None:
    """One tuner cycle in the audit table, as `tuner propose --dry-run` writes it."""
    plan = Plan(cycle_id="cycle0001", created_at=time.time())
    reason = "screened: NDCG@10 0.2 against 1 x champion's 0.1"
    configuration = Configuration("als", {"factors": 16})
    plan.actions.append(Action(ActionKind.REGISTER, "tuner-als-1", reason, ArmOrigin.TUNER_TPE, configuration, 0.1))
    AuditLog.open(audit_url).record(plan, True, [])


def serve_in_thread(settings: OperatorSettings) -> tuple[str, Callable[[], None]]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    wait_for(lambda: server.started)

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=10)
        listener.close()

    return f"http://127.0.0.1:{port}/", stop


def all_time_stats(metrics, admin) -> dict[str, metrics_pb2.ArmStats]:
    answer = metrics.stub.GetArmStats(metrics_pb2.GetArmStatsRequest(), metadata=admin, timeout=10)
    return {s.arm_id: s for s in answer.stats}


def cell(driver, arm_id: str, name: str) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, f"#arm-{arm_id} td.{name}").text)


def test_the_page_shows_the_arms_with_metrics_services_numbers(served, browser) -> None:
    url, _policy, metrics, admin, _scoring = served
    wait_for(lambda: sum(s.impressions for s in all_time_stats(metrics, admin).values()) == 300)
    stats = all_time_stats(metrics, admin)
    browser.get(url)
    WebDriverWait(browser, 30).until(expected_conditions.presence_of_element_located((By.ID, "arm-knn")))
    for arm_id, expected in stats.items():
        assert cell(browser, arm_id, "impressions") == str(expected.impressions)
        ctr_text = cell(browser, arm_id, "ctr")
        assert ctr_text.startswith(f"{expected.ctr:.4f}")
        assert f"[{expected.ctr_interval.lower:.4f}, {expected.ctr_interval.upper:.4f}]" in ctr_text
        assert cell(browser, arm_id, "pbest") == f"{expected.probability_best:.3f}"
        assert cell(browser, arm_id, "share") == f"{100 * expected.impressions / 300:.1f}%"
    assert cell(browser, "control", "state") == "champion"
    assert "popularity" in cell(browser, "control", "config")
    # Charts drew a line per arm, and the tuner's cycle is listed with its proposal.
    assert len(browser.find_elements(By.CSS_SELECTOR, "#ctr-chart path[data-line]")) == len(stats)
    cycle = browser.find_element(By.CSS_SELECTOR, "[data-cycle='cycle0001']").text
    assert "tuner-als-1" in cycle and "als factors=16" in cycle and "planned" in cycle


COUNT_POSTS = """
window.statePosts = 0;
const plainFetch = window.fetch;
window.fetch = (url, options) => {
  if (options && options.method === "POST") window.statePosts += 1;
  return plainFetch(url, options);
};
"""


PAUSE_KNN = "#arm-knn button[data-action='pause']"


def confirm_after_click(browser, selector: str, accept: bool) -> None:
    """Click the element and answer the confirmation it opens. The page's refresh re-renders
    the table: a click on a button replaced meanwhile opens nothing (or fails as stale), so the
    button is found and clicked again until the confirmation shows."""
    deadline = time.monotonic() + 20
    while True:
        try:
            browser.find_element(By.CSS_SELECTOR, selector).click()
            alert = WebDriverWait(browser, 2).until(expected_conditions.alert_is_present())
        except (StaleElementReferenceException, TimeoutException):
            assert time.monotonic() < deadline, "no confirmation opened within 20 s of clicking"
            continue
        if accept:
            alert.accept()
        else:
            alert.dismiss()
        return


def test_a_pause_from_the_page_needs_the_admin_token_and_reaches_the_policy(served, browser) -> None:
    url, policy, _metrics, admin, _scoring = served

    def state_of(arm_id: str) -> int:
        arms = policy.stub.ListArms(policy_pb2.ListArmsRequest(), metadata=admin, timeout=10).arms
        return int(next(arm.state for arm in arms if arm.arm_id == arm_id))

    browser.get(url)
    WebDriverWait(browser, 30).until(expected_conditions.element_to_be_clickable((By.CSS_SELECTOR, PAUSE_KNN)))
    # The page's POSTs counted in the page: the click handler calls fetch before its first
    # await, so once the confirmation is answered the count says whether anything was sent.
    browser.execute_script(COUNT_POSTS)
    # Dismissed confirmation: nothing is sent.
    confirm_after_click(browser, PAUSE_KNN, accept=False)
    assert browser.execute_script("return window.statePosts") == 0
    assert state_of("knn") == policy_pb2.ARM_STATE_ACTIVE
    # Confirmed without the token: sent, refused, and the page says why.
    confirm_after_click(browser, PAUSE_KNN, accept=True)
    assert browser.execute_script("return window.statePosts") == 1
    error = WebDriverWait(browser, 10).until(expected_conditions.visibility_of_element_located((By.ID, "error")))
    assert "admin token" in error.text
    assert state_of("knn") == policy_pb2.ARM_STATE_ACTIVE
    # With the token: PolicyService pauses the arm, and the page shows it.
    browser.find_element(By.ID, "token").send_keys(ADMIN_TOKEN)
    confirm_after_click(browser, PAUSE_KNN, accept=True)
    wait_for(lambda: state_of("knn") == policy_pb2.ARM_STATE_PAUSED, timeout=10)
    WebDriverWait(browser, 10, ignored_exceptions=(StaleElementReferenceException,)).until(
        lambda driver: cell(driver, "knn", "state") == "paused"
    )
    arms = policy.stub.ListArms(policy_pb2.ListArmsRequest(), metadata=admin, timeout=10).arms
    assert next(arm.state_reason for arm in arms if arm.arm_id == "knn") == "pause from the dashboard"


def post_state(url: str, arm_id: str, action: str, authorization: str | None) -> httpx.Response:
    headers = {"Authorization": authorization} if authorization is not None else {}
    return httpx.post(f"{url}api/arms/{arm_id}/state", json={"action": action}, headers=headers, timeout=30)


def test_every_admin_token_path_of_the_dashboards_api(served, start_service, tmp_path) -> None:
    url, policy, metrics, admin, scoring = served
    refused = "changing an arm needs the admin token (enter it at the top of the page)"
    for authorization in (
        None,
        "",
        "Bearer wrong-token",
        f"Token {ADMIN_TOKEN}",
        ADMIN_TOKEN,
        f"Bearer {ADMIN_TOKEN}x",
    ):
        answer = post_state(url, "knn", "pause", authorization)
        assert (answer.status_code, answer.json()["detail"]) == (403, refused), authorization
    bad_action = post_state(url, "knn", "explode", f"Bearer {ADMIN_TOKEN}")
    assert (bad_action.status_code, bad_action.json()["detail"]) == (
        400,
        "action: must be one of pause, resume, retire, promote, got 'explode'",
    )
    arms = policy.stub.ListArms(policy_pb2.ListArmsRequest(), metadata=admin, timeout=10).arms
    assert {arm.arm_id: arm.state for arm in arms}["knn"] == policy_pb2.ARM_STATE_ACTIVE  # nothing changed
    done = post_state(url, "knn", "pause", f"bearer {ADMIN_TOKEN}")  # the scheme in any case, as HTTP says
    assert done.status_code == 200 and done.json()["arm"]["state"] == "paused"

    # Open mode: a policy and a dashboard with no admin token take changes from anyone.
    open_policy = start_service("policy", scoring_address=scoring.address, metrics_address=metrics.address)
    open_policy.stub.PutArm(
        policy_pb2.PutArmRequest(
            arm_id="control",
            configuration=common_pb2.Configuration(strategy="popularity"),
            initial_state=policy_pb2.ARM_STATE_CHAMPION,
            origin=policy_pb2.ARM_ORIGIN_MANUAL,
        ),
        timeout=60,
    )
    open_policy.stub.PutArm(
        policy_pb2.PutArmRequest(
            arm_id="knn",
            configuration=common_pb2.Configuration(strategy="item_knn"),
            origin=policy_pb2.ARM_ORIGIN_MANUAL,
        ),
        timeout=60,
    )
    settings = OperatorSettings(
        policy_address=open_policy.address,
        scoring_address=scoring.address,
        metrics_address=metrics.address,
        database_url=f"sqlite:///{tmp_path / 'open-tuner.db'}",
        admin_token="",
    )
    open_url, stop = serve_in_thread(settings)
    try:
        answer = post_state(open_url, "knn", "pause", None)
        assert answer.status_code == 200 and answer.json()["arm"]["state"] == "paused"
    finally:
        stop()
