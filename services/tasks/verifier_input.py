"""What a verifier reads, as token ids, and the logit at its read-out: one encoder for serving and retraining.

A pair is rendered by :meth:`PromptFormat.verifier_text` (the task's text, or the conversation in the tokenizer's
chat template), encoded, and ends with the tokenizer's own EOS as the read-out position (a template that already
closes the turn with EOS keeps its own; whitespace it writes after it is dropped, so the EOS stays the last token).

The score is taken at each row's read-out index explicitly: transformers' sequence classifiers find "the last
non-pad token" by comparing ids with ``pad_token_id``, which is wrong whenever PAD == EOS (many Llama fine-tunes)
and the EOS is the read-out, and wrong for left padding. Position ids come from the attention mask, so a left-padded
row scores as it does unpadded. Where HF's read-out is right (the bundled toy verifier: distinct PAD, right
padding) both ways compute the same numbers in the same order.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch

from services.tasks.prompts import PromptFormat

PaddingSide = Literal["right", "left"]


class VerifierInput:
    """Encodes (question, solution) pairs for one verifier tokenizer and scores them with a sequence classifier."""

    def __init__(self, prompts: PromptFormat) -> None:
        tokenizer = prompts.tokenizer
        if tokenizer is None or tokenizer.eos_token_id is None:
            raise ValueError("the verifier's tokenizer needs an EOS token (the read-out position)")
        self.prompts = prompts
        self.eos_id = int(tokenizer.eos_token_id)
        self.eos_text = str(tokenizer.eos_token)
        # Padded positions are masked out and never read, so the pad id's value never matters.
        self.pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id)

    def text(self, question: str, solution: str) -> str:
        """The rendered pair; ends at the EOS when the rendering closes with it (trailing whitespace dropped)."""
        text = self.prompts.verifier_text(question, solution)
        stripped = text.rstrip()
        return stripped if self.eos_text and stripped.endswith(self.eos_text) else text

    def ids(self, question: str, solution: str) -> list[int]:
        """Token ids of the pair, ending in EOS (not appended when the rendered text already ends with it)."""
        ids = self.prompts.encode(self.text(question, solution))
        return ids if ids and ids[-1] == self.eos_id else [*ids, self.eos_id]

    def token_count(self, question: str, solution: str) -> int:
        """Tokens the pair is scored as, the EOS read-out included."""
        return len(self.ids(question, solution))

    def encode(
        self, pairs: Sequence[tuple[str, str]], padding_side: PaddingSide = "right"
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Padded ids, attention mask, and each row's read-out index (its EOS)."""
        if not pairs:
            raise ValueError("no pairs to encode")
        return self.pad([self.ids(q, s) for q, s in pairs], padding_side)

    def pad(
        self, rows: Sequence[Sequence[int]], padding_side: PaddingSide = "right"
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Rows already encoded by :meth:`ids`, padded: ids, attention mask, and each row's read-out index."""
        return pad_rows(rows, self.pad_id, padding_side)

    def logits(self, model: Any, pairs: Sequence[tuple[str, str]]) -> torch.Tensor:
        """The classifier's logit at each pair's read-out, one batch (with gradients if the caller allows them)."""
        ids, mask, readout = self.encode(pairs)
        return readout_logits(model, ids, mask, readout)

    @torch.inference_mode()
    def scores(self, model: Any, pairs: Sequence[tuple[str, str]], batch_size: int = 256) -> list[float]:
        """The logit of every pair, ``batch_size`` pairs per forward pass (no gradients)."""
        scores: list[float] = []
        for start in range(0, len(pairs), batch_size):
            scores += self.logits(model, pairs[start : start + batch_size]).tolist()
        return scores


def pad_rows(
    rows: Sequence[Sequence[int]], pad_id: int, padding_side: PaddingSide = "right"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Encoded rows (each ending in its read-out EOS) padded with ``pad_id``: ids, attention mask, read-out index."""
    if not rows:
        raise ValueError("no rows to pad")
    width = max(len(r) for r in rows)
    # Padded in Python, then one tensor each: a per-row tensor and slice assignment costs more than the rows.
    gaps = [width - len(row) for row in rows]
    if padding_side == "right":
        padded = [[*row, *[pad_id] * gap] for row, gap in zip(rows, gaps, strict=True)]
        masks = [[1] * (width - gap) + [0] * gap for gap in gaps]
        readout = torch.tensor([len(row) - 1 for row in rows], dtype=torch.long)
    else:
        padded = [[*[pad_id] * gap, *row] for row, gap in zip(rows, gaps, strict=True)]
        masks = [[0] * gap + [1] * (width - gap) for gap in gaps]
        readout = torch.full((len(rows),), width - 1, dtype=torch.long)
    return torch.tensor(padded, dtype=torch.long), torch.tensor(masks, dtype=torch.long), readout


def readout_logits(model: Any, ids: torch.Tensor, mask: torch.Tensor, readout: torch.Tensor) -> torch.Tensor:
    """Logit 0 of a sequence classifier (``score`` head: GPT-2, Llama, Qwen2, Mistral, …) at ``readout[i]`` of row i.

    The body runs with the mask and mask-derived position ids; the head is applied to every position and the
    read-out gathered, the order transformers' own forward uses, so the numbers match it wherever it is right.
    """
    head = getattr(model, "score", None)
    if not isinstance(head, torch.nn.Module):
        raise ValueError(f"{type(model).__name__} has no 'score' head: not a decoder sequence classifier")
    # Rows that all start at position 0 (right padding, or none) take the model's own positions, exactly as its own
    # forward does: mask-derived ids there are equal for real tokens but send the padded positions' (zero) gradients
    # to other position rows, which regroups the float sums of the position embedding's gradient.
    right_padded = bool(mask[:, 0].all())
    positions = None if right_padded else (mask.cumsum(-1) - 1).clamp(min=0)
    device = next(model.parameters()).device
    ids, mask = ids.to(device), mask.to(device)
    positions = None if positions is None else positions.to(device)
    hidden = model.base_model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False)
    logits = head(hidden.last_hidden_state)
    return logits[torch.arange(ids.shape[0], device=logits.device), readout.to(logits.device), 0]
