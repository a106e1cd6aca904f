"""Remote JWKS: an identity provider rotates its keys and goes down while requests keep coming.

The provider is a real HTTP server on loopback (`JwksServer`, below) whose JWKS the test
changes mid-run; the gateway reaches it through an `http_call` cluster, as Envoy reaches an
identity provider through a cluster an EnvoyPatchPolicy adds (docs/config.md, "Remote JWKS").
Tokens are minted with PyJWT. Under a bounded closed loop of predicts:

1. before the first good fetch (the provider answers 500), requests get the filter's 503;
2. once the provider publishes key A, tokens signed with A are accepted;
3. the provider publishes A and B and starts signing with B: B tokens succeed within the
   documented bound (minRefreshIntervalSeconds + the 1 s tick + the fetch), A tokens never fail;
4. the provider retires A: B tokens never fail, A tokens are refused within the refresh bound;
5. the provider answers garbage, then goes down: B tokens never fail (the last good keys stay);
6. a flood of tokens naming unknown kids makes at most one fetch per VM per
   minRefreshIntervalSeconds.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import uuid
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from reliability.harness import configs, tokens
from reliability.harness.gateway import Gateway
from reliability.harness.ports import suite_ports
from reliability.harness.upstream import RecordingUpstream

REFRESH_SECONDS = 2
MIN_REFRESH_SECONDS = 1
VM_COUNT = 2
# The filter checks whether a fetch is due once a second (filter/src/jwks.rs TICK).
TICK_SECONDS = 1
# How long a new kid may be refused after its first token (docs/config.md): one minimum
# interval, one tick, and the fetch itself (a loopback round trip; one more second of slack).
NEW_KID_BOUND = MIN_REFRESH_SECONDS + TICK_SECONDS + 1
# How long a retired key may still be accepted: one refresh interval, one tick, the fetch.
RETIRED_KID_BOUND = REFRESH_SECONDS + TICK_SECONDS + 1
BODY = json.dumps({"instances": [[5.1, 3.5, 1.4, 0.2]]}).encode()


class JwksServer:
    """An identity provider's JWKS endpoint: `/jwks`, with what it serves set by the test."""

    def __init__(self, port: int):
        self.port = port
        self.lock = threading.Lock()
        self.mode = "error"  # "jwks", "error" (500) or "garbage" (200 with an HTML page)
        self.document: dict = {"keys": []}
        self.fetches: list[float] = []
        self.server: ThreadingHTTPServer | None = None

    def publish(self, *jwks: dict) -> None:
        with self.lock:
            self.mode, self.document = "jwks", {"keys": list(jwks)}

    def set_mode(self, mode: str) -> None:
        with self.lock:
            self.mode = mode

    def fetches_since(self, start: float) -> int:
        with self.lock:
            return sum(1 for t in self.fetches if t >= start)

    def start(self) -> JwksServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
                with owner.lock:
                    owner.fetches.append(time.monotonic())
                    mode, document = owner.mode, owner.document
                if self.path != "/jwks":
                    status, body, kind = 404, b"not found", "text/plain"
                elif mode == "jwks":
                    status, body, kind = 200, json.dumps(document).encode(), "application/json"
                elif mode == "garbage":
                    status, body, kind = 200, b"<html><body>maintenance</body></html>", "text/html"
                else:
                    status, body, kind = 500, b'{"error":"database unavailable"}', "application/json"
                self.send_response(status)
                self.send_header("content-type", kind)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Go down: close the listening socket, so fetches get connection refused."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None


class Signer:
    """One of the provider's signing keys."""

    def __init__(self, kid: str):
        self.kid = kid
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwk(self) -> dict:
        return tokens.KeySet.rsa_jwk(self.key, self.kid)

    def token(self, sub: str = "alice") -> str:
        return jwt.encode(tokens.KeySet.claims(sub=sub), self.key, algorithm="RS256", headers={"kid": self.kid})


class Client(threading.Thread):
    """A closed loop of predicts with tokens from `signer`, counting statuses over time."""

    def __init__(self, port: int, signer: Signer):
        super().__init__(daemon=True)
        self.port = port
        self.signer = signer
        self.token = signer.token()
        self.stopping = threading.Event()
        self.results: list[tuple[float, int]] = []

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        headers = {"authorization": f"Bearer {self.token}", "content-type": "application/json"}
        while not self.stopping.is_set():
            sent = time.monotonic()
            try:
                conn.request("POST", f"/v1/models/{configs.IRIS}:predict", BODY, headers)
                response = conn.getresponse()
                response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                status = 0
            if status != 200:
                # A fresh connection after any refusal: a local reply to a request whose body
                # was never read may close the connection (that is tested elsewhere; here only
                # the policy's answers count).
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            self.results.append((sent, status))
        conn.close()

    def stop(self) -> list[tuple[float, int]]:
        self.stopping.set()
        self.join(15)
        return self.results


def statuses(results: list[tuple[float, int]], start: float = 0.0, end: float = float("inf")) -> Counter:
    return Counter(status for sent, status in results if start <= sent < end)


def one_request(port: int, token: str) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(
            "POST",
            f"/v1/models/{configs.IRIS}:predict",
            BODY,
            {"authorization": f"Bearer {token}", "content-type": "application/json"},
        )
        response = conn.getresponse()
        body = response.read()
        return response.status, (json.loads(body) if body else {})
    finally:
        conn.close()


def wait_for_every_vm(port: int, token: str, timeout: float) -> None:
    """Until requests with `token` get 200 from every worker's VM: each VM fetches the JWKS on
    its own, so one 200 says only that one of them has keys. Connections alternate between the
    workers, so 2 x VM_COUNT 200s in a row have reached each VM."""
    start = time.monotonic()
    in_a_row = 0
    while in_a_row < 2 * VM_COUNT:
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not every VM answered 200 within {timeout}s")
        in_a_row = in_a_row + 1 if one_request(port, token)[0] == 200 else 0
        if in_a_row == 0:
            time.sleep(0.05)


def wait_for(port: int, token: str, status: int, timeout: float) -> float:
    """Seconds until a request with `token` gets `status`; fails after `timeout`."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if one_request(port, token)[0] == status:
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"no {status} within {timeout}s")


@pytest.fixture
def provider() -> JwksServer:
    server = JwksServer(suite_ports.take()).start()
    yield server
    server.stop()


@pytest.fixture
def gateway(tmp_path: Path, provider: JwksServer) -> Gateway:
    upstream = RecordingUpstream(suite_ports.take(), "iris", [configs.IRIS]).start()
    policy = configs.filter_config(tokens.KeySet.generate())
    # Info: the test reads the filter's log of what each fetch installed.
    policy["logLevel"] = "info"
    del policy["jwt"]["jwks"]
    policy["jwt"]["remoteJwks"] = {
        "cluster": "idp",
        "authority": "idp.reliability.test",
        "path": "/jwks",
        "timeoutMs": 1000,
        "refreshIntervalSeconds": REFRESH_SECONDS,
        "minRefreshIntervalSeconds": MIN_REFRESH_SECONDS,
        "untilFetched": "deny",
    }
    port, admin = suite_ports.take(), suite_ports.take()
    config = configs.host_config(
        port,
        admin,
        {"iris": [upstream.port], "idp": [provider.port]},
        [configs.modelgate_filter(tokens.KeySet.generate(), config=policy, vmCount=VM_COUNT)],
        {configs.IRIS: "iris"},
        never_eject=frozenset({"idp"}),
    )
    # RUST_LOG=info: the test reads the filter's log of what each fetch did.
    gw = Gateway(tmp_path, config, port, admin, env={"RUST_LOG": "info"})
    gw.start()
    yield gw
    gw.stop()
    upstream.stop()


def test_keys_rotate_under_load_and_survive_the_provider_going_down(gateway: Gateway, provider: JwksServer) -> None:
    port = gateway.port
    a, b = Signer("key-a"), Signer("key-b")

    # 1. The provider fails: there are no keys yet, so the filter answers 503 with the reason.
    status, body = one_request(port, a.token())
    assert status == 503, body
    assert "JWKS has not been fetched" in body["error"]

    # 2. The provider publishes A: the next fetch (minRefreshIntervalSeconds after the failed
    # one) installs it.
    provider.publish(a.jwk())
    wait_for(port, a.token(), 200, MIN_REFRESH_SECONDS + TICK_SECONDS + 2)
    clients_a = [Client(port, a) for _ in range(3)]
    for client in clients_a:
        client.start()
    time.sleep(0.5)

    # 3. Rotation: the provider publishes A and B and starts signing with B.
    provider.publish(a.jwk(), b.jwk())
    rotated = time.monotonic()
    clients_b = [Client(port, b) for _ in range(3)]
    for client in clients_b:
        client.start()
    time.sleep(NEW_KID_BOUND + 1.5)

    # 4. A is retired: its signers stopped first (a provider stops signing before it
    # unpublishes), then the JWKS drops it.
    results_a = [r for client in clients_a for r in client.stop()]
    provider.publish(b.jwk())
    retired = time.monotonic()
    retired_after = wait_for(port, a.token(), 401, RETIRED_KID_BOUND + 1)
    assert retired_after <= RETIRED_KID_BOUND, f"a retired key was accepted for {retired_after:.1f}s"

    # 5. The provider answers garbage, then goes down: the last good keys (B) stay.
    provider.set_mode("garbage")
    garbage = time.monotonic()
    time.sleep(REFRESH_SECONDS + TICK_SECONDS + 0.5)
    provider.stop()
    down = time.monotonic()
    time.sleep(2 * REFRESH_SECONDS + TICK_SECONDS)
    fetches_while_down = len(provider.fetches)
    results_b = [r for client in clients_b for r in client.stop()]
    ended = time.monotonic()

    # A was published the whole time its clients ran: not one failure.
    a_statuses = statuses(results_a)
    assert set(a_statuses) == {200}, f"tokens signed with a published key failed: {a_statuses}"
    assert sum(a_statuses.values()) > 50, f"too little load on key A: {a_statuses}"
    # B tokens: refused (401, unknown kid) at most until the bound after the rotation, then
    # never again, through the retirement of A, the garbage and the outage.
    late_b = statuses(results_b, rotated + NEW_KID_BOUND)
    assert set(late_b) == {200}, f"B tokens failed after the refresh bound: {late_b}"
    early_b = statuses(results_b, 0, rotated + NEW_KID_BOUND)
    assert set(early_b) <= {200, 401}, early_b
    first_b_ok = min(sent for sent, status in results_b if status == 200)
    assert first_b_ok - rotated <= NEW_KID_BOUND
    for label, start in (("retired A", retired), ("garbage", garbage), ("provider down", down)):
        window = statuses(results_b, start, ended)
        assert sum(window.values()) > 20 and set(window) == {200}, f"{label}: {window}"
    assert provider.fetches_since(garbage) >= VM_COUNT, "the filter never tried the failing provider"
    assert fetches_while_down == len(provider.fetches)

    # The gateway said what happened, without trapping a VM.
    log = gateway.log_text()
    assert "keys in force (key-a, key-b)" in log, gateway.log_tail()
    assert "the response is not a JWKS" in log, gateway.log_tail()
    assert "no response from cluster idp" in log, gateway.log_tail()
    assert gateway.vm_failures() == 0


def test_unknown_kids_cannot_make_the_filter_hammer_the_provider(gateway: Gateway, provider: JwksServer) -> None:
    port = gateway.port
    signer = Signer("key-a")
    provider.publish(signer.jwk())
    # Every VM holds the keys before the flood: a VM that has none answers 503, not 401.
    wait_for_every_vm(port, signer.token(), 2 * (MIN_REFRESH_SECONDS + TICK_SECONDS) + 2)

    flood_seconds = 3.0
    start = time.monotonic()
    refused = Counter()
    while time.monotonic() - start < flood_seconds:
        forged = jwt.encode(tokens.KeySet.claims(), signer.key, algorithm="RS256", headers={"kid": uuid.uuid4().hex})
        refused[one_request(port, forged)[0]] += 1
    fetches = provider.fetches_since(start)

    assert set(refused) == {401} and sum(refused.values()) > 100, refused
    # Each VM fetches at most once per minimum interval (plus the one a tick may start at the
    # window's edge); without the limit every forged token would make a fetch.
    limit = VM_COUNT * (int(flood_seconds / MIN_REFRESH_SECONDS) + 1)
    assert fetches <= limit, f"{fetches} fetches in {flood_seconds}s for {sum(refused.values())} forged kids"
    assert fetches >= 1, "an unknown kid should bring a refresh forward"
