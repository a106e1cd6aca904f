"""The KServe OpenAI model server the LLM tests and demo run (openai_server.py), on its own:
KServe's OpenAI routes, parsing, streaming framing and errors, and `usage` counts that are
exactly the tokens of the prompt and of the text it returned. The gateway tests rely on
these facts; here they are checked against the server directly.
"""

from __future__ import annotations

import json
import math
import uuid

import pytest
import requests

import llm_stack
from llm_stack import PREFIX, count_tokens

ZEN = "markov-zen"
DOCS = "markov-docs"


def chat_body(**extra) -> dict:
    body = {"model": ZEN, "messages": [{"role": "user", "content": "Is flat better than nested?"}]}
    body.update(extra)
    return body


def template_tokens(messages: list[dict]) -> int:
    """The prompt the server's chat template makes (`role: content` lines, then `assistant:`)."""
    lines = [f"{m['role']}: {m['content']}" for m in messages] + ["assistant:"]
    return count_tokens("\n".join(lines))


def sse_events(raw: bytes) -> list[str]:
    """The `data:` payloads of a stream, checking KServe's framing on the way."""
    text = raw.decode()
    assert text.endswith("data: [DONE]\n\n"), text[-80:]
    events = text.split("\n\n")
    assert events[-1] == ""
    payloads = []
    for event in events[:-1]:
        assert event.startswith("data: "), event
        payloads.append(event.removeprefix("data: "))
    return payloads


@pytest.fixture(scope="module")
def server(openai_servers) -> str:
    return openai_servers[0].url


def test_lists_both_generative_models(server):
    answer = requests.get(f"{server}{PREFIX}/v1/models", timeout=10).json()
    assert answer["object"] == "list"
    assert sorted(m["id"] for m in answer["data"]) == sorted(llm_stack.MODELS)


def test_chat_completion_usage_counts_the_template_and_the_reply(server):
    body = chat_body(max_tokens=12, seed=7)
    answer = requests.post(f"{server}{PREFIX}/v1/chat/completions", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    reply = answer.json()
    assert reply["object"] == "chat.completion" and reply["model"] == ZEN
    (choice,) = reply["choices"]
    content = choice["message"]["content"]
    assert choice["message"]["role"] == "assistant" and content.strip()
    usage = reply["usage"]
    assert usage["prompt_tokens"] == template_tokens(body["messages"])
    assert usage["completion_tokens"] == count_tokens(content) <= 12
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert choice["finish_reason"] in ("stop", "length")


def test_the_same_seed_gives_the_same_text_and_n_choices_add_up(server):
    url = f"{server}{PREFIX}/v1/chat/completions"
    one = requests.post(url, json=chat_body(max_tokens=10, seed=3), timeout=30).json()
    again = requests.post(url, json=chat_body(max_tokens=10, seed=3), timeout=30).json()
    assert one["choices"][0]["message"] == again["choices"][0]["message"]
    three = requests.post(url, json=chat_body(max_tokens=10, seed=3, n=3), timeout=30).json()
    assert [c["index"] for c in three["choices"]] == [0, 1, 2]
    texts = [c["message"]["content"] for c in three["choices"]]
    assert three["usage"]["completion_tokens"] == sum(count_tokens(t) for t in texts)


def test_completion_of_a_prompt_list(server):
    body = {"model": DOCS, "prompt": ["Return the", "The parser"], "max_tokens": 6, "n": 2, "seed": 1}
    reply = requests.post(f"{server}{PREFIX}/v1/completions", json=body, timeout=30).json()
    assert reply["object"] == "text_completion"
    assert [c["index"] for c in reply["choices"]] == [0, 1, 2, 3]
    usage = reply["usage"]
    assert usage["prompt_tokens"] == count_tokens("Return the") + count_tokens("The parser")
    assert usage["completion_tokens"] == sum(count_tokens(c["text"]) for c in reply["choices"])


@pytest.mark.parametrize("include_usage", [True, False])
def test_streamed_chat_joins_to_the_unstreamed_reply(server, include_usage):
    url = f"{server}{PREFIX}/v1/chat/completions"
    plain = requests.post(url, json=chat_body(max_tokens=9, seed=11), timeout=30).json()
    body = chat_body(max_tokens=9, seed=11, stream=True)
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    answer = requests.post(url, json=body, timeout=30)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/event-stream")
    chunks = [json.loads(p) for p in sse_events(answer.content)[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    content = "".join(
        c["choices"][0]["delta"]["content"] or "" for c in chunks if c["choices"]
    )
    assert content == plain["choices"][0]["message"]["content"]
    usage_chunks = [c for c in chunks if c["usage"] is not None]
    if include_usage:
        (last,) = usage_chunks
        assert last is chunks[-1] and last["choices"] == []
        assert last["usage"] == plain["usage"]
    else:
        assert usage_chunks == []


def test_embeddings_are_unit_vectors_with_usage(server):
    body = {"model": ZEN, "input": ["Simple is better than complex.", "Errors should never pass."]}
    reply = requests.post(f"{server}{PREFIX}/v1/embeddings", json=body, timeout=30).json()
    assert [d["index"] for d in reply["data"]] == [0, 1]
    for d in reply["data"]:
        assert len(d["embedding"]) == 64
        assert math.isclose(sum(v * v for v in d["embedding"]), 1.0)
    assert reply["usage"]["prompt_tokens"] == sum(count_tokens(t) for t in body["input"])


def test_errors_come_from_kserve(server):
    url = f"{server}{PREFIX}/v1/chat/completions"
    unknown = requests.post(url, json=chat_body(model="no-such-model"), timeout=30)
    assert unknown.status_code == 404
    assert unknown.json() == {"error": "Model with name no-such-model does not exist."}
    # FastAPI's validation of vLLM's pydantic request model.
    malformed = requests.post(url, json={"model": ZEN, "messages": "hi"}, timeout=30)
    assert malformed.status_code == 422 and "detail" in malformed.json()
    too_long = requests.post(url, json=chat_body(max_tokens=5000), timeout=30)
    assert too_long.status_code == 400
    error = too_long.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == "400" and "maximum context length" in error["message"]


def test_counters_see_every_request_and_the_usage_reported(server):
    before_requests = llm_stack.server_requests(server)
    before_tokens = llm_stack.server_tokens(server)
    reply = requests.post(
        f"{server}{PREFIX}/v1/chat/completions", json=chat_body(max_tokens=5), timeout=30
    ).json()
    after_requests = llm_stack.server_requests(server)
    after_tokens = llm_stack.server_tokens(server)
    assert after_requests["openai_chat"] == before_requests.get("openai_chat", 0) + 1
    for kind in ("prompt", "completion"):
        gained = after_tokens[(ZEN, kind)] - before_tokens.get((ZEN, kind), 0)
        assert gained == reply["usage"][f"{kind}_tokens"]


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens", "n"])
def test_sampling_parameters_below_one_are_refused_as_vllms_engine_does(server, field):
    # vLLM's pydantic models let these through; its SamplingParams refuses them.
    answer = requests.post(f"{server}{PREFIX}/v1/chat/completions", json=chat_body(**{field: 0}), timeout=30)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    name = "n" if field == "n" else "max_tokens"
    assert error["message"] == f"{name} must be at least 1, got 0."
    assert error["param"] == name


def test_the_server_records_what_it_answered_byte_for_byte(server):
    rid = f"recorded-{uuid.uuid4()}"
    answer = requests.post(
        f"{server}{PREFIX}/v1/chat/completions",
        json=chat_body(max_tokens=4, stream=True),
        headers={"X-Request-ID": rid},
        timeout=30,
    )
    records = requests.get(f"{server}/debug/requests", timeout=10).json()["requests"]
    (record,) = [r for r in records if r["headers"].get("x-request-id") == rid]
    assert record["response_status"] == 200
    assert record["response_body"].encode("latin-1") == answer.content
