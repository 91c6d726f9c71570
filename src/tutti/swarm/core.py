"""The Model Swarms search as an ask/tell object (Feng et al., arXiv 2410.11163).

A particle is a flat fp32 vector (``(D,)``); the swarm holds positions ``X``, velocities ``V`` and personal bests
``P`` as ``(N, D)`` tensors and knows nothing about how utilities are computed::

    swarm = Swarm(SearchParams(), experts)          # experts: (n, D)
    while (x := swarm.ask()) is not None:            # (N, D) positions to evaluate
        swarm.tell([f(row) for row in x])            # higher is better

Steps (faithful to the official code, see ``docs/swarm.md`` for what differs):

1. populate N particles by crossover ``t*P1 + (1-t)*P2`` of two distinct current particles, ``t ~ U(0, 1)``
   (paper) or ``U(0, 2)`` (official code); initial velocity toward a random other particle (or zero, or g - x);
2. evaluate all particles; personal bests, global best (first index) and global worst (last index) follow;
3. per iteration: stop after ``patience`` iterations without a new global best or at ``max_iterations``;
   restart stray particles (x <- p, v <- 0, then the normal update) unless in cooldown; update every particle
   with one scalar random factor per term; evaluate; update bests on strict improvement; decay lambda.

Every random draw comes from one seeded ``torch.Generator`` whose state is part of :meth:`Swarm.state_dict`, so
a resumed search repeats the uninterrupted one exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from tutti.errors import TuttiError


@dataclass(frozen=True)
class SearchParams:
    """The hyperparameters the ask/tell core needs (a plain subset of :class:`tutti.config.swarm.SwarmConfig`)."""

    n_particles: int = 20
    init_weight: str = "code"
    init_velocity: str = "random"
    inertia: float = 0.2
    cognitive: float = 0.3
    social: float = 0.4
    repel: float = 0.05
    step_length: float = 1.0
    step_decay: float = 0.95
    step_min: float = 0.1
    randomness: bool = True
    patience: int = 10
    max_iterations: int = 200
    restart: bool = True
    restart_after: int = 6
    cooldown: int = 6
    seed: int = 0

    @classmethod
    def from_config(cls, cfg: Any) -> SearchParams:
        """Take the search fields of a :class:`~tutti.config.swarm.SwarmConfig`."""
        names = [f for f in cls.__dataclass_fields__ if f not in ("restart_after", "cooldown")]
        return cls(**{n: getattr(cfg, n) for n in names}, restart_after=cfg.restart_after, cooldown=cfg.cooldown)


# ---------------------------------------------------------------------------------------------- pure maths
def velocity_update(x: torch.Tensor, v: torch.Tensor, p: torch.Tensor, g: torch.Tensor, w: torch.Tensor,
                    coeffs: torch.Tensor) -> torch.Tensor:
    """The normalised four-term velocity of every particle.

    ``v' = (a_v v + a_p (p - x) + a_g (g - x) + a_w (x - w)) / (a_v + a_p + a_g + a_w)``.

    Args:
        x, v, p: positions, velocities, personal bests, ``(N, D)``.
        g, w: global best and global worst, ``(D,)``.
        coeffs: ``(N, 4)`` products ``r * phi`` for the inertia, cognitive, social and repel terms.

    Returns:
        The new velocities ``(N, D)``; a particle whose coefficients sum to 0 gets velocity 0.
    """
    a = coeffs.to(x.dtype)
    c = a.sum(1, keepdim=True)  # (N, 1)
    num = a[:, :1] * v + a[:, 1:2] * (p - x) + a[:, 2:3] * (g - x) + a[:, 3:4] * (x - w)
    return torch.where(c > 0, num / c.clamp_min(1e-30), torch.zeros_like(num))


def crossover_population(experts: torch.Tensor, n: int, gen: torch.Generator, *, high: float) -> torch.Tensor:
    """Grow ``experts`` ``(k, D)`` to ``n`` particles by crossover of two distinct current particles.

    Parents are drawn from the growing list (children can be parents); the child is ``t*a + (1-t)*b`` with
    ``t = high * U(0, 1)``.
    """
    rows = list(experts.unbind(0))
    while len(rows) < n:
        m = len(rows)
        a = int(torch.randint(m, (1,), generator=gen))
        b = int(torch.randint(m - 1, (1,), generator=gen))
        b += b >= a
        t = high * float(torch.rand((), generator=gen))
        rows.append(t * rows[a] + (1 - t) * rows[b])
    return torch.stack(rows)


def random_partner(n: int, gen: torch.Generator) -> list[int]:
    """For each particle ``i`` a uniformly random ``j != i``."""
    out = []
    for i in range(n):
        j = int(torch.randint(n - 1, (1,), generator=gen))
        out.append(j + (j >= i))
    return out


# ---------------------------------------------------------------------------------------------- the swarm
class Swarm:
    """Ask/tell Model Swarms search over flat particle vectors.

    Args:
        params: hyperparameters.
        experts: ``(n, D)`` expert vectors (``n <= params.n_particles``).
    """

    def __init__(self, params: SearchParams, experts: torch.Tensor) -> None:
        if experts.ndim != 2 or experts.shape[0] < 2:
            raise TuttiError(f"a swarm needs at least 2 experts as an (n, D) tensor, got shape {tuple(experts.shape)}")
        if experts.shape[0] > params.n_particles:
            raise TuttiError(f"n_particles={params.n_particles} is smaller than the {experts.shape[0]} experts; raise it")
        self.params = params
        self.gen = torch.Generator().manual_seed(params.seed)
        high = 2.0 if params.init_weight == "code" else 1.0
        self.X = crossover_population(experts.float(), params.n_particles, self.gen, high=high)
        n = params.n_particles
        if params.init_velocity == "random":
            self.V = self.X[random_partner(n, self.gen)] - self.X
        else:  # zero now; "best" is set after the first evaluation
            self.V = torch.zeros_like(self.X)
        self.P = self.X.clone()
        self.p_util = [-math.inf] * n
        self.g = self.X[0].clone()
        self.w = self.X[0].clone()
        self.g_util, self.w_util = -math.inf, math.inf
        self.history: list[list[float]] = [[] for _ in range(n)]
        self.g_history: list[float] = []
        self.stale = [0] * n  # evaluations since the last strict personal improvement
        self.last_restart: list[int | None] = [None] * n
        self.restarted: list[int] = []  # particles restarted in the current iteration
        self.lam = params.step_length
        self.iteration = 0  # completed update iterations (0 = only the initial evaluation)
        self.g_stale = 0  # iterations since the global best last improved
        self.phase = "init"  # init -> await -> ready -> await ... -> done
        self.stop_reason = ""

    # ------------------------------------------------------------------------------------------ ask / tell
    @property
    def done(self) -> bool:
        """True once the search has stopped."""
        return self.phase == "done"

    def should_stop(self) -> str:
        """Why the search stops before the next iteration, or ``""``."""
        if self.iteration >= self.params.max_iterations:
            return f"max_iterations={self.params.max_iterations} reached"
        if self.g_stale >= self.params.patience:
            return f"no new global best in {self.params.patience} iterations"
        return ""

    def ask(self) -> torch.Tensor | None:
        """Positions ``(N, D)`` to evaluate next, or ``None`` when the search has stopped."""
        if self.phase == "await":
            raise TuttiError("ask() called twice without tell(); report the utilities first")
        if self.phase == "done":
            return None
        if self.phase == "ready":
            reason = self.should_stop()
            if reason:
                self.phase, self.stop_reason = "done", reason
                return None
            self._restart(self.iteration + 1)
            self._update()
        self.phase = "await"
        return self.X

    def tell(self, utilities: Sequence[float]) -> None:
        """Report the utility (higher is better) of every particle returned by the last :meth:`ask`.

        A NaN (a failed evaluation) counts as the worst utility seen so far, so it never improves a best nor
        becomes a new global worst.
        """
        if self.phase != "await":
            raise TuttiError("tell() called without a pending ask()")
        u = [float(x) for x in utilities]
        if len(u) != self.params.n_particles:
            raise TuttiError(f"tell() got {len(u)} utilities for {self.params.n_particles} particles")
        finite = [x for x in u if math.isfinite(x)]
        if not finite and not math.isfinite(self.w_util):
            raise TuttiError("every particle's utility failed in the initial evaluation; check the utility")
        floor = min([*finite, self.w_util]) if math.isfinite(self.w_util) else min(finite)
        u = [x if math.isfinite(x) else floor for x in u]
        first = not self.g_history
        for i, s in enumerate(u):
            self.history[i].append(s)
            if s > self.p_util[i]:
                self.P[i], self.p_util[i], self.stale[i] = self.X[i], s, 0  # copies the row into P
            else:
                self.stale[i] += 1
        best = max(range(len(u)), key=lambda i: (u[i], -i))  # first index of the max
        if u[best] > self.g_util:
            self.g, self.g_util, self.g_stale = self.X[best].clone(), u[best], 0
        elif not first:
            self.g_stale += 1
        worst = min(range(len(u)), key=lambda i: (u[i], -i))  # last index of the min
        if u[worst] < self.w_util:
            self.w, self.w_util = self.X[worst].clone(), u[worst]
        self.g_history.append(self.g_util)
        if first:
            if self.params.init_velocity == "best":
                self.V = self.g[None, :] - self.X
        else:
            self.iteration += 1
            p = self.params
            self.lam = max(self.lam * p.step_decay, p.step_min)
        self.phase = "ready"

    # ------------------------------------------------------------------------------------------ steps
    def _restart(self, it: int) -> None:
        self.restarted = []
        if not self.params.restart:
            return
        for i in range(self.params.n_particles):
            last = self.last_restart[i]
            if self.stale[i] >= self.params.restart_after and (last is None or it - last > self.params.cooldown):
                self.restarted.append(i)
                self.last_restart[i] = it
        if self.restarted:
            idx = torch.tensor(self.restarted)
            self.X, self.V = self.X.clone(), self.V.clone()
            self.X[idx] = self.P[idx]
            self.V[idx] = 0

    def draw_coefficients(self) -> torch.Tensor:
        """``(N, 4)`` products ``r * phi`` for this iteration (draws from the generator when randomised)."""
        p = self.params
        phi = torch.tensor([p.inertia, p.cognitive, p.social, p.repel], dtype=torch.float64)
        n = p.n_particles
        r = torch.rand((n, 4), generator=self.gen, dtype=torch.float64) if p.randomness else torch.ones(n, 4,
                                                                                                     dtype=torch.float64)
        return r * phi

    def _update(self) -> None:
        coeffs = self.draw_coefficients()
        self.V = velocity_update(self.X, self.V, self.P, self.g, self.w, coeffs)
        self.X = self.X + self.lam * self.V

    # ------------------------------------------------------------------------------------------ results
    def best_index(self) -> int:
        """Index of the particle whose personal best has the highest utility (first on ties)."""
        return max(range(len(self.p_util)), key=lambda i: (self.p_util[i], -i))

    def top_k(self, k: int) -> list[int]:
        """Indices of the k best personal bests, best first."""
        return sorted(range(len(self.p_util)), key=lambda i: (-self.p_util[i], i))[:k]

    # ------------------------------------------------------------------------------------------ state
    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Everything needed to resume: tensors and a JSON-able dict (including the RNG state)."""
        tensors = {"X": self.X, "V": self.V, "P": self.P, "g": self.g, "w": self.w,
                   "rng": self.gen.get_state()}
        meta = {
            "params": asdict(self.params), "p_util": self.p_util, "g_util": self.g_util, "w_util": self.w_util,
            "history": self.history, "g_history": self.g_history, "stale": self.stale,
            "last_restart": self.last_restart, "restarted": self.restarted, "lam": self.lam,
            "iteration": self.iteration, "g_stale": self.g_stale, "phase": self.phase,
            "stop_reason": self.stop_reason,
        }
        return {k: v.contiguous() for k, v in tensors.items()}, meta

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> Swarm:
        """Rebuild a swarm from :meth:`state_dict` output."""
        self = cls.__new__(cls)
        self.params = SearchParams(**meta["params"])
        self.gen = torch.Generator()
        self.gen.set_state(tensors["rng"].clone())
        self.X, self.V, self.P = tensors["X"].clone(), tensors["V"].clone(), tensors["P"].clone()
        self.g, self.w = tensors["g"].clone(), tensors["w"].clone()
        for k in ("p_util", "g_util", "w_util", "history", "g_history", "stale", "last_restart", "restarted",
                  "lam", "iteration", "g_stale", "phase", "stop_reason"):
            setattr(self, k, meta[k])
        return self
