"""A real KServe OpenAI-compatible model server for the LLM tests and the LLM demo.

It is KServe's own Python server (`kserve.ModelServer`) with KServe's OpenAI data plane
(`kserve.protocol.rest.openai`: routes, request parsing with vLLM's pydantic models, errors,
the `text/event-stream` response), serving two small generative models this file makes at
start-up, so nothing is downloaded and no GPU is needed:

  markov-zen   a word-level Markov chain (order 2) trained on the Zen of Python (`this`)
  markov-docs  the same over the docstrings of a few standard-library modules

Each is an `OpenAIGenerativeModel` (chat completions, completions, streamed or not) and an
`OpenAIEncoderModel` (embeddings: a hashed bag of words, L2-normalised). Tokens are words and
punctuation marks (`TOKEN` below); `usage` counts exactly the tokens of the prompt (for chat,
of the prompt the chat template makes) and of the text generated. Generation is
deterministic: the request's `seed`, else a hash of the prompt, seeds each choice.

Streaming uses KServe's framing (`openai_chat_adapter_model.py`): `data: <chunk JSON>\\n\\n`
per chunk, then `data: [DONE]\\n\\n`; chunks as vLLM's server sends them: a first chunk with the
assistant role (chat), one chunk per token, `finish_reason` on the last one, and with
`stream_options.include_usage` a last chunk with no choices and the `usage`.

Requests KServe cannot serve get KServe's OpenAI error shape
(`{"error": {"message", "type", "param", "code"}}`, `errors.create_error_response`): token-id
prompts, a prompt plus `max_tokens` past the context window, embedding `dimensions` other than
the model's, and what vLLM's engine refuses after its pydantic models let it through
(`max_tokens` or `n` below 1, with `SamplingParams`' messages).

Additions for the tests (they change no answer): the request counter and `/debug/requests` of
request_recorder.py, and `model_server_openai_tokens_total{model,type}`, the tokens this server
reported in `usage` (type `prompt` or `completion`), so a test can add up what the servers
charged.

Needs the `.venv-llm` venv (`kserve[llm]`, scripts/setup.sh). Run:
  .venv-llm/bin/python tests/e2e/openai_server.py --port 8090 [--token-delay-ms 5]
"""

from __future__ import annotations

import argparse
import asyncio
import codecs
import collections
import contextlib
import hashlib
import inspect
import io
import logging
import math
import random
import re
import sys
import time
import uuid
import warnings

MODELS = ("markov-zen", "markov-docs")
CONTEXT_WINDOW = 2048  # tokens, prompt and completion together
DEFAULT_MAX_TOKENS = 16  # when a chat request names none (vLLM's completions default too)
EMBEDDING_DIM = 64
ORDER = 2
TOKEN = re.compile(r"\w+|[^\w\s]")
SENTENCE_END = {".", "!", "?"}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True, help="HTTP port")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind")
    parser.add_argument("--replica", default="", help="label shown in /debug/requests")
    parser.add_argument(
        "--token-delay-ms", type=float, default=0.0, help="time to generate each token"
    )
    parser.add_argument("--verbose", action="store_true", help="keep KServe's per-request logs")
    return parser.parse_args(argv)


# kserve.model_server parses sys.argv when it is imported (see model_server.py).
ARGS = parse_args(sys.argv[1:]) if __name__ == "__main__" else None
sys.argv = sys.argv[:1]

from prometheus_client import Counter  # noqa: E402

import kserve  # noqa: E402
from kserve import model_server as kserve_model_server  # noqa: E402
from kserve.protocol.rest.openai import OpenAIEncoderModel, OpenAIGenerativeModel  # noqa: E402
from kserve.protocol.rest.openai.errors import create_error_response  # noqa: E402
from kserve.protocol.rest.openai.types import (  # noqa: E402
    ChatCompletion,
    ChatCompletionChoice,
    ChatCompletionChunk,
    ChatMessage,
    ChoiceDelta,
    ChunkChoice,
    Completion,
    CompletionChoice,
    CompletionChunk,
    CompletionChunkChoice,
    Embedding,
    EmbeddingResponseData,
    UsageInfo,
)
from kserve.protocol.rest.server import RESTServer  # noqa: E402
from vllm.entrypoints.chat_utils import MM_PARSER_MAP, _parse_chat_message_content_mm_part  # noqa: E402

from request_recorder import RecentRequests, RequestRecorder  # noqa: E402

TOKENS = Counter(
    "model_server_openai_tokens",
    "Tokens this server reported in usage, by model and type (prompt, completion)",
    ["model", "type"],
)


def tokenize(text: str) -> list[str]:
    return TOKEN.findall(text)


def detokenize(tokens: list[str]) -> str:
    """The text of `tokens` as generated after a prompt: a space before each word, none
    before punctuation, so the streamed pieces join to the whole text and
    `tokenize(detokenize(t)) == t`."""
    return "".join((" " + t if t[0].isalnum() or t[0] == "_" else t) for t in tokens)


def zen_text() -> str:
    with contextlib.redirect_stdout(io.StringIO()):
        import this  # the module prints the Zen; its text is `this.s`, in ROT13

    return codecs.decode(this.s, "rot13")


def docs_text() -> str:
    import argparse as a
    import collections as c
    import http.server as h
    import json as j
    import textwrap as t

    return "\n".join(inspect.getdoc(m) or "" for m in (a, c, h, j, t))


class MarkovChain:
    """Successors of every `ORDER`-token context (and of every single token, for backoff)."""

    def __init__(self, text: str):
        tokens = tokenize(text)
        self.vocabulary = sorted(set(tokens))
        self.next: dict[tuple[str, ...], list[str]] = collections.defaultdict(list)
        for n in (1, ORDER):
            for i in range(len(tokens) - n):
                self.next[tuple(tokens[i : i + n])].append(tokens[i + n])
        self.starts = [t for i, t in enumerate(tokens) if i == 0 or tokens[i - 1] in SENTENCE_END]

    def generate(self, context: list[str], max_tokens: int, rng: random.Random):
        """Yields up to `max_tokens` tokens; stops after a sentence ends."""
        history = list(context[-ORDER:])
        for _ in range(max_tokens):
            options = self.next.get(tuple(history[-ORDER:])) or self.next.get(tuple(history[-1:]))
            token = rng.choice(options or self.starts)
            yield token
            if token in SENTENCE_END:
                return
            history.append(token)


def seeded(seed: int | None, prompt: str, choice: int) -> random.Random:
    base = seed if seed is not None else int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:8])
    return random.Random(f"{base}/{choice}")


def message_text(content) -> str:
    """A chat message's text: a string, or the text parts (and plain strings) of a list of
    content parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    # As vLLM: plain string parts are text, text parts whose text is null are skipped.
    texts = [part if isinstance(part, str) else part.get("text") for part in content]
    return " ".join(t for t in texts if isinstance(t, str))


def read_messages(messages) -> list[dict]:
    """The messages with their content parts read once: pydantic validates the parts of
    OpenAI's message types only now (a `ValidatorIterator`), and a part it refuses raises here,
    which KServe answers 500."""
    return [
        {**m, "content": list(m["content"])} if not isinstance(m.get("content"), (str, type(None))) else dict(m)
        for m in messages
    ]


def parts_error(messages: list[dict]):
    """What vLLM's engine refuses of the parts pydantic let through, as vLLM's chat server
    answers it (400, `serving_chat` turns the parser's ValueError or TypeError into one): its
    own part reader (`vllm/entrypoints/chat_utils.py` `_parse_chat_message_content_mm_part`:
    no `type` and no media field, or a `type` that is not a string), a type it has no parser
    for, and a text that is not a string (it joins the texts)."""
    for m in messages:
        for part in m["content"] if isinstance(m.get("content"), list) else []:
            if isinstance(part, str):
                continue
            try:
                kind, value = _parse_chat_message_content_mm_part(part)
            except ValueError as e:
                return create_error_response(message=str(e))
            if kind not in MM_PARSER_MAP:
                return create_error_response(message=f"Unsupported chat content part type: {kind!r}.", param="type")
            if kind in ("text", "input_text", "output_text", "refusal", "thinking") and not isinstance(value, (str, type(None))):
                return create_error_response(message=f"sequence item: expected str instance, {type(value).__name__} found")
    return None


def chat_prompt(messages) -> str:
    """The chat template: one `role: content` line per message, then the assistant's turn."""
    lines = [f"{m.get('role', '')}: {message_text(m.get('content'))}" for m in messages]
    return "\n".join(lines + ["assistant:"])


def stop_words(stop) -> list[str]:
    if stop is None:
        return []
    return [stop] if isinstance(stop, str) else list(stop)


class Generation:
    """One choice: its tokens and finish reason. The chain stops after a sentence ends
    (`stop`) or at `max_tokens` (`length`); a `stop` string ends the text before the first
    token equal to it (tokens are whole words or marks, so that is where it would match)."""

    def __init__(self, tokens: list[str], max_tokens: int, stop: list[str]):
        ended = bool(tokens) and tokens[-1] in SENTENCE_END
        self.finish_reason = "length" if len(tokens) >= max_tokens and not ended else "stop"
        cut = min((tokens.index(w) for w in stop if w in tokens), default=None)
        if cut is not None:
            tokens, self.finish_reason = tokens[:cut], "stop"
        self.tokens = tokens

    @property
    def text(self) -> str:
        return detokenize(self.tokens)


class MarkovModel(OpenAIGenerativeModel, OpenAIEncoderModel):
    """A Markov chain behind KServe's OpenAI data plane."""

    def __init__(self, name: str, text: str):
        super().__init__(name)
        self.chain = MarkovChain(text)
        self.token_delay = (ARGS.token_delay_ms if ARGS else 0.0) / 1000.0

    # Shared by chat and completions ---------------------------------------------------
    @staticmethod
    def _check_sampling(max_tokens, n):
        """vLLM's checks of the sampling parameters its pydantic models let through
        (vllm/sampling_params.py `SamplingParams._verify_args`), with its messages."""
        if n is not None and n < 1:
            return create_error_response(message=f"n must be at least 1, got {n}.", param="n")
        if max_tokens is not None and max_tokens < 1:
            return create_error_response(
                message=f"max_tokens must be at least 1, got {max_tokens}.", param="max_tokens"
            )
        return None

    def _check_window(self, prompt_tokens: int, max_tokens: int):
        if prompt_tokens + max_tokens > CONTEXT_WINDOW:
            return create_error_response(
                message=(
                    f"This model's maximum context length is {CONTEXT_WINDOW} tokens. However, "
                    f"you requested {prompt_tokens + max_tokens} tokens ({prompt_tokens} in the "
                    f"messages, {max_tokens} in the completion)."
                ),
                err_type="BadRequestError",
                param="max_tokens",
            )
        return None

    def _generate(self, prompt: str, seed, n: int, max_tokens: int, stop) -> list[Generation]:
        context = tokenize(prompt)
        return [
            Generation(
                list(self.chain.generate(context, max_tokens, seeded(seed, prompt, i))),
                max_tokens,
                stop_words(stop),
            )
            for i in range(n)
        ]

    def _usage(self, prompt_tokens: int, generations: list[Generation]) -> UsageInfo:
        completion = sum(len(g.tokens) for g in generations)
        TOKENS.labels(model=self.name, type="prompt").inc(prompt_tokens)
        TOKENS.labels(model=self.name, type="completion").inc(completion)
        return UsageInfo(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion,
            total_tokens=prompt_tokens + completion,
        )

    async def _pace(self, tokens: int = 1):
        """The time generating `tokens` takes (`--token-delay-ms` each), streamed or not."""
        await asyncio.sleep(self.token_delay * tokens)

    # Chat completions -------------------------------------------------------------------
    async def create_chat_completion(self, request, raw_request=None, context=None):
        messages = read_messages(request.messages)
        error = parts_error(messages)
        if error is not None:
            return error
        prompt = chat_prompt(messages)
        prompt_tokens = len(tokenize(prompt))
        # As vLLM's `to_sampling_params`: max_completion_tokens when set, else max_tokens.
        requested = (
            request.max_completion_tokens
            if request.max_completion_tokens is not None
            else request.max_tokens
        )
        error = self._check_sampling(requested, request.n)
        if error is not None:
            return error
        max_tokens = requested if requested is not None else DEFAULT_MAX_TOKENS
        error = self._check_window(prompt_tokens, max_tokens)
        if error is not None:
            return error
        n = request.n or 1
        generations = self._generate(prompt, request.seed, n, max_tokens, request.stop)
        created = int(time.time())
        request_id = f"chatcmpl-{uuid.uuid4().hex}"
        if not request.stream:
            await self._pace(sum(len(g.tokens) for g in generations))
            return ChatCompletion(
                id=request_id,
                created=created,
                model=self.name,
                choices=[
                    ChatCompletionChoice(
                        index=i,
                        message=ChatMessage(role="assistant", content=g.text),
                        finish_reason=g.finish_reason,
                    )
                    for i, g in enumerate(generations)
                ],
                usage=self._usage(prompt_tokens, generations),
            )
        include_usage = bool(request.stream_options and request.stream_options.include_usage)

        def chunk(choices, usage=None) -> str:
            body = ChatCompletionChunk(
                id=request_id, created=created, model=self.name, choices=choices, usage=usage
            )
            return f"data: {body.model_dump_json()}\n\n"

        async def stream():
            for i in range(n):
                yield chunk([ChunkChoice(index=i, delta=ChoiceDelta(role="assistant", content=""))])
            for i, g in enumerate(generations):
                for k, token in enumerate(g.tokens):
                    await self._pace()
                    last = k == len(g.tokens) - 1
                    yield chunk(
                        [
                            ChunkChoice(
                                index=i,
                                delta=ChoiceDelta(content=detokenize([token])),
                                finish_reason=g.finish_reason if last else None,
                            )
                        ]
                    )
                if not g.tokens:
                    yield chunk(
                        [ChunkChoice(index=i, delta=ChoiceDelta(), finish_reason=g.finish_reason)]
                    )
            usage = self._usage(prompt_tokens, generations)
            if include_usage:
                yield chunk([], usage)
            yield "data: [DONE]\n\n"

        return stream()

    # Completions ------------------------------------------------------------------------
    async def create_completion(self, request, raw_request=None, context=None):
        prompts = request.prompt if isinstance(request.prompt, list) else [request.prompt]
        if not prompts or not all(isinstance(p, str) for p in prompts):
            return create_error_response(
                message="prompt: token-id prompts are not supported by this model",
                param="prompt",
            )
        error = self._check_sampling(request.max_tokens, request.n)
        if error is not None:
            return error
        max_tokens = request.max_tokens if request.max_tokens is not None else DEFAULT_MAX_TOKENS
        n = request.n or 1
        prompt_tokens = [len(tokenize(p)) for p in prompts]
        for count in prompt_tokens:
            error = self._check_window(count, max_tokens)
            if error is not None:
                return error
        generations = [
            g for p in prompts for g in self._generate(p, request.seed, n, max_tokens, request.stop)
        ]
        created = int(time.time())
        request_id = f"cmpl-{uuid.uuid4().hex}"
        echo = [p if request.echo else "" for p in prompts for _ in range(n)]
        if not request.stream:
            await self._pace(sum(len(g.tokens) for g in generations))
            return Completion(
                id=request_id,
                created=created,
                model=self.name,
                choices=[
                    CompletionChoice(index=i, text=echo[i] + g.text, finish_reason=g.finish_reason)
                    for i, g in enumerate(generations)
                ],
                usage=self._usage(sum(prompt_tokens), generations),
            )
        include_usage = bool(request.stream_options and request.stream_options.include_usage)

        def chunk(choices, usage=None) -> str:
            body = CompletionChunk(
                id=request_id, created=created, model=self.name, choices=choices, usage=usage
            )
            return f"data: {body.model_dump_json()}\n\n"

        async def stream():
            for i, g in enumerate(generations):
                if echo[i]:
                    yield chunk([CompletionChunkChoice(index=i, text=echo[i])])
                for k, token in enumerate(g.tokens):
                    await self._pace()
                    last = k == len(g.tokens) - 1
                    yield chunk(
                        [
                            CompletionChunkChoice(
                                index=i,
                                text=detokenize([token]),
                                finish_reason=g.finish_reason if last else None,
                            )
                        ]
                    )
                if not g.tokens:
                    yield chunk([CompletionChunkChoice(index=i, text="", finish_reason=g.finish_reason)])
            usage = self._usage(sum(prompt_tokens), generations)
            if include_usage:
                yield chunk([], usage)
            yield "data: [DONE]\n\n"

        return stream()

    # Embeddings -------------------------------------------------------------------------
    async def create_embedding(self, request, raw_request=None, context=None):
        inputs = getattr(request, "input", None)
        texts = inputs if isinstance(inputs, list) else [inputs]
        if not texts or not all(isinstance(t, str) for t in texts):
            return create_error_response(
                message="input: only text inputs are supported by this model", param="input"
            )
        dimensions = getattr(request, "dimensions", None)
        if dimensions is not None and dimensions != EMBEDDING_DIM:
            return create_error_response(
                message=f"dimensions: this model's embeddings have {EMBEDDING_DIM} dimensions",
                param="dimensions",
            )
        data = [EmbeddingResponseData(index=i, embedding=embed(t)) for i, t in enumerate(texts)]
        prompt_tokens = sum(len(tokenize(t)) for t in texts)
        TOKENS.labels(model=self.name, type="prompt").inc(prompt_tokens)
        return Embedding(
            model=self.name,
            data=data,
            usage=UsageInfo(prompt_tokens=prompt_tokens, total_tokens=prompt_tokens),
        )

    async def create_rerank(self, request, raw_request=None, context=None):
        return create_error_response(message=f"Model {self.name} does not support Rerank API")


def embed(text: str) -> list[float]:
    """A hashed bag of lower-cased words, L2-normalised (all zeros for a text of no words)."""
    vector = [0.0] * EMBEDDING_DIM
    for token in tokenize(text.lower()):
        digest = hashlib.blake2b(token.encode(), digest_size=8).digest()
        slot = int.from_bytes(digest[:4], "little") % EMBEDDING_DIM
        vector[slot] += 1.0 if digest[4] & 1 else -1.0
    norm = math.sqrt(sum(v * v for v in vector))
    return [v / norm for v in vector] if norm else vector


def build_models() -> list[MarkovModel]:
    return [MarkovModel("markov-zen", zen_text()), MarkovModel("markov-docs", docs_text())]


class LoopbackModelServer(kserve.ModelServer):
    """KServe's ModelServer on a chosen address, without gRPC (as in model_server.py)."""

    def __init__(self, host: str, **kwargs):
        super().__init__(enable_grpc=False, **kwargs)
        self.bind_host = host

    def start(self, models) -> None:
        self._register_and_check_atleast_one_model_is_ready(models)
        self._rest_server = RESTServer(
            "kserve.model_server:app",
            self.dataplane,
            self.model_repository_extension,
            self.http_port,
            grace_period=self.grace_period,
            timeout_keep_alive=self.timeout_keep_alive,
        )
        self._rest_server.config.host = self.bind_host
        self.servers.append(self._rest_server.start())
        self.setup_event_loop()
        self.register_signal_handler()
        asyncio.run(self._serve())


def main() -> None:
    replica = ARGS.replica or f"openai@{ARGS.port}"
    models = build_models()
    recent = RecentRequests(replica)
    app = kserve_model_server.app
    app.add_middleware(RequestRecorder, recent=recent)

    @app.get("/debug/requests")
    def debug_requests():
        return recent.snapshot()

    server = LoopbackModelServer(ARGS.host, http_port=ARGS.port, enable_latency_logging=False)
    if not ARGS.verbose:
        warnings.filterwarnings("ignore", message=".* is deprecated")
        for name in ("uvicorn.access", "kserve.trace"):
            logging.getLogger(name).setLevel(logging.WARNING)
    names = ", ".join(m.name for m in models)
    print(f"openai_server: {replica} serving {names} on http://{ARGS.host}:{ARGS.port}", flush=True)
    server.start(models)


if __name__ == "__main__":
    main()
