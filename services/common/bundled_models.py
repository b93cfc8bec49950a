"""Where the bundled tiny models live (built by ``legibility toy build``): the embedded default of every service.

One place for these paths, so no service package reaches into another's settings for a default checkpoint.
"""

from __future__ import annotations

from pathlib import Path

BUNDLED_MODELS_DIR = Path(__file__).resolve().parents[2] / "models"
BUNDLED_WEAK = BUNDLED_MODELS_DIR / "weak"
"""Causal LM: the frozen weak model, and the body each retrained verifier starts from."""
BUNDLED_STRONG = BUNDLED_MODELS_DIR / "strong"
"""Causal LM: the policy the learner trains by default."""
BUNDLED_VERIFIER = BUNDLED_MODELS_DIR / "verifier"
"""Sequence classifier (one label): the verifier served by default."""
