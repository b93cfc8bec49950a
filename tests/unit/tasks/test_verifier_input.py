"""The verifier input: token ids, padding and read-out index for the toy tokenizer (byte-for-byte the encoding the
bundled verifier was trained on) and for chat-templated BPE tokenizers with and without PAD == EOS."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import AutoTokenizer

from services.common.bundled_models import BUNDLED_VERIFIER
from services.tasks.prompts import PromptFormat
from services.tasks.styles import render
from services.tasks.toy import generate
from services.tasks.toy_task import ToyTask
from services.tasks.verifier_input import VerifierInput
from tests.support.checkpoints import train_tokenizer

TOY_TOKENIZER = AutoTokenizer.from_pretrained(BUNDLED_VERIFIER)
PAIRS = [(p.question, render(p, style)) for p in generate("test", 4, seed=2) for style in ("plain", "jargon")]
PAIRS.append(("Bo has 2 cups.", "2"))


def encoder(tokenizer, chat_template: str = "auto") -> VerifierInput:
    return VerifierInput(PromptFormat(ToyTask(), tokenizer, chat_template))  # type: ignore[arg-type]


def test_toy_ids_are_the_encoding_the_bundled_verifier_was_trained_on() -> None:
    toy = encoder(TOY_TOKENIZER)
    # What the toy verifier was trained on: problem, newline, solution, the tokenizer's special tokens, then EOS.
    want = [[*TOY_TOKENIZER.encode(f"{q}\n{s}"), TOY_TOKENIZER.eos_token_id] for q, s in PAIRS]
    assert [toy.ids(q, s) for q, s in PAIRS] == want
    assert toy.eos_id == 0 and toy.pad_id == 1  # <|endoftext|>, <|pad|>
    ids, mask, readout = toy.encode(PAIRS)
    lengths = [len(row) for row in want]
    assert ids.shape == (len(PAIRS), max(lengths))
    assert mask.sum(-1).tolist() == lengths
    assert readout.tolist() == [n - 1 for n in lengths]
    for i, row in enumerate(want):
        assert ids[i, : len(row)].tolist() == row
        assert set(ids[i, len(row) :].tolist()) <= {1}  # right-padded with <|pad|>
        assert ids[i, readout[i]] == 0


def test_chatml_with_eos_closing_the_turn_reads_out_at_that_eos_once() -> None:
    tokenizer = train_tokenizer("qwen2")  # EOS <|im_end|>: the template's own turn end
    qwen = encoder(tokenizer)
    question, solution = PAIRS[0]
    text = qwen.text(question, solution)
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}, {"role": "assistant", "content": solution}], tokenize=False
    )
    assert rendered == f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n{solution}<|im_end|>\n"
    assert text == rendered.rstrip("\n")  # the newline after the last <|im_end|> dropped: EOS is the last token
    ids = qwen.ids(question, solution)
    assert ids == tokenizer.encode(text, add_special_tokens=False)
    assert ids[-1] == tokenizer.convert_tokens_to_ids("<|im_end|>") and ids[-2] != ids[-1]
    assert qwen.pad_id == tokenizer.convert_tokens_to_ids("<|endoftext|>") != qwen.eos_id


def test_llama_gets_its_eos_appended_after_the_template_and_bos_only_in_plain_text() -> None:
    tokenizer = train_tokenizer("llama")  # BOS <s>, EOS = PAD = </s>; the template ends turns with <|im_end|>
    eos, bos = tokenizer.convert_tokens_to_ids("</s>"), tokenizer.convert_tokens_to_ids("<s>")
    question, solution = PAIRS[1]
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}, {"role": "assistant", "content": solution}], tokenize=False
    )
    assert rendered.endswith("<|im_end|>\n")  # not the EOS: the text is kept as rendered and </s> appended
    chat = encoder(tokenizer).ids(question, solution)
    assert chat == [*tokenizer.encode(rendered, add_special_tokens=False), eos]
    assert bos not in chat  # a chat-templated text carries its own special tokens (this template has no BOS)
    plain = encoder(tokenizer, "none").ids(question, solution)
    assert plain == [*tokenizer.encode(f"{question}\n{solution}"), eos] and plain[0] == bos
    assert encoder(tokenizer).pad_id == eos  # PAD == EOS: only the mask and the read-out index tell them apart


def test_eos_already_ending_the_text_is_not_appended_twice() -> None:
    tokenizer = train_tokenizer("llama")
    plain = encoder(tokenizer, "none")
    assert plain.ids("Q?", "1+1=2.</s>") == plain.ids("Q?", "1+1=2.")
    assert plain.ids("Q?", "1+1=2.").count(plain.eos_id) == 1


def test_left_padding_puts_every_read_out_in_the_last_column() -> None:
    toy = encoder(TOY_TOKENIZER)
    right, right_mask, right_readout = toy.encode(PAIRS)
    left, left_mask, left_readout = toy.encode(PAIRS, padding_side="left")
    width = right.shape[1]
    assert left_readout.tolist() == [width - 1] * len(PAIRS)
    for i in range(len(PAIRS)):
        n = int(right_mask[i].sum())
        assert torch.equal(left[i, width - n :], right[i, :n])
        assert left_mask[i].tolist() == [0] * (width - n) + [1] * n
        assert left[i, left_readout[i]] == right[i, right_readout[i]] == toy.eos_id


def test_without_a_pad_token_rows_are_padded_with_eos_and_without_eos_it_refuses() -> None:
    tokenizer = copy.deepcopy(train_tokenizer("qwen2"))
    tokenizer.pad_token = None
    qwen = encoder(tokenizer)
    assert qwen.pad_id == qwen.eos_id
    ids, mask, _ = qwen.encode([("Q?", "a"), ("Q?", "a much longer answer")])
    assert ids[0, int(mask[0].sum()) :].tolist() == [qwen.eos_id] * int((mask[0] == 0).sum())
    tokenizer.eos_token = None
    with pytest.raises(ValueError, match="EOS"):
        encoder(tokenizer)
    with pytest.raises(ValueError, match="no pairs"):
        qwen.encode([])


def test_training_gradients_on_right_padded_rows_equal_the_models_own_forward_bit_for_bit() -> None:
    """The toy world's verifiers train exactly as before the shared encoder: the same gradients to the last bit.

    Explicit mask-derived position ids for right-padded rows give the same logits but regroup the float sums of the
    position embedding's gradient (1.9e-9 apart after one step; Adam makes that visible within a few steps), so the
    demo's retrained verifiers and game-phase numbers moved."""
    from transformers import GPT2ForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(BUNDLED_VERIFIER)
    model = GPT2ForSequenceClassification.from_pretrained(BUNDLED_VERIFIER).train()
    encoder = VerifierInput(PromptFormat(ToyTask(), tokenizer))
    problems = generate("train", 32, seed=5)
    pairs = [(p.question, render(p, style)) for p in problems for style in ("plain", "jargon")]

    def gradients(logits_of: object) -> dict[str, torch.Tensor]:
        model.zero_grad()
        torch.manual_seed(0)
        logits_of().square().sum().backward()  # type: ignore[operator]
        return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    ids, mask, _ = encoder.encode(pairs)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the retraining job's default: sums split over threads
    try:
        own = gradients(lambda: model(input_ids=ids, attention_mask=mask).logits[:, 0])
        shared = gradients(lambda: encoder.logits(model, pairs))
    finally:
        torch.set_num_threads(threads)
    assert own.keys() == shared.keys()
    assert [name for name in own if not torch.equal(own[name], shared[name])] == []
