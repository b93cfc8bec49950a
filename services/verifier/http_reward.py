"""OpenRLHF-compatible remote reward model: ``POST /get_reward`` on the verifier, sharing the gRPC micro-batcher.

OpenRLHF (``--reward.remote_url http://HOST:8080/get_reward``) posts ``{"query": [prompt + response], "prompts":
[prompt], "labels": [...]}``; each query is split back into (question, solution) by the task through the verifier
tokenizer's prompt format (:mod:`services.verifier.reward_request`) and all items are scored in one ``model.score``
call, so HTTP and gRPC requests join the same forward passes. The reward follows the ``http_reward`` setting:

- ``verifier``: the logit; ``scores`` its sigmoid;
- ``correctness``: 1 when the task's checker finds the label's answer in the solution, else 0 (nothing is scored);
- ``correctness+verifier``: their sum; ``scores`` the mean of correctness and the sigmoid (kept in 0..1).

``extra_logs`` carries ``verifier_version`` and, with labels, ``correct`` (and ``verifier_score``). Bad input gets
400 ``{"error": "query[3]: ..."}`` (or ``prompts[i]``, ``labels[i]``, ``body``: malformed or too deeply nested JSON),
a full queue 429, a model still loading 503 (both with ``Retry-After``). The route has the gRPC server's security:
the same bearer token (401 without it, checked before the body is read) and the same TLS / mTLS.
"""

from __future__ import annotations

import hmac
import json
import logging
import ssl
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import grpc
from aiohttp import web

from services.common.errors import RETRY_LATER, DomainError, InvalidArgument, http_status
from services.common.metrics import GRPC_IN_FLIGHT, GRPC_LATENCY, GRPC_REQUESTS
from services.common.offload import validate_sized
from services.tasks.base import Task
from services.verifier.model import VerifierModel
from services.verifier.reward_request import RewardItem, RewardMode, parse_reward_request
from services.verifier.service import ITEMS, probability

log = logging.getLogger(__name__)

ROUTE = "/get_reward"
METHOD = "GetReward"
"""The route's method label in the request metrics, beside the gRPC methods'."""


@dataclass(frozen=True)
class Rewards:
    """The reply's per-item lists."""

    rewards: list[float]
    scores: list[float]
    """In 0..1 whatever the mode: OpenRLHF logs them (and may filter on them) as probabilities."""
    extra_logs: dict[str, list[float]]


def combine(mode: RewardMode, items: list[RewardItem], logits: list[float], task: Task, version: int) -> Rewards:
    """Rewards of ``mode`` from the verifier's logits (empty in the correctness mode) and the items' gold answers."""
    logs = {"verifier_version": [float(version)] * len(items)}
    if mode == "verifier":
        return Rewards(logits, [probability(s) for s in logits], logs)
    correct = [float(task.is_correct(item.pair[1], item.gold or "")) for item in items]
    logs["correct"] = correct
    if mode == "correctness":
        return Rewards(correct, correct, logs)
    logs["verifier_score"] = logits
    return Rewards(
        [c + s for c, s in zip(correct, logits, strict=True)],
        [(c + probability(s)) / 2 for c, s in zip(correct, logits, strict=True)],
        logs,
    )


RETRY_AFTER_S = 1
"""What 429 and 503 tell clients to wait before retrying (a queue drains, a model loads, within seconds)."""


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def bearer_auth(token: str) -> Callable[[web.Request, Handler], Awaitable[web.StreamResponse]]:
    """Middleware: ``Authorization: Bearer <token>`` required, compared in constant time, before the body is read."""
    expected = f"Bearer {token}".encode()

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if hmac.compare_digest(request.headers.get("Authorization", "").encode(), expected):
            return await handler(request)
        log.warning("refused %s %s: missing or wrong bearer token", request.method, request.path)  # never the token
        return _error(401, "missing or invalid bearer token", {"WWW-Authenticate": "Bearer"})

    return check


def _parse_body(raw: bytes) -> object:
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidArgument("body", f"malformed JSON: {exc}") from None
    except RecursionError:
        raise InvalidArgument("body", "JSON nested too deeply") from None


def make_app(
    get_model: Callable[[], VerifierModel],
    *,
    max_items: int,
    reward: RewardMode = "verifier",
    auth_token: str | None = None,
) -> web.Application:
    """The aiohttp application; ``get_model`` returns the model answering new calls (raises NotReady while loading)."""

    def parse(raw: bytes, model: VerifierModel) -> list[RewardItem]:
        return parse_reward_request(_parse_body(raw), model.prompts, model, mode=reward, max_items=max_items)

    async def get_reward(request: web.Request) -> web.Response:
        # The same counters and the same error table as the gRPC methods (code names, one HTTP_STATUS map).
        started, code = time.perf_counter(), grpc.StatusCode.OK
        GRPC_IN_FLIGHT.labels("verifier", METHOD).inc()
        try:
            raw = await request.read()
            model = get_model()  # read once: a hot swap never mixes versions within a response
            # Parsing tokenises every query: a large body does it off the event loop.
            items = await validate_sized(len(raw), parse, raw, model)
            logits = [] if reward == "correctness" else await model.score([item.scorable for item in items])
            ITEMS.labels("get_reward").inc(len(items))
            reply = combine(reward, items, logits, model.prompts.task, model.weights.version)
            return web.json_response({"rewards": reply.rewards, "scores": reply.scores, "extra_logs": reply.extra_logs})
        except DomainError as exc:
            code = exc.code
            headers = {"Retry-After": str(RETRY_AFTER_S)} if code in RETRY_LATER else None
            return _error(http_status(code), str(exc), headers)
        except Exception:
            code = grpc.StatusCode.INTERNAL
            error_id = uuid.uuid4().hex[:12]
            log.exception("unexpected error in %s (error id %s)", ROUTE, error_id)
            return _error(500, f"internal error (error id {error_id}; see server log)")
        finally:
            GRPC_IN_FLIGHT.labels("verifier", METHOD).dec()
            GRPC_REQUESTS.labels("verifier", METHOD, code.name).inc()
            GRPC_LATENCY.labels("verifier", METHOD).observe(time.perf_counter() - started)

    app = web.Application(middlewares=[bearer_auth(auth_token)] if auth_token is not None else [])
    app.router.add_post(ROUTE, get_reward)
    return app


class RewardHttpServer:
    """Serves :func:`make_app` on ``host:port`` (port 0 picks a free one; :attr:`port` is the bound one)."""

    def __init__(
        self,
        get_model: Callable[[], VerifierModel],
        host: str,
        port: int,
        *,
        max_items: int,
        reward: RewardMode = "verifier",
        auth_token: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        app = make_app(get_model, max_items=max_items, reward=reward, auth_token=auth_token)
        self._runner = web.AppRunner(app, access_log=None)
        self._host = host
        self._requested_port = port
        self._ssl_context = ssl_context
        self.port = 0

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._requested_port, ssl_context=self._ssl_context)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        scheme = "https" if self._ssl_context is not None else "http"
        log.info("OpenRLHF reward endpoint on %s://%s:%d%s", scheme, self._host, self.port, ROUTE)

    async def stop(self) -> None:
        await self._runner.cleanup()
