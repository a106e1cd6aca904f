"""Differential test: the filter's OpenAI request validation agrees with KServe's own parsing.

KServe 0.21 reads OpenAI bodies with vLLM 0.24's pydantic models (FastAPI's validation in
`kserve/protocol/rest/openai/endpoints.py`, answering 422), then hands them to the model. For
every body of the corpus below, all within the demo policy's bounds (so only the shape
decides), sent through the LLM stack's gateway and straight to a KServe OpenAI server:

- the filter refuses it (a 400 that never reaches a server) exactly when KServe's parsing
  refuses it: 422 from pydantic, 404 for a model it cannot name, or 500 where KServe only
  finds out when the body is read (vLLM's message content parts are validated lazily, and a
  body that is not a JSON object crashes the endpoint);
- the filter forwards it exactly when KServe parses it: the model then answers (200), or
  refuses what it does not do itself (400: this model takes no token-id prompts).

The exceptions are checks vLLM's engine makes after its pydantic models (`SamplingParams`,
`max_tokens` and `n` at least 1; its reader of chat content parts, `chat_utils.py`): the filter
makes them too, and the model server here answers them 400 as vLLM does (`ENGINE_CHECKS`).
So KServe's parsing is the oracle, as test_kserve_decoding.py makes it for V1 and V2.
"""

from __future__ import annotations

import json
import uuid

import pytest
import requests

import demo_config

ZEN = demo_config.ZEN
PREFIX = demo_config.OPENAI_PREFIX
SCOPES = " ".join(demo_config.CHAT_SCOPES.values())
USER = {"role": "user", "content": "Beautiful is better than ugly."}
IMAGE = "https://example.com/a.png"


def chat(**fields) -> dict:
    return {"model": ZEN, "messages": [USER], "max_tokens": 4, **fields}


def message(**fields) -> dict:
    return chat(messages=[fields])


CHAT_BODIES = {
    "plain": chat(),
    "system then user": chat(messages=[{"role": "system", "content": "Be brief."}, USER]),
    "developer role": message(role="developer", content="x"),
    "assistant with null content": chat(messages=[USER, {"role": "assistant", "content": None}]),
    "tool message": chat(messages=[USER, {"role": "tool", "content": "42", "tool_call_id": "c1"}]),
    "a custom role": message(role="narrator", content="x"),
    "text parts": message(role="user", content=[{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]),
    "a part without type": message(role="user", content=[{"text": "a"}]),
    "a text part with a number": message(role="user", content=[{"type": "text", "text": 5}]),
    "empty parts": message(role="user", content=[]),
    "an image part": message(role="user", content=[{"type": "image_url", "image_url": {"url": IMAGE}}]),
    "an image part with detail": message(role="user", content=[{"type": "image_url", "image_url": {"url": IMAGE, "detail": "low"}}]),
    "an audio part": message(role="user", content=[{"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}]),
    "an image url without type": message(role="user", content=[{"image_url": IMAGE}]),
    "a text part and a string": message(role="user", content=[{"type": "text", "text": "a"}, "b"]),
    "only string parts": message(role="user", content=["a", "b"]),
    "a custom role's string parts": message(role="narrator", content=["a", "b"]),
    "an empty part": message(role="user", content=[{}]),
    "an unknown part type": message(role="user", content=[{"type": "frob", "text": "a"}]),
    "an image part without url": message(role="user", content=[{"type": "image_url", "image_url": {}}]),
    "an image part with an unknown detail": message(role="user", content=[{"type": "image_url", "image_url": {"url": IMAGE, "detail": "x"}}]),
    "a number part": message(role="user", content=[{"type": "text", "text": "a"}, 5]),
    "a system part without type": message(role="system", content=[{"text": "a"}]),
    "a custom role's null text": message(role="narrator", content=[{"type": "text", "text": None}]),
    "a part without type beside a text part": message(role="user", content=[{"type": "text", "text": "a"}, {"text": "b"}]),
    "a custom role's part without type": message(role="narrator", content=[{"text": "a"}]),
    "a file part": message(role="user", content=[{"type": "file", "file": {"file_id": "f"}}]),
    "a text part with a uuid": message(role="user", content=[{"type": "text", "text": "a", "uuid": "u"}]),
    "content a number": message(role="user", content=5),
    "role a number": message(role=5, content="x"),
    "no role": message(content="x"),
    "a message that is a string": chat(messages=["hi"]),
    "messages empty": chat(messages=[]),
    "messages an object": chat(messages={"role": "user", "content": "x"}),
    "no messages": {"model": ZEN, "max_tokens": 4},
    "model missing": {"messages": [USER], "max_tokens": 4},
    "model a number": chat(model=5),
    "max_tokens 1": chat(max_tokens=1),
    "max_tokens as a string": chat(max_tokens="4"),
    "max_tokens as 4.0": chat(max_tokens=4.0),
    "max_tokens 4.5": chat(max_tokens=4.5),
    "max_tokens 0": chat(max_tokens=0),
    "max_tokens -1": chat(max_tokens=-1),
    "max_tokens null": chat(max_tokens=None),
    "max_tokens true": chat(max_tokens=True),
    "max_completion_tokens": {"model": ZEN, "messages": [USER], "max_completion_tokens": 3},
    "n 2": chat(n=2),
    "n 0": chat(n=0),
    "n as a string": chat(n="2"),
    "stream true": chat(stream=True),
    "stream false": chat(stream=False),
    "stream a string": chat(stream="yes"),
    "stream 1": chat(stream=1),
    "stream_options with stream": chat(stream=True, stream_options={"include_usage": True}),
    "stream_options without stream": chat(stream_options={"include_usage": True}),
    "stream_options not an object": chat(stream=True, stream_options=True),
    "include_usage a string": chat(stream=True, stream_options={"include_usage": "yes"}),
    "an unknown field": chat(frobnicate=1),
}

COMPLETION_BODIES = {
    "a string": {"model": ZEN, "prompt": "Flat is", "max_tokens": 3},
    "strings": {"model": ZEN, "prompt": ["Flat is", "Sparse is"], "max_tokens": 3},
    "token ids": {"model": ZEN, "prompt": [1, 2, 3], "max_tokens": 3},
    "lists of token ids": {"model": ZEN, "prompt": [[1, 2], [3]], "max_tokens": 3},
    "an empty list": {"model": ZEN, "prompt": [], "max_tokens": 3},
    "a number": {"model": ZEN, "prompt": 5, "max_tokens": 3},
    "mixed list": {"model": ZEN, "prompt": [1, "a"], "max_tokens": 3},
    "negative token id": {"model": ZEN, "prompt": [-1], "max_tokens": 3},
    "no prompt": {"model": ZEN, "max_tokens": 3},
    "prompt an object": {"model": ZEN, "prompt": {"a": 1}, "max_tokens": 3},
}

EMBEDDING_BODIES = {
    "a string": {"model": ZEN, "input": "Readability counts."},
    "strings": {"model": ZEN, "input": ["a b", "c"]},
    "a number": {"model": ZEN, "input": 5},
    "no input": {"model": ZEN},
    "messages": {"model": ZEN, "messages": [USER]},
}

# Bodies vLLM's pydantic models accept and its engine then refuses with 400: sampling
# parameters, and content parts vLLM's part reader cannot read (openai_server.py `parts_error`).
ENGINE_CHECKS = {
    "chat: max_tokens 0",
    "chat: max_tokens -1",
    "chat: n 0",
    "chat: a part without type beside a text part",
    "chat: a custom role's part without type",
    "chat: a file part",
    "chat: a text part with a uuid",
}
# What KServe answers once it has parsed a body (the model's answer), and when it has not.
PARSED = (200, 400)
NOT_PARSED = (404, 422, 500)

CASES = (
    [(f"chat: {n}", "/v1/chat/completions", b) for n, b in CHAT_BODIES.items()]
    + [(f"completions: {n}", "/v1/completions", b) for n, b in COMPLETION_BODIES.items()]
    + [(f"embeddings: {n}", "/v1/embeddings", b) for n, b in EMBEDDING_BODIES.items()]
)
RAW = {
    "chat: not JSON": ("/v1/chat/completions", b"{nope"),
    "chat: a JSON list": ("/v1/chat/completions", b"[]"),
}


def reached(servers, request_id: str) -> bool:
    return any(
        r["headers"].get("x-request-id") == request_id
        for s in servers
        for r in requests.get(f"{s.url}/debug/requests", timeout=5).json()["requests"]
    )


def verdicts(llm_stack, servers, path: str, data: bytes) -> tuple[bool, int, int]:
    """(the gateway forwarded it, its status, KServe's status)."""
    rid = f"decode-{uuid.uuid4()}"
    # A subject of its own per body: token budgets never decide here.
    token = llm_stack.token("RS256", sub=rid, scope=SCOPES)
    headers = {"Content-Type": "application/json", "X-Request-ID": rid}
    via = requests.post(
        f"{llm_stack.gateway}{PREFIX}{path}", data=data, headers={**headers, "Authorization": f"Bearer {token}"}, timeout=60
    )
    forwarded = reached(servers, rid)
    if not forwarded:
        assert via.status_code == 400, f"refused with {via.status_code}: {via.text}"
        assert set(via.json()["error"]) == {"message", "type", "param", "code"}
    direct = requests.post(f"{servers[0].url}{PREFIX}{path}", data=data, headers=headers, timeout=60)
    assert direct.status_code in PARSED + NOT_PARSED, f"KServe answered {direct.status_code}: {direct.text}"
    return forwarded, via.status_code, direct.status_code


@pytest.mark.parametrize("name", [c[0] for c in CASES] + list(RAW))
def test_the_filter_refuses_exactly_what_kserve_cannot_parse(llm_stack, openai_servers, name):
    if name in RAW:
        path, data = RAW[name]
    else:
        _, path, body = next(c for c in CASES if c[0] == name)
        data = json.dumps(body).encode()
    forwarded, via, direct = verdicts(llm_stack, openai_servers, path, data)
    if name in ENGINE_CHECKS:
        assert (forwarded, direct) == (False, 400), f"{name}: gateway {via}, KServe {direct}"
        return
    parsed = direct in PARSED
    assert forwarded == parsed, (
        f"{name}: the gateway {'forwarded' if forwarded else 'refused'} it ({via}), "
        f"KServe {'parsed' if parsed else 'refused'} it ({direct})"
    )
