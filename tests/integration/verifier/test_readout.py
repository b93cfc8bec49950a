"""The score is the logit at each pair's own EOS, whatever the batch, the padding side and the PAD token: batched
scores of the bundled toy verifier and of Llama (PAD == EOS) and Qwen2 classifiers equal one-row forwards."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from services.decoding.tokens import tokenizer_sha256
from services.tasks.styles import render
from services.tasks.toy import generate
from services.tasks.verifier_input import readout_logits
from services.verifier.model import load_verifier
from tests.integration.verifier.conftest import VERIFIER_MODEL, exact_scores

PAIRS = [(p.question, render(p, "plain")) for p in generate("test", 4, seed=5)]
PAIRS += [("Bo has 2 cups.", "2"), (PAIRS[0][0], PAIRS[0][1] + "\nSo the answer stands.")]


def hf_batch_forward(model, ids: torch.Tensor, mask: torch.Tensor) -> list[float]:
    """transformers' own batched read-out: the last token that is not ``pad_token_id``."""
    with torch.no_grad():
        return [float(v) for v in model(input_ids=ids, attention_mask=mask).logits[:, 0]]


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_batched_scores_equal_one_row_forwards_for_any_pad_token(own_checkpoint, family: str) -> None:
    path = own_checkpoint(family, "classifier")
    verifier = load_verifier(path)
    lengths = [verifier.token_count(q, s) for q, s in PAIRS]
    assert len(set(lengths)) >= 5 and max(lengths) > 2 * min(lengths)  # rows padded by different amounts
    want = exact_scores(path, PAIRS)
    assert verifier.forward(PAIRS) == pytest.approx(want, abs=1e-5)

    reference = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32).eval()
    encoder = verifier.verifier_input
    right = encoder.encode(PAIRS)
    left = encoder.encode(PAIRS, padding_side="left")
    with torch.no_grad():
        assert encoder.logits(reference, PAIRS).tolist() == pytest.approx(want, abs=1e-5)
        assert readout_logits(reference, *left).tolist() == pytest.approx(want, abs=1e-5)
    default = hf_batch_forward(reference, right[0], right[1])
    if family == "llama":
        # PAD == EOS: transformers reads the token before the EOS read-out, on every row, padded or not.
        assert reference.config.pad_token_id == encoder.eos_id
        assert all(abs(d - w) > 1e-3 for d, w in zip(default, want, strict=True)), (default, want)
    else:
        assert default == pytest.approx(want, abs=1e-5)  # a distinct PAD: transformers is right here too
    assert verifier.weights.tokenizer_sha256 == tokenizer_sha256(AutoTokenizer.from_pretrained(path))
    assert verifier.context_window == 512


def test_toy_scores_are_what_the_right_padded_transformers_forward_gave() -> None:
    verifier = load_verifier(VERIFIER_MODEL)
    tokenizer = AutoTokenizer.from_pretrained(VERIFIER_MODEL)
    reference = AutoModelForSequenceClassification.from_pretrained(VERIFIER_MODEL, dtype=torch.float32).eval()
    # The encoding and read-out the service used before the shared encoder: right-padded, HF's own read-out.
    rows = [[*tokenizer.encode(f"{q}\n{s}"), tokenizer.eos_token_id] for q, s in PAIRS]
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [tokenizer.pad_token_id] * (width - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
    before = hf_batch_forward(reference, ids, mask)
    assert verifier.forward(PAIRS) == pytest.approx(before, abs=1e-6)
    assert verifier.forward(PAIRS) == pytest.approx(exact_scores(VERIFIER_MODEL, PAIRS), abs=1e-5)
    with torch.no_grad():
        left = readout_logits(reference, *verifier.verifier_input.encode(PAIRS, padding_side="left")).tolist()
    assert left == pytest.approx(before, abs=1e-5)
    assert len(verifier.weights.tokenizer_sha256) == 64
    assert verifier.weights.tokenizer_sha256 == tokenizer_sha256(tokenizer)
