"""The dependency direction (experiments -> analysis -> numina) and each module's "May import" line.

Every library module says in its docstring what it may import; this test reads that sentence and
refuses an import it does not allow (lazy imports inside functions and TYPE_CHECKING blocks count),
so the docstrings stay true and a new dependency is a decision written down, not an accident.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LIBRARY = ("numina", "analysis")
SCRIPTS = ("experiments", "benchmarks")
# Import names whose distribution the docstrings name differently.
DISTRIBUTIONS = {"sklearn": "scikit-learn", "PIL": "pillow", "yaml": "pyyaml"}
NAME = re.compile(
    r"\b(?P<base>(?:numina|analysis)(?:\.[A-Za-z_]\w*)*)(?P<star>\.\*)?(?P<alternatives>(?:/[A-Za-z_]\w*)+)?"
    r"(?:\s*\((?P<members>[^)]*)\))?"
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imported(path: Path) -> set[str]:
    """Every module `path` imports, anywhere in the file; `from a import b` counts as a.b when b is one."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            for alias in node.names:
                names.add(f"{base}.{alias.name}" if is_module(f"{base}.{alias.name}") else base)
    return names


def may_import(docstring: str) -> str:
    """The docstring's "May import ..." sentence, up to its full stop ('' if there is none)."""
    match = re.search(r"\bmay\s+import\s(.*?)(?:\.\s|\.?$)", docstring, re.S | re.I)
    return " ".join(match.group(1).split()) if match else ""


def allowed_modules(sentence: str) -> set[str]:
    """Package prefixes the sentence allows: `numina.capture/metrics` names two, `numina.method
    (correct, layout)` two submodules, `numina.models.*` and a bare package all of it."""
    allowed = set()
    for match in NAME.finditer(sentence):
        base = match["base"]
        if match["alternatives"]:
            parent = base.rpartition(".")[0]
            allowed |= {base} | {f"{parent}.{part}" for part in match["alternatives"].split("/")[1:]}
            continue
        members = re.split(r",\s*|\s+and\s+", match["members"] or "")
        if members and all(re.fullmatch(r"[a-z_]\w*", m) and is_module(f"{base}.{m}") for m in members):
            allowed |= {f"{base}.{member}" for member in members}
        else:  # a remark in parentheses may name modules too: "(and numina.capture.spec for type hints)"
            allowed |= {base} | allowed_modules(match["members"] or "")
    return allowed


def library_modules() -> list[Path]:
    return sorted(path for package in LIBRARY for path in (ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("path", library_modules(), ids=lambda path: module_name(path))
def test_library_modules_import_only_what_their_docstring_allows(path: Path) -> None:
    name = module_name(path)
    internal = {module for module in imported(path) if module.split(".")[0] in LIBRARY + SCRIPTS}
    level = LIBRARY.index(name.split(".")[0])
    upward = sorted(
        m for m in internal if m.split(".")[0] in SCRIPTS or LIBRARY.index(m.split(".")[0]) > level
    )
    assert not upward, f"{name} imports {upward}: the direction is experiments -> analysis -> numina"
    if path.name == "__init__.py":  # a package's face: it may gather its own modules
        assert all(module.startswith(name + ".") for module in internal), internal
        return
    sentence = may_import(ast.get_docstring(ast.parse(path.read_text())) or "")
    assert sentence, f"{name}'s docstring has no 'May import ...' line"
    allowed = allowed_modules(sentence)
    refused = sorted(
        module
        for module in internal
        if module != name and not any(module == a or module.startswith(a + ".") for a in allowed)
    )
    assert not refused, f"{name} imports {refused}; its docstring allows {sorted(allowed)}"
    words = sentence.lower()
    third_party = {
        module.split(".")[0]
        for module in imported(path)
        if module.split(".")[0] not in LIBRARY + SCRIPTS + ("__future__",)
        and module.split(".")[0] not in sys.stdlib_module_names
    }
    unnamed = sorted(p for p in third_party if DISTRIBUTIONS.get(p, p).lower() not in words)
    assert not unnamed, f"{name} imports {unnamed}, which its 'May import' line does not name: {sentence!r}"


def test_the_may_import_sentence_is_read_as_written() -> None:
    text = "A module. It may import numpy, numina.capture/metrics and numina.method (correct, layout). Not x."
    sentence = may_import(text)
    assert sentence == "numpy, numina.capture/metrics and numina.method (correct, layout)"
    assert allowed_modules(sentence) == {
        "numina.capture",
        "numina.metrics",
        "numina.method.correct",
        "numina.method.layout",
    }
    assert allowed_modules("numina.models.* and numina.checks") == {"numina.models", "numina.checks"}
    remark = "torch and numina.metrics (and numina.capture.spec for type hints)"
    assert allowed_modules(remark) == {"numina.metrics", "numina.capture.spec"}
    assert may_import("Imports nothing.") == ""
