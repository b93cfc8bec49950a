"""OpenRLHF-compatible remote reward model: ``POST /get_reward`` on the verifier, sharing the gRPC micro-batcher.

OpenRLHF (``--reward.remote_url http://HOST:8080/get_reward``) posts ``{"query": [prompt + response], "prompts":
[prompt], "labels": [...]}``; each query is split back into (problem, solution) and all items are scored in one
``model.score`` call, so HTTP and gRPC requests join the same forward passes. The reply is ``{"rewards": [logit],
"scores": [sigmoid], "extra_logs": {"verifier_version": [v]}}``. Bad input gets 400 ``{"error": "query[3]: ..."}``,
a full queue 429, a model still loading 503.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web

from services.common.errors import InvalidArgument, NotReady, Overloaded
from services.tasks.toy import problem_from_prompt
from services.verifier.model import Pair, VerifierModel
from services.verifier.service import ITEMS, probability
from services.verifier.validation import check_pair

log = logging.getLogger(__name__)

ROUTE = "/get_reward"
END_OF_TEXT = "<|endoftext|>"


def _string_list(body: dict[str, Any], field: str) -> list[str]:
    if field not in body:
        raise InvalidArgument(field, "is required")
    value = body[field]
    if not isinstance(value, list):
        raise InvalidArgument(field, f"must be a list of strings, got {type(value).__name__}")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise InvalidArgument(f"{field}[{i}]", f"must be a string, got {type(item).__name__}")
    return value


def parse_request(body: Any, model: VerifierModel, *, max_items: int) -> list[Pair]:
    """The (problem, solution) pairs of a valid request; raises InvalidArgument naming the first bad field."""
    if not isinstance(body, dict):
        raise InvalidArgument("body", "must be a JSON object")
    queries = _string_list(body, "query")
    prompts = _string_list(body, "prompts")
    if not queries:
        raise InvalidArgument("query", "must not be empty")
    if len(queries) > max_items:
        raise InvalidArgument("query", f"at most {max_items} items per request, got {len(queries)}")
    if len(prompts) != len(queries):
        raise InvalidArgument("prompts", f"has {len(prompts)} items, query has {len(queries)}")
    labels = body.get("labels")
    if labels is not None and not isinstance(labels, list):
        raise InvalidArgument("labels", f"must be a list, got {type(labels).__name__}")
    pairs: list[Pair] = []
    for i, (query, prompt) in enumerate(zip(queries, prompts, strict=True)):
        query = query.removesuffix(END_OF_TEXT)
        if not query.startswith(prompt):
            raise InvalidArgument(f"query[{i}]", f"does not start with prompts[{i}]")
        problem, solution = problem_from_prompt(prompt), query[len(prompt) :]
        check_pair(f"query[{i}]", problem, solution, model)
        pairs.append((problem, solution))
    return pairs


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def make_app(get_model: Callable[[], VerifierModel], *, max_items: int) -> web.Application:
    """The aiohttp application; ``get_model`` returns the model answering new calls (raises NotReady while loading)."""

    async def get_reward(request: web.Request) -> web.Response:
        try:
            body = await request.json(loads=json.loads)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return _error(400, f"body: malformed JSON: {exc}")
        try:
            model = get_model()  # read once: a hot swap never mixes versions within a response
            pairs = parse_request(body, model, max_items=max_items)
            rewards = await model.score(pairs)
        except InvalidArgument as exc:
            return _error(400, str(exc))
        except Overloaded as exc:
            return _error(429, str(exc) or "the verifier queue is full")
        except NotReady as exc:
            return _error(503, str(exc) or "the verifier is not ready")
        ITEMS.labels("get_reward").inc(len(rewards))
        version = model.weights.version
        return web.json_response(
            {
                "rewards": rewards,
                "scores": [probability(r) for r in rewards],
                "extra_logs": {"verifier_version": [float(version)] * len(rewards)},
            }
        )

    app = web.Application()
    app.router.add_post(ROUTE, get_reward)
    return app


class RewardHttpServer:
    """Serves :func:`make_app` on ``host:port`` (port 0 picks a free one; :attr:`port` is the bound one)."""

    def __init__(self, get_model: Callable[[], VerifierModel], host: str, port: int, *, max_items: int) -> None:
        self._runner = web.AppRunner(make_app(get_model, max_items=max_items), access_log=None)
        self._host = host
        self._requested_port = port
        self.port = 0

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._requested_port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        log.info("OpenRLHF reward endpoint on http://%s:%d%s", self._host, self.port, ROUTE)

    async def stop(self) -> None:
        await self._runner.cleanup()
