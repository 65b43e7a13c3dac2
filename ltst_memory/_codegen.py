"""The two stores' source: generated, checked to be current.

``python -m ltst_memory._codegen`` rewrites, in ``storage_async.py``, the parts between
``# BEGIN GENERATED`` and ``# END GENERATED`` markers from :data:`ltst_memory._kernel.REGISTRY`: in the
class body one method per declared operation, with the operation's parameters, its return type (``R``
of ``Op[R]``) and its docstring, whose body hands the call to the store (``self._acall(operation,
...)``, typed so that a type checker checks the arguments against the operation and infers its
result); in an ``if TYPE_CHECKING:`` block the names its annotations use. Then it writes all of
``storage.py``, the sync store, from ``storage_async.py`` (:mod:`ltst_memory._unasync`: the generated
``self._call`` methods included). The results are normalised with ruff (unused imports of the sync
store, import order, format). ``tests/test_registry.py`` fails when a file is not current (as psycopg
checks the sync code it generates from the async source).
"""

from __future__ import annotations

import builtins
import inspect
import re
import shutil
import subprocess
import sys
from pathlib import Path

from . import _declared  # noqa: F401 - every module that declares operations
from ._kernel import GROUPS, REGISTRY, Operation
from ._unasync import unasync

__all__ = ["generate", "render_imports", "render_methods"]

PACKAGE = Path(__file__).resolve().parent
FILES = {"sync": PACKAGE / "storage.py", "async": PACKAGE / "storage_async.py"}
BEGIN = "# BEGIN GENERATED {part} (python -m ltst_memory._codegen; do not edit)"
END = "# END GENERATED {part}"
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LINE = 120


def ordered() -> list[Operation]:
    """The declared operations, by section, then in declaration order."""
    rank = {group: i for i, group in enumerate(GROUPS)}
    declared = list(REGISTRY.values())
    return sorted(declared, key=lambda d: (rank.get(d.group, len(rank)), declared.index(d)))


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
            else:  # an alias (a Literal, a Callable type): from the module of ours that exports it
                found[name] = next(
                    (
                        m.__name__
                        for m in list(sys.modules.values())
                        if m is not None
                        and m.__name__.startswith("ltst_memory.")
                        and name in getattr(m, "__all__", ())
                        and getattr(m, name, None) is value
                    ),
                    module.__name__,
                )
    return found


def render_imports() -> str:
    """The imports of the names the generated annotations use (for type checkers: ``TYPE_CHECKING``)."""
    names: dict[str, set[str]] = {}
    for declared in ordered():
        for name, home in _annotation_names(declared).items():
            names.setdefault(home, set()).add(name)
    lines = []
    for home in sorted(names):
        source = "." + home.removeprefix("ltst_memory.") if home.startswith("ltst_memory.") else home
        lines.append(f"    from {source} import {', '.join(sorted(names[home]))}")
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
        lines.append(f'        {quote}{doc_lines[0]}"""')
    else:
        lines.append(f"        {quote}{doc_lines[0]}")
        lines += [f"        {line}".rstrip() for line in doc_lines[1:]]
        lines.append('        """')
    function = f"_declared.{declared.function.__module__.rpartition('.')[2]}.{declared.function.__name__}"
    call = f"self._{'a' if kind == 'async' else ''}call({function}" + "".join(f", {a}" for a in args) + ")"
    lines.append(f"        return {'await ' if kind == 'async' else ''}{call}")
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


def _ruff(arguments: list[str], text: str, path: Path) -> str:
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    done = subprocess.run(
        [ruff, *arguments, "--stdin-filename", str(path), "-"], input=text, capture_output=True, text=True, check=True
    )
    return done.stdout


def generate(kind: str) -> str:
    """The text ``storage.py`` (``"sync"``) or ``storage_async.py`` (``"async"``) should have."""
    path = FILES["async"]
    text = path.read_text()
    text = _replace(text, "imports", render_imports(), "    ")
    text = _replace(text, "methods", render_methods("async"), "    ")
    rules = "I"
    if kind == "sync":
        path, text, rules = FILES["sync"], unasync(_ruff(["format", "--quiet"], text, path)), "I,F401"
    text = _ruff(["check", "--fix", "--select", rules, "--quiet"], text, path)
    return _ruff(["format", "--quiet"], text, path)


def main() -> None:
    for kind, path in FILES.items():
        text = generate(kind)
        if text != path.read_text():
            path.write_text(text)
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
