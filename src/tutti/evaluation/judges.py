"""Model-scored utilities: a reward model (any sequence-classification checkpoint) and LLM-as-judge."""

from __future__ import annotations

import re
from typing import Any

from tutti.config.swarm import UtilityConfig
from tutti.errors import ConfigError, TuttiError
from tutti.evaluation.utilities import UTILITIES, TaskUtility, UtilityResult, _mean
from tutti.models.interface import Model, SamplingParams

DEFAULT_JUDGE_TEMPLATE = (
    "Rate the response to the instruction on a scale of 1 to 10 for helpfulness and correctness.\n"
    "Instruction: {input}\nReference answer: {target}\nResponse: {response}\n"
    'Reply only with "Rating: N/10".'
)
_RATING = re.compile(r"(\d+(?:\.\d+)?)\s*/\s*10|rating:?\s*(\d+(?:\.\d+)?)", re.I)


def parse_rating(text: str, *, lo: float = 1.0, hi: float = 10.0) -> float | None:
    """The first ``N/10`` or ``Rating: N`` in ``text`` clipped to [lo, hi]; ``None`` if there is none."""
    m = _RATING.search(text)
    if not m:
        return None
    return min(hi, max(lo, float(m.group(1) or m.group(2))))


@UTILITIES.register("reward_model", pretty_name="reward model score")
class RewardModel(TaskUtility):
    """Mean reward of the model's greedy responses under a sequence-classification checkpoint.

    Options: ``model`` (zoo name, folder or hub id of an ``AutoModelForSequenceClassification``), ``low`` and
    ``high`` (min-max normalise the reward to [0, 1] and clip, as the paper does), plus the generation options.
    """

    known_options = TaskUtility.known_options | {"model", "low", "high"}

    def __init__(self, cfg: UtilityConfig) -> None:
        super().__init__(cfg)
        if not self.opt.get("model"):
            raise ConfigError("utility reward_model needs options.model (a sequence-classification checkpoint)")
        self._rm: Any = None

    def _load(self) -> Any:
        if self._rm is None:
            from transformers import AutoModelForSequenceClassification, AutoTokenizer

            from tutti.models.zoo import resolve_model

            path = resolve_model(str(self.opt["model"]))
            tok = AutoTokenizer.from_pretrained(path)
            if tok.pad_token_id is None:
                tok.pad_token = tok.eos_token
            rm = AutoModelForSequenceClassification.from_pretrained(path).eval()
            rm.config.pad_token_id = tok.pad_token_id
            self._rm = (rm, tok)
        return self._rm

    def rewards(self, prompts: list[str], responses: list[str]) -> list[float]:
        """Raw reward of each (prompt, response) pair (logit 0 of the classifier)."""
        import torch

        rm, tok = self._load()
        texts = []
        for p, r in zip(prompts, responses, strict=True):
            if getattr(tok, "chat_template", None):
                texts.append(tok.apply_chat_template([{"role": "user", "content": p},
                                                      {"role": "assistant", "content": r}], tokenize=False))
            else:
                texts.append(f"{p}\n{r}")
        out = []
        with torch.inference_mode():
            for s in range(0, len(texts), 8):
                enc = tok(texts[s:s + 8], return_tensors="pt", padding=True, truncation=True)
                out += rm(**enc).logits[:, 0].float().tolist()
        return out

    def __call__(self, model: Model) -> UtilityResult:
        outs = self.generate(model)
        raw = self.rewards([e.input for e in self.examples], outs)
        lo, hi = self.opt.get("low"), self.opt.get("high")
        if lo is not None and hi is not None:
            raw = [min(1.0, max(0.0, (r - float(lo)) / (float(hi) - float(lo)))) for r in raw]
        return UtilityResult(_mean(raw), tuple(raw), tuple(outs))


@UTILITIES.register("llm_judge", pretty_name="LLM-as-judge")
class LLMJudge(TaskUtility):
    """Mean 1-10 rating of the greedy responses by a judge model.

    Options: ``judge`` (a tutti model spec or any object with the model interface) or ``endpoint`` (base URL of
    an OpenAI-compatible server) with ``judge_model``; ``judge_template`` (fields ``{input}``, ``{target}``,
    ``{response}``); ``judge_max_new_tokens`` (default 20). Unparseable ratings score 1 and are counted.
    """

    known_options = TaskUtility.known_options | {"judge", "endpoint", "judge_model", "judge_template",
                                                 "judge_max_new_tokens"}

    def __init__(self, cfg: UtilityConfig) -> None:
        super().__init__(cfg)
        if not self.opt.get("judge") and not self.opt.get("endpoint"):
            raise ConfigError("utility llm_judge needs options.judge (a model) or options.endpoint (a URL)")
        self.template = str(self.opt.get("judge_template", DEFAULT_JUDGE_TEMPLATE))
        self._judge: Any = self.opt.get("judge") if not isinstance(self.opt.get("judge"), str) else None
        self.parse_failures = 0

    def _ask_judge(self, prompts: list[str], model: Model | None = None) -> list[str]:
        n = int(self.opt.get("judge_max_new_tokens", 20))
        if self.opt.get("endpoint"):
            from openai import OpenAI

            client = OpenAI(base_url=str(self.opt["endpoint"]), api_key="not-needed")
            return [client.chat.completions.create(
                model=str(self.opt.get("judge_model", "default")), temperature=0, max_tokens=n,
                messages=[{"role": "user", "content": p}]).choices[0].message.content or "" for p in prompts]
        if self._judge is None:
            from tutti.models.hf import HFModel

            # the judge runs where the judged model runs, with its batch size
            dev, bs = getattr(model, "device", "cpu"), getattr(model, "batch_size", 8)
            self._judge = HFModel.load(str(self.opt["judge"]), device=str(dev), batch_size=int(bs))
        chats = [[{"role": "user", "content": p}] for p in prompts]
        return [o[0].text for o in self._judge.generate(chats, params=SamplingParams(max_new_tokens=n))]

    def __call__(self, model: Model) -> UtilityResult:
        outs = self.generate(model)
        try:
            prompts = [self.template.format(input=e.input, target=e.target, response=o)
                       for e, o in zip(self.examples, outs, strict=True)]
        except KeyError as e:
            raise TuttiError(f"utility llm_judge: judge_template field {e} unknown; use input, target, response") from None
        ratings = []
        for reply in self._ask_judge(prompts, model):
            r = parse_rating(reply)
            self.parse_failures += r is None
            ratings.append(1.0 if r is None else r)
        return UtilityResult(_mean(ratings), tuple(ratings), tuple(outs))
