"""Concurrent model loads in one process must not poison later ones (the learner's "meta tensor" failures)."""

from __future__ import annotations

import ast
import threading
from pathlib import Path

from transformers import AutoModelForCausalLM

from services.common.bundled_models import BUNDLED_STRONG
from services.common.model_loading import load_pretrained

SERVICES = Path(__file__).resolve().parents[3] / "services"
TOKENIZER_OR_CONFIG = ("Tokenizer", "Config")


def test_a_load_after_a_burst_of_concurrent_loads_is_whole_and_tied() -> None:
    def load_three() -> None:
        for _ in range(3):
            load_pretrained(AutoModelForCausalLM, BUNDLED_STRONG)

    threads = [threading.Thread(target=load_three) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    model = load_pretrained(AutoModelForCausalLM, BUNDLED_STRONG)
    assert [name for name, p in model.named_parameters() if p.is_meta] == []
    assert model.lm_head.weight is model.transformer.wte.weight  # tied, as a lone load ties them


def test_every_model_load_in_services_goes_through_the_lock() -> None:
    """``X.from_pretrained`` on a model class anywhere in services/ but model_loading.py would bring the race back."""
    offenders = []
    for path in SERVICES.rglob("*.py"):
        if path.name == "model_loading.py" or "genproto" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "from_pretrained":
                owner = ast.unparse(node.value)
                if not any(kind in owner for kind in TOKENIZER_OR_CONFIG):
                    offenders.append(f"{path.relative_to(SERVICES)}:{node.lineno} {owner}.from_pretrained")
    assert offenders == []
