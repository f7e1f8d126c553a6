"""The config layer's foundation: strict models, YAML reading, the config directory, stable hashes
and the one pydantic-error formatter that turns a validation problem into one line.

Why one formatter: every config file (sweeps, hardware, prices, models) reports a bad field the
same way, `<file>: <dotted.field>: <reason>`, naming the allowed fields for a typo.
"""

from __future__ import annotations

import hashlib
import json
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from bench.errors import UserInputError

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
CONFIG_DIR = REPO_ROOT / "configs"


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def stable_hash(obj: Any, length: int = 12) -> str:
    """Hash of a JSON-able object that does not depend on dict order or Python version."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def read_yaml(path: Path) -> Any:
    """Read a YAML file; a missing file or a syntax error becomes a one-line UserInputError."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{path}: no such file")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise UserInputError(f"{path}:{where} invalid YAML: {getattr(e, 'problem', e)}") from None



def format_validation_error(path: Path, err: ValidationError, root: type[BaseModel]) -> str:
    """One line: file, dotted field path, reason; for unknown fields, the allowed field names."""
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        model: Any = root
        for part in first["loc"][:-1]:
            if isinstance(part, int) or not hasattr(model, "model_fields"):
                continue
            field = model.model_fields.get(part)
            if field is None:
                continue  # a dict key (GPU id, tier name, price key): stay on the value type
            ann = field.annotation
            candidates = [ann, *typing.get_args(ann)]
            for c in list(candidates):
                candidates += list(typing.get_args(c))
            model = next((c for c in candidates if hasattr(c, "model_fields")), ann)
        allowed = list(getattr(model, "model_fields", {}))
        msg = f"unknown field; allowed: {', '.join(allowed)}"
    elif first["type"] == "literal_error":
        msg = first["msg"]
    more = f" (+{len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"{path}: {loc}: {msg}{more}"

