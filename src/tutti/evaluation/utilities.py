"""Utility functions: a registry of scorers that map any model to one number (higher is better).

Each utility declares the split it reads and its direction, works on every object with the model interface
(:class:`tutti.models.interface.Model`: single models, composites, remote endpoints) and takes a fast path for
HF models (requests tokenised once, one forward pass per batch, logits only where needed). Log-likelihood
utilities need no generation.

Build one from config::

    u = build_utility(UtilityConfig(name="mc_loglik", task="tasks/quiz", split="dev"))
    u(model).value
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from tutti.config.swarm import UtilityConfig
from tutti.errors import ConfigError, TuttiError
from tutti.evaluation.datasets import Example, load_split
from tutti.evaluation.metrics import exact_match, parse_choice, token_f1
from tutti.models.interface import Model, Prompt, SamplingParams
from tutti.registry import Registry


@dataclass(frozen=True)
class UtilityResult:
    """A utility value with its per-example scores and predictions (when the utility has them)."""

    value: float
    scores: tuple[float, ...] = ()
    predictions: tuple[str, ...] = ()


class Utility(Protocol):
    """A scorer: ``utility(model).value``; ``split`` is the data it reads, ``higher_is_better`` its direction."""

    name: str
    split: str
    higher_is_better: bool

    def __call__(self, model: Model) -> UtilityResult:
        """Score ``model``."""
        ...


UtilityFactory = Callable[[UtilityConfig], Utility]
UTILITIES = Registry[UtilityFactory]("utility")


def build_utility(cfg: UtilityConfig, *, allow_test: bool = False) -> Utility:
    """Instantiate the utility ``cfg`` names, refusing the test split unless ``allow_test``."""
    for part in (cfg, *_all_parts(cfg)):
        if part.split == "test" and not allow_test:
            raise TuttiError(
                f"utility {part.name!r} reads the test split; searches use dev (pass --allow-test-set-in-search "
                "only if you mean to tune on test)"
            )
    factory = UTILITIES.get(cfg.name)
    if cfg.name == "multitask":
        return factory(cfg, allow_test=allow_test)  # type: ignore[call-arg]
    return factory(cfg)


def _all_parts(cfg: UtilityConfig) -> list[UtilityConfig]:
    return [q for p in cfg.parts for q in (p, *_all_parts(p))]


# ---------------------------------------------------------------------------------------------- task base
class TaskUtility:
    """Shared plumbing: the examples of one split and their prompts.

    Options (``utility.options``): ``template`` (default ``"{input}"``; ``{choices}`` gives lettered options),
    ``chat`` (wrap the prompt as one user message, default False), ``system`` (a system message with ``chat``),
    ``max_new_tokens`` (default 32), ``stop`` (default ``["\\n"]``; ``[]`` for none), ``batch_size`` (16),
    ``choice_prefix`` (text before each continuation, default ``" "``).
    """

    higher_is_better = True
    known_options: frozenset[str] = frozenset({"template", "chat", "system", "max_new_tokens", "stop",
                                               "batch_size", "choice_prefix"})

    def __init__(self, cfg: UtilityConfig) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.split = cfg.split
        unknown = set(cfg.options) - self.known_options
        if unknown:
            raise ConfigError(f"utility {cfg.name!r}: unknown option(s) {sorted(unknown)}; "
                              f"known: {sorted(self.known_options)}")
        if cfg.task is None:
            raise ConfigError(f"utility {cfg.name!r} needs a task (utility.task: a folder with dev.jsonl)")
        self.examples: list[Example] = load_split(cfg.task, cfg.split, limit=cfg.limit)
        self.opt = cfg.options
        self.prompts: list[Prompt] = [self.prompt(e) for e in self.examples]

    def prompt(self, ex: Example) -> Prompt:
        """The prompt of one example."""
        choices = "\n".join(f"{chr(65 + i)}. {c}" for i, c in enumerate(ex.choices or ()))
        try:
            text = str(self.opt.get("template", "{input}")).format(input=ex.input, choices=choices)
        except (KeyError, IndexError) as e:
            raise ConfigError(f"utility {self.name!r}: template field {e} unknown; use {{input}} and {{choices}}") from None
        if not self.opt.get("chat", False):
            return text
        msgs = [{"role": "system", "content": str(self.opt["system"])}] if self.opt.get("system") else []
        return [*msgs, {"role": "user", "content": text}]

    def sampling(self) -> SamplingParams:
        """Greedy decoding settings from the options."""
        return SamplingParams(max_new_tokens=int(self.opt.get("max_new_tokens", 32)),
                              stop=tuple(self.opt.get("stop", ["\n"])))

    def generate(self, model: Model) -> list[str]:
        """Greedy completions of every prompt."""
        return [o[0].text for o in model.generate(self.prompts, params=self.sampling())]


def _mean(xs: Sequence[float]) -> float:
    return float(sum(xs) / len(xs)) if xs else float("nan")


# ---------------------------------------------------------------------------------------------- log-likelihood
@UTILITIES.register("mc_loglik", pretty_name="multiple choice (log-likelihood)")
class MCLoglik(TaskUtility):
    """Multiple choice by the log-likelihood of each option: accuracy, or mean probability of the answer.

    Options: ``normalize`` ("none" | "tokens": per-token mean), ``score`` ("accuracy" | "probability": the
    softmax over options of the correct one, a smooth utility with fewer ties).
    """

    known_options = TaskUtility.known_options | {"normalize", "score"}

    def __init__(self, cfg: UtilityConfig) -> None:
        from tutti.evaluation.scoring import LoglikCache

        super().__init__(cfg)
        bad = [e.id for e in self.examples if e.choices is None]
        if bad:
            raise TuttiError(f"utility mc_loglik: example {bad[0]!r} of {cfg.task} has no 'choices'")
        pre = str(self.opt.get("choice_prefix", " "))
        reqs = [(p, pre + c) for p, e in zip(self.prompts, self.examples, strict=True) for c in e.choices or ()]
        self.cache = LoglikCache(reqs, int(self.opt.get("batch_size", 16)))

    def __call__(self, model: Model) -> UtilityResult:
        import torch

        res = iter(self.cache(model))
        scores, preds = [], []
        for e in self.examples:
            rs = [next(res) for _ in e.choices or ()]
            lp = torch.tensor([r.logprob / (r.num_tokens if self.opt.get("normalize") == "tokens" else 1) for r in rs])
            k = int(lp.argmax())
            preds.append(e.choices[k])  # type: ignore[index]
            if self.opt.get("score", "accuracy") == "probability":
                scores.append(float(torch.softmax(lp, 0)[e.answer_index]))
            else:
                scores.append(float(k == e.answer_index))
        return UtilityResult(_mean(scores), tuple(scores), tuple(preds))


@UTILITIES.register("mean_loglik", pretty_name="mean log-likelihood of references")
class MeanLoglik(TaskUtility):
    """Mean per-token log-likelihood of each reference answer given its prompt (cheap, smooth; no generation)."""

    def __init__(self, cfg: UtilityConfig) -> None:
        from tutti.evaluation.scoring import LoglikCache

        super().__init__(cfg)
        pre = str(self.opt.get("choice_prefix", " "))
        self.cache = LoglikCache([(p, pre + e.target) for p, e in zip(self.prompts, self.examples, strict=True)],
                                 int(self.opt.get("batch_size", 16)))

    def __call__(self, model: Model) -> UtilityResult:
        scores = [r.logprob / r.num_tokens for r in self.cache(model)]
        return UtilityResult(_mean(scores), tuple(scores))


# ---------------------------------------------------------------------------------------------- generation
@UTILITIES.register("mc_generate", pretty_name="multiple choice (parsed generation)")
class MCGenerate(TaskUtility):
    """Multiple choice by parsing a greedy answer (a letter at the start, "answer is X", or an option's text)."""

    def __call__(self, model: Model) -> UtilityResult:
        outs = self.generate(model)
        scores = []
        for o, e in zip(outs, self.examples, strict=True):
            if e.choices is None:
                raise TuttiError(f"utility mc_generate: example {e.id!r} has no 'choices'")
            scores.append(float(parse_choice(o, e.choices) == e.answer_index))
        return UtilityResult(_mean(scores), tuple(scores), tuple(outs))


@UTILITIES.register("exact_match", pretty_name="exact match (normalised)")
class ExactMatch(TaskUtility):
    """Exact match after normalisation; numbers compare as numbers; never a substring test."""

    def __call__(self, model: Model) -> UtilityResult:
        outs = self.generate(model)
        scores = [exact_match(o, e.target) for o, e in zip(outs, self.examples, strict=True)]
        return UtilityResult(_mean(scores), tuple(scores), tuple(outs))


@UTILITIES.register("token_f1", pretty_name="token F1")
class TokenF1(TaskUtility):
    """SQuAD-style token F1 between the greedy answer and the reference."""

    def __call__(self, model: Model) -> UtilityResult:
        outs = self.generate(model)
        scores = [token_f1(o, e.target) for o, e in zip(outs, self.examples, strict=True)]
        return UtilityResult(_mean(scores), tuple(scores), tuple(outs))


# ---------------------------------------------------------------------------------------------- combinations
@UTILITIES.register("multitask", pretty_name="multi-task mean")
class MultiTask:
    """Mean (``options.mean: arithmetic``, weighted by ``weights``) or harmonic mean of ``parts``."""

    higher_is_better = True

    def __init__(self, cfg: UtilityConfig, *, allow_test: bool = False) -> None:
        if not cfg.parts:
            raise ConfigError("utility multitask needs 'parts' (a list of utilities)")
        self.name, self.split = cfg.name, cfg.split
        self.parts = [build_utility(p, allow_test=allow_test) for p in cfg.parts]
        self.kind = cfg.options.get("mean", "arithmetic")
        if self.kind not in ("arithmetic", "harmonic"):
            raise ConfigError(f"multitask mean {self.kind!r}: use arithmetic or harmonic")
        if cfg.weights is not None and len(cfg.weights) != len(cfg.parts):
            raise ConfigError(f"multitask has {len(cfg.parts)} parts but {len(cfg.weights)} weights")
        self.weights = list(cfg.weights or [1.0] * len(cfg.parts))
        for p in self.parts:
            if not p.higher_is_better:
                raise ConfigError(f"multitask part {p.name!r} is lower-is-better; combine higher-is-better utilities")

    def __call__(self, model: Model) -> UtilityResult:
        vals = [p(model).value for p in self.parts]
        if self.kind == "harmonic":
            if any(v <= 0 for v in vals):
                return UtilityResult(0.0, tuple(vals))
            return UtilityResult(len(vals) / sum(1 / v for v in vals), tuple(vals))
        return UtilityResult(sum(w * v for w, v in zip(self.weights, vals, strict=True)) / sum(self.weights),
                             tuple(vals))


@UTILITIES.register("custom", pretty_name="custom module:function")
class Custom:
    """``options.function: "package.module:function"`` called as ``fn(model, examples)`` (examples is None
    without a task); it returns a float or a :class:`UtilityResult`. ``options.higher_is_better`` (default True).
    """

    def __init__(self, cfg: UtilityConfig) -> None:
        spec = cfg.options.get("function")
        if not isinstance(spec, str) or ":" not in spec:
            raise ConfigError("utility custom needs options.function: 'package.module:function'")
        mod, _, attr = spec.partition(":")
        try:
            self.fn = getattr(importlib.import_module(mod), attr)
        except (ImportError, AttributeError) as e:
            raise ConfigError(f"utility custom: cannot import {spec!r} ({e})") from None
        self.name, self.split = cfg.name, cfg.split
        self.higher_is_better = bool(cfg.options.get("higher_is_better", True))
        self.examples = load_split(cfg.task, cfg.split, limit=cfg.limit) if cfg.task else None

    def __call__(self, model: Model) -> UtilityResult:
        out = self.fn(model, self.examples)
        if isinstance(out, UtilityResult):
            return out
        v = float(out)
        return UtilityResult(v if not math.isnan(v) else float("nan"))


# judges, reward models and teacher-forced greedy match live in their own files
from tutti.evaluation import forced as _forced  # noqa: E402, F401
from tutti.evaluation import judges as _judges  # noqa: E402, F401
