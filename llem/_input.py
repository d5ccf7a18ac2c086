"""Reading what people give llem, within bounds: config text, files, nested data, result content.

Every road into llem passes one of these checks, so a hostile or damaged input gets one
llem error that names it and the fix, never a Python error, a hang or unbounded memory:

- :func:`read_text` reads a config or sweep file: a regular file of at most
  :data:`MAX_FILE_BYTES`, decoded as UTF-8;
- :func:`load_yaml` / :func:`load_json` parse text: YAML through ``yaml.SafeLoader``
  (no Python tags) that also refuses a key given twice in one mapping, nesting deeper
  than :data:`MAX_DEPTH` and integers longer than :data:`MAX_INT_DIGITS` digits; JSON the
  same way;
- :func:`check_data` bounds parsed or Python-built data: depth, a self-reference, and the
  number of values once YAML aliases (shared objects) are expanded (:data:`MAX_VALUES`: an
  alias "bomb" of a few lines expands to billions), counted without expanding anything;
- :func:`check_fields` checks a dict read back from a file against a dataclass's field
  types, raising :class:`FieldError` with the field's path (``runs[0].energy_j``).
"""

from __future__ import annotations

import dataclasses
import os
import stat
import sys
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from llem.errors import ConfigError, LlemError

#: Largest config or sweep file read, bytes.
MAX_FILE_BYTES = 10 * 2**20
#: Deepest nesting of mappings and lists in one field's value (a passthrough dict).
MAX_DEPTH = 64
#: Deepest nesting in a whole document (a config or result file: sections around the values).
MAX_DOC_DEPTH = MAX_DEPTH + 8
_DEPTH_FIX = "Fix: flatten the structure (no llem setting needs that depth)."
#: Most values (mapping keys and values, list items) a config may hold once aliases are expanded.
MAX_VALUES = 1_000_000
#: Longest integer literal read, in digits (every bounded field is far below; Python
#: itself refuses to read integers of more than 4300 digits).
MAX_INT_DIGITS = 100

_SIZE_FIX = "give each value once instead of through nested anchors and aliases"


class InputRefused(ConfigError):
    """Text or data beyond llem's bounds (size, depth, a repeated key, a huge integer)."""


class FieldError(LlemError, ValueError):
    """A value read back from a file does not have its field's type; ``field`` is its path."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}" if field else problem)
        self.field = field
        self.problem = problem

    def within(self, prefix: str) -> FieldError:
        """The same error with ``prefix`` in front of the field's path (``runs[0]``)."""
        if not self.field or self.field.startswith("["):
            return FieldError(prefix + self.field, self.problem)
        return FieldError(f"{prefix}.{self.field}", self.problem)


def short(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters; a huge int as its number of digits."""
    if _huge(value):
        return f"an integer of about {int(value.bit_length() * 0.30103) + 1} digits"
    try:
        text = repr(value)
    except (ValueError, RecursionError):
        return f"a {type(value).__name__}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _huge(value: Any) -> bool:
    """An int of more than about :data:`MAX_INT_DIGITS` digits."""
    return isinstance(value, int) and not isinstance(value, bool) and (
        value.bit_length() > 3.33 * MAX_INT_DIGITS)


# ------------------------------------------------------------------------------ files
class FileProblem(Exception):
    """Why :func:`read_capped` would not read a file; each caller words it for its input.

    ``reason`` is ``"missing"``, ``"unreadable"`` (``exc`` holds the OS error),
    ``"not_regular"`` (``mode`` is the file's mode; ``through_link`` when a symbolic link
    led there) or ``"too_big"`` (``size`` in bytes, at least).
    """

    def __init__(self, reason: str, *, exc: BaseException | None = None, mode: int = 0,
                 size: int = 0, through_link: bool = False) -> None:
        super().__init__(reason)
        self.reason, self.exc, self.mode, self.size, self.through_link = reason, exc, mode, size, through_link


def read_capped(path: str | os.PathLike[str], max_bytes: int) -> bytes:
    """The bytes of ``path``: a regular file (a link is followed) of at most ``max_bytes``.

    The file is opened non-blocking and checked again once open, so a FIFO or device put
    in its place meanwhile can neither hang the read nor be read without bound.

    Raises
    ------
    FileProblem
        With the reason; the caller turns it into its own llem error.
    """
    p = Path(path)
    try:
        st = os.stat(p)  # follows a symbolic link: what it points at is what counts
    except FileNotFoundError:
        raise FileProblem("missing") from None
    except (OSError, ValueError) as exc:
        raise FileProblem("unreadable", exc=exc) from None
    if not stat.S_ISREG(st.st_mode):
        raise FileProblem("not_regular", mode=st.st_mode, through_link=p.is_symlink())
    if st.st_size > max_bytes:
        raise FileProblem("too_big", size=st.st_size)
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except OSError as exc:
        raise FileProblem("unreadable", exc=exc) from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise FileProblem("not_regular", mode=st.st_mode)
        try:
            data = f.read(max_bytes + 1)
        except OSError as exc:
            raise FileProblem("unreadable", exc=exc) from None
    if len(data) > max_bytes:
        raise FileProblem("too_big", size=len(data))
    return data


def read_text(path: str | os.PathLike[str], what: str = "config file",
              error: type[LlemError] = ConfigError, max_bytes: int = MAX_FILE_BYTES) -> str:
    """The text of ``path``: a regular file of at most ``max_bytes`` bytes, in UTF-8.

    Raises ``error`` (a :class:`~llem.errors.ConfigError` by default) naming the file for a
    missing file, a folder, a FIFO or device, a file too large, one that cannot be read,
    or one that is not UTF-8 text.
    """
    p = Path(path)
    name = f"{what} {str(p)!r}"
    try:
        data = read_capped(p, max_bytes)
    except FileProblem as problem:
        if problem.reason == "missing":
            raise error(f"{name} does not exist") from None
        if problem.reason == "unreadable":
            raise error(f"{name} cannot be read ({_os_reason(problem.exc)}). Fix: give the path "
                        "of a readable file.") from None
        if problem.reason == "not_regular":
            kind = "a folder" if stat.S_ISDIR(problem.mode) else "not a regular file"
            raise error(f"{name} is {kind}. Fix: give the path of a YAML or JSON file.") from None
        raise error(f"{name} is {problem.size:,} bytes, more than llem reads ({max_bytes:,}). "
                    "Fix: give a smaller file (a config is a few kB).") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{name} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
                    f"{exc.start}). Fix: save it as UTF-8.") from None


def _os_reason(exc: BaseException | None) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


# ------------------------------------------------------------------------------- YAML
_LOADER: Any = None


def _loader() -> Any:
    """The bounded YAML loader class (made on first use: yaml is imported only then)."""
    global _LOADER
    if _LOADER is not None:
        return _LOADER
    import yaml

    class Refusal(yaml.MarkedYAMLError):
        """A llem bound, raised while parsing so the position is known."""

    class BoundedLoader(yaml.SafeLoader):
        """``yaml.SafeLoader`` that refuses repeated keys, deep nesting and huge integers."""

        _depth = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            self._depth += 1
            try:
                if self._depth > MAX_DOC_DEPTH:
                    raise Refusal(None, None, f"the values are nested more than {MAX_DOC_DEPTH} "
                                  f"levels deep. {_DEPTH_FIX[:-1]}", self.peek_event().start_mark)
                return super().compose_node(parent, index)
            finally:
                self._depth -= 1

        def compose_mapping_node(self, anchor: Any) -> Any:
            node = super().compose_mapping_node(anchor)
            seen: dict[tuple[str, str], Any] = {}
            for key, _ in node.value:
                if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
                    continue
                ident = (key.tag, key.value)
                if ident in seen:
                    first = seen[ident].line + 1
                    raise Refusal(None, None, f"the key {short(key.value)} is given twice in one "
                                  f"mapping (lines {first} and {key.start_mark.line + 1}); llem "
                                  "does not let the last one win silently. Fix: keep one",
                                  key.start_mark)
                seen[ident] = key.start_mark
            return node

        def construct_yaml_int(self, node: Any) -> Any:
            digits = sum(c.isdigit() for c in str(node.value))
            if digits > MAX_INT_DIGITS:
                raise Refusal(None, None, f"an integer of {digits} digits; llem reads integers "
                              f"of at most {MAX_INT_DIGITS} digits. Fix: give a value within the "
                              "field's bounds", node.start_mark)
            return super().construct_yaml_int(node)

    BoundedLoader.add_constructor("tag:yaml.org,2002:int", BoundedLoader.construct_yaml_int)
    BoundedLoader.Refusal = Refusal  # type: ignore[attr-defined]
    _LOADER = BoundedLoader
    return _LOADER


def parse_yaml(text: str) -> Any:
    """YAML ``text`` as data, within bounds; syntax errors are ``yaml.YAMLError``.

    A bound crossed (a repeated key, nesting, a huge integer, too many values once aliases
    are expanded) raises :class:`InputRefused` with the line; :func:`load_yaml` also turns
    syntax errors into a :class:`~llem.errors.ConfigError`.
    """
    loader_cls = _loader()
    loader = loader_cls(text)
    try:
        data = loader.get_single_data()
    except loader_cls.Refusal as exc:
        line = f"line {exc.problem_mark.line + 1}: " if exc.problem_mark is not None else ""
        raise InputRefused(f"{line}{exc.problem}.") from None
    except RecursionError:
        raise InputRefused(f"the values are nested more than {MAX_DOC_DEPTH} levels deep. "
                           f"{_DEPTH_FIX}") from None
    finally:
        loader.dispose()
    check_data(data, max_depth=MAX_DOC_DEPTH)
    return data


def load_yaml(text: str, what: str = "the config") -> Any:
    """YAML ``text`` as data, within bounds; every problem is a ConfigError naming ``what``."""
    import yaml

    try:
        return parse_yaml(text)
    except InputRefused as exc:
        raise InputRefused(f"{what}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} is not valid YAML: {exc}") from None


# ------------------------------------------------------------------------------- JSON
def load_json(text: str, what: str = "the config", error: type[LlemError] = ConfigError) -> Any:
    """JSON ``text`` as data, within the same bounds as :func:`load_yaml`; errors are ``error``."""
    import json

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in items:
            if k in out:
                raise InputRefused(f"the key {short(k)} is given twice in one object. Fix: keep one.")
            out[k] = v
        return out

    def integer(s: str) -> int:
        if len(s.lstrip("-")) > MAX_INT_DIGITS:
            raise InputRefused(f"an integer of {len(s.lstrip('-'))} digits; llem reads integers of "
                               f"at most {MAX_INT_DIGITS} digits. Fix: give a value within the "
                               "field's bounds.")
        return int(s)

    try:
        data = json.loads(text, object_pairs_hook=pairs, parse_int=integer)
        check_data(data, max_depth=MAX_DOC_DEPTH)
    except InputRefused as exc:
        raise error(f"{what}: {exc}") from None
    except RecursionError:
        raise error(f"{what}: the values are nested more than {MAX_DOC_DEPTH} levels deep. "
                    f"{_DEPTH_FIX}") from None
    except json.JSONDecodeError as exc:
        raise error(f"{what} is not valid JSON (line {exc.lineno}: {exc.msg}).") from None
    return data


# ------------------------------------------------------------------------------- data
def check_data(data: Any, what: str = "", *, max_depth: int = MAX_DEPTH,
               max_values: int = MAX_VALUES) -> None:
    """Refuse data nested deeper than ``max_depth``, holding itself, or too large once expanded.

    Shared objects (what YAML aliases make) are counted each time they occur, as a JSON
    dump or a config hash would write them, but each is walked once, so an alias bomb
    is refused in microseconds. Integers longer than :data:`MAX_INT_DIGITS` are refused too.

    Raises
    ------
    InputRefused
        Naming ``what`` (``experiment.passthrough``) when given, the bound and the fix.
    """
    where = f"{what}: " if what else ""
    if not isinstance(data, (Mapping, list, tuple)):
        _check_leaf(data, where)
        return
    sizes: dict[int, int] = {}
    active: set[int] = set()
    # each frame: [container, its children, index of the next child, values counted so far]
    frames: list[list[Any]] = []

    def push(node: Any) -> None:
        if len(frames) >= max_depth:
            raise InputRefused(f"{where}the values are nested more than {max_depth} levels deep. "
                               f"{_DEPTH_FIX}")
        children = [*node.keys(), *node.values()] if isinstance(node, Mapping) else list(node)
        active.add(id(node))
        frames.append([node, children, 0, 1])

    push(data)
    while frames:
        frame = frames[-1]
        node, children, i, _ = frame
        if i == len(children):
            frames.pop()
            active.discard(id(node))
            sizes[id(node)] = frame[3]
            if frames:
                frames[-1][3] += frame[3]
                if frames[-1][3] > max_values:
                    _too_many(where, max_values)
            continue
        frame[2] = i + 1
        child = children[i]
        if isinstance(child, (Mapping, list, tuple)):
            if id(child) in sizes:
                frame[3] += sizes[id(child)]
            elif id(child) in active:
                raise InputRefused(f"{where}the data holds itself (a recursive alias). Fix: "
                                   "give each value once.")
            else:
                push(child)
                continue
        else:
            _check_leaf(child, where)
            frame[3] += 1
        if frame[3] > max_values:
            _too_many(where, max_values)


def _too_many(where: str, max_values: int) -> None:
    raise InputRefused(f"{where}the values expand to more than {max_values:,} items (YAML "
                       f"aliases are expanded when a config is saved or hashed). Fix: {_SIZE_FIX}.")


def _check_leaf(value: Any, where: str) -> None:
    if _huge(value):
        raise InputRefused(f"{where}{short(value)}; llem takes integers of at most "
                           f"{MAX_INT_DIGITS} digits. Fix: give a value within the field's bounds.")


# ----------------------------------------------------------------------- dataclasses
_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        try:
            _HINTS[cls] = typing.get_type_hints(cls, vars(sys.modules[cls.__module__]))
        except Exception:  # noqa: BLE001 - an annotation that cannot be resolved is not checked
            _HINTS[cls] = {}
    return _HINTS[cls]


def check_fields(cls: type, data: Any) -> None:
    """Check ``data`` (a dict read from a file) against the fields of dataclass ``cls``.

    A field that is missing (and has no default) or holds a value of another type (a
    string where a number belongs, a number where a list belongs) raises
    :class:`FieldError` naming the field. Fields typed ``Any`` are not checked; a field
    holding another dataclass is checked to be a mapping (its own ``from_dict`` checks it).
    """
    if not isinstance(data, Mapping):
        raise FieldError("", f"expected a mapping of fields, not {_described(data)}")
    hints = _hints(cls)
    for f in dataclasses.fields(cls):
        if f.name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise FieldError(f.name, "is missing")
            continue
        tp = hints.get(f.name, Any)
        problem = _type_problem(data[f.name], tp)
        if problem:
            raise FieldError(f.name, problem)


def check_row(cls: type, row: Any) -> None:
    """Check ``row`` (a list read from a file) against the fields of dataclass ``cls``, in order."""
    if not isinstance(row, (list, tuple)):
        raise FieldError("", f"expected a list of values, not {_described(row)}")
    names = [f.name for f in dataclasses.fields(cls)]
    if len(row) > len(names):
        raise FieldError("", f"holds {len(row)} values, more than its {len(names)} fields")
    check_fields(cls, dict(zip(names, row)))


def build_within(prefix: str, build: Any, data: Any) -> Any:
    """``build(data)``, with a :class:`FieldError`'s field path put under ``prefix``."""
    try:
        return build(data)
    except FieldError as exc:
        raise exc.within(prefix) from None


def build_each(build: Any, items: Any, name: str) -> list[Any]:
    """``build`` applied to each item of the list field ``name`` (errors name ``runs[2]...``)."""
    return [build_within(f"{name}[{i}]", build, item) for i, item in enumerate(items)]


def build_row(cls: type, row: Any) -> Any:
    """``cls(*row)`` for a row of values read from a file, after :func:`check_row`."""
    check_row(cls, row)
    return cls(*row)


_WORDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
          type(None): "null"}


def _type_problem(value: Any, tp: Any) -> str | None:
    """Why ``value`` is not of type ``tp`` (None when it is, or when ``tp`` is not checked)."""
    if tp is Any:
        return None
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        problems = [_type_problem(value, a) for a in typing.get_args(tp)]
        if any(p is None for p in problems):
            return None
        words = [_WORDS.get(a, getattr(a, "__name__", str(a))) for a in typing.get_args(tp)]
        return f"holds {_described(value)} where {' or '.join(words)} belongs"
    if tp in _WORDS:
        ok = {
            int: isinstance(value, int) and not isinstance(value, bool),
            float: isinstance(value, (int, float)) and not isinstance(value, bool),
            str: isinstance(value, str),
            bool: isinstance(value, bool),
            type(None): value is None,
        }[tp]
        return None if ok else f"holds {_described(value)} where {_WORDS[tp]} belongs"
    if origin in (tuple, list) or tp in (tuple, list):
        if not isinstance(value, (list, tuple)):
            return f"holds {_described(value)} where a list belongs"
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        if len(args) == 1:
            for i, item in enumerate(value):
                problem = _type_problem(item, args[0])
                if problem:
                    return f"item {i} {problem}"
        return None
    if dataclasses.is_dataclass(tp):  # read by its own from_dict: a mapping, or a row of values
        if not isinstance(value, (Mapping, list, tuple)):
            return f"holds {_described(value)} where a mapping belongs"
    elif origin in (dict, Mapping) or tp in (dict, Mapping):
        if not isinstance(value, Mapping):
            return f"holds {_described(value)} where a mapping belongs"
    return None


def _described(value: Any) -> str:
    return f"the {type(value).__name__} {short(value, 40)}"


__all__ = [
    "MAX_DEPTH", "MAX_DOC_DEPTH", "MAX_FILE_BYTES", "MAX_INT_DIGITS", "MAX_VALUES", "FieldError",
    "InputRefused", "build_each", "build_row", "build_within", "check_data", "check_fields",
    "check_row", "load_json", "load_yaml", "parse_yaml", "read_text", "short",
]
