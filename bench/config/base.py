"""The config layer's foundation: strict models, YAML reading, the config directory, stable hashes
and the one pydantic-error formatter that turns a validation problem into one line.

Why one formatter: every config file (sweeps, hardware, prices, models) reports a bad field the
same way, `<file>: <dotted.field>: <reason>`, naming the allowed fields for a typo.
"""

from __future__ import annotations

import hashlib
import json
import os
import typing
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from bench.errors import UserInputError

PACKAGE_DIR = Path(__file__).resolve().parent.parent  # bench/
REPO_ROOT = PACKAGE_DIR.parent
PACKAGED_CONFIG_DIR = PACKAGE_DIR / "_configs"  # filled from configs/ when a wheel is built (setup.py)


def _shipped_config_dir() -> Path:
    """The configs that ship with the code: bench/_configs in an installed wheel, else the repo's
    configs/ (a source checkout or an editable install, where users edit configs/ directly)."""
    return PACKAGED_CONFIG_DIR if PACKAGED_CONFIG_DIR.is_dir() else REPO_ROOT / "configs"


CONFIG_DIR = _shipped_config_dir()
CONFIG_DIR_ENV = "MAAS_BENCH_CONFIG_DIR"
_user_config_dir: Path | None = None


class StrictModel(BaseModel):
    # allow_inf_nan=False: `.inf`/`.nan` in a config is always a mistake (a rate of .inf would start a
    # server and then spin); rejected with the field's name like any other bad value.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def one_of(field: str, value: str, allowed: tuple[str, ...]) -> str:
    """`value` when it is in `allowed`, else a ValueError naming the field and the allowed values
    (the shared body of config validators; pydantic turns it into one line via format_validation_error)."""
    if value not in allowed:
        raise ValueError(f"{field} must be one of {', '.join(allowed)} (got {value!r})")
    return value


def one_of_validator(field: str, allowed: tuple[str, ...]) -> Any:
    """A pydantic field validator running `one_of` on `field`; in a model body:
    `_dtype = one_of_validator("dtype", DTYPES)`. Why: every enum-like string field of a config is
    checked the same way, so the check is written once instead of a three-line method per field."""

    def check(cls: type, value: str) -> str:
        return one_of(field, value, allowed)

    return field_validator(field)(check)


def stable_hash(obj: Any, length: int = 12) -> str:
    """Hash of a JSON-able object that does not depend on dict order or Python version."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


# Bounds on every YAML file read (`read_yaml`): past them the file is refused, one line, before it is built.
MAX_YAML_BYTES = 10 * 1024 * 1024  # the shipped configs are < 100 KB; a bigger file is not a config file
MAX_YAML_NODES = 1_000_000  # values after alias expansion: a 722-byte "billion laughs" file expands to 2 GB
MAX_YAML_DEPTH = 100  # nesting levels (aliases included): configs nest < 10; PyYAML recurses per level


class _YamlLimitError(Exception):
    """A YAML file past one of the bounds above; the message says which (read_yaml adds the file)."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects a key given twice in one mapping (PyYAML silently keeps the last), and a
    document nested deeper than MAX_YAML_DEPTH while it is composed (PyYAML's composer recurses per level,
    so thousands of levels were a RecursionError)."""

    _depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self._depth += 1
        try:
            if self._depth > MAX_YAML_DEPTH:
                line = self.peek_event().start_mark.line + 1  # type: ignore[no-untyped-call]
                raise _YamlLimitError(f"line {line}: nested deeper than {MAX_YAML_DEPTH} levels "
                                      "(MAX_YAML_DEPTH)")
            return super().compose_node(parent, index)  # type: ignore[no-untyped-call]
        finally:
            self._depth -= 1


def _construct_unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)  # type: ignore[no-untyped-call]
        try:
            dup = key in seen
        except TypeError:  # an unhashable key: the base constructor reports it
            break
        if dup:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (each key may appear once per mapping)", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def _load_bounded(text: str) -> Any:
    """Compose the document (depth bounded while composing), bound its size after alias expansion, then
    build it. PyYAML builds an aliased value once and shares it, so a bomb costs nothing until something
    walks it (hashing, validation, a dump): hence the count over the expanded tree, before building."""
    loader = _UniqueKeyLoader(text)
    try:
        node = loader.get_single_node()  # type: ignore[no-untyped-call]
        if node is None:
            return None
        _check_expanded(node)
        return loader.construct_document(node)  # type: ignore[no-untyped-call]
    finally:
        loader.dispose()  # type: ignore[no-untyped-call]


def _check_expanded(root: yaml.Node) -> None:
    """Raise _YamlLimitError when the tree `root` stands for, every alias expanded, has more than
    MAX_YAML_NODES nodes or is deeper than MAX_YAML_DEPTH. Each node is walked once (its size and
    height are remembered), so a bomb is refused in microseconds; recursion stays within the depth bound."""
    seen: dict[int, tuple[int, int]] = {}  # id(node) -> (expanded size, height)
    on_path: set[int] = set()

    def too_deep(node: yaml.Node) -> _YamlLimitError:
        return _YamlLimitError(f"line {node.start_mark.line + 1}: nested deeper than {MAX_YAML_DEPTH} levels "
                               "once aliases are expanded (MAX_YAML_DEPTH)")

    def walk(node: yaml.Node, depth: int) -> tuple[int, int]:
        key = id(node)
        if key in on_path:
            raise _YamlLimitError(f"line {node.start_mark.line + 1}: an alias refers to a value that contains it "
                                  "(a recursive document)")
        known = seen.get(key)
        if known is not None:
            if depth + known[1] - 1 > MAX_YAML_DEPTH:
                raise too_deep(node)
            return known
        if depth > MAX_YAML_DEPTH:
            raise too_deep(node)
        if isinstance(node, yaml.SequenceNode):
            children: list[yaml.Node] = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [part for pair in node.value for part in pair]
        else:
            children = []
        on_path.add(key)
        size, height = 1, 1
        for child in children:
            c_size, c_height = walk(child, depth + 1)
            size += c_size
            height = max(height, c_height + 1)
            if size > MAX_YAML_NODES:
                raise _YamlLimitError(f"more than {MAX_YAML_NODES:,} values once aliases are expanded "
                                      "(MAX_YAML_NODES; an alias bomb?)")
        on_path.discard(key)
        seen[key] = (size, height)
        return size, height

    walk(root, 1)


def read_yaml(path: Path) -> Any:
    """Read a YAML file; every way it can be unreadable becomes a one-line UserInputError.

    Why all here: every config file goes through this one function, so a directory, a file that
    is not UTF-8, a NUL byte, a syntax error, a key given twice (PyYAML would silently keep the
    last value) and a file past the bounds (MAX_YAML_BYTES, MAX_YAML_NODES, MAX_YAML_DEPTH) are
    reported the same way for sweeps, hardware, prices and models.
    """
    path = Path(path)
    if path.is_dir():
        raise UserInputError(f"{path}: is a directory, not a YAML file")
    if not path.is_file():
        raise UserInputError(f"{path}: no such file")
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_YAML_BYTES + 1)  # never more than the bound, whatever the file's size
        if len(raw) > MAX_YAML_BYTES:
            raise UserInputError(f"{path}: larger than {MAX_YAML_BYTES // (1024 * 1024)} MB (MAX_YAML_BYTES); "
                                 "not a config file")
    except OSError as e:
        raise UserInputError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise UserInputError(f"{path}: line {line}: not valid UTF-8 (byte 0x{raw[e.start]:02x} at offset "
                             f"{e.start}); save the file as UTF-8") from None
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise UserInputError(f"{path}: line {line}: contains a NUL byte; a YAML file must be text")
    try:
        return _load_bounded(text)
    except _YamlLimitError as e:
        raise UserInputError(f"{path}: {e}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = " ".join(str(getattr(e, "problem", None) or e).split())
        raise UserInputError(f"{path}:{where} invalid YAML: {problem}") from None


class FirstError(typing.NamedTuple):
    """The first problem of a pydantic ValidationError, read once (`first_error`)."""

    loc: tuple[int | str, ...]  # pydantic's location of the bad value
    field: str  # the location as a dotted path ("" for a whole-model check)
    msg: str  # the reason, without pydantic's "Value error, " prefix; for an unknown field, the allowed ones
    raw_msg: str  # the reason exactly as pydantic wrote it
    more: str  # " (+N more)" when pydantic found more problems, else ""


def first_error(err: ValidationError, root: type[BaseModel] | None = None) -> FirstError:
    """The first problem of `err`: THE one reader of a pydantic error (`format_validation_error` and the
    loaders with a line of their own build on it). With `root` (the model validated), an unknown field's
    reason names the fields allowed at that place."""
    errors = err.errors()
    first = errors[0]
    loc = tuple(first["loc"])
    msg = first["msg"].removeprefix("Value error, ")
    if root is not None and first["type"] == "extra_forbidden":
        model: Any = root
        for part in loc[:-1]:
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
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return FirstError(loc, ".".join(str(p) for p in loc), msg, first["msg"], more)


def format_validation_error(path: Path | str, err: ValidationError, root: type[BaseModel] | None = None, *,
                            field: str = "", sep: str = ": ", top_level: str | None = None, raw: bool = False,
                            more: bool = True) -> str:
    """One line: file, dotted field path, reason; for unknown fields, the allowed field names.

    The default line is `<path>: <dotted.field>: <reason> (+N more)`, or `<path>: <reason>` for a
    whole-model check (its message names the fields itself). The keywords are the few frames the
    loaders use around the same reading of the error:
    `field` prefixes the dotted path (`tiny.hyperparameters`); `sep` joins `path` and the field
    (`server` + "." + `max_num_seqs`); `top_level` stands for an empty field path instead of leaving the
    field out; `raw` keeps pydantic's own message ("Value error, ..."); `more=False` leaves out the
    count of further problems.
    """
    first = first_error(err, root)
    where = ".".join(x for x in (field, first.field) if x)
    msg = (first.raw_msg if raw else first.msg) + (first.more if more else "")
    if not where:
        if top_level is None and not first.loc:
            return f"{path}: {msg}"
        where = "(top level)" if top_level is None else top_level
    return f"{path}{sep}{where}: {msg}"


# --- the user's config directory, layered over the shipped one ---------------------------------


def set_user_config_dir(path: str | Path | None) -> None:
    """Use `path` (the CLI's global `--config-dir`) as the user's config directory; None clears it
    (then $MAAS_BENCH_CONFIG_DIR applies). Its hardware.yaml, prices.yaml, roofline.yaml and
    models/*.yaml override the shipped entries by id; everything else stays as shipped."""
    global _user_config_dir
    if path is not None:
        path = Path(path).expanduser()
        if not path.is_dir():
            raise UserInputError(f"--config-dir: {path} is not a directory")
    _user_config_dir = path


def user_config_dir() -> Path | None:
    """The directory set by `set_user_config_dir`, else $MAAS_BENCH_CONFIG_DIR, else None."""
    if _user_config_dir is not None:
        return _user_config_dir
    env = os.environ.get(CONFIG_DIR_ENV)
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise UserInputError(f"{CONFIG_DIR_ENV}: {path} is not a directory")
        return path
    return None


def user_config_file(name: str) -> Path | None:
    """`name` in the user's config directory, when there is one and it holds that file."""
    d = user_config_dir()
    return d / name if d is not None and (d / name).is_file() else None


M = typing.TypeVar("M", bound=BaseModel)


def _mapping(path: Path, data: Any, shape: str) -> dict[str, Any]:
    if data is None:  # an empty file (or only comments): no entries
        return {}
    if not isinstance(data, dict):
        raise UserInputError(f"{path}: {shape}")
    return data


def load_config(name: str, root: type[M], keyed: tuple[str, ...], shape: str, path: str | Path | None = None) -> M:
    """Load one config file into `root`: the shipped `name`, with the user's `name` layered over it.

    Why one loader: hardware, prices and the roofline factors are all "a mapping of sections, some
    of them keyed by id"; the user's file replaces whole entries of a `keyed` section by id (a GPU,
    a price key) and whole values of other top-level keys. An explicit `path` loads that file alone.
    Problems become one line naming the file the bad entry came from.
    """
    if path is not None:
        path = Path(path)
        data, layers = _mapping(path, read_yaml(path), shape), [(path, None)]
    else:
        path = CONFIG_DIR / name
        data = dict(_mapping(path, read_yaml(path), shape))
        layers = [(path, None)]
        user = user_config_file(name)
        if user is not None:
            over = _mapping(user, read_yaml(user), shape)
            for k, v in over.items():
                if k in keyed and isinstance(v, dict) and isinstance(data.get(k), dict):
                    data[k] = {**data[k], **v}
                else:
                    data[k] = v
            layers.append((user, over))
    try:
        return root(**data)
    except ValidationError as e:
        loc = first_error(e).loc
        where = layers[0][0]
        for file, over in layers[1:]:
            if over and loc and loc[0] in over and (
                loc[0] not in keyed or len(loc) < 2 or loc[1] in (over[loc[0]] or {})
            ):
                where = file
        raise UserInputError(format_validation_error(where, e, root)) from None
