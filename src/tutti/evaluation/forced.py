"""Teacher-forced greedy match: exact-match accuracy without a decoding loop (a cheap search utility).

Greedy decoding reproduces a reference answer token for token if and only if, with the prompt and the reference
fed in (teacher forcing), the most likely token at every answer position is the next reference token, and the
most likely token after the answer stops the decoding (an end-of-sequence token, or a token whose text starts
with a stop string such as ``"\\n"``; or the answer already fills ``max_new_tokens``). So one forward pass over
``prompt + reference`` decides what a whole generation would. Each prompt runs once (the batch's shared chat
template head once, as a KV cache); the reference and its case variants (``"True"`` for ``"true"``, each one
that exact match accepts, and whose first token is the one greedy decoding emits) run as short continuations of
that cache. An example scores 1 when greedy decoding would produce one of those spellings exactly, so

    forced_match(example) = 1  ==>  greedy output is an accepted spelling  ==>  exact match = 1,

an exact *lower bound* of the exact-match accuracy under the same greedy settings. It is lower where the model
answers correctly in other tokens: another tokenisation of the same string, a normalisation variant beyond
case (``"Paris."``, ``"5.0"``, ``"1,000"``, surrounding quotes), or text the metric forgives (``"5 apples"`` or
``"The answer is 5"`` for a numeric target, a first line followed by more). A near-tie between two tokens can
also flip between the padded batches of generation and of scoring (float rounding), rarely.

The swarm's results table uses it as its dev (search) utility and still scores the test split by generation
(:mod:`tutti.recipes.swarm_table`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from tutti.config.swarm import UtilityConfig
from tutti.evaluation.metrics import exact_match
from tutti.evaluation.utilities import UTILITIES, TaskUtility, UtilityResult, _mean
from tutti.models.interface import Model


def greedy_reproduces(greedy: Sequence[int], reference: Sequence[int], *, stops: Callable[[int], bool],
                      max_new_tokens: int) -> bool:
    """Whether greedy decoding emits exactly ``reference`` and then stops, from teacher-forced argmax tokens.

    Args:
        greedy: ``n + 1`` ids, the most likely token at each position that predicts a reference token and at
            the position after them (``logits.argmax(-1)`` of a teacher-forced pass).
        reference: the ``n`` reference token ids.
        stops: whether emitting a token ends the decoding (end of sequence, or its text starts a stop string).
        max_new_tokens: the decoding's token budget (an answer that fills it needs no stop; a longer one is cut).
    """
    n = len(reference)
    if n > max_new_tokens or len(greedy) != n + 1 or tuple(greedy[:n]) != tuple(reference):
        return False
    return n == max_new_tokens or stops(greedy[n])


def answer_variants(target: str) -> list[str]:
    """Spellings of ``target`` that exact match accepts and a model commonly writes: as given, lower case,
    capitalised, upper case, title case (duplicates and any that exact match would reject dropped)."""
    out: list[str] = []
    for v in (target, target.lower(), target[:1].upper() + target[1:], target.upper(), target.title()):
        if v and v not in out and exact_match(v, target) == 1.0:
            out.append(v)
    return out


@UTILITIES.register("forced_match", pretty_name="teacher-forced greedy match (exact lower bound of exact match)")
class ForcedMatch(TaskUtility):
    """Share of examples whose greedy answer would be exactly the reference (see the module docstring).

    Reads the same options as ``exact_match`` (``max_new_tokens``, ``stop``, ``chat``, ``template``,
    ``batch_size``), so the two are scored under the same greedy settings. ``choice_prefix`` is the text put
    before the reference (default ``""`` for chat prompts, whose answer starts a new turn, ``" "`` for plain
    text); ``variants`` (default True) also accepts the case variants of :func:`answer_variants` ("True" for
    "true"), each run as a short continuation of the prompt's KV cache, so they cost little. HF models take one
    forward pass per batch of prompts; other models (composites, endpoints) generate and compare the stripped
    text with the accepted spellings, the same event at the price of a generation.
    """

    known_options = TaskUtility.known_options | {"variants"}

    def __init__(self, cfg: UtilityConfig) -> None:
        super().__init__(cfg)
        pre = str(self.opt.get("choice_prefix", "" if self.opt.get("chat", False) else " "))
        stop = self.sampling().stop
        self.refs = [[pre + v for v in (answer_variants(e.target) if self.opt.get("variants", True) else [e.target])]
                     for e in self.examples]
        # decoding stops inside a spelling that holds a stop string, so greedy never produces it whole
        self.unreachable = {r for refs in self.refs for r in refs if any(s and s in r for s in stop)}
        self.batch_size = int(self.opt.get("batch_size", 16))
        self._stop_of: dict[tuple[int, int], bool] = {}

    def __call__(self, model: Model) -> UtilityResult:
        from tutti.evaluation.scoring import option_greedy
        from tutti.models.hf import HFModel

        if not isinstance(model, HFModel):
            outs = self.generate(model)
            scores = [float(o.strip() in {r.strip() for r in refs if r not in self.unreachable})
                      for o, refs in zip(outs, self.refs, strict=True)]
            return UtilityResult(_mean(scores), tuple(scores), tuple(outs))
        params = self.sampling()
        rows = option_greedy(model, self.prompts, self.refs, batch_size=self.batch_size, greedy_only=True)
        scores = []
        for row, refs in zip(rows, self.refs, strict=True):
            ok = any(greedy_reproduces(res.greedy, res.reference, max_new_tokens=params.max_new_tokens,
                                       stops=lambda t: self._stops(model, t, params.stop))
                     for res, ref in zip(row, refs, strict=True) if ref not in self.unreachable)
            scores.append(float(ok))
        return UtilityResult(_mean(scores), tuple(scores))

    def _stops(self, model: Any, token: int, stop: Sequence[str]) -> bool:
        """Whether greedy decoding ends when ``model`` emits ``token`` (cached per tokenizer)."""
        key = (id(model.tokenizer), token)
        if key not in self._stop_of:
            text = model.tokenizer.decode([token], skip_special_tokens=True)
            self._stop_of[key] = token in model.eos_token_ids or any(s and text.startswith(s) for s in stop)
        return self._stop_of[key]
