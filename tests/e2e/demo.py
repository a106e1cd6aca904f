"""`make demo`: modelgate serving deploy/ in front of real KServe model servers, until Ctrl-C.

The gateway runs `modelgate serve --manifests` on deploy/ plus the local overlay stack.py
writes into the run directory (demo_config.local_overlay): the routes, listeners, limits and
policy a cluster gets. Model requests go to deploy/'s HTTPS listener ($GW, with the run's
self-signed certificate in $CURL_CA_BUNDLE); its HTTP listener ($GW_HTTP) only redirects.

`make demo-llm` (`--llm`) adds KServe's OpenAI server with two generative models
(openai_server.py, in .venv-llm) and walks through chat, a streamed chat, the model list
filtered per caller and a token budget's 429.

Starts the stack (stack.py), writes demo tokens next to the generated config in the run
directory (default .run/demo), runs each example curl command once and shows its real
answer, prints the commands again ready to paste, and waits. Ctrl-C (or SIGTERM) stops every
process it started.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import demo_config
import digits
import stack as stack_mod

IRIS_ROW = "[5.1, 3.5, 1.4, 0.2]"
WINE_ROW = "[13.2, 1.78, 2.14, 11.2, 100.0, 2.65, 2.76, 0.26, 1.28, 4.38, 1.05, 3.4, 1050.0]"


def examples(s: stack_mod.Stack) -> list[tuple[str, str]]:
    """(title, shell command) pairs; commands read $TOKEN and $WINE_TOKEN from the environment."""
    gw, admin = "$GW", "$ADMIN"
    json_h = "-H 'Content-Type: application/json'"
    auth = '-H "Authorization: Bearer $TOKEN"'
    iris_v1 = f"-d '{{\"instances\": [{IRIS_ROW}]}}'"
    if not s.manifests:
        return legacy_examples(s)
    # Answers the filter gives before the body has arrived (401, 403, 429) over HTTP/1.1:
    # after such an early HTTP/2 answer the gateway resets the rest of the upload
    # (RST_STREAM, RFC 9113 section 8.1), which curl 7.88 reports as a stream error.
    early = "--http1.1"
    mnist_h = "-H \"Authorization: Bearer $MNIST_TOKEN\""
    return [
        ("Is the gateway ready (its admin listener; deploy/'s listeners serve models only)", f"curl -s {admin}/ready"),
        ("List the models this token may call", f"curl -s {auth} {gw}/v1/models"),
        ("Model info (V1)", f"curl -s {auth} {gw}/v1/models/sklearn-iris"),
        (
            "Predict iris (V1), over deploy/'s HTTPS listener",
            f"curl -s {auth} {json_h} {gw}/v1/models/sklearn-iris:predict {iris_v1}",
        ),
        (
            "Predict iris (V2 / Open Inference Protocol)",
            f"curl -s {auth} {json_h} {gw}/v2/models/sklearn-iris/infer "
            f"-d '{{\"id\": \"demo-1\", \"inputs\": [{{\"name\": \"input-0\", \"shape\": [1, 4], "
            f"\"datatype\": \"FP64\", \"data\": [{IRIS_ROW}]}}]}}'",
        ),
        (
            "Predict sklearn-mnist, deploy/'s second model (a 28x28 digit, 784 features)",
            f"curl -s {mnist_h} {json_h} {gw}/v1/models/sklearn-mnist:predict -d @$RUN/mnist-predict.json",
        ),
        (
            "Explain that digit: deploy/'s Exact explain rule sends it to the ART explainer",
            f"curl -s {mnist_h} {json_h} {gw}/v1/models/sklearn-mnist:explain -d @$RUN/mnist-explain.json "
            "| grep -o '\"prediction\": *[0-9]*\\|\"adversarial_prediction\": *[0-9]*'",
        ),
        (
            "Predict wine, the local overlay's model, routed by name",
            f"curl -s {auth} {json_h} {gw}/v1/models/sklearn-wine:predict "
            f"-d '{{\"instances\": [{WINE_ROW}]}}'",
        ),
        (
            "Load spread over the two iris replicas, from each replica's own request counter",
            f"for i in $(seq 10); do curl -s -o /dev/null {auth} {json_h} {gw}/v1/models/sklearn-iris:predict "
            f"{iris_v1}; done; for port in {s.ports.iris1} {s.ports.iris2}; do curl -s http://127.0.0.1:$port/metrics "
            f"| grep '^model_server_requests_total{{endpoint=\"v1_predict\"}}'; done",
        ),
        (
            "Custom headers and a request id reach the model server (from its own request log)",
            f"curl -s -o /dev/null {auth} {json_h} -H 'X-User-ID: user123' -H 'X-Request-ID: req-456' "
            f"{gw}/v1/models/sklearn-iris:predict {iris_v1}; curl -s http://127.0.0.1:{s.ports.iris1}/debug/requests "
            f"http://127.0.0.1:{s.ports.iris2}/debug/requests | grep -o '\"x-request-id\":\"req-456\"'",
        ),
        (
            "Plain HTTP only redirects to HTTPS (deploy/gateway/https-redirect.yaml)",
            f'curl -s -o /dev/null -w "%{{http_code}} %{{redirect_url}}\\n" {auth} {json_h} '
            f"$GW_HTTP/v1/models/sklearn-iris:predict {iris_v1}",
        ),
        ("No token: 401", f"curl -si {early} {json_h} {gw}/v1/models/sklearn-iris:predict {iris_v1}"),
        (
            "A token scoped for wine only, calling iris: 403",
            f'curl -s {early} -w " (%{{http_code}})\\n" -H "Authorization: Bearer $WINE_TOKEN" {json_h} '
            f"{gw}/v1/models/sklearn-iris:predict {iris_v1}",
        ),
        (
            "A malformed body (3 features for a 4-feature model): 400, never reaches KServe",
            f'curl -s -w " (%{{http_code}})\\n" {auth} {json_h} '
            f"{gw}/v1/models/sklearn-iris:predict -d '{{\"instances\": [[5.1, 3.5, 1.4]]}}'",
        ),
        (
            "The same body sent to KServe directly, without the gateway: a 500 from inside the model",
            f'curl -s -w " (%{{http_code}})\\n" {json_h} http://127.0.0.1:{s.ports.iris1}/v1/models/sklearn-iris:predict '
            f"-d '{{\"instances\": [[5.1, 3.5, 1.4]]}}'",
        ),
        (
            "Past wine's quota (burst 5, then 2/s per subject): 429 with Retry-After",
            f"for i in 1 2 3 4 5 6; do curl -s {early} -o /dev/null -w '%{{http_code}} retry-after=%header{{retry-after}}\\n' "
            f"{auth} {json_h} {gw}/v1/models/sklearn-wine:predict -d '{{\"instances\": [{WINE_ROW}]}}'; done",
        ),
        (
            "Per-model outcome counts from the filter (non-zero ones), named by deploy/'s EnvoyProxy",
            f"curl -s {admin}/metrics | grep '^modelgate_requests{{' | grep -v ' 0$'",
        ),
        (
            "The effective config deploy/ became, secrets redacted",
            f"curl -s {admin}/config_dump | grep -A2 '\"jwks\"'",
        ),
    ]


def legacy_examples(s: stack_mod.Stack) -> list[tuple[str, str]]:
    """The LLM stack's (host YAML) examples: plain HTTP, the iris explainer."""
    gw, admin = "$GW", "$ADMIN"
    json_h = "-H 'Content-Type: application/json'"
    auth = '-H "Authorization: Bearer $TOKEN"'
    iris_v1 = f"-d '{{\"instances\": [{IRIS_ROW}]}}'"
    return [
        ("Health of the gateway itself", f"curl -s {gw}/health"),
        ("List the models this token may call", f"curl -s {auth} {gw}/v1/models"),
        (
            "Predict iris (V1)",
            f"curl -s {auth} {json_h} {gw}/v1/models/sklearn-iris:predict {iris_v1}",
        ),
        (
            "Explain iris (served by the explainer)",
            f"curl -s {auth} {json_h} {gw}/v1/models/sklearn-iris:explain {iris_v1}",
        ),
        ("No token: 401", f"curl -si {json_h} {gw}/v1/models/sklearn-iris:predict {iris_v1}"),
        (
            "Per-model outcome counts from the filter (non-zero ones)",
            f"curl -s {admin}/metrics | grep '^modelgate_requests{{' | grep -v ' 0$'",
        ),
    ]


def llm_examples() -> list[tuple[str, str]]:
    """The LLM walkthrough (`--llm`): KServe's OpenAI endpoints through the gateway."""
    gw = "$GW"
    json_h = "-H 'Content-Type: application/json'"
    auth = '-H "Authorization: Bearer $TOKEN"'
    chat = f"{gw}{demo_config.OPENAI_PREFIX}/v1/chat/completions"
    question = '"messages": [{"role": "user", "content": "Is beautiful better than ugly?"}]'
    return [
        (
            "OpenAI models this token may use (answered by the filter)",
            f"curl -s {auth} {gw}{demo_config.OPENAI_PREFIX}/v1/models",
        ),
        (
            "A token scoped for markov-zen only sees only markov-zen",
            f'curl -s -H "Authorization: Bearer $ZEN_TOKEN" {gw}{demo_config.OPENAI_PREFIX}/v1/models',
        ),
        (
            "Chat with markov-zen, routed by the body's model to KServe's OpenAI server",
            f"curl -s {auth} {json_h} {chat} -d '{{\"model\": \"{demo_config.ZEN}\", {question}, \"max_tokens\": 20}}'",
        ),
        (
            "A streamed chat: server-sent events as KServe frames them, one per token",
            f"curl -sN {auth} {json_h} {chat} "
            f"-d '{{\"model\": \"{demo_config.ZEN}\", {question}, \"max_tokens\": 6, \"stream\": true}}'",
        ),
        (
            "A malformed chat body: 400 in OpenAI's error shape, never reaches KServe",
            f'curl -s -w " (%{{http_code}})\\n" {auth} {json_h} {chat} '
            f"-d '{{\"model\": \"{demo_config.ZEN}\", \"messages\": \"hi\"}}'",
        ),
        (
            "Five chats at once against markov-docs' token budget (200 tokens a minute per subject): "
            "each reserves its prompt and max_tokens before it is forwarded, so the ones that do not "
            "fit get 429 with Retry-After",
            f"for i in 1 2 3 4 5; do curl -s -o /dev/null -w '%{{http_code}} remaining=%header{{x-ratelimit-remaining-tokens}} "
            f"retry-after=%header{{retry-after}}\\n' {auth} {json_h} {chat} "
            f"-d '{{\"model\": \"{demo_config.DOCS}\", {question}, \"max_tokens\": 60}}' & done; wait",
        ),
    ]


def write_bodies(s: stack_mod.Stack) -> None:
    """The sklearn-mnist examples' bodies (a digit is 784 numbers, too long for a command)."""
    image, label = digits.image(0)
    row = [px for line in image for (px,) in line]
    (s.run_dir / "mnist-predict.json").write_text(json.dumps({"instances": [row]}) + "\n")
    (s.run_dir / "mnist-explain.json").write_text(json.dumps({"instances": [[image], [label]]}) + "\n")


def write_tokens(s: stack_mod.Stack) -> dict[str, str]:
    both = f"{demo_config.IRIS_SCOPE} {demo_config.WINE_SCOPE}"
    if s.llm:
        both += " " + " ".join(demo_config.CHAT_SCOPES.values())
    tokens = {
        "TOKEN": s.token("RS256", sub="demo-user", scope=both, lifetime=24 * 3600),
        "WINE_TOKEN": s.token("ES256", sub="wine-only-user", scope=demo_config.WINE_SCOPE, lifetime=24 * 3600),
    }
    if s.manifests:
        tokens["MNIST_TOKEN"] = s.token("RS256", sub="mnist-user", scope=demo_config.MNIST_SCOPE, lifetime=24 * 3600)
    if s.llm:
        zen = demo_config.CHAT_SCOPES[demo_config.ZEN]
        tokens["ZEN_TOKEN"] = s.token("ES256", sub="zen-only-user", scope=zen, lifetime=24 * 3600)
    for name, value in tokens.items():
        path = s.run_dir / name.lower()
        path.write_text(value + "\n")
    return tokens


def shell_env(s: stack_mod.Stack, tokens: dict[str, str]) -> dict[str, str]:
    env = {"GW": s.gateway, "ADMIN": s.admin, "RUN": str(s.run_dir), **tokens}
    if s.manifests:
        # curl trusts the run's certificate for $GW, deploy/'s HTTPS listener.
        env["GW_HTTP"] = s.gateway_http
        env["CURL_CA_BUNDLE"] = str(s.cert_path)
    return env


def all_examples(s: stack_mod.Stack) -> list[tuple[str, str]]:
    return examples(s) + (llm_examples() if s.llm else [])


def run_walkthrough(s: stack_mod.Stack, env: dict[str, str]) -> None:
    for title, command in all_examples(s):
        print(f"\n## {title}\n$ {command}", flush=True)
        result = subprocess.run(
            ["bash", "-c", command],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=30,
        )
        print((result.stdout + result.stderr).rstrip(), flush=True)


def print_paste_block(s: stack_mod.Stack, env: dict[str, str]) -> None:
    run = shlex.quote(str(s.run_dir))
    print("\n# Ready to paste (tokens valid 24 h):")
    print(f"export RUN={run} GW={env['GW']} ADMIN={env['ADMIN']}")
    if s.manifests:
        print(f"export GW_HTTP={env['GW_HTTP']} CURL_CA_BUNDLE=\"$RUN/tls/server.pem\"")
    exports = 'export TOKEN=$(cat "$RUN/token") WINE_TOKEN=$(cat "$RUN/wine_token")'
    if s.manifests:
        exports += ' MNIST_TOKEN=$(cat "$RUN/mnist_token")'
    if s.llm:
        exports += ' ZEN_TOKEN=$(cat "$RUN/zen_token")'
    print(exports)
    for title, command in all_examples(s):
        print(f"# {title}\n{command}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run-dir", default=str(stack_mod.REPO / ".run" / "demo"))
    parser.add_argument("--no-walkthrough", action="store_true", help="only print the commands")
    parser.add_argument("--exit", action="store_true", help="stop after the walkthrough")
    parser.add_argument("--verbose-models", action="store_true", help="keep KServe's request logs")
    parser.add_argument("--llm", action="store_true", help="add KServe's OpenAI server (needs .venv-llm)")
    args = parser.parse_args()

    # SIGTERM ends the demo like Ctrl-C does, through the same clean-up.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    ports = stack_mod.ports_from_env()
    started = time.monotonic()
    servers = "4 KServe model servers, 2 KServe OpenAI servers" if args.llm else "5 KServe model servers"
    config = "its host YAML" if args.llm else "deploy/ plus the local overlay"
    print(f"demo: starting {servers} and modelgate on {config} (run dir {args.run_dir})", flush=True)
    try:
        with stack_mod.Stack(ports, Path(args.run_dir), args.verbose_models, llm=args.llm) as s:
            servers = ", ".join(f"{spec.port} ({spec.name})" for spec in s.model_servers())
            openai = f", {ports.openai1}, {ports.openai2} (OpenAI)" if args.llm else ""
            print(
                f"demo: ready in {time.monotonic() - started:.1f}s: gateway {s.gateway_http} and "
                f"{s.gateway_tls}, admin {s.admin}, model servers on ports "
                f"{servers}{openai}; logs in {s.run_dir / 'logs'}",
                flush=True,
            )
            if s.manifests:
                write_bodies(s)
            env = shell_env(s, write_tokens(s))
            if not args.no_walkthrough:
                run_walkthrough(s, env)
            print_paste_block(s, env)
            if args.exit:
                return 0
            print("\ndemo: running; press Ctrl-C to stop", flush=True)
            while all(p.alive() for p in s.processes):
                time.sleep(0.5)
            dead = [p.name for p in s.processes if not p.alive()]
            print(f"demo: {', '.join(dead)} exited; stopping (see {s.run_dir / 'logs'})")
            return 1
    except stack_mod.StackError as e:
        print(f"demo: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        print("demo: stopped every process it started", flush=True)


if __name__ == "__main__":
    sys.exit(main())
