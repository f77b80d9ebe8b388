"""Reading fields of the JSON export with their types checked, so a bad file names the bad field."""

from __future__ import annotations

import json
import math
from typing import Any, Callable, Mapping

from ..errors import ConfigurationError

SCHEMA_HINT = (
    "benchmark files are ringkernel's JSON export (schema in docs/benchmark.md): the results.json of "
    "`ringkernel bench run --out DIR`, or a file written by BenchmarkSuite.save_baseline(); re-create it"
)

MISSING: Any = object()


def describe(value: Any) -> str:
    """``'1.5'`` -> ``a string '1.5'``: the JSON kind of a value and (the start of) its text."""
    if value is MISSING:
        return "nothing (the field is missing)"
    if value is None:
        return "null"
    if isinstance(value, bool):
        kind = "a boolean"
    elif isinstance(value, (int, float)):
        kind = "a number"
    elif isinstance(value, str):
        kind = "a string"
    elif isinstance(value, (list, tuple)):
        kind = "a list"
    elif isinstance(value, Mapping):
        kind = "an object"
    else:
        kind = f"a {type(value).__name__}"
    try:
        text = json.dumps(value)  # the file's own spelling: "1.5", not '1.5'
    except (TypeError, ValueError):
        text = repr(value)
    return f"{kind} {text if len(text) <= 60 else text[:57] + '...'}"


def field_error(field: str, expected: str, value: Any) -> ConfigurationError:
    """The error for one field: its path (``results[0].measurement_times_ms[3]``), what it must be, what it is."""
    return ConfigurationError(
        f"field '{field or '(top level)'}' must be {expected}, got {describe(value)}",
        hint=SCHEMA_HINT,
        details={"field": field, "expected": expected},
    )


def join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite JSON number (bools are not numbers here)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_str(value: Any) -> bool:
    return isinstance(value, str)


def get(
    data: Mapping[str, Any], key: str, where: str, expected: str, ok: Callable[[Any], bool], *, optional: bool = False
) -> Any:
    """``data[key]`` if ``ok`` accepts it; ``None`` for a missing or null optional field; else a ``field_error``."""
    value = data.get(key, MISSING)
    if optional and (value is MISSING or value is None):
        return None
    if value is MISSING or not ok(value):
        raise field_error(join(where, key), expected, value)
    return value


def require_object(value: Any, where: str, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise field_error(where, f"an object ({what})", value)
    return value


MAX_WORKLOAD = 2**63 - 1  # (a size must survive float arithmetic and other tools' 64-bit integers)


def json_ready(value: Any, where: str = "value") -> Any:
    """``value`` as plain JSON data: NumPy scalars and arrays become numbers and lists, NaN and
    infinities ``null`` (bare ``NaN`` is not JSON: other parsers refused the files; an
    adversarial trial), tuples lists. Anything else raises a ConfigurationError that names
    where it is, before any file is written."""
    import numpy as np

    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if isinstance(k, np.generic):
                k = k.item()
            if isinstance(k, (bool, int, float)) or k is None:
                k = json.dumps(k)  # as json.dumps writes such keys: 1024 -> "1024", True -> "true"
            elif not isinstance(k, str):
                raise ConfigurationError(f"{where}: key {k!r} is not a string or a number",
                                         hint="use string (or number) keys in metadata")  # fmt: skip
            out[k] = json_ready(v, f"{where}[{k!r}]")
        return out
    if isinstance(value, (list, tuple)):
        return [json_ready(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise ConfigurationError(
        f"{where} is a {type(value).__name__} ({value!r:.60}), which a results file cannot hold",
        hint="use numbers, strings, booleans, lists and dicts of them (NumPy numbers are converted)",
    )


def json_text(doc: Any) -> str:
    """``doc`` as indented JSON, through :func:`json_ready` (never bare NaN)."""
    return json.dumps(json_ready(doc, "the document"), indent=2, allow_nan=False) + "\n"
