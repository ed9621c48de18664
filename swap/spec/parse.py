"""Reading a job spec: YAML text or file, `key=value` overrides, and every problem as one line
naming the file, the field and the value.

Run: swap validate configs/quickstart.yaml phase2.workers=8
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from swap.catalog import DATASETS, held_out
from swap.errors import SpecError
from swap.schedules import snapshot_steps
from swap.spec.schema import Spec


def load_spec(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Spec:
    """Read, override and validate a spec file; every problem is reported at once."""
    source = str(path)
    try:
        text = _read_text(path)
    except OSError as exc:
        raise SpecError([f"{source}: cannot read the spec: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError:
        raise SpecError([f"{source}: cannot read the spec: not UTF-8 text"]) from None
    return parse_spec(text, source, overrides)


def _read_text(path: str | Path) -> str:
    if "://" in str(path):  # a run's spec.yaml in object storage (swap average --spec s3://...)
        from swap import storage  # pyarrow: only then, `swap validate` stays torch- and arrow-free

        return storage.read_bytes(path).decode()
    return Path(path).read_text()


def parse_spec(text: str, source: str, overrides: list[str] | tuple[str, ...] = ()) -> Spec:
    """Validate spec YAML `text`; `source` names it in error messages."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError([f"{source}: invalid YAML{at}: {problem}"]) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        kind = type(raw).__name__
        raise SpecError([f"{source}: a spec is a mapping of sections, not a {kind}"])
    return spec_from_dict(apply_overrides(raw, overrides, source), source)


def spec_from_dict(raw: dict[str, Any], source: str = "<spec>") -> Spec:
    try:
        spec = Spec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError([_describe(source, error) for error in exc.errors()]) from None
    facts = DATASETS.get(spec.data.dataset)
    if facts is not None and facts.train_size:  # its published size: known before reading it
        check_batch_sizes(spec, facts.train_size, source)
    return spec


def check_batch_sizes(spec: Spec, train_size: int, source: str) -> None:
    """Raise a SpecError if a phase's batch is larger than the training examples left after
    the validation split (out of `train_size`): training drops a partial last batch, so such
    an epoch would have no step at all."""
    held = held_out(train_size, spec.data.val_fraction)
    examples = train_size - held
    of = f"{spec.data.dataset}: {train_size:,}" + (
        f" less {held:,} held out by data.val_fraction" if held else ""
    )
    problems = [
        f"{source}: {field}: {size:,} examples per step is more than the {examples:,} training "
        f"examples ({of}), so an epoch would have no full batch; use at most {examples:,}"
        for field, size in (
            ("phase1.batch_size", spec.phase1.batch_size),
            ("phase2.batch_size", spec.phase2.batch_size),
        )
        if size > examples
    ]
    p2 = spec.phase2
    if p2.swag_rank and examples >= p2.batch_size:
        steps = examples // p2.batch_size
        total, every = steps * p2.epochs, p2.swag_every or steps
        if not snapshot_steps(p2.swag_start, every, total):
            problems.append(
                f"{source}: phase2.swag_start: {p2.swag_start} of a worker's {total:,} steps "
                f"leaves no SWAG snapshot (one every {every:,} steps); start earlier or take "
                "snapshots more often (phase2.swag_every)"
            )
    if problems:
        raise SpecError(problems)


def apply_overrides(raw: dict[str, Any], overrides: list[str] | tuple[str, ...], source: str):
    """Return a copy of `raw` with each dotted `key=value` set; values are parsed as YAML."""
    result = _deep_copy(raw)
    problems = []
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            problems.append(f"{source}: override {item!r}: expected dotted.key=value")
            continue
        try:
            value = yaml.safe_load(text) if text else None
        except yaml.YAMLError:
            value = text
        node = result
        *parents, leaf = key.split(".")
        for depth, part in enumerate(parents):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                section = ".".join(parents[: depth + 1])
                problems.append(f"{source}: override {item!r}: {section} is not a section")
                break
            node = child
        else:
            node[leaf] = value
    if problems:
        raise SpecError(problems)
    return result


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    return value


def _describe(source: str, error: dict[str, Any]) -> str:
    field = ".".join(str(part) for part in error["loc"]) or "(top level)"
    kind = error["type"]
    if kind == "missing":
        return f"{source}: {field}: required field is missing"
    if kind == "extra_forbidden":
        return f"{source}: {field}: unknown field (got {error['input']!r})"
    if kind == "cross_field":  # the input is a whole section: the message says what is wrong
        return f"{source}: {field}: {error['msg']}"
    message = error["msg"].removeprefix("Value error, ").replace("Input should be", "must be")
    if kind == "model_type" or kind == "model_attributes_type":
        message = "must be a section (a mapping of fields)"
    return f"{source}: {field}: {message} (got {error['input']!r})"
