"""RoomyLayer appends in place and holds exactly what transformers' concatenating DynamicLayer would."""

from __future__ import annotations

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from services.decoding.roomy_cache import RoomyLayer, drop_front, roomy_cache


def _states(rows: int, positions: int, seed: int) -> torch.Tensor:
    return torch.randn(rows, 2, positions, 4, generator=torch.Generator().manual_seed(seed))


def _pair(rows: int = 3, positions: int = 5, room: int = 4) -> tuple[RoomyLayer, DynamicLayer]:
    keys, values = _states(rows, positions, 0), _states(rows, positions, 1)
    plain = DynamicLayer()
    plain.update(keys, values)
    return roomy_cache([(keys, values)], room=room).layers[0], plain  # type: ignore[return-value]


def test_appends_match_concatenation_past_the_room() -> None:
    roomy, plain = _pair(room=4)
    buffer = roomy._key_buffer
    for step in range(10):  # room 4: the buffer is reallocated on the way
        added = 1 if step % 3 else 2
        new_keys, new_values = _states(3, added, 10 + step), _states(3, added, 50 + step)
        got = roomy.update(new_keys, new_values)
        want = plain.update(new_keys, new_values)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
        assert roomy.get_seq_length() == plain.get_seq_length() == roomy.keys.shape[-2]
    assert roomy._key_buffer is not buffer
    assert roomy._key_buffer.shape[-2] - roomy.get_seq_length() <= 4 + 2


def test_appends_within_the_room_write_in_place() -> None:
    roomy, _ = _pair(room=4)
    buffer = roomy._key_buffer
    for step in range(4):
        roomy.update(_states(3, 1, step), _states(3, 1, step))
    assert roomy._key_buffer is buffer  # no copy while there was room
    assert roomy.keys.data_ptr() == buffer.data_ptr()


def test_row_selection_and_dropped_positions() -> None:
    roomy, plain = _pair(rows=4, positions=6)
    keep = torch.tensor([3, 1])
    roomy.batch_select_indices(keep)
    plain.batch_select_indices(keep)
    assert torch.equal(roomy.keys, plain.keys) and torch.equal(roomy.values, plain.values)
    roomy.drop_front(2)
    assert torch.equal(roomy.keys, plain.keys[..., 2:, :])
    added = _states(2, 1, 7)
    roomy.update(added, added)
    assert torch.equal(roomy.keys[..., -1:, :], added) and roomy.get_seq_length() == 5


def test_tensors_replaced_from_outside_are_adopted() -> None:
    roomy, plain = _pair()
    roomy.keys, roomy.values = roomy.keys[:, :, :2], roomy.values[:, :, :2]  # as DynamicLayer.crop does
    plain.crop(-3)
    added = _states(3, 1, 9)
    assert torch.equal(roomy.update(added, added)[0], plain.update(added, added)[0])


def test_drop_front_of_a_plain_cache_makes_a_roomy_one() -> None:
    keys = _states(2, 5, 3)
    plain = DynamicCache(ddp_cache_data=[(keys, keys)])
    trimmed = drop_front(plain, 2)
    assert isinstance(trimmed.layers[0], RoomyLayer) and torch.equal(trimmed.layers[0].keys, keys[..., 2:, :])
