"""Request validation that may be heavy (tokenising up to the size limit) runs off the event loop; small requests stay
inline, where a thread hop would cost more than the work.

Tokenising a request of megabytes on the event loop stalls every other call of the process, health checks included.
One worker thread takes the large ones: they queue behind each other, never in front of health or small calls, and
the tokenizer is never entered from two threads at once.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

INLINE_BYTES = 64 * 1024
"""Requests up to this size are validated on the event loop (tokenising them takes well under a millisecond)."""

_P = ParamSpec("_P")
_T = TypeVar("_T")
_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="validate")


async def validate_sized(size_bytes: int, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """``fn(*args, **kwargs)``: inline for a request of at most :data:`INLINE_BYTES`, else on the worker thread."""
    if size_bytes <= INLINE_BYTES:
        return fn(*args, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(_worker, functools.partial(fn, *args, **kwargs))
