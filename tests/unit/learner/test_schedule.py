import pytest

from services.common.genproto.legibility.v1 import learner_pb2
from services.decoding.boundaries import Boundary
from services.learner.rl.schedule import Author, HandoffDrawer, HandoffSchedule


@pytest.mark.parametrize("p", [0.2, 0.5, 0.8])
def test_policy_share_matches_p_primary(p: float) -> None:
    drawer = HandoffDrawer(HandoffSchedule(p_primary=p), seed=7)
    draws = 20_000
    policy = sum(drawer.next_author(0) is Author.POLICY for _ in range(draws))
    assert abs(policy / draws - p) < 0.01


def test_switch_rule_forces_the_other_author_exactly_at_max_gap() -> None:
    drawer = HandoffDrawer(HandoffSchedule(p_primary=1.0, max_gap_tokens=5, gap_rule="switch"), seed=0)
    assert drawer.next_author(0) is Author.POLICY
    # p_primary = 1 keeps the policy while its run is below the gap...
    for run in range(1, 5):
        assert drawer.next_author(run) is Author.POLICY
    # ...and the gap itself forces the weak model, after which the policy is drawn again.
    assert drawer.next_author(5) is Author.WEAK
    assert drawer.next_author(1) is Author.POLICY


def test_switch_rule_hands_back_to_the_policy() -> None:
    schedule = HandoffSchedule(p_primary=0.0, max_gap_tokens=3, gap_rule="switch")
    drawer = HandoffDrawer(schedule, seed=0)
    assert [drawer.next_author(n) for n in (0, 2, 3, 0)] == [Author.WEAK, Author.WEAK, Author.POLICY, Author.WEAK]


def test_redraw_at_the_gap_may_keep_the_author_with_a_fresh_allowance() -> None:
    # The reference's rule: at the gap the author is drawn again; p_primary = 1 always redraws the policy.
    drawer = HandoffDrawer(HandoffSchedule(p_primary=1.0, max_gap_tokens=5), seed=0)
    assert drawer.next_segment(0).limit.max_tokens == 5
    plan = drawer.next_segment(5)  # at the gap: redrawn, the policy again, with 5 more tokens allowed
    assert (plan.author, plan.limit.max_tokens) == (Author.POLICY, 5)
    assert drawer.next_segment(7).limit.max_tokens == 3  # 2 of the fresh 5 written
    assert drawer.next_segment(10).limit.max_tokens == 5  # the next gap: redrawn again


def test_redraw_at_the_gap_follows_p_primary() -> None:
    drawer = HandoffDrawer(HandoffSchedule(p_primary=0.5, max_gap_tokens=4), seed=1)
    kept = 0
    for _ in range(4000):
        drawer.next_author(0)
        author = drawer.current
        kept += drawer.next_author(4) is author  # at the gap
    assert abs(kept / 4000 - 0.5) < 0.03


def test_segment_cap_never_passes_the_gap() -> None:
    drawer = HandoffDrawer(HandoffSchedule(strategy="word", p_primary=1.0, max_gap_tokens=32), seed=0)
    assert drawer.next_segment(0).limit.max_tokens == 32
    plan = drawer.next_segment(20)  # the policy keeps writing after 20 tokens in a row
    assert plan.author is Author.POLICY
    assert (plan.limit.boundary, plan.limit.max_tokens) == (Boundary.WORD, 12)
    assert drawer.next_segment(32).limit.max_tokens == 32  # at the gap: a fresh allowance


@pytest.mark.parametrize("strategy", ["sentence", "chunk", "alternating"])
def test_toggling_strategies_switch_at_every_segment(strategy: str) -> None:
    drawer = HandoffDrawer(HandoffSchedule(strategy=strategy, p_primary=0.0), seed=3)  # type: ignore[arg-type]
    authors = [drawer.next_author(1) for _ in range(6)]
    assert authors == [Author.WEAK, Author.POLICY] * 3  # the first drawn (p_primary 0: the weak model), then toggles


def test_random_variants_draw_instead_of_toggling() -> None:
    for strategy in ("random_sentence", "random_chunk"):
        drawer = HandoffDrawer(HandoffSchedule(strategy=strategy, p_primary=1.0), seed=3)  # type: ignore[arg-type]
        assert {drawer.next_author(1) for _ in range(20)} == {Author.POLICY}


@pytest.mark.parametrize(
    ("strategy", "run", "boundary", "max_tokens"),
    [
        ("sentence", 0, Boundary.SENTENCE, 32),
        ("random_sentence", 10, Boundary.SENTENCE, 22),
        ("step", 10, Boundary.STEP, 22),
        ("random_chunk", 0, Boundary.NONE, 8),
        ("random_chunk", 28, Boundary.NONE, 4),
        ("bernoulli", 5, Boundary.NONE, 1),
        ("alternating_step", 0, Boundary.STEP, 32),
    ],
)
def test_segment_limits(strategy: str, run: int, boundary: Boundary, max_tokens: int) -> None:
    drawer = HandoffDrawer(HandoffSchedule(strategy=strategy, p_primary=1.0), seed=0)  # type: ignore[arg-type]
    drawer.next_author(0)
    if run:
        drawer.next_author(run)
    limit = drawer.segment_limit()
    assert (limit.boundary, limit.max_tokens) == (boundary, max_tokens)
    assert limit.stop_rule().max_new_tokens == max_tokens


def test_alternating_step_alternates_from_the_policy() -> None:
    drawer = HandoffDrawer(HandoffSchedule(strategy="alternating_step", p_primary=0.0), seed=3)
    authors = [drawer.next_author(0) for _ in range(6)]
    assert authors == [Author.POLICY, Author.WEAK] * 3
    assert drawer.segment_limit().boundary is Boundary.STEP


def test_alternating_switches_every_token() -> None:
    drawer = HandoffDrawer(HandoffSchedule(strategy="alternating", p_primary=1.0), seed=3)
    plans = [drawer.next_segment(1) for _ in range(4)]
    assert [p.author for p in plans] == [Author.POLICY, Author.WEAK] * 2
    assert {(p.limit.boundary, p.limit.max_tokens) for p in plans} == {(Boundary.NONE, 1)}


def test_same_seed_same_sequence() -> None:
    runs = [3, 0, 31, 32, 7, 0, 40] * 50

    def authors(seed: int) -> list[Author]:
        drawer = HandoffDrawer(HandoffSchedule(), seed=seed)
        return [drawer.next_author(n) for n in runs]

    assert authors(11) == authors(11)
    assert authors(11) != authors(12)


def test_segment_limit_needs_a_draw() -> None:
    with pytest.raises(RuntimeError):
        HandoffDrawer(HandoffSchedule(), seed=0).segment_limit()


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"strategy": "paragraph"}, "strategy"),
        ({"p_primary": 1.5}, "p_primary"),
        ({"p_primary": -0.1}, "p_primary"),
        ({"p_primary": float("nan")}, "p_primary"),
        ({"max_gap_tokens": 0}, "max_gap_tokens"),
        ({"chunk_tokens": 0}, "chunk_tokens"),
        ({"gap_rule": "skip"}, "gap_rule"),
    ],
)
def test_bad_values_rejected(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        HandoffSchedule(**kwargs)


def test_negative_run_rejected() -> None:
    with pytest.raises(ValueError, match="tokens_by_current_author"):
        HandoffDrawer(HandoffSchedule(), seed=0).next_author(-1)


def test_from_proto_defaults() -> None:
    assert HandoffSchedule.from_proto(learner_pb2.HandoffSchedule()) == HandoffSchedule("word", 0.5, 32, 8, "redraw")


def test_from_proto_set_fields() -> None:
    msg = learner_pb2.HandoffSchedule(
        strategy=learner_pb2.HANDOFF_STRATEGY_CHUNK, p_primary=0.25, max_gap_tokens=16, chunk_tokens=4
    )
    assert HandoffSchedule.from_proto(msg) == HandoffSchedule("chunk", 0.25, 16, 4)
    assert HandoffSchedule.from_proto(msg).p_primary == 0.25  # exactly representable in the proto's float


@pytest.mark.parametrize(
    ("value", "strategy"),
    [
        (learner_pb2.HANDOFF_STRATEGY_SENTENCE, "sentence"),
        (learner_pb2.HANDOFF_STRATEGY_STEP, "step"),
        (learner_pb2.HANDOFF_STRATEGY_BERNOULLI, "bernoulli"),
        (learner_pb2.HANDOFF_STRATEGY_ALTERNATING, "alternating"),
        (learner_pb2.HANDOFF_STRATEGY_RANDOM_SENTENCE, "random_sentence"),
        (learner_pb2.HANDOFF_STRATEGY_RANDOM_CHUNK, "random_chunk"),
        (learner_pb2.HANDOFF_STRATEGY_ALTERNATING_STEP, "alternating_step"),
    ],
)
def test_from_proto_strategies(value: int, strategy: str) -> None:
    assert HandoffSchedule.from_proto(learner_pb2.HandoffSchedule(strategy=value)).strategy == strategy


def test_from_proto_zero_is_set_not_default() -> None:
    msg = learner_pb2.HandoffSchedule(p_primary=0.0)
    assert HandoffSchedule.from_proto(msg).p_primary == 0.0


def test_from_proto_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="max_gap_tokens"):
        HandoffSchedule.from_proto(learner_pb2.HandoffSchedule(max_gap_tokens=-1))
    with pytest.raises(ValueError, match="gap_rule"):
        HandoffSchedule.from_proto(learner_pb2.HandoffSchedule(gap_rule=7))  # type: ignore[arg-type]


def test_from_proto_gap_rule() -> None:
    msg = learner_pb2.HandoffSchedule(gap_rule=learner_pb2.GAP_RULE_SWITCH)
    assert HandoffSchedule.from_proto(msg).gap_rule == "switch"
    assert HandoffSchedule.from_proto(learner_pb2.HandoffSchedule(gap_rule=learner_pb2.GAP_RULE_REDRAW)).gap_rule == (
        "redraw"
    )
