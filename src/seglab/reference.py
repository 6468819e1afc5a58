"""The config and CLI references in docs/, generated from the code so they cannot drift: every config key with
its type, default and the comments written beside it in the schema (config/schema.py, config/data.py), and
every command's help from the parser. `python -m seglab.reference [DOCS_DIR]` rewrites
docs/config-reference.md and docs/cli-reference.md; tests/test_reference.py fails when they are stale."""
from __future__ import annotations

import argparse
import ast
import inspect
import io
import os
import re
import sys
import textwrap
import tokenize
import types
import typing
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

HELP_WIDTH = 100  # argparse wraps help to the terminal; a fixed width keeps the generated file stable

CONFIG_FILE, CLI_FILE = "config-reference.md", "cli-reference.md"


def _described(cls: type) -> dict[str, str]:
    """Field name -> its text: the comments beside it in the class's source, else a `name: text` entry of the
    docstring of the class or a base (where a section describes its fields together)."""
    out: dict[str, str] = {}
    for klass in reversed([k for k in cls.__mro__ if issubclass(k, BaseModel) and k is not BaseModel]):
        out.update(_docstring_entries(klass, set(cls.model_fields)))
        out.update({k: v for k, v in _comments(klass).items() if v})
    return out


def _docstring_entries(cls: type, names: set[str]) -> dict[str, str]:
    """`name: text` paragraphs of a class docstring whose name is one of `names`."""
    out: dict[str, str] = {}
    current: Optional[str] = None
    for line in (cls.__dict__.get("__doc__") or "").splitlines():
        text = line.strip()
        head = re.match(r"`?(\w+)`?: (.*)", text)
        if head and head.group(1) in names:
            current = head.group(1)
            out[current] = head.group(2)
        elif current and text:
            out[current] += " " + text
        else:
            current = None
    return out


def _comments(cls: type) -> dict[str, str]:
    """Field name -> the comments written above it (and on its own lines) in the class's source."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    lines = source.splitlines()
    by_line: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            by_line[tok.start[0]] = tok.string.lstrip("#").strip()
    out: dict[str, str] = {}
    body = ast.parse(source).body[0]
    for node in getattr(body, "body", []):
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        above, n = [], node.lineno - 1
        while n >= 1 and lines[n - 1].strip().startswith("#"):
            above.insert(0, by_line.get(n, ""))
            n -= 1
        inline = [by_line[k] for k in range(node.lineno, (node.end_lineno or node.lineno) + 1) if k in by_line]
        out[node.target.id] = " ".join(t for t in above + inline if t)
    return out


def _models_in(tp: Any) -> list[type]:
    """The pydantic sections a field's type holds (Optional[X], list[X], dict[str, X] included)."""
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [tp]
    return [m for arg in typing.get_args(tp) for m in _models_in(arg)]


def _type_name(tp: Any) -> str:
    """A field's type as a reader writes it: 'int', 'float | null', "'max' | 'min'", 'list of str'."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is type(None):
        return "null"
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin in (list, tuple, set):
        inner = ", ".join(_type_name(a) for a in args if a is not Ellipsis)
        return f"list of {inner}" if inner else "list"
    if origin is dict:
        return f"mapping {_type_name(args[0])} -> {_type_name(args[1])}" if args else "mapping"
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return "section"
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _default(field: Any) -> str:
    from .config.loading import yaml_inline

    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return "(section)"
    if isinstance(value, list) and value and isinstance(value[0], BaseModel):
        return "(list of sections)"
    return f"`{yaml_inline(value)}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _sections(cls: type, prefix: str) -> Iterator[tuple[str, type]]:
    """(dotted key, section class), depth first: the section, then those its fields hold."""
    yield prefix, cls
    for name, field in cls.model_fields.items():
        for sub in _models_in(field.annotation):
            origin = typing.get_origin(field.annotation)
            args = typing.get_args(field.annotation)
            in_list = origin is list or any(typing.get_origin(a) is list for a in args)
            in_dict = origin is dict or any(typing.get_origin(a) is dict for a in args)
            key = f"{prefix}.{name}" if prefix else name
            yield from _sections(sub, key + ("[]" if in_list else ".KEY" if in_dict else ""))


def config_reference() -> str:
    """docs/config-reference.md: one table per config section (key, type, default, what the schema says)."""
    from .config.schema import Config

    out = ["# Config reference", "",
           "Generated from the schema (`src/seglab/config/schema.py`, `config/data.py`) by `python -m seglab.reference`;",
           "`tests/test_reference.py` fails when this file is stale. A key's text is the comment written beside it in",
           "the schema. Every config is validated as a whole when it is read: an unknown key, a value of the wrong type",
           "or a setting that contradicts another is one line naming the key.", ""]
    seen: set[str] = set()
    for key, cls in _sections(Config, ""):
        if key in seen:
            continue
        seen.add(key)
        doc = (inspect.getdoc(cls) or "").split("\n\n")[0].replace("\n", " ")
        out += [f"## `{key}`" if key else "## top level", "", doc, "", "| key | type | default | what |",
                "|---|---|---|---|"]
        comments = _described(cls)
        for name, field in cls.model_fields.items():
            text = comments.get(name) or (f"see `{key + '.' if key else ''}{name}`" if _models_in(field.annotation) else "")
            out.append(f"| `{name}` | {_cell(_type_name(field.annotation))} | {_cell(_default(field))} | {_cell(text)} |")
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"


def _with_width(fn: Any) -> str:
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(HELP_WIDTH)
    try:
        return fn()
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old


def cli_reference() -> str:
    """docs/cli-reference.md: `seglab -h` and every command's `-h`, as the parser prints them."""
    from .cli import build_parser

    def build() -> str:
        parser = build_parser()
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        out = ["# CLI reference", "",
               "Generated from the parser (`src/seglab/cli.py`) by `python -m seglab.reference`; `tests/test_reference.py`",
               "fails when this file is stale. Every command prints its own with `-h`.", "",
               "## seglab", "", "```", parser.format_help().rstrip(), "```", ""]
        for name, p in sub.choices.items():
            out += [f"## seglab {name}", "", "```", p.format_help().rstrip(), "```", ""]
        return "\n".join(out).rstrip("\n") + "\n"

    return _with_width(build)


def write_references(docs: Path) -> list[Path]:
    """Write both references into the folder `docs`; returns the files written."""
    from .fileio import atomic_write_text

    written = []
    for name, text in ((CONFIG_FILE, config_reference()), (CLI_FILE, cli_reference())):
        atomic_write_text(docs / name, text)
        written.append(docs / name)
    return written


def main(argv: Optional[Sequence[str]] = None) -> int:
    """`python -m seglab.reference [DOCS_DIR]` (default: docs)."""
    args = list(sys.argv[1:] if argv is None else argv)
    for path in write_references(Path(args[0] if args else "docs")):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
