"""Routers over N models, trained from a correctness matrix; each predicts per-prompt quality of every model.

``router.fit(features, scores)`` then ``router.predict(features) -> (n, m)`` in [0, 1]; which model to call is
decided apart (:mod:`tutti.routing.decide`: costs, willingness to pay, calibrated offsets), so every router gets
cost trade-offs and share calibration for free.

- ``knn``: similarity-weighted mean of the k nearest training prompts' scores (LLMRouterBench finds kNN strong).
- ``logistic`` / ``mlp``: one sigmoid output per model on the features (multi-label; BCE, AdamW, full batch).
- ``mf``: RouteLLM's matrix factorisation, ``s(m, q) = w2^T (normalize(v_m) * (W1 q))``, trained on pairwise
  wins from the matrix (``P(a beats b) = sigmoid(s_a - s_b)``); the prediction of model m is its mean win rate
  against the others (for two models, RouteLLM's strong-win rate).
- ``random``: uniform scores (the baseline every curve is compared with).
"""

from __future__ import annotations

from typing import Any, Protocol

import torch

from tutti.errors import TuttiError
from tutti.registry import Registry


class Router(Protocol):
    """Predicts quality of each model on each prompt from prompt features."""

    def fit(self, x: torch.Tensor, scores: torch.Tensor) -> Any:
        """Train on ``(n, dim)`` features and ``(n, m)`` scores; returns self."""
        ...

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """``(n, m)`` predicted scores in [0, 1]."""
        ...

    def state(self) -> dict[str, torch.Tensor]:
        """The fitted parameters as plain tensors (what :func:`tutti.routing.store.save_router` writes)."""
        ...

    def load_state(self, state: dict[str, torch.Tensor]) -> Any:
        """Restore :meth:`state` instead of fitting; returns self."""
        ...


ROUTERS = Registry[Any]("router")


def _check(x: torch.Tensor, scores: torch.Tensor) -> None:
    if x.ndim != 2 or scores.ndim != 2 or x.shape[0] != scores.shape[0] or x.shape[0] == 0:
        raise TuttiError(f"router training: features {tuple(x.shape)} and scores {tuple(scores.shape)} do not match")


@ROUTERS.register("knn", pretty_name="k-nearest neighbours")
class KNNRouter:
    """Mean score of the ``k`` most similar training prompts (cosine), weighted by similarity.

    Args:
        k: neighbours.
    """

    def __init__(self, *, k: int = 10, seed: int = 0) -> None:
        self.k = k

    def fit(self, x: torch.Tensor, scores: torch.Tensor) -> KNNRouter:
        """Memorise the training set."""
        _check(x, scores)
        self.x = torch.nn.functional.normalize(x.float(), dim=-1)
        self.y = scores.float()
        return self

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """``(n, m)`` weighted neighbour means."""
        sim = torch.nn.functional.normalize(x.float(), dim=-1) @ self.x.T  # (n, n_train)
        k = min(self.k, self.x.shape[0])
        top, idx = sim.topk(k, dim=-1)
        w = top.clamp(min=1e-6)  # (n, k)
        return ((w.unsqueeze(-1) * self.y[idx]).sum(1) / w.sum(1, keepdim=True)).clamp(0.0, 1.0)

    def state(self) -> dict[str, torch.Tensor]:
        """The memorised (normalised) features and scores."""
        return {"x": self.x, "y": self.y}

    def load_state(self, state: dict[str, torch.Tensor]) -> KNNRouter:
        """Restore a memorised training set."""
        self.x, self.y = state["x"].float(), state["y"].float()
        return self


class _Trained:
    """Full-batch AdamW training loop shared by the parametric routers (seeded, deterministic)."""

    def __init__(self, *, steps: int = 200, lr: float = 2e-2, weight_decay: float = 1e-3, seed: int = 0) -> None:
        self.steps, self.lr, self.weight_decay, self.seed = steps, lr, weight_decay, seed

    def _train(self, net: torch.nn.Module, loss_fn: Any) -> None:
        # plain AdamW with decoupled weight decay, written out: constructing torch.optim optimisers pulls in
        # the compiler stack on first use (tens of seconds on a busy CPU) for a few hundred tiny steps
        params = [p for p in net.parameters() if p.requires_grad]
        m = [torch.zeros_like(p) for p in params]
        v = [torch.zeros_like(p) for p in params]
        b1, b2, eps = 0.9, 0.999, 1e-8
        with torch.enable_grad():
            for t in range(1, self.steps + 1):
                grads = torch.autograd.grad(loss_fn(), params)
                with torch.no_grad():
                    for p, g, mi, vi in zip(params, grads, m, v, strict=True):
                        mi.mul_(b1).add_(g, alpha=1 - b1)
                        vi.mul_(b2).addcmul_(g, g, value=1 - b2)
                        p.mul_(1 - self.lr * self.weight_decay)
                        step = self.lr * (1 - b2**t) ** 0.5 / (1 - b1**t)
                        p.addcdiv_(mi, vi.sqrt().add_(eps), value=-step)
        net.eval()


@ROUTERS.register("logistic", pretty_name="logistic head")
class HeadRouter(_Trained):
    """A sigmoid output per model on the features: linear (``logistic``) or one hidden layer (``mlp``).

    Args:
        hidden: hidden width (0 = logistic regression).
        steps, lr, weight_decay, seed: training settings.
    """

    def __init__(self, *, hidden: int = 0, **kw: Any) -> None:
        super().__init__(**kw)
        self.hidden = hidden

    def fit(self, x: torch.Tensor, scores: torch.Tensor) -> HeadRouter:
        """Binary cross-entropy per model (scores in [0, 1] are soft labels)."""
        _check(x, scores)
        torch.manual_seed(self.seed)
        self._build(x.shape[1], scores.shape[1])
        xf, y = x.float().clone(), scores.float().clamp(0, 1)  # clone: features may be inference tensors
        self._train(self.net, lambda: torch.nn.functional.binary_cross_entropy_with_logits(self.net(xf), y))
        return self

    def _build(self, d: int, m: int) -> None:
        layers: list[torch.nn.Module] = ([torch.nn.Linear(d, self.hidden), torch.nn.GELU(),
                                          torch.nn.Linear(self.hidden, m)] if self.hidden else [torch.nn.Linear(d, m)])
        self.net = torch.nn.Sequential(*layers)
        self.shape = (d, m)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """``(n, m)`` probabilities."""
        return torch.sigmoid(self.net(x.float()))

    def state(self) -> dict[str, torch.Tensor]:
        """The head's weights and its (features, models) shape."""
        return {"shape": torch.tensor(self.shape), **{f"net.{k}": v for k, v in self.net.state_dict().items()}}

    def load_state(self, state: dict[str, torch.Tensor]) -> HeadRouter:
        """Rebuild the head and load its weights."""
        self._build(*(int(v) for v in state["shape"]))
        self.net.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("net.")})
        self.net.eval()
        return self


@ROUTERS.register("mlp", pretty_name="MLP head")
class MLPRouter(HeadRouter):
    """:class:`HeadRouter` with a hidden layer (default 128)."""

    def __init__(self, *, hidden: int = 128, **kw: Any) -> None:
        super().__init__(hidden=hidden, **kw)


class _MF(torch.nn.Module):
    def __init__(self, d: int, m: int, dim: int) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(d, dim, bias=False)  # W1
        self.models = torch.nn.Embedding(m, dim)  # v_m
        self.out = torch.nn.Linear(dim, 1, bias=False)  # w2

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (n, d) -> (n, m)
        q = self.proj(x)  # (n, dim)
        v = torch.nn.functional.normalize(self.models.weight, dim=-1)  # (m, dim)
        return self.out(q.unsqueeze(1) * v.unsqueeze(0)).squeeze(-1)


@ROUTERS.register("mf", pretty_name="matrix factorisation (RouteLLM mf)", paper="https://arxiv.org/abs/2406.18665")
class MFRouter(_Trained):
    """RouteLLM's ``mf`` router generalised to N models.

    Args:
        dim: factor dimension (RouteLLM: 128).
        steps, lr, weight_decay, seed: training settings.
    """

    def __init__(self, *, dim: int = 128, **kw: Any) -> None:
        super().__init__(**kw)
        self.dim = dim

    def fit(self, x: torch.Tensor, scores: torch.Tensor) -> MFRouter:
        """Pairwise logistic loss on every (prompt, a, b) with ``score_a != score_b``."""
        _check(x, scores)
        torch.manual_seed(self.seed)
        m = scores.shape[1]
        if m < 2:
            raise TuttiError("the mf router needs at least two models")
        self.net, self.shape = _MF(x.shape[1], m, self.dim), (x.shape[1], m)
        xf, y = x.float().clone(), scores.float()
        a, b = torch.triu_indices(m, m, offset=1)
        diff = y[:, a] - y[:, b]  # (n, pairs)
        mask = diff != 0
        if not mask.any():
            raise TuttiError("mf router: no prompt where two models differ; nothing to learn from")
        label = (diff > 0).float()

        def loss() -> torch.Tensor:
            s = self.net(xf)
            logit = s[:, a] - s[:, b]
            return torch.nn.functional.binary_cross_entropy_with_logits(logit[mask], label[mask])

        self._train(self.net, loss)
        return self

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Mean win probability of each model against the others, ``(n, m)``."""
        s = self.net(x.float())
        m = s.shape[1]
        win = torch.sigmoid(s.unsqueeze(-1) - s.unsqueeze(1))  # (n, m, m)
        return (win.sum(-1) - 0.5) / (m - 1)  # drop the diagonal's sigmoid(0) = 0.5

    def state(self) -> dict[str, torch.Tensor]:
        """The factor weights and the (features, models) shape."""
        return {"shape": torch.tensor(self.shape), **{f"net.{k}": v for k, v in self.net.state_dict().items()}}

    def load_state(self, state: dict[str, torch.Tensor]) -> MFRouter:
        """Rebuild the factorisation and load its weights."""
        self.shape = (int(state["shape"][0]), int(state["shape"][1]))
        self.net = _MF(*self.shape, self.dim)
        self.net.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("net.")})
        self.net.eval()
        return self


@ROUTERS.register("random", pretty_name="random routing")
class RandomRouter:
    """Uniform random scores (seeded): the baseline."""

    def __init__(self, *, seed: int = 0, **_: Any) -> None:
        self.seed = seed

    def fit(self, x: torch.Tensor, scores: torch.Tensor) -> RandomRouter:
        """Only remembers the number of models."""
        self.m = scores.shape[1]
        return self

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """``(n, m)`` uniform draws."""
        g = torch.Generator().manual_seed(self.seed)
        return torch.rand(x.shape[0], self.m, generator=g)

    def state(self) -> dict[str, torch.Tensor]:
        """Only the number of models."""
        return {"m": torch.tensor(self.m)}

    def load_state(self, state: dict[str, torch.Tensor]) -> RandomRouter:
        """Restore the number of models."""
        self.m = int(state["m"])
        return self


def build_router(name: str, **kwargs: Any) -> Any:
    """Instantiate a registered router with its keyword settings (did-you-mean on unknown names)."""
    cls = ROUTERS.get(name)
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise TuttiError(f"router {name!r}: {e}") from None
