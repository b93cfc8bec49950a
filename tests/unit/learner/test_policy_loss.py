import math

import pytest
import torch

from services.learner.rl.policy_loss import approx_kl, group_advantages, keyed_advantages, policy_loss, weighted_mean


def _log(values: list[list[float]]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64).log()


def _example() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two sequences of three tokens: ratios chosen by hand, old log-probs arbitrary."""
    old = torch.tensor([[-1.0, -2.0, -0.5], [-0.3, -1.2, -2.2]], dtype=torch.float64)
    ratios = [[1.0, 1.1, 1.5], [0.5, 1.0, 2.0]]
    log_probs = old + _log(ratios)
    advantages = torch.tensor([1.0, -0.5], dtype=torch.float64)
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]], dtype=torch.float64)
    return log_probs, old, advantages, mask


# Per-token losses -min(r·A, clip(r, 0.8, 1.2)·A), by hand:
#   sequence 1 (A = 1):    r = 1.0 → -1.0;  r = 1.1 → -1.1;  r = 1.5 → -min(1.5, 1.2) = -1.2 (clipped)
#   sequence 2 (A = -0.5): r = 0.5 → -min(-0.25, -0.4) = 0.4 (clipped);  r = 1.0 → 0.5;  r = 2.0 → masked
def test_token_level_loss_by_hand() -> None:
    loss, stats = policy_loss(*_example(), clip_eps=0.2)
    assert loss.item() == pytest.approx((-1.0 - 1.1 - 1.2 + 0.4 + 0.5) / 5)
    assert stats["clip_frac"] == pytest.approx(2 / 5)
    assert stats["ratio_mean"] == pytest.approx((1.0 + 1.1 + 1.5 + 0.5 + 1.0) / 5)
    # k3 of log r = log(π/π_old): e^{-x} − 1 + x = 1/r − 1 + ln r.
    k3 = [1 / r - 1 + math.log(r) for r in (1.0, 1.1, 1.5, 0.5, 1.0)]
    assert stats["approx_kl"] == pytest.approx(sum(k3) / 5)


def test_sequence_level_loss_by_hand() -> None:
    loss, _ = policy_loss(*_example(), clip_eps=0.2, token_level=False)
    assert loss.item() == pytest.approx(((-1.0 - 1.1 - 1.2) / 3 + (0.4 + 0.5) / 2) / 2)


def test_junior_weight_enters_as_weighted_mean() -> None:
    log_probs, old, advantages, _ = _example()
    weights = torch.tensor([[1.0, 0.2, 1.0], [0.2, 1.0, 0.0]], dtype=torch.float64)
    loss, _ = policy_loss(log_probs, old, advantages, weights)
    expected = (-1.0 - 0.2 * 1.1 - 1.2 + 0.2 * 0.4 + 0.5) / (1 + 0.2 + 1 + 0.2 + 1)
    assert loss.item() == pytest.approx(expected)


def test_per_token_advantages() -> None:
    log_probs, old, _, mask = _example()
    advantages = torch.tensor([[1.0, 1.0, 1.0], [-0.5, -0.5, -0.5]], dtype=torch.float64)
    assert policy_loss(log_probs, old, advantages, mask)[0].item() == pytest.approx(-2.4 / 5)


def test_matches_masked_mean_for_zero_one_weights() -> None:
    values = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    mask = torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    assert weighted_mean(values, mask).item() == pytest.approx((1 + 3 + 4 + 5) / 4)
    assert weighted_mean(values, mask, token_level=False).item() == pytest.approx((2 + 4.5) / 2)
    assert weighted_mean(values, torch.zeros(2, 3)).item() == 0.0  # no NaN when nothing is in the loss


@pytest.mark.parametrize(("weight", "zero"), [(0.0, True), (0.2, False)])
def test_weak_token_gradient(weight: float, zero: bool) -> None:
    log_probs = torch.tensor([[-1.0, -1.5, -0.7]], dtype=torch.float64, requires_grad=True)
    old = torch.tensor([[-1.1, -1.4, -0.7]], dtype=torch.float64)
    weights = torch.tensor([[1.0, weight, 1.0]], dtype=torch.float64)  # the middle token is the weak model's
    loss, _ = policy_loss(log_probs, old, torch.tensor([0.7], dtype=torch.float64), weights)
    loss.backward()
    assert log_probs.grad is not None
    assert (log_probs.grad[0, 1].item() == 0.0) is zero
    assert log_probs.grad[0, 0].item() != 0.0


@pytest.mark.parametrize(("ratio", "advantage"), [(1.5, 1.0), (0.5, -1.0)])
def test_clipped_tokens_have_no_gradient(ratio: float, advantage: float) -> None:
    old = torch.tensor([[-1.0]], dtype=torch.float64)
    log_probs = (old + math.log(ratio)).requires_grad_(True)
    loss, stats = policy_loss(log_probs, old, torch.tensor([advantage], dtype=torch.float64), torch.ones(1, 1))
    loss.backward()
    assert log_probs.grad is not None
    assert log_probs.grad.item() == 0.0
    assert stats["clip_frac"] == 1.0


@pytest.mark.parametrize(("ratio", "advantage"), [(1.5, -1.0), (0.5, 1.0)])
def test_ratio_outside_against_the_advantage_keeps_gradient(ratio: float, advantage: float) -> None:
    old = torch.tensor([[-1.0]], dtype=torch.float64)
    log_probs = (old + math.log(ratio)).requires_grad_(True)
    loss, _ = policy_loss(log_probs, old, torch.tensor([advantage], dtype=torch.float64), torch.ones(1, 1))
    loss.backward()
    assert log_probs.grad is not None
    assert log_probs.grad.item() == pytest.approx(-ratio * advantage)  # d(-r·A)/d log π = -r·A


def test_kl_penalty_added() -> None:
    log_probs, old, advantages, mask = _example()
    ref = log_probs - math.log(2.0)  # π/π_ref = 2 everywhere: k3 = 1/2 − 1 + ln 2
    base, _ = policy_loss(log_probs, old, advantages, mask)
    with_kl, stats = policy_loss(log_probs, old, advantages, mask, kl_coef=0.1, ref_log_probs=ref)
    k3 = 0.5 - 1 + math.log(2.0)
    assert stats["ref_kl"] == pytest.approx(k3)
    assert (with_kl - base).item() == pytest.approx(0.1 * k3)
    with pytest.raises(ValueError, match="ref_log_probs"):
        policy_loss(log_probs, old, advantages, mask, kl_coef=0.1)


def test_approx_kl_estimators() -> None:
    log_probs = torch.tensor([math.log(0.5)], dtype=torch.float64)
    ref = torch.tensor([math.log(0.25)], dtype=torch.float64)  # log ratio x = ln 2
    x = math.log(2.0)
    assert approx_kl(log_probs, ref, "k1").item() == pytest.approx(x)
    assert approx_kl(log_probs, ref, "k2").item() == pytest.approx(x * x / 2)
    assert approx_kl(log_probs, ref, "k3").item() == pytest.approx(0.5 - 1 + x)
    assert approx_kl(torch.tensor([0.0]), torch.tensor([-30.0]), "k1").item() == 10.0  # OpenRLHF's clamp
    with pytest.raises(ValueError):
        approx_kl(log_probs, ref, "k4")  # type: ignore[arg-type]


def test_group_advantages_by_hand() -> None:
    # [1, 0, 0, 0]: mean 0.25, unbiased std sqrt((0.75² + 3·0.25²) / 3) = 0.5.
    # [1, 3, 1, 3]: mean 2, unbiased std sqrt(4·1² / 3).
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 3.0, 1.0, 3.0], dtype=torch.float64)
    advantages = group_advantages(rewards, group_size=4, eps=0.0)
    s = math.sqrt(4 / 3)
    assert advantages.tolist() == pytest.approx([1.5, -0.5, -0.5, -0.5, -1 / s, 1 / s, -1 / s, 1 / s])


def test_group_advantages_eps() -> None:
    advantages = group_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0], dtype=torch.float64), 4, eps=0.5)
    assert advantages.tolist() == pytest.approx([0.75, -0.25, -0.25, -0.25])  # divided by 0.5 + 0.5


def test_equal_rewards_give_zero_advantage() -> None:
    advantages = group_advantages(torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 0.0]), group_size=3)
    assert advantages.tolist() == [0.0] * 6
    assert group_advantages(torch.tensor([0.3, 0.9]), group_size=1).tolist() == [0.0, 0.0]


def test_group_advantages_shape_checked() -> None:
    with pytest.raises(ValueError):
        group_advantages(torch.zeros(5), group_size=2)
    with pytest.raises(ValueError):
        group_advantages(torch.zeros(4), group_size=0)


def test_per_token_advantages_reach_the_gradient_token_by_token() -> None:
    # On-policy (ratio 1) the loss is −Σ w·A·log π / Σ w: each token's gradient is −A_t / 4 here, so a DCA step
    # with zero share gets exactly no gradient and the others get theirs.
    log_probs = torch.tensor([[-1.0, -1.5, -0.7, -0.2]], dtype=torch.float64, requires_grad=True)
    advantages = torch.tensor([[1.8, 1.8, 0.0, 0.6]], dtype=torch.float64)
    loss, _ = policy_loss(log_probs, log_probs.detach(), advantages, torch.ones(1, 4, dtype=torch.float64))
    loss.backward()
    assert log_probs.grad is not None
    assert log_probs.grad[0].tolist() == pytest.approx([-0.45, -0.45, 0.0, -0.15])


def test_keyed_advantages_by_hand() -> None:
    # Groups (p, helpful): [1, 0] → ±0.5/√0.5; (p, sneaky): [2, 2] → 0; (q, helpful): one sample → 0.
    rewards = [1.0, 2.0, 0.0, 2.0, 5.0]
    keys = [("p", "h"), ("p", "s"), ("p", "h"), ("p", "s"), ("q", "h")]
    a = 0.5 / 0.5**0.5
    assert keyed_advantages(rewards, keys) == pytest.approx([a, 0.0, -a, 0.0, 0.0], abs=1e-5)
    # With consecutive keys it is group_advantages.
    flat = [1.0, 0.0, 0.5, 0.5, 3.0, 1.0]
    expected = group_advantages(torch.tensor(flat, dtype=torch.float64), 2).tolist()
    assert keyed_advantages(flat, [i // 2 for i in range(6)]) == pytest.approx(expected)
