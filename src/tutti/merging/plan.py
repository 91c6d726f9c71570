"""Turn a validated merge config into a list of per-tensor jobs, checking everything before any output exists.

Planning reads only checkpoint headers. It normalises ``models:`` into one output slice (appending the base model
when it is not listed, as mergekit does), maps each output layer of each slice to the source layers, resolves every
parameter for every tensor (precedence: source, slice, global, method default; gradients interpolated at the
layer position ``t`` of the output slice, ``t = 0`` for embeddings, final norm and head), and checks shapes, vocab
sizes, the method's input contract and its parameters. Errors are one-line :class:`~tutti.errors.TuttiError`.
"""

from __future__ import annotations

import copy
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tutti.config.merge import MergeConfig, ModelRef, OutputSlice, evaluate_setting
from tutti.errors import CheckpointError, ConfigError
from tutti.merging.spec import MergeMethod, unknown_param_message

_LAYER = re.compile(r"^(?P<pre>.+?\.)(?P<idx>\d+)\.(?P<rest>.+)$")
_PRE_HINTS = ("embed", "wte", "wpe", "word_embeddings", "position_embeddings")
# a missing output head is read from the input embedding (mergekit's ``tied_names``), e.g. a tied-embedding model
# merged with untied ones
_TIED = {"lm_head.weight": ("model.embed_tokens.weight", "transformer.wte.weight", "model.decoder.embed_tokens.weight")}
_VOCAB_HINTS = ("embed_tokens", "lm_head", "wte", "word_embeddings", "embed_out", "output.weight")
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "int64": 8, "float64": 8, "int32": 4, "int8": 1,
               "uint8": 1, "bool": 1, "int16": 2}


@dataclass
class ModelSource:
    """One referenced model: its folder, lazy checkpoint and optional LoRA adapter."""

    ref: ModelRef
    folder: Path
    ckpt: Any  # tutti.models.checkpoint.Checkpoint
    lora: Any = None  # tutti.models.lora.LoraAdapter
    lora_pairs: dict[str, Any] = field(default_factory=dict)
    layer_prefix: str | None = None
    num_layers: int = 0

    @property
    def key(self) -> str:
        return str(self.ref)


@dataclass(frozen=True)
class TensorJob:
    """Everything needed to produce one output tensor.

    Args:
        name: output tensor name.
        inputs: ``(model index, tensor name)`` of each non-base input, in config order.
        base: ``(model index, tensor name)`` of the base input, or ``None``.
        params: config name -> value (a list with one value per input for per-model parameters).
        layer_index: output layer index (``None`` for non-layer tensors).
        shape: output shape.
        dtype: output dtype name.
        truncate: common ``(rows, cols)`` submatrix to cut vocab-sized inputs to (``--unsafe-truncate-embeddings``).
    """

    name: str
    inputs: tuple[tuple[int, str], ...]
    base: tuple[int, str] | None
    params: dict[str, Any]
    layer_index: int | None
    shape: tuple[int, ...]
    dtype: str
    truncate: tuple[int, ...] | None = None

    @property
    def refs(self) -> tuple[tuple[int, str], ...]:
        """``(model index, tensor name)`` of every input read: the non-base inputs, then the base if any."""
        return (*self.inputs, self.base) if self.base else self.inputs

    @property
    def nbytes(self) -> int:
        n = DTYPE_BYTES.get(self.dtype, 4)
        for s in self.shape:
            n *= s
        return n


@dataclass
class MergePlan:
    """The checked plan: models, method, jobs and the output ``config.json``."""

    config: MergeConfig
    method: MergeMethod
    models: list[ModelSource]
    jobs: list[TensorJob]
    out_config: dict[str, Any]
    num_layers: int
    donor: ModelSource
    vocab: Any = None  # tutti.merging.vocab.VocabPlan when the config sets a tokenizer

    def bytes_read(self) -> int:
        """Bytes read from the input checkpoints (each input tensor once)."""
        total = 0
        for j in self.jobs:
            for mi, name in (*j.inputs, *([j.base] if j.base else [])):
                total += self.models[mi].ckpt.info(name).nbytes
        return total

    def bytes_written(self) -> int:
        """Bytes of the output tensors."""
        return sum(j.nbytes for j in self.jobs)


def _num_layers_key(cfg: dict[str, Any]) -> tuple[dict[str, Any], str] | None:
    for holder in (cfg, cfg.get("text_config") or {}):
        for key in ("num_hidden_layers", "n_layer", "num_layers"):
            if isinstance(holder.get(key), int):
                return holder, key
    return None


def _detect_layers(src: ModelSource) -> None:
    counts: dict[str, set[int]] = {}
    for name in src.ckpt:
        m = _LAYER.match(name)
        if m:
            counts.setdefault(m["pre"], set()).add(int(m["idx"]))
    if not counts:
        return
    src.layer_prefix = max(counts, key=lambda p: (len(counts[p]), -len(p)))
    found = max(counts[src.layer_prefix]) + 1
    holder = _num_layers_key(src.ckpt.config)
    src.num_layers = holder[0][holder[1]] if holder else found


def _split(src: ModelSource, name: str) -> tuple[int, str] | None:
    if src.layer_prefix and name.startswith(src.layer_prefix):
        m = _LAYER.match(name)
        if m and m["pre"] == src.layer_prefix:
            return int(m["idx"]), m["rest"]
    return None


def open_models(config: MergeConfig, *, allow_pickle: bool = False) -> dict[str, ModelSource]:
    """Resolve and open every referenced model (headers only) and its LoRA adapter."""
    from tutti.models.checkpoint import Checkpoint
    from tutti.models.zoo import resolve_model

    out: dict[str, ModelSource] = {}
    for ref in config.referenced_models():
        folder = resolve_model(ref.path)
        ckpt = Checkpoint(folder, allow_pickle=allow_pickle)
        if ref.override_architecture:
            ckpt.config = {**ckpt.config, "architectures": [ref.override_architecture]}
        src = ModelSource(ref=ref, folder=folder, ckpt=ckpt)
        if ref.lora:
            from tutti.models.lora import load_lora  # torch: only a LoRA reference needs it

            src.lora = load_lora(resolve_model(ref.lora))
            src.lora_pairs = {f"{m}.weight": p for m, p in src.lora.pairs().items()}
            missing = [n for n in src.lora_pairs if n not in ckpt]
            if missing:
                raise CheckpointError(f"LoRA {ref.lora} targets {missing[0]!r}, which {ref.path} does not have")
        _detect_layers(src)
        out[str(ref)] = src
    return out


def _normalise(config: MergeConfig, models: dict[str, ModelSource]) -> list[OutputSlice]:
    if config.slices:
        return list(config.slices)
    sources = [{"model": m.model, "parameters": m.parameters, "layer_range": (0, models[str(m.model)].num_layers)}
               for m in config.models or []]
    if config.base_model and str(config.base_model) not in {str(m.model) for m in config.models or []}:
        base = models[str(config.base_model)]
        sources.append({"model": config.base_model, "layer_range": (0, base.num_layers)})
    return [OutputSlice.model_validate({"sources": sources})]


def _param(config: MergeConfig, sl: OutputSlice, model: ModelRef | None, name: str, tensor: str, t: float) -> Any:
    scopes = []
    if model is not None:
        scopes += [s.parameters for s in sl.sources if str(s.model) == str(model)]
    scopes += [sl.parameters, config.parameters]
    for scope in scopes:
        if scope and name in scope:
            value = evaluate_setting(scope[name], tensor, t)
            if value is not None:
                return value
    return None


def _check_param_names(config: MergeConfig, slices: list[OutputSlice], method: MergeMethod) -> None:
    scopes = [("parameters", config.parameters)]
    for i, sl in enumerate(slices):
        scopes.append((f"slices[{i}].parameters", sl.parameters))
        scopes += [(f"{src.model}.parameters", src.parameters) for src in sl.sources]
    for where, scope in scopes:
        for name in scope or {}:
            if name not in method.params:
                raise ConfigError(unknown_param_message(method, name, where))


class _Planner:
    def __init__(self, config: MergeConfig, models: dict[str, ModelSource], method: MergeMethod, *,
                 unsafe_truncate: bool, vocab: Any = None) -> None:
        self.config, self.models, self.unsafe_truncate, self.vocab = config, models, unsafe_truncate, vocab
        self.method = method
        self.index = {k: i for i, k in enumerate(models)}
        self.jobs: list[TensorJob] = []
        self.out_layer = 0

    def run(self) -> list[TensorJob]:
        slices = _normalise(self.config, self.models)
        _check_param_names(self.config, slices, self.method)
        for i, sl in enumerate(slices):
            self._check_contract(sl, f"slices[{i}]")
        first, last = slices[0], slices[-1]
        pre, post = self._outer_names(first), self._outer_names(last)
        for name in pre[0]:
            self._job(name, [(s.model, name) for s in first.sources], first, t=0.0, layer=None)
        for sl in slices:
            n = sl.sources[0].layer_range[1] - sl.sources[0].layer_range[0]
            for k in range(n):
                t = k / (n - 1) if n > 1 else 1.0
                self._layer(sl, k, t)
        for name in post[1]:
            self._job(name, [(s.model, name) for s in last.sources], last, t=0.0, layer=None)
        return self.jobs

    def _check_contract(self, sl: OutputSlice, where: str) -> None:
        for s in sl.sources:
            n_layers = self.models[str(s.model)].num_layers
            if s.layer_range[1] > n_layers:
                raise ConfigError(f"{where}: layer_range {list(s.layer_range)} of {s.model} goes past its "
                                  f"{n_layers} layers")
        base = sl.base_model or self.config.base_model
        keys = [str(s.model) for s in sl.sources]
        if base is not None and self.method.base != "none" and str(base) not in keys:
            raise ConfigError(f"{where}: base model {base} is not among the slice's sources; add it as a source")
        n = len(keys) - (1 if base is not None and self.method.base != "none" and str(base) in keys else 0)
        self.method.check_inputs(n, base is not None and self.method.base != "none", where=where)
        if self.method.base == "required" and base is None:
            raise ConfigError(f"{where}: merge_method {self.method.name!r} needs a base model; add 'base_model:'")

    def _outer_names(self, sl: OutputSlice) -> tuple[list[str], list[str]]:
        names: dict[str, None] = {}
        for s in sl.sources:
            src = self.models[str(s.model)]
            for n in src.ckpt:
                if _split(src, n) is None:
                    names.setdefault(n, None)
        pre = [n for n in names if any(h in n for h in _PRE_HINTS)]
        return pre, [n for n in names if n not in pre]

    def _layer(self, sl: OutputSlice, k: int, t: float) -> None:
        src0 = self.models[str(sl.sources[0].model)]
        start0 = sl.sources[0].layer_range[0]
        rests = [r for n in src0.ckpt if (p := _split(src0, n)) and p[0] == start0 + k for r in [p[1]]]
        if not rests and src0.layer_prefix is None:
            raise CheckpointError(f"{src0.folder}: no numbered layers found; use 'models:' instead of 'slices:'")
        for rest in rests:
            inputs = []
            for s in sl.sources:
                src = self.models[str(s.model)]
                idx = s.layer_range[0] + k
                if idx >= src.num_layers:
                    raise ConfigError(f"layer_range {list(s.layer_range)} of {s.model} goes past its "
                                      f"{src.num_layers} layers")
                inputs.append((s.model, f"{src.layer_prefix}{idx}.{rest}"))
            self._job(f"{src0.layer_prefix}{self.out_layer}.{rest}", inputs, sl, t=t, layer=self.out_layer)
        self.out_layer += 1

    def _job(self, out: str, inputs: list[tuple[ModelRef, str]], sl: OutputSlice, *, t: float,
             layer: int | None) -> None:
        base_ref = sl.base_model or self.config.base_model
        base_sep = base_ref is not None and self.method.base != "none"
        present = [(r, n) for r, n in inputs if n in self.models[str(r)].ckpt]
        if present and layer is None and len(present) < len(inputs):
            present = [(r, self._tied(r, n)) for r, n in inputs if self._tied(r, n) in self.models[str(r)].ckpt]
        if not present:
            return
        base = next(((r, n) for r, n in present if base_sep and str(r) == str(base_ref)), None)
        rest = [(r, n) for r, n in present if base is None or str(r) != str(base_ref)]
        if base_sep and base is None and self.method.base == "required":
            raise CheckpointError(f"tensor {out!r} is missing from the base model {base_ref}")
        if not rest and base is not None:  # only the base has it (optional weight): copy the base
            rest, base = [base], None
            method_params: dict[str, Any] = {"__copy__": True}
        else:
            method_params = self._params(out, rest, sl, t)
        ins = [*rest, *([base] if base else [])]
        if layer is None and self.vocab is not None and not self.vocab.identity and any(h in out for h in _VOCAB_HINTS):
            shape, truncate = self._aligned_shape(out, ins, base_ref), None
        else:
            shape, truncate = self._shape(out, ins)
        dtype = self._dtype(rest[0])
        self.jobs.append(TensorJob(
            name=out, inputs=tuple((self.index[str(r)], n) for r, n in rest),
            base=(self.index[str(base[0])], base[1]) if base else None, params=method_params, layer_index=layer,
            shape=shape, dtype=dtype, truncate=truncate))

    def _tied(self, ref: ModelRef, name: str) -> str:
        ckpt = self.models[str(ref)].ckpt
        return name if name in ckpt else next((t for t in _TIED.get(name, ()) if t in ckpt), name)

    def _params(self, out: str, rest: list[tuple[ModelRef, str]], sl: OutputSlice, t: float) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for spec in self.method.params.values():
            if spec.per_model:
                vals = [_param(self.config, sl, r, spec.name, n, t) for r, n in rest]
                values[spec.name] = vals
            else:
                values[spec.name] = _param(self.config, sl, None, spec.name, out, t)
        self.method.resolve(values, len(rest), where=out)  # validates types and required values now
        return values

    def _shape(self, out: str, ins: list[tuple[ModelRef, str]]) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
        shapes = [tuple(self.models[str(r)].ckpt.info(n).shape) for r, n in ins]
        if len(set(shapes)) == 1:
            return shapes[0], None
        vocab = any(h in out for h in _VOCAB_HINTS) and all(
            len(s) == len(shapes[0]) and s[1:] == shapes[0][1:] for s in shapes)  # only the vocab axis differs
        if vocab and self.unsafe_truncate:
            common = tuple(min(s[d] for s in shapes) for d in range(len(shapes[0])))
            return common, common
        (r0, _), s0 = ins[0], shapes[0]
        i = next(i for i, s in enumerate(shapes) if s != s0)
        hint = ("vocab sizes differ; set 'tokenizer_source: union' (or base, or a model) to align the vocabularies, "
                "or pass --unsafe-truncate-embeddings to cut to the common rows" if vocab else "the models are not the "
                "same architecture/size")
        raise CheckpointError(f"tensor {out!r}: shape {list(s0)} in {r0} but {list(shapes[i])} in {ins[i][0]}; "
                              f"{hint}")

    def _aligned_shape(self, out: str, ins: list[tuple[ModelRef, str]], base_ref: ModelRef | None) -> tuple[int, ...]:
        from tutti.merging.vocab import plan_alignment

        shapes = [tuple(self.models[str(r)].ckpt.info(n).shape) for r, n in ins]
        if any(len(s) < 1 or s[1:] != shapes[0][1:] for s in shapes):
            raise CheckpointError(f"tensor {out!r}: shapes {[list(s) for s in shapes]} differ beyond the vocab axis")
        plan_alignment(self.vocab, out, [str(r) for r, _ in ins], [s[0] for s in shapes],
                       str(base_ref) if base_ref is not None else None)
        return (self.vocab.out_rows, *shapes[0][1:])

    def _dtype(self, first: tuple[ModelRef, str]) -> str:
        if self.config.out_dtype:
            return self.config.out_dtype
        if self.method.extra.get("output_float32"):
            return "float32"
        if self.config.dtype:
            return self.config.dtype
        r, n = first
        return str(self.models[str(r)].ckpt.info(n).dtype).removeprefix("torch.")


def _out_config(config: MergeConfig, donor: ModelSource, num_layers: int) -> dict[str, Any]:
    cfg = copy.deepcopy(donor.ckpt.config)
    holder = _num_layers_key(cfg)
    if holder:
        holder[0][holder[1]] = num_layers
    dt = config.out_dtype or config.dtype
    if dt:
        cfg["dtype"] = dt
        cfg.pop("torch_dtype", None)
    return cfg


def make_plan(config: MergeConfig, *, allow_pickle: bool = False, unsafe_truncate_embeddings: bool = False,
              models: dict[str, ModelSource] | None = None, method: MergeMethod | None = None) -> MergePlan:
    """Open the inputs (headers only) and build the checked :class:`MergePlan`.

    ``method`` is the registered torch method of ``config.merge_method`` unless given (the NumPy engine passes
    its own, with the same signature).
    """
    if method is None:
        from tutti.merging.base import get_method

        method = get_method(config.merge_method)  # unknown method: fail before touching any file
    models = models if models is not None else open_models(config, allow_pickle=allow_pickle)
    vocab = None
    if config.tokenizer_source is not None or config.tokenizer is not None:
        from tutti.merging.vocab import build_vocab_plan

        vocab = build_vocab_plan(config, models)
    planner = _Planner(config, models, method, unsafe_truncate=unsafe_truncate_embeddings, vocab=vocab)
    jobs = planner.run()
    dup = [n for n, c in Counter(j.name for j in jobs).items() if c > 1]
    if dup:
        raise ConfigError(f"output tensor {dup[0]!r} would be written twice; check the slices' layer ranges")
    donor_key = str(config.base_model) if config.base_model else next(iter(models))
    donor = models[donor_key]
    out_config = _out_config(config, donor, planner.out_layer)
    if vocab is not None and not vocab.identity:
        from tutti.merging.vocab import set_config_vocab

        set_config_vocab(out_config, vocab.out_rows)
    return MergePlan(config=config, method=planner.method, models=list(models.values()), jobs=jobs,
                     out_config=out_config, num_layers=planner.out_layer, donor=donor, vocab=vocab)
