"""Exact behaviour of the ask/tell core on hand-made 2-D particles."""

from __future__ import annotations

import math

import pytest
import torch

from tutti.errors import TuttiError
from tutti.swarm.core import SearchParams, Swarm, crossover_population, velocity_update
from tutti.swarm.state import load_state, save_state


def quad(x: torch.Tensor) -> list[float]:
    """Utility peaked at (1, 1)."""
    return [-float(((r - torch.tensor([1.0, 1.0])) ** 2).sum()) for r in x]


def run(swarm: Swarm, f=quad, steps: int = 1000) -> list[torch.Tensor]:
    seen = []
    for _ in range(steps):
        x = swarm.ask()
        if x is None:
            break
        seen.append(x.clone())
        swarm.tell(f(x))
    return seen


def test_velocity_update_exact_numbers():
    x = torch.tensor([[0.0, 0.0]])
    v = torch.tensor([[1.0, 0.0]])
    p = torch.tensor([[2.0, 0.0]])
    g = torch.tensor([0.0, 2.0])
    w = torch.tensor([-1.0, -1.0])
    coeffs = torch.tensor([[0.1, 0.2, 0.3, 0.4]])
    out = velocity_update(x, v, p, g, w, coeffs)
    # 0.1*(1,0) + 0.2*(2,0) + 0.3*(0,2) + 0.4*(1,1) = (0.9, 1.0); C = 1
    assert torch.allclose(out, torch.tensor([[0.9, 1.0]]), atol=1e-7)
    # normalisation by C, and the inputs are untouched
    out2 = velocity_update(x, v, p, g, w, 2 * coeffs)
    assert torch.allclose(out2, out)
    assert torch.equal(x, torch.tensor([[0.0, 0.0]])) and torch.equal(v, torch.tensor([[1.0, 0.0]]))
    assert torch.equal(velocity_update(x, v, p, g, w, torch.zeros(1, 4)), torch.zeros(1, 2))


def test_one_deterministic_iteration_exact():
    params = SearchParams(n_particles=2, init_velocity="zero", randomness=False, step_length=0.5,
                          inertia=0.2, cognitive=0.3, social=0.4, repel=0.05)
    s = Swarm(params, torch.tensor([[0.0, 0.0], [1.0, 0.0]]))
    x0 = s.ask()
    assert torch.equal(x0, torch.tensor([[0.0, 0.0], [1.0, 0.0]]))
    s.tell(quad(x0))  # -2, -1: g = particle 1, worst = particle 0
    assert s.g_util == -1 and s.w_util == -2 and torch.equal(s.g, torch.tensor([1.0, 0.0]))
    x1 = s.ask()
    c = 0.95
    expected = torch.tensor([[0.5 * 0.4 / c, 0.0], [1.0 + 0.5 * 0.05 / c, 0.0]])
    assert torch.allclose(x1, expected, atol=1e-7)
    assert torch.allclose(s.V, torch.tensor([[0.4 / c, 0.0], [0.05 / c, 0.0]]), atol=1e-7)
    assert s.lam == 0.5  # decays after the iteration
    s.tell(quad(x1))
    assert s.lam == pytest.approx(0.475) and s.iteration == 1
    # particle 0 improved (strict), so its personal best moved; particle 1 moved away from (1,1)? no: closer
    assert s.p_util[0] == pytest.approx(-((1 - 0.4 / 1.9) ** 2) - 1)
    assert torch.equal(s.P[0], x1[0])


def test_lambda_floor_and_global_worst_is_worst_ever():
    params = SearchParams(n_particles=2, init_velocity="zero", randomness=False, step_length=0.2,
                          step_decay=0.5, step_min=0.1, patience=100, max_iterations=3)
    s = Swarm(params, torch.tensor([[0.0, 0.0], [1.0, 0.0]]))
    vals = iter([[1.0, 2.0], [0.5, 3.0], [4.0, 0.7], [5.0, 5.0]])
    run(s, lambda x: next(vals))
    assert s.lam == 0.1
    assert s.w_util == 0.5  # worst ever, not the latest worst
    assert s.g_util == 5.0 and s.iteration == 3 and s.stop_reason.startswith("max_iterations")
    assert s.p_util == [5.0, 5.0]


def test_global_best_first_index_worst_last_index_on_ties():
    s = Swarm(SearchParams(n_particles=3, init_velocity="zero"), torch.tensor([[0.0], [1.0], [2.0]]))
    s.tell_vals = None
    s.ask()
    s.tell([1.0, 1.0, 1.0])
    assert torch.equal(s.g, torch.tensor([0.0])) and torch.equal(s.w, torch.tensor([2.0]))


def test_patience_stop_counts_iterations_without_new_best():
    s = Swarm(SearchParams(n_particles=2, patience=3, restart=False), torch.tensor([[0.0, 0.0], [1.0, 0.0]]))
    xs = run(s, lambda x: [0.0, 0.0])
    assert len(xs) == 4  # initial evaluation + 3 iterations without improvement
    assert s.iteration == 3 and "no new global best" in s.stop_reason and s.done
    assert s.ask() is None


def test_restart_and_cooldown():
    def restarts(cooldown: int) -> list[int]:
        p = SearchParams(n_particles=2, patience=100, max_iterations=8, restart_after=2, cooldown=cooldown,
                         randomness=False)
        s = Swarm(p, torch.tensor([[0.0, 0.0], [1.0, 0.0]]))
        seen = []
        s.ask()
        s.tell([0.0, 0.0])
        while True:
            before_p, before_v = s.P.clone(), s.V.clone()
            x = s.ask()
            if x is None:
                return seen
            if s.restarted:
                seen.append(s.iteration + 1)
                # a restarted particle moves from its personal best with zero velocity
                i = s.restarted[0]
                coeffs = torch.tensor([[0.2, 0.3, 0.4, 0.05]], dtype=torch.float64)
                v = velocity_update(before_p[i:i + 1], torch.zeros_like(before_v[i:i + 1]), before_p[i:i + 1],
                                    s.g, s.w, coeffs)
                assert torch.allclose(s.V[i], v[0], atol=1e-6)
            s.tell([0.0, 0.0])

    assert restarts(0) == [3, 4, 5, 6, 7, 8]  # the official code: every iteration once stale
    assert restarts(1) == [3, 5, 7]
    assert restarts(3) == [3, 7]


def test_nan_utility_counts_as_worst_and_does_not_kill_the_run():
    s = Swarm(SearchParams(n_particles=3, init_velocity="zero"), torch.tensor([[0.0], [1.0], [2.0]]))
    s.ask()
    s.tell([1.0, float("nan"), 2.0])
    assert s.p_util == [1.0, 1.0, 2.0] and s.w_util == 1.0
    s.ask()
    s.tell([float("nan")] * 3)
    assert s.g_util == 2.0 and s.w_util == 1.0
    s2 = Swarm(SearchParams(n_particles=2), torch.tensor([[0.0], [1.0]]))
    s2.ask()
    with pytest.raises(TuttiError, match="every particle"):
        s2.tell([float("nan"), float("nan")])


def test_ask_tell_protocol_errors():
    s = Swarm(SearchParams(n_particles=2), torch.tensor([[0.0], [1.0]]))
    with pytest.raises(TuttiError, match="without a pending"):
        s.tell([0.0, 0.0])
    s.ask()
    with pytest.raises(TuttiError, match="twice"):
        s.ask()
    with pytest.raises(TuttiError, match="got 1 utilities"):
        s.tell([0.0])
    with pytest.raises(TuttiError, match="n_particles=2"):
        Swarm(SearchParams(n_particles=2), torch.zeros(3, 1))


def test_crossover_weights_paper_and_code():
    gen = torch.Generator().manual_seed(0)
    e = torch.tensor([[0.0], [1.0]])
    paper = crossover_population(e, 200, gen, high=1.0)
    assert paper.min() >= 0 and paper.max() <= 1  # interpolations only
    code = crossover_population(e, 200, torch.Generator().manual_seed(0), high=2.0)
    assert code.min() < 0 or code.max() > 1  # half extrapolation
    assert torch.equal(paper[:2], e) and paper.shape == (200, 1)


def test_random_initial_velocity_points_to_another_particle():
    s = Swarm(SearchParams(n_particles=6, seed=3), torch.eye(3))
    for i in range(6):
        target = s.X[i] + s.V[i]
        assert any(torch.allclose(target, s.X[j]) for j in range(6) if j != i)
        assert not torch.allclose(s.V[i], torch.zeros(3))


def test_best_velocity_mode():
    s = Swarm(SearchParams(n_particles=2, init_velocity="best"), torch.tensor([[0.0, 0.0], [1.0, 0.0]]))
    s.ask()
    s.tell([0.0, 1.0])
    assert torch.equal(s.V, torch.tensor([[1.0, 0.0], [0.0, 0.0]]))


def test_same_seed_same_run_other_seed_other_run():
    e = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0]])
    a = run(Swarm(SearchParams(n_particles=8, seed=1, patience=5), e))
    b = run(Swarm(SearchParams(n_particles=8, seed=1, patience=5), e))
    c = run(Swarm(SearchParams(n_particles=8, seed=2, patience=5), e))
    assert len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[1], c[1])


def test_swarm_improves_on_the_experts():
    e = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.5]])
    s = Swarm(SearchParams(n_particles=10, seed=0, patience=10), e)
    run(s)
    assert s.g_util > max(quad(e))
    assert s.p_util[s.best_index()] == s.g_util and s.top_k(3)[0] == s.best_index()


def test_state_roundtrip_resumes_exactly(tmp_path):
    e = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 2.5]])
    ref = Swarm(SearchParams(n_particles=6, seed=4, patience=4), e)
    full = run(ref)
    s = Swarm(SearchParams(n_particles=6, seed=4, patience=4), e)
    part = run(s, steps=3)
    save_state(tmp_path, s, {"note": "x"})
    s2, extra = load_state(tmp_path)
    assert extra == {"note": "x"}
    rest = run(s2)
    assert len(part) + len(rest) == len(full)
    assert all(torch.equal(a, b) for a, b in zip(part + rest, full, strict=True))
    assert s2.g_util == ref.g_util and s2.p_util == ref.p_util and math.isfinite(s2.g_util)
    with pytest.raises(TuttiError, match="no swarm_state"):
        load_state(tmp_path / "nope")
