"""Config reloads under steady load lose no request.

Twenty reloads, alternating SIGHUP and a rewrite of the config file (picked up by the
host's file watch), each one rebuilding the filter chain (the rewrite changes the iris
quota, so the plugin config differs), while 8 clients keep predicting through the full
policy. Every request must get its 200, and the host's reload counter must show each
reload happened. A broken config in the middle must be refused and change nothing.
"""

from __future__ import annotations

import copy

import pytest

from reliability.harness import configs
from reliability.harness.load import LoadGenerator
from reliability.harness.stack import Stack
from reliability.harness.waiting import wait_until

RELOADS = 20
RELOAD_METRIC = "modelgate_config_reloads_total"


def reloads(stack: Stack, result: str) -> float:
    return stack.gateway.metric_sum(RELOAD_METRIC, f'result="{result}"')


def wait_for_reloads(stack: Stack, result: str, at_least: float) -> None:
    wait_until(lambda: reloads(stack, result) >= at_least, f"reload #{at_least:.0f} ({result}) not seen:\n{stack.gateway.log_tail()}")


def with_iris_burst(config: dict, burst: int) -> dict:
    new = copy.deepcopy(config)
    for entry in new["filters"]:
        if entry["name"] == "modelgate":
            entry["config"]["models"][configs.IRIS]["rateLimit"] = {"requestsPerSecond": 100000, "burst": burst}
    return new


@pytest.mark.slow
def test_twenty_reloads_under_load_lose_no_request(stack: Stack) -> None:
    gateway = stack.gateway
    original = copy.deepcopy(gateway.config)
    token = stack.token()
    ok_before, failed_before = reloads(stack, "success"), reloads(stack, "failure")
    last_burst = None
    try:
        with LoadGenerator(stack.port, lambda: stack.predict_bytes(token=token), concurrency=8) as load:
            for i in range(RELOADS):
                if i % 2 == 0:
                    gateway.reload_sighup()
                else:
                    last_burst = 200_000 + i
                    gateway.write_config(with_iris_burst(original, last_burst))
                wait_for_reloads(stack, "success", ok_before + i + 1)
                if i == RELOADS // 2:
                    # A config that cannot parse: refused, logged, the old one keeps serving.
                    gateway.config_path.write_text("version: 1\nlisteners: [this is not: valid\n")
                    wait_for_reloads(stack, "failure", failed_before + 1)
                    gateway.write_config()  # the last good config again: one more success
                    wait_for_reloads(stack, "success", ok_before + i + 2)
                    ok_before += 1
            # Some traffic on the final config too, before stopping.
            served = load.result.statuses[200]
            wait_until(lambda: load.result.statuses[200] >= served + 200, "traffic stalled after the last reload")
            result = load.stop()
        assert str(last_burst) in gateway.config_dump_text(), "the last reload's config is not the effective one"
    finally:
        gateway.write_config(original)
    print(f"{RELOADS} reloads under load: {result.summary()}")
    assert result.count_other_than(200) == 0, f"requests lost during reloads: {result.summary()}"
