"""The test tree stands on its own: a test module imports shared helpers from tests/support/,
never another test module or a conftest (pytest loads those itself, under another name, so an
import runs them twice and ties tests to each other's internals)."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def _imported_modules(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out += [(node.lineno, node.module)]
            out += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level:
            out.append((node.lineno, "." * node.level + (node.module or "")))
    return out


def _forbidden(module: str) -> bool:
    if module.startswith("."):
        return True  # relative imports: the test tree is not a package
    parts = module.split(".")
    if parts[0] in ("conftest",) or parts[0].startswith("test_"):
        return True
    if parts[0] != "tests" or parts[1:2] == ["support"]:
        return False
    return any(p == "conftest" or p.startswith("test_") for p in parts[1:])


def test_no_test_module_imports_another_test_module_or_a_conftest():
    bad = [
        f"{path.relative_to(TESTS.parent)}:{line}: {module}"
        for path in sorted(TESTS.rglob("*.py"))
        for line, module in _imported_modules(path)
        if _forbidden(module)
    ]
    assert not bad, "import shared helpers from tests/support/ instead:\n" + "\n".join(bad)


def test_the_check_catches_what_it_should():
    assert _forbidden("tests.conftest")
    assert _forbidden("tests.alerts.test_service")
    assert _forbidden("tests.alerts.notify.conftest")
    assert _forbidden("test_rules")
    assert _forbidden("conftest")
    assert not _forbidden("tests.support.messages")
    assert not _forbidden("tests.support.messages.det_message")
    assert not _forbidden("pipeline.ingest.live")
