"""An ``lm_eval`` model class wrapping any tutti model or composite (lm-evaluation-harness >= 0.4).

    from tutti.evaluation.lm_eval_bridge import TuttiLM
    import lm_eval
    lm_eval.simple_evaluate(model=TuttiLM(tutti.collab.load("router.yaml")), tasks=["my_task"], ...)

or from the lm-eval CLI: ``lm_eval --model tutti --model_args model=router.yaml --tasks ...`` once this module is
imported (``--include_path`` for local YAML tasks). ``generate_until`` maps to ``generate`` (``until`` ->
stop strings, ``max_gen_toks``, ``temperature``/``do_sample``); ``loglikelihood`` to ``loglikelihood``.
``loglikelihood_rolling`` (perplexity tasks) needs a model with a tokenizer (an ``HFModel``).
Install with ``pip install 'tutti-llm[eval]'``.
"""

from __future__ import annotations

from typing import Any

from tutti.errors import TuttiError
from tutti.models.interface import Model, SamplingParams

try:
    from lm_eval.api.model import LM
    from lm_eval.api.registry import register_model
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise TuttiError("the lm-eval bridge needs lm-evaluation-harness: pip install 'tutti-llm[eval]'") from e


@register_model("tutti")
class TuttiLM(LM):
    """lm-eval's ``LM`` over a tutti model.

    Args:
        model: a loaded tutti model/composite, or a spec (zoo name, path, composite YAML) to load.
        batch_size: requests per call.
        max_gen_toks: default generation length.
    """

    def __init__(self, model: Model | str = "smollm2-135m-instruct", batch_size: int | str = 16,
                 max_gen_toks: int = 256, **_: Any) -> None:
        super().__init__()
        if isinstance(model, str):
            import tutti.collab

            model = tutti.collab.load_member(model)
        self.model = model
        self.batch_size = int(batch_size) if str(batch_size).isdigit() else 16
        self.max_gen_toks = int(max_gen_toks)

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict[str, Any] | None = None) -> TuttiLM:
        """``model=...,batch_size=...`` from the lm-eval CLI."""
        args = dict(kv.split("=", 1) for kv in arg_string.split(",") if kv)
        extra = {k: v for k, v in (additional_config or {}).items() if v is not None and k in ("batch_size",)}
        return cls(**{**args, **extra})

    def loglikelihood(self, requests: list[Any]) -> list[tuple[float, bool]]:
        """``(context, continuation)`` -> (sum log-prob, is greedy)."""
        pairs = [tuple(r.args) for r in requests]
        out: list[tuple[float, bool]] = []
        for s in range(0, len(pairs), self.batch_size):
            for res in self.model.loglikelihood(pairs[s:s + self.batch_size]):  # type: ignore[arg-type]
                out.append((res.logprob, res.is_greedy))
        return out

    def loglikelihood_rolling(self, requests: list[Any]) -> list[float]:
        """Whole-text log-likelihood (first token conditioned on BOS); HF models only."""
        tok = getattr(self.model, "tokenizer", None)
        if tok is None or tok.bos_token is None:
            raise TuttiError(f"model {getattr(self.model, 'name', '?')!r}: perplexity tasks need a model whose "
                             "tokenizer has a BOS token; use a generation or multiple-choice task")
        res = self.model.loglikelihood([(tok.bos_token, r.args[0]) for r in requests])
        return [r.logprob for r in res]

    def generate_until(self, requests: list[Any]) -> list[str]:
        """Completions cut at ``until``; requests with the same settings are batched."""
        groups: dict[SamplingParams, list[int]] = {}
        for i, req in enumerate(requests):
            _, kw = req.args
            until = kw.get("until", [])
            until = [until] if isinstance(until, str) else list(until)
            temp = float(kw.get("temperature", 0.0)) if kw.get("do_sample", False) else 0.0
            p = SamplingParams(max_new_tokens=int(kw.get("max_gen_toks", self.max_gen_toks)), temperature=temp,
                               stop=tuple(until))
            groups.setdefault(p, []).append(i)
        out = [""] * len(requests)
        for params, rows in groups.items():
            for s in range(0, len(rows), self.batch_size):
                chunk = rows[s:s + self.batch_size]
                res = self.model.generate([requests[i].args[0] for i in chunk], params=params)
                for i, r in zip(chunk, res, strict=True):
                    out[i] = r[0].text
        return out
