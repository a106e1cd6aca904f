"""LLM traffic through the gateway to the real KServe OpenAI servers (issue 17's acceptance).

The LLM stack (conftest `llm_stack`, the `make demo-llm` configuration of demo_config.py):
two KServe OpenAI servers (openai_server.py) behind the gateway, whose filter reads the model
from the body, holds the headers until it has (the gateway's `allowOnHeadersStopIteration`,
as deploy/openai-body-routing sets Envoy's) and sets the routing header the routes match.
The servers' own counters and request records (request_recorder.py) show what reached them,
and what they answered, byte for byte.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import re
import time
import uuid

import pytest
import requests
import yaml

import demo_config
import keys
import llm_stack as servers_mod
import stack as stack_mod
from helpers import gateway_metrics, parse_prometheus

ZEN, DOCS = demo_config.ZEN, demo_config.DOCS
PREFIX = demo_config.OPENAI_PREFIX
BOTH = f"{demo_config.CHAT_SCOPES[ZEN]} {demo_config.CHAT_SCOPES[DOCS]}"
CHAT = f"{PREFIX}/v1/chat/completions"


def chat(model: str = ZEN, **extra) -> dict:
    body = {"model": model, "messages": [{"role": "user", "content": "What is better than ugly?"}]}
    body.update(extra)
    return body


@pytest.fixture
def llm_token(llm_stack, subject) -> str:
    return llm_stack.token("RS256", sub=subject, scope=BOTH)


def post(llm_stack, path: str, body, token: str, **kwargs) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}", **kwargs.pop("headers", {})}
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return requests.post(
        f"{llm_stack.gateway}{path}",
        data=data,
        headers={"Content-Type": "application/json", **headers},
        timeout=60,
        **kwargs,
    )


def openai_requests(servers) -> float:
    """Requests on the OpenAI endpoints that reached either server."""
    return sum(
        v for s in servers for k, v in servers_mod.server_requests(s.url).items() if k.startswith("openai_")
    )


def served(servers, request_id: str) -> dict:
    """The request with this `x-request-id` as a server received and answered it."""
    found = [
        r
        for s in servers
        for r in requests.get(f"{s.url}/debug/requests", timeout=5).json()["requests"]
        if r["headers"].get("x-request-id") == request_id
    ]
    assert len(found) == 1, f"{request_id} reached the servers {len(found)} times"
    return found[0]


def assert_openai_error(answer: requests.Response, status: int) -> dict:
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert error["code"] == str(status)
    return error


# --- the data plane through the gateway ---------------------------------------------------


def test_chat_completion_is_routed_by_the_body_model(llm_stack, openai_servers, llm_token):
    rid = f"chat-{uuid.uuid4()}"
    answer = post(llm_stack, CHAT, chat(max_tokens=8, seed=2), llm_token, headers={"X-Request-ID": rid})
    assert answer.status_code == 200, answer.text
    reply = answer.json()
    assert reply["model"] == ZEN and reply["choices"][0]["message"]["content"].strip()
    seen = served(openai_servers, rid)
    # The filter named the model from the body, so the route for it was picked.
    assert seen["headers"][demo_config.ROUTING_HEADER] == ZEN
    assert json.loads(seen["response_body"])["usage"] == reply["usage"]
    assert int(answer.headers["x-ratelimit-limit-tokens"]) == 2000


def test_completion_and_embeddings(llm_stack, llm_token):
    body = {"model": DOCS, "prompt": "The parser", "max_tokens": 5}
    completion = post(llm_stack, f"{PREFIX}/v1/completions", body, llm_token)
    assert completion.status_code == 200, completion.text
    assert completion.json()["object"] == "text_completion"
    body = {"model": ZEN, "input": ["Flat is better than nested."]}
    embedding = post(llm_stack, f"{PREFIX}/v1/embeddings", body, llm_token)
    assert embedding.status_code == 200, embedding.text
    reply = embedding.json()
    assert len(reply["data"][0]["embedding"]) == 64
    assert reply["usage"]["prompt_tokens"] == servers_mod.count_tokens(body["input"][0])


def test_unknown_model_is_404_at_the_edge(llm_stack, openai_servers, llm_token):
    before = openai_requests(openai_servers)
    answer = post(llm_stack, CHAT, chat(model="no-such-model"), llm_token)
    error = assert_openai_error(answer, 404)
    assert error["type"] == "NotFoundError"
    assert openai_requests(openai_servers) == before


def test_a_caller_without_the_models_scope_gets_403_and_does_not_see_it_listed(llm_stack, openai_servers, subject):
    zen_only = llm_stack.token("RS256", sub=subject, scope=demo_config.CHAT_SCOPES[ZEN])
    before = openai_requests(openai_servers)
    answer = post(llm_stack, CHAT, chat(model=DOCS), zen_only)
    assert assert_openai_error(answer, 403)["type"] == "PermissionDeniedError"
    assert openai_requests(openai_servers) == before
    listed = requests.get(
        f"{llm_stack.gateway}{PREFIX}/v1/models", headers={"Authorization": f"Bearer {zen_only}"}, timeout=10
    )
    assert listed.status_code == 200, listed.text
    assert [m["id"] for m in listed.json()["data"]] == [ZEN]
    both = llm_stack.token("RS256", sub=subject, scope=BOTH)
    listed = requests.get(
        f"{llm_stack.gateway}{PREFIX}/v1/models", headers={"Authorization": f"Bearer {both}"}, timeout=10
    )
    assert sorted(m["id"] for m in listed.json()["data"]) == sorted([ZEN, DOCS])


MALFORMED = {
    "not json": b"{nope",
    "a list": b"[]",
    "no messages": json.dumps({"model": ZEN}),
    "messages not a list": json.dumps({"model": ZEN, "messages": "hi"}),
    "a message without role": json.dumps({"model": ZEN, "messages": [{"content": "x"}]}),
    "max_tokens zero": json.dumps(chat(max_tokens=0)),
    "max_tokens over the model's maxTokens": json.dumps(chat(max_tokens=257)),
    "n zero": json.dumps(chat(n=0)),
    "stream not a boolean": json.dumps(chat(stream=[True])),
    "stream_options without stream": json.dumps(chat(stream_options={"include_usage": True})),
    "a lone surrogate": b'{"model": "markov-zen", "messages": [{"role": "user", "content": "\\ud800"}]}',
}


@pytest.mark.parametrize("name", MALFORMED)
def test_malformed_bodies_are_400_without_reaching_the_server(llm_stack, openai_servers, llm_token, name):
    before = openai_requests(openai_servers)
    answer = post(llm_stack, CHAT, MALFORMED[name], llm_token)
    assert assert_openai_error(answer, 400)["type"] == "BadRequestError"
    assert openai_requests(openai_servers) == before


# --- streaming ------------------------------------------------------------------------------


def stream(llm_stack, token: str, body: dict) -> tuple[str, bytes]:
    rid = f"stream-{uuid.uuid4()}"
    answer = post(llm_stack, CHAT, body, token, headers={"X-Request-ID": rid}, stream=True)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/event-stream")
    return rid, b"".join(answer.iter_content(chunk_size=None))


def test_a_stream_that_asked_for_usage_is_what_the_server_sent_byte_for_byte(llm_stack, openai_servers, llm_token):
    body = chat(max_tokens=12, stream=True, stream_options={"include_usage": True})
    rid, got = stream(llm_stack, llm_token, body)
    seen = served(openai_servers, rid)
    assert json.loads(seen["body"]) == body, "the request went upstream unchanged"
    assert got == seen["response_body"].encode("latin-1")
    usage = json.loads(got.decode().split("\n\n")[-3].removeprefix("data: "))["usage"]
    assert usage["completion_tokens"] >= 1


def test_a_stream_without_usage_gets_the_servers_events_minus_the_injected_usage_chunk(
    llm_stack, openai_servers, llm_token
):
    body = chat(max_tokens=12, stream=True)
    rid, got = stream(llm_stack, llm_token, body)
    seen = served(openai_servers, rid)
    sent = json.loads(seen["body"])
    # The filter asked the server for usage, so it can settle the budget...
    assert sent["stream_options"]["include_usage"] is True
    assert {k: v for k, v in sent.items() if k != "stream_options"} == body
    server_events = seen["response_body"].encode("latin-1").split(b"\n\n")
    usage_events = [e for e in server_events if e.startswith(b"data: {") and json.loads(e[6:])["choices"] == []]
    assert len(usage_events) == 1
    # ...and the client gets every other event, byte for byte.
    expected = b"\n\n".join(e for e in server_events if e not in usage_events)
    assert got == expected
    assert b'"usage":{' not in got


# --- GenAI metrics ---------------------------------------------------------------------------


def gen_ai_samples(llm_stack) -> dict[tuple[str, frozenset], float]:
    """The gateway's GenAI series (docs/config.md "Metrics", named by deploy/'s tag rules)."""
    return {
        (name, frozenset(labels.items())): value
        for name, labels, value in gateway_metrics(llm_stack)
        if name.startswith("gen_ai_")
    }


def test_gen_ai_metrics_come_out_under_their_opentelemetry_names_with_the_servers_usage(llm_stack, llm_token):
    """Token usage per model, caller class and token type, request duration and time to first
    token, as Envoy's /stats/prometheus names them under deploy/gateway/envoyproxy.yaml's
    rules; the usage histograms' sums grow by the `usage` the server reported."""
    model = {"gen_ai_request_model": ZEN}
    usage_of = {
        kind: frozenset({**model, "caller_class": "authenticated", "gen_ai_token_type": kind}.items())
        for kind in ("input", "output")
    }
    before = gen_ai_samples(llm_stack)
    for kind in ("input", "output"):
        assert ("gen_ai_client_token_usage_count", usage_of[kind]) in before, sorted(before)
    answer = post(llm_stack, CHAT, chat(max_tokens=6, seed=3), llm_token)
    assert answer.status_code == 200, answer.text
    plain = answer.json()["usage"]
    _, got = stream(llm_stack, llm_token, chat(max_tokens=6, stream=True, stream_options={"include_usage": True}))
    streamed = json.loads(got.decode().split("\n\n")[-3].removeprefix("data: "))["usage"]
    # The reservation is settled in the gateway's log phase, just after the last byte.
    deadline = time.monotonic() + 5
    while True:
        after = gen_ai_samples(llm_stack)
        delta = {key: after.get(key, 0) - before.get(key, 0) for key in after}
        if delta[("gen_ai_client_token_usage_count", usage_of["output"])] >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    for kind, field in (("input", "prompt_tokens"), ("output", "completion_tokens")):
        assert delta[("gen_ai_client_token_usage_count", usage_of[kind])] == 2
        assert delta[("gen_ai_client_token_usage_sum", usage_of[kind])] == plain[field] + streamed[field]
    only_model = frozenset(model.items())
    assert delta[("gen_ai_server_request_duration_ms_count", only_model)] == 2
    assert delta[("gen_ai_server_time_to_first_token_ms_count", only_model)] == 1
    assert ("gen_ai_server_time_to_first_token_ms_bucket", frozenset({**model, "le": "+Inf"}.items())) in after
    # No GenAI series keeps its labels in its name.
    assert not [name for name, _ in after if ".model." in name or "_model_" in name], sorted(after)


# --- token budgets under concurrency ---------------------------------------------------------

# A budget per day, so the few seconds of the test refill at most 1 token of it.
BUDGET_PROMPT = "Is now better than never?"
BUDGET_MAX_TOKENS = 20
BYTES_PER_TOKEN = demo_config.OPENAI_POLICY[DOCS]["bytesPerToken"]


QUOTA = 1000


def reservation() -> int:
    """What one request reserves, by docs/config.md: ceil(bytes of the text / bytesPerToken)
    plus 4 for the chat message, plus its max_tokens."""
    return -(-len(BUDGET_PROMPT.encode()) // BYTES_PER_TOKEN) + 4 + BUDGET_MAX_TOKENS


@pytest.fixture(scope="module")
def budget_gateway(llm_stack, tmp_path_factory):
    """A second gateway before the same OpenAI servers, its markov-docs budget worth exactly
    10 requests' reservations per day, and a request quota that never refuses here (its
    headers are checked)."""
    run_dir = tmp_path_factory.mktemp("budget")
    spare = stack_mod.free_ports()
    ports = dataclasses.replace(llm_stack.ports, gateway=spare.gateway, https=spare.https, admin=spare.admin)
    config = demo_config.filter_config(llm_stack.keyset, llm=True)
    budget = 10 * reservation()
    config["models"][DOCS]["openai"]["tokenBudgets"] = [{"tokens": budget, "per": "day"}]
    config["models"][DOCS]["rateLimit"] = {"requestsPerMinute": QUOTA, "burst": QUOTA}
    filter_path = run_dir / "filter-config.json"
    filter_path.write_text(json.dumps(config))
    cert, key = keys.self_signed_cert(str(run_dir / "tls"))
    host = demo_config.host_config(ports, str(stack_mod.WASM), str(filter_path), cert, key, llm=True)
    host_path = run_dir / "modelgate.yaml"
    host_path.write_text(yaml.safe_dump(host))
    proc = stack_mod.Process(
        "modelgate-budget", [str(stack_mod.HOST_BINARY), "serve", "--config", str(host_path)], run_dir / "modelgate.log"
    )
    with stack_mod.serving(proc, f"http://127.0.0.1:{ports.admin}/ready"):
        yield f"http://127.0.0.1:{ports.gateway}", budget, f"http://127.0.0.1:{ports.admin}"


def test_fifty_parallel_requests_admit_at_most_the_budget_and_settle_the_servers_usage(
    llm_stack, openai_servers, budget_gateway, subject
):
    url, budget, _ = budget_gateway
    token = llm_stack.token("RS256", sub=subject, scope=BOTH)
    body = json.dumps(
        {"model": DOCS, "messages": [{"role": "user", "content": BUDGET_PROMPT}], "max_tokens": BUDGET_MAX_TOKENS}
    )
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    before = {s.url: servers_mod.server_tokens(s.url) for s in openai_servers}

    def one(_):
        return requests.post(f"{url}{CHAT}", data=body, headers=headers, timeout=60)

    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(one, range(50)))
    statuses = sorted({a.status_code for a in answers})
    assert set(statuses) <= {200, 429}, [a.text for a in answers if a.status_code not in (200, 429)]
    admitted = [a.json() for a in answers if a.status_code == 200]
    refused = [a for a in answers if a.status_code == 429]
    assert admitted and refused
    for answer in refused:
        assert answer.json()["error"]["type"] == "RateLimitError"
        assert int(answer.headers["retry-after"]) >= 1
        assert int(answer.headers["x-ratelimit-limit-tokens"]) == budget
    used = sum(a["usage"]["total_tokens"] for a in admitted)
    # Every admitted request fitted its reservation: what they used never passes the budget.
    assert used <= budget
    # The servers reported exactly the usage the clients got.
    gained = sum(
        servers_mod.server_tokens(s.url).get((DOCS, kind), 0) - before[s.url].get((DOCS, kind), 0)
        for s in openai_servers
        for kind in ("prompt", "completion")
    )
    assert gained == used
    # The budget was charged that usage: a request that no longer fits says what is left.
    # The refunds of the last settlements may leave room for a few more; they are charged too.
    for _ in range(budget // BUDGET_MAX_TOKENS):
        probe = requests.post(f"{url}{CHAT}", data=body, headers=headers, timeout=60)
        if probe.status_code != 200:
            break
        used += probe.json()["usage"]["total_tokens"]
    assert probe.status_code == 429, probe.text
    remaining = int(probe.headers["x-ratelimit-remaining-tokens"])
    # At most 1 token of a per-day budget refills during the test.
    assert budget - used <= remaining <= budget - used + 1



def settled_count(admin: str, model: str) -> float:
    """Settled requests of `model` on a gateway: its output token usage histogram's count."""
    r = requests.get(f"{admin}/metrics", timeout=5)
    r.raise_for_status()
    return sum(
        value
        for name, labels, value in parse_prometheus(r.text)
        if name == "gen_ai_client_token_usage_count"
        and labels.get("gen_ai_request_model") == model
        and labels.get("gen_ai_token_type") == "output"
    )


def test_streams_charge_the_budget_the_servers_usage_whether_or_not_the_client_asked_for_it(
    llm_stack, openai_servers, budget_gateway, subject
):
    """A stream that asked for usage and one that did not (the filter asked for it and removed
    its chunk) are each charged the server's `usage`: a later request finds the per-day budget
    less both usages and its own reservation."""
    url, budget, admin = budget_gateway
    token = llm_stack.token("RS256", sub=subject, scope=BOTH)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    base = {"model": DOCS, "messages": [{"role": "user", "content": BUDGET_PROMPT}], "max_tokens": BUDGET_MAX_TOKENS}
    settled_before = settled_count(admin, DOCS)
    used = 0
    for asked in (False, True):
        rid = f"stream-budget-{uuid.uuid4()}"
        body = {**base, "stream": True, **({"stream_options": {"include_usage": True}} if asked else {})}
        answer = requests.post(f"{url}{CHAT}", data=json.dumps(body), headers={**headers, "X-Request-ID": rid}, timeout=60)
        assert answer.status_code == 200, answer.text
        assert (b'"usage":{' in answer.content) == asked
        events = served(openai_servers, rid)["response_body"].split("\n\n")
        (usage,) = [json.loads(e[6:])["usage"] for e in events if e.startswith("data: {") and json.loads(e[6:]).get("usage")]
        used += usage["total_tokens"]
    # Settlement runs in the gateway's log phase, just after the last byte.
    deadline = time.monotonic() + 5
    while settled_count(admin, DOCS) < settled_before + 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    probe = requests.post(f"{url}{CHAT}", data=json.dumps(base), headers=headers, timeout=60)
    assert probe.status_code == 200, probe.text
    remaining = int(probe.headers["x-ratelimit-remaining-tokens"])
    # At most 1 token of a per-day budget refills during the test.
    assert budget - used - reservation() <= remaining <= budget - used - reservation() + 1
    # As OpenAI does, every admitted response tells the request quota's standing too: this
    # subject's third request of a burst of 1,000 that refills 1,000 a minute.
    assert int(probe.headers["x-ratelimit-limit-requests"]) == QUOTA
    assert QUOTA - 3 <= int(probe.headers["x-ratelimit-remaining-requests"]) < QUOTA
    assert re.fullmatch(r"\d+ms|\d+s", probe.headers["x-ratelimit-reset-requests"])
