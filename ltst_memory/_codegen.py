"""The declared operations as methods of the two stores: generated source, checked to be current.

``python -m ltst_memory._codegen`` rewrites, in ``storage.py`` and ``storage_async.py``, the part
between ``# BEGIN GENERATED`` and ``# END GENERATED`` markers (once for the imports, once in the class
body) from :data:`ltst_memory._kernel.REGISTRY`: one method per declared operation, with the
operation's parameters, its return type (``R`` of ``Op[R]``) and its docstring, whose body hands the
call to the store's executor (``self._call`` / ``self._acall``). ``tests/test_registry.py`` fails
when a file is not current (as psycopg checks its sync code generated from the async source).
"""

from __future__ import annotations

import builtins
import importlib
import inspect
import re
import sys
from pathlib import Path

from ._kernel import GROUPS, REGISTRY, Operation

__all__ = ["generate", "render_imports", "render_methods"]

PACKAGE = Path(__file__).resolve().parent
FILES = {"sync": PACKAGE / "storage.py", "async": PACKAGE / "storage_async.py"}
BEGIN = "# BEGIN GENERATED {part} (python -m ltst_memory._codegen; do not edit)"
END = "# END GENERATED {part}"
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LINE = 120


def _modules_of_operations() -> None:
    """Import every module that declares store operations (the stores import them too)."""
    for name in ("_ops", "bulk", "recall", "rehydrate", "summarize", "privacy", "retention", "crypto", "stats"):
        importlib.import_module(f"ltst_memory.{name}")


def ordered() -> list[Operation]:
    """The declared operations, by section, then in declaration order."""
    _modules_of_operations()
    rank = {group: i for i, group in enumerate(GROUPS)}
    declared = list(REGISTRY.values())
    return sorted(declared, key=lambda d: (rank.get(d.group, len(rank)), declared.index(d)))


def _alias(module: str) -> str:
    base = module.rpartition(".")[2]
    return base if base.startswith("_") else f"_{base}"


def _annotation_names(declared: Operation) -> dict[str, str]:
    """``{name: module}`` of the names the method's annotations use."""
    module = sys.modules[declared.function.__module__]
    texts = [declared.returns] + [
        p.annotation for p in declared.parameters if isinstance(p.annotation, str) and p.annotation
    ]
    found: dict[str, str] = {}
    for text in texts:
        for name in _WORD.findall(text):
            if hasattr(builtins, name):
                continue
            value = getattr(module, name)
            home = getattr(value, "__module__", None)
            if home and home in sys.modules and getattr(sys.modules[home], name, None) is value:
                found[name] = home
            else:  # an alias such as a Literal type: import it from where the operation has it
                found[name] = module.__name__
    return found


def render_imports() -> str:
    """The import lines the generated methods need (the same for both stores)."""
    modules = sorted({d.function.__module__ for d in ordered()})
    names: dict[str, set[str]] = {}
    for declared in ordered():
        for name, home in _annotation_names(declared).items():
            names.setdefault(home, set()).add(name)
    lines = []
    for home in sorted(names, key=lambda m: (not m.startswith(("collections", "datetime", "typing")), m)):
        source = "." + home.removeprefix("ltst_memory.") if home.startswith("ltst_memory.") else home
        lines.append(f"from {source} import {', '.join(sorted(names[home]))}")
    package_modules = ", ".join(
        f"{m.rpartition('.')[2]} as {_alias(m)}" if not m.rpartition(".")[2].startswith("_") else m.rpartition(".")[2]
        for m in modules
    )
    lines.append(f"from . import {package_modules}")
    return "\n".join(lines) + "\n"


def _parameters(declared: Operation) -> tuple[list[str], list[str]]:
    """The method's parameter texts and the call's argument texts."""
    params: list[str] = ["self"]
    args: list[str] = []
    star = False
    for p in declared.parameters:
        text = p.name + (f": {p.annotation}" if p.annotation is not inspect.Parameter.empty else "")
        if p.default is not inspect.Parameter.empty:
            text += f" = {p.default!r}"
        if p.kind is inspect.Parameter.KEYWORD_ONLY:
            if not star:
                params.append("*")
                star = True
            args.append(f"{p.name}={p.name}")
        elif p.kind is inspect.Parameter.VAR_POSITIONAL:
            text, star = "*" + text, True
            args.append(f"*{p.name}")
        elif p.kind is inspect.Parameter.VAR_KEYWORD:
            text = "**" + text
            args.append(f"**{p.name}")
        else:
            args.append(p.name)
        params.append(text)
    return params, args


def _method(declared: Operation, kind: str) -> list[str]:
    params, args = _parameters(declared)
    prefix = "async def" if kind == "async" else "def"
    head = f"    {prefix} {declared.name}("
    tail = f") -> {declared.returns}:"
    one_line = head + ", ".join(params) + tail
    lines = [one_line] if len(one_line) <= _LINE else [head, *(f"        {p}," for p in params), "    " + tail]
    doc = inspect.cleandoc(declared.function.__doc__ or "")
    quote = 'r"""' if "\\" in doc else '"""'
    doc_lines = doc.splitlines() or [""]
    if len(doc_lines) == 1:
        lines.append(f"        {quote}{doc_lines[0]}\"\"\"")
    else:
        lines.append(f"        {quote}{doc_lines[0]}")
        lines += [f"        {line}".rstrip() for line in doc_lines[1:]]
        lines.append('        """')
    call = f"self._call({_alias(declared.function.__module__)}.{declared.function.__name__}"
    call += "".join(f", {a}" for a in args) + ")"
    lines.append(f"        return {'await self._acall' + call[len('self._call') :] if kind == 'async' else call}")
    return lines


def render_methods(kind: str) -> str:
    """The methods of the sync (``kind="sync"``) or async store, one per declared operation."""
    lines: list[str] = []
    group = None
    for declared in ordered():
        if declared.group != group:
            group = declared.group
            lines += ["", f"    # {group}"]
        lines += ["", *_method(declared, kind)]
    return "\n".join(lines[1:]) + "\n"


def _replace(text: str, part: str, body: str, indent: str) -> str:
    begin, end = indent + BEGIN.format(part=part), indent + END.format(part=part)
    start = text.index(begin) + len(begin) + 1
    stop = text.index(end, start)
    return text[:start] + body + text[stop:]


def generate(kind: str) -> str:
    """The text ``storage.py`` (``"sync"``) or ``storage_async.py`` (``"async"``) should have."""
    text = FILES[kind].read_text()
    text = _replace(text, "imports", render_imports(), "")
    return _replace(text, "methods", render_methods(kind), "    ")


def main() -> None:
    for kind, path in FILES.items():
        text = generate(kind)
        if text != path.read_text():
            path.write_text(text)
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
