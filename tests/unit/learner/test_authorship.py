import pytest

from services.learner.rl.authorship import Authorship
from services.learner.rl.schedule import Author

P, W = Author.POLICY, Author.WEAK


def _rollout() -> Authorship:
    record = Authorship()
    record.append([11, 12], P, [-0.5, -0.25])
    record.append([21, 22, 23], W)
    record.append([], W)  # an empty weak segment (EOS at once) changes nothing
    record.append([13], P, [-1.0])
    record.append([14], P, [-2.0])  # same author again: the span continues
    record.append([24], W)
    return record


def test_tokens_and_authors() -> None:
    record = _rollout()
    assert record.token_ids == [11, 12, 21, 22, 23, 13, 14, 24]
    assert record.authors == [P, P, W, W, W, P, P, W]
    assert len(record) == 8


def test_loss_weights() -> None:
    record = _rollout()
    assert record.loss_weights(0.0) == [1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0]
    assert record.loss_weights(0.2) == [1.0, 1.0, 0.2, 0.2, 0.2, 1.0, 1.0, 0.2]


def test_counts() -> None:
    record = _rollout()
    assert record.senior_token_frac == 4 / 8
    assert record.num_handoffs == 3
    assert record.trailing_run == 1
    assert record.last_author is W


def test_action_ranges_end_exclusive() -> None:
    assert _rollout().action_ranges == [(0, 2), (5, 7)]
    record = Authorship()
    record.append([1], W)
    record.append([2, 3, 4], P, [-0.1, -0.2, -0.3])
    assert record.action_ranges == [(1, 4)]  # a span running to the end is closed
    assert record.trailing_run == 3


def test_rollout_log_probs() -> None:
    assert _rollout().rollout_log_probs() == [-0.5, -0.25, 0.0, 0.0, 0.0, -1.0, -2.0, 0.0]


def test_empty_record() -> None:
    record = Authorship()
    assert (record.senior_token_frac, record.num_handoffs, record.trailing_run) == (0.0, 0, 0)
    assert record.action_ranges == []
    assert record.last_author is None


def test_policy_segments_need_log_probs() -> None:
    record = Authorship()
    with pytest.raises(ValueError):
        record.append([1, 2], P, [-0.1])
    with pytest.raises(ValueError):
        record.append([1], P)
    with pytest.raises(ValueError):
        record.append([1], W, [-0.1])
    assert len(record) == 0


def test_bad_junior_weight() -> None:
    with pytest.raises(ValueError, match="junior_token_weight"):
        _rollout().loss_weights(-0.1)
