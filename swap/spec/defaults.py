"""Every field of the job spec with its default and its description, as commented YAML: the
schema is the one place fields are documented; the README shows this output.

Run: swap validate --defaults
"""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import BaseModel

from swap.spec.schema import Spec

HEADER = "# swap run SPEC.yaml: every field and its default; only `name` is required"
NAME_EXAMPLE = "my-run"  # `name` has no default: the commented spec shows one


def commented_defaults() -> str:
    """The default spec as YAML, a comment after every field (units included)."""
    rows: list[tuple[str, str]] = []  # (YAML line, its comment)
    for key, info in Spec.model_fields.items():
        section = info.annotation
        if isinstance(section, type) and issubclass(section, BaseModel):
            rows.append((f"{key}:", _first_line(section.__doc__)))
            for name, field in section.model_fields.items():
                rows.append((f"  {name}: {_yaml(field.default)}", field.description or ""))
        else:
            value = NAME_EXAMPLE if info.is_required() else _yaml(info.default)
            rows.append((f"{key}: {value}", info.description or ""))
    width = max(len(line) for line, _ in rows) + 2
    body = [f"{line:<{width}}# {comment}" if comment else line for line, comment in rows]
    return "\n".join([HEADER, *body]) + "\n"


def _yaml(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("\n...").strip()


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().splitlines()[0] if doc else ""
