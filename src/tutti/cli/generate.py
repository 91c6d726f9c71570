"""``tutti generate``: complete a prompt with any model (zoo name, folder, hub id)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from tutti.errors import TuttiError


def register(app: typer.Typer) -> None:
    """Add ``tutti generate``."""

    @app.command("generate")
    def generate(
        model: str = typer.Argument(
            "smollm2-135m-instruct",
            help="Zoo name, model folder, hub id, or a composite YAML (ensemble, contrastive, proxy, speculative; "
                 "see docs/composites.md).",
        ),
        prompt: str | None = typer.Option(None, "--prompt", "-p", help="User message (chat-formatted)."),
        messages: Path | None = typer.Option(None, "--messages", help="JSON file with a list of chat messages."),
        raw: bool = typer.Option(False, "--raw", help="Send --prompt as raw text, without the chat template."),
        max_new_tokens: int = typer.Option(64, "--max-new-tokens", "-n"),
        temperature: float = typer.Option(0.0, help="0 = greedy."),
        top_p: float = typer.Option(1.0, "--top-p"),
        top_k: int = typer.Option(0, "--top-k"),
        seed: int | None = typer.Option(None, help="Sampling seed."),
        stop: list[str] = typer.Option([], "--stop", help="Stop string (repeatable)."),
        stream: bool = typer.Option(False, "--stream", help="Print tokens as they are generated."),
        show_info: bool = typer.Option(
            False, "--info", help="Print strategy facts to stderr as JSON (acceptance rate, share of positions "
                                  "ensembled, member forward calls, finish reason)."),
    ) -> None:
        """Generate a completion for one prompt and print it."""
        from tutti.models.interface import SamplingParams

        if (prompt is None) == (messages is None):
            raise TuttiError("give exactly one of --prompt or --messages")
        if messages is not None:
            try:
                chat = json.loads(messages.read_text())
            except (OSError, json.JSONDecodeError) as e:
                raise TuttiError(f"{messages}: cannot read chat messages ({e})") from None
            if not isinstance(chat, list) or not chat or not all(
                isinstance(x, dict) and isinstance(x.get("role"), str) and isinstance(x.get("content"), str)
                for x in chat
            ):
                raise TuttiError(f"{messages}: expected a JSON list of {{\"role\", \"content\"}} messages")
            p: object = chat
        else:
            p = prompt if raw else [{"role": "user", "content": prompt}]
        try:
            params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                    top_k=top_k, seed=seed, stop=tuple(stop))
        except ValueError as e:
            raise TuttiError(f"bad sampling option: {e}") from None
        m = load_any(model)
        if stream:
            for chunk in m.stream(p, params=params):
                sys.stdout.write(chunk.text)
                sys.stdout.flush()
            sys.stdout.write("\n")
        else:
            out = m.generate([p], params=params)[0][0]  # type: ignore[attr-defined]
            print(out.text)
            if show_info:
                facts = {"finish_reason": out.finish_reason, "prompt_tokens": out.prompt_tokens, **out.info}
                print(json.dumps(facts), file=sys.stderr)


def load_any(spec: str) -> object:
    """Load a model or, when ``spec`` is a composite YAML and the collab layer is present, a composite."""
    if spec.endswith((".yaml", ".yml")):
        try:
            from tutti.collab import load as load_composite
        except ImportError:
            raise TuttiError(f"{spec}: composite configs need tutti.collab, which this install lacks") from None
        return load_composite(spec)
    from tutti.models import load_model

    return load_model(spec)
