"""One ``from_pretrained`` at a time per process: concurrent loads poison every later one.

transformers' loading swaps process-wide state while a model is built (weight initialisation and tying hooks).
Two loads in two threads interleave those swaps, and afterwards even a lone load in that process leaves tied weights
on the meta device (reproduced: six threads loading the bundled strong model three times each, then one more load:
``lm_head.weight`` on meta, no longer tied). The learner loads a policy, a reference model and retraining bodies in
worker threads, one per run; a burst of StartRun / StopRun made every later run fail with "Cannot copy out of meta
tensor". Every load in the project goes through :func:`load_pretrained`, which holds one lock for the whole load.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, TypeVar

_LOAD_LOCK = threading.Lock()
_M = TypeVar("_M")


def load_pretrained(model_class: type[_M], path: Path | str, **kwargs: Any) -> _M:
    """``model_class.from_pretrained(path, **kwargs)`` under the process-wide load lock."""
    with _LOAD_LOCK:
        return model_class.from_pretrained(path, **kwargs)  # type: ignore[attr-defined,no-any-return]
