"""Reading YAML and validating configs, with every failure as a one-line :class:`ConfigError`.

One place for the wording, so a merge config, a composite, a serve file and a swarm config report a bad key,
a missing file and broken YAML the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from tutti.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def format_loc(loc: tuple[Any, ...]) -> str:
    """Dotted key path of a pydantic error location, without pydantic's internal validator names."""
    return ".".join(str(p) for p in loc if not str(p).startswith(("function-", "tagged-union")))


def validation_message(e: ValidationError, *, source: str, hint: str = "", prefix: str = "") -> str:
    """One line for the first error of ``e``: ``SOURCE: KEY: MESSAGE (HINT)``; unknown keys say so plainly.

    ``prefix`` is prepended to the key path (e.g. ``"options."`` when the validated dict sits under that key).
    """
    err = e.errors()[0]
    loc = prefix + format_loc(err["loc"]) if err["loc"] else prefix.rstrip(".")
    if err["type"] == "extra_forbidden":
        line = f"{source}: unknown key {loc!r}; remove it or fix its spelling"
    else:
        msg = str(err["msg"]).removeprefix("Value error, ")
        line = f"{source}: {loc + ': ' if loc else ''}{msg}"
    extra = [hint] if hint else []
    if len(e.errors()) > 1:
        extra.append(f"{len(e.errors())} errors in all")
    return line + (f" ({'; '.join(extra)})" if extra else "")


def validate(model: type[M], data: Any, *, source: str, hint: str = "", prefix: str = "") -> M:
    """``model.model_validate(data)``, a :class:`ValidationError` becoming a one-line :class:`ConfigError`."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ConfigError(validation_message(e, source=source, hint=hint, prefix=prefix)) from None


def read_yaml(path: str | Path, *, what: str = "config") -> Any:
    """Parse a YAML file; a missing file or broken YAML is a one-line :class:`ConfigError` naming the line."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: no such {what} file; check the path")
    try:
        return yaml.safe_load(p.read_text())
    except OSError as e:
        raise ConfigError(f"{p}: cannot read {what} ({e.strerror})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{p}: not valid YAML{where} ({problem})") from None
