"""Fixtures that start the real verifier server (bundled models/verifier) on loopback."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from services.common.genproto.legibility.v1 import verifier_pb2_grpc
from services.tasks.prompts import ChatTemplateMode, PromptFormat
from services.tasks.toy_task import ToyTask
from services.tasks.verifier_input import VerifierInput
from services.verifier.app import VerifierApp, start_verifier
from services.verifier.model import VerifierModel
from services.verifier.settings import VerifierSettings
from tests.support.running import QUICK, RunningService, ServiceGroup

VERIFIER_MODEL = Path(__file__).resolve().parents[3] / "models" / "verifier"


def exact_scores(path: Path, pairs: Sequence[tuple[str, str]], chat_template: ChatTemplateMode = "auto") -> list[float]:
    """Reference scores: transformers' own forward on one unpadded row at a time, with no pad id configured, so
    it reads the logit of the last token (the EOS) whatever the tokenizer's PAD is. Toy task formats."""
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32).eval()
    model.config.pad_token_id = None
    encoder = VerifierInput(PromptFormat(ToyTask(), tokenizer, chat_template))
    with torch.no_grad():
        return [float(model(input_ids=torch.tensor([encoder.ids(q, s)])).logits[0, 0]) for q, s in pairs]


@dataclass(frozen=True)
class Hold:
    busy: asyncio.Event
    """Set once a batch has reached the model (and waits there)."""
    go: asyncio.Event
    """Set it to let the held batches run."""


@contextlib.contextmanager
def model_held(model: VerifierModel) -> Iterator[Hold]:
    """Every batch of ``model`` waits for ``go`` before its forward pass: the model stays busy, so calls that
    arrive meanwhile gather in the queue (for ``max_delay_ms``) and "full" is a state, not a race."""
    batcher = model._batcher
    run_batch = batcher._batch_fn
    hold = Hold(busy=asyncio.Event(), go=asyncio.Event())

    async def held(items: list[Any]) -> list[float]:
        hold.busy.set()
        await hold.go.wait()
        return await run_batch(items)

    batcher._batch_fn = held
    try:
        yield hold
    finally:
        hold.go.set()
        batcher._batch_fn = run_batch


RunningVerifier = RunningService[VerifierApp, verifier_pb2_grpc.VerifierServiceStub]


VerifierFactory = Callable[..., Awaitable[RunningVerifier]]


@pytest.fixture
async def start_server() -> AsyncIterator[VerifierFactory]:
    """Factory: start_server(**VerifierSettings fields) on free loopback ports, stopped after the test."""
    running = ServiceGroup()

    async def start(**overrides: Any) -> RunningVerifier:
        fields: dict[str, Any] = QUICK | {
            "model_path": VERIFIER_MODEL,
            "max_delay_ms": 2.0,
            "http_port": 0,
        }
        app = await start_verifier(VerifierSettings(**(fields | overrides)))
        return running.connect(app, verifier_pb2_grpc.VerifierServiceStub)

    yield start
    await running.stop()


@pytest.fixture
async def verifier(start_server: VerifierFactory) -> RunningVerifier:
    """A verifier server with default settings."""
    return await start_server()
