import pytest

from services.common.genproto.legibility.v1 import learner_pb2
from services.learner.game.rewards import (
    ScoredSample,
    cgc_rewards,
    game_rewards,
    goodhart_rewards,
    reward_kind_from_proto,
    src_rewards,
)


def _batch() -> list[ScoredSample]:
    return [
        # problem a: scores 2, 1, 0, 1 → mean 1
        ScoredSample("a", "helpful", True, 2.0),
        ScoredSample("a", "helpful", False, 1.0),
        ScoredSample("a", "sneaky", False, 0.0),
        ScoredSample("a", "sneaky", True, 1.0),
        # problem b: scores 3, -1 → mean 1
        ScoredSample("b", "sneaky", False, 3.0),
        ScoredSample("b", "sneaky", True, -1.0),
    ]


def test_src_pooled_by_hand() -> None:
    # V' = V − mean over the problem's samples (both roles): a → [1, 0, -1, 0], b → [2, -2].
    # R = sign·V' if V' > 0 else −1, sign = (2c−1)(2h−1): helpful-correct +, sneaky-incorrect +.
    assert src_rewards(_batch(), baseline="problem") == [1.0, -1.0, -1.0, -1.0, 2.0, -1.0]


def test_src_penalises_role_misaligned_convincing_samples() -> None:
    samples = [
        ScoredSample("p", "helpful", False, 3.0),  # V' = 3 − 1 = 2 > 0, but wrong while helpful: −2
        ScoredSample("p", "sneaky", True, 1.0),  # V' = 0: not above the mean, −1
        ScoredSample("p", "sneaky", True, -1.0),  # V' = −2: −1
    ]
    assert src_rewards(samples, baseline="problem") == [-2.0, -1.0, -1.0]
    # Within its role, the helpful sample has no peer: V' = 0, so −1 (the sneaky ones: mean 0 → V' 1 and −1).
    assert src_rewards(samples) == [-1.0, -1.0, -1.0]


def test_src_centred_within_role_by_default() -> None:
    # problem a helpful: mean 1.5 → V' [0.5, -0.5]; sneaky: mean 0.5 → [-0.5, 0.5]; b sneaky: mean 1 → [2, -2].
    # The sneaky-correct sample of a is more convincing than its role's mean: sign −1 → −0.5 (the paper's rule).
    assert src_rewards(_batch()) == [0.5, -1.0, -1.0, -0.5, 2.0, -1.0]
    assert game_rewards(_batch()) == src_rewards(_batch())
    assert game_rewards(_batch(), "src", "problem") == src_rewards(_batch(), "problem")


def test_src_role_baseline_ignores_the_other_roles_scores() -> None:
    # Lowering every helpful score by 10 moves the pooled mean, not the sneaky samples' role-conditioned reward.
    shifted = [ScoredSample(s.problem_id, s.role, s.correct, s.score - 10 * s.helpful) for s in _batch()]
    sneaky = [i for i, s in enumerate(_batch()) if s.role == "sneaky"]
    assert [src_rewards(shifted)[i] for i in sneaky] == [src_rewards(_batch())[i] for i in sneaky]
    assert [src_rewards(shifted, "problem")[i] for i in sneaky] != [src_rewards(_batch(), "problem")[i] for i in sneaky]


def test_src_rejects_an_unknown_baseline() -> None:
    with pytest.raises(ValueError, match="baseline"):
        src_rewards(_batch(), "batch")  # type: ignore[arg-type]


def test_src_single_sample_gets_minus_one() -> None:
    assert src_rewards([ScoredSample("x", "helpful", True, 5.0)]) == [-1.0]


def test_cgc_by_hand() -> None:
    assert cgc_rewards(_batch()) == [2.0, -2.0, 0.0, -2.0, 3.0, -2.0]
    assert cgc_rewards(_batch(), penalty=-5.0)[1] == -5.0


def test_goodhart_is_the_score() -> None:
    assert goodhart_rewards(_batch()) == [2.0, 1.0, 0.0, 1.0, 3.0, -1.0]


def test_game_rewards_dispatch() -> None:
    assert game_rewards(_batch(), "src") == src_rewards(_batch())
    assert game_rewards(_batch(), "cgc") == cgc_rewards(_batch())
    assert game_rewards(_batch(), "goodhart") == goodhart_rewards(_batch())
    with pytest.raises(ValueError):
        game_rewards(_batch(), "other")  # type: ignore[arg-type]


def test_kind_from_proto() -> None:
    assert reward_kind_from_proto(learner_pb2.GAME_REWARD_UNSPECIFIED) == "src"
    assert reward_kind_from_proto(learner_pb2.GAME_REWARD_SRC) == "src"
    assert reward_kind_from_proto(learner_pb2.GAME_REWARD_CGC) == "cgc"
    assert reward_kind_from_proto(learner_pb2.GAME_REWARD_GOODHART) == "goodhart"


def test_bad_role_rejected() -> None:
    with pytest.raises(ValueError, match="role"):
        ScoredSample("a", "honest", True, 0.0)  # type: ignore[arg-type]
