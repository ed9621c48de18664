"""A user's own functions, named "package.module:function" in a spec: import them and call them.

Run: python -c "from swap.user_code import import_function; print(import_function('math:sqrt'))"
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable
from typing import Any

# "package.module:function", the function part possibly an attribute path ("module:Class.build").
REFERENCE = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def is_reference(value: str) -> bool:
    """True for the "package.module:function" form (anything with a colon is meant as one)."""
    return ":" in value


def import_function(reference: str) -> Callable[..., Any]:
    """Import `reference` and return the callable it names; ValueError says what went wrong."""
    if not REFERENCE.fullmatch(reference):
        raise ValueError("expected 'package.module:function'")
    module_name, _, attributes = reference.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as exc:  # an ImportError, or whatever the module raises on import
        raise ValueError(f"cannot import {module_name!r}: {type(exc).__name__}: {exc}") from None
    for attribute in attributes.split("."):
        if not hasattr(target, attribute):
            raise ValueError(f"{module_name!r} has no attribute {attributes!r}")
        target = getattr(target, attribute)
    if not callable(target):
        raise ValueError(f"{reference!r} is not callable")
    return target


def call_with_accepted(function: Callable[..., Any], always: dict[str, Any], **optional: Any):
    """Call `function` with the keywords in `always` and those of `optional` it names.

    `always` keywords also go to a function that takes `**kwargs`; `optional` ones only to a
    function with a parameter of that name, so a builder that forwards `**kwargs` to a module's
    constructor (torchvision's do) never receives one it does not know.
    """
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):  # some builtins have no signature: pass only `always`
        return function(**always)
    named = {k: v for k, v in optional.items() if k in parameters}
    return function(**always, **named)


def accepts(function: Callable[..., Any], name: str) -> bool:
    try:
        return name in inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False
