"""The import rules of the layout (docs/architecture.md, "Layout"), checked on the source itself:

- a service imports only its own package, services.common, rectune.domain and rectune.v1:
  services meet on the wire and in the shared vocabulary, never in each other's code;
- the tuner, the demo and the operators' tools talk to services through rectune.v1 and
  services.common only;
- rectune.domain imports no service, no protobuf and no gRPC;
- nothing in the service image (rectune, services, tuner) imports the demo or matplotlib.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = sorted(p.name for p in (ROOT / "services").iterdir() if (p / "__init__.py").exists() and p.name != "common")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every module the file imports, absolute (relative imports are resolved)."""
    found: set[str] = set()
    package = module_name(path).rsplit(".", 0 if path.name == "__init__.py" else 1)[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def sources(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (ROOT / folder).rglob("*.py") if "rectune/v1" not in p.as_posix())


def violations(files: list[Path], allowed: Callable[[Path, str], bool], forbidden: Callable[[str], bool]) -> list[str]:
    return [
        f"{module_name(path)} imports {name}"
        for path in files
        for name in sorted(imports_of(path))
        if forbidden(name) and not allowed(path, name)
    ]


def test_no_service_imports_another_service() -> None:
    def other_service(path: Path, name: str) -> bool:
        own = module_name(path).split(".")[1]
        return name.split(".")[1] in (own, "common") if name.count(".") >= 1 else True

    found = violations(sources("services"), other_service, lambda name: name.startswith("services."))
    assert found == []


@pytest.mark.parametrize("package", ["tuner", "demo", "rectune", "operators"])
def test_the_tuner_the_demo_and_the_vocabulary_use_no_service_internals(package: str) -> None:
    found = violations(
        sources(package),
        lambda path, name: name.startswith("services.common") and package != "rectune",
        lambda name: name == "services" or name.startswith("services."),
    )
    assert found == []


def test_the_domain_is_free_of_protobuf_and_grpc() -> None:
    wire = ("grpc", "google.protobuf", "rectune.v1", "sqlalchemy", "torch")
    found = violations(
        sources("rectune/domain"),
        lambda path, name: False,
        lambda name: any(name == w or name.startswith(w + ".") for w in wire),
    )
    assert found == []


def test_nothing_in_the_service_image_imports_the_demo_or_matplotlib() -> None:
    found = violations(
        sources("rectune", "services", "tuner", "operators"),
        lambda path, name: False,
        lambda name: name.split(".")[0] in ("demo", "matplotlib"),
    )
    assert found == []


def test_the_walker_finds_the_imports() -> None:
    """The rules above can only fail if the walker sees the imports: it does."""
    tuner_imports = set().union(*(imports_of(p) for p in sources("tuner")))
    assert {"services.common.clients", "rectune.v1"} <= tuner_imports
    policy = ROOT / "services/policy/core/service.py"
    assert "services.policy.core.store.PolicyStore" in imports_of(policy)
    assert len(SERVICES) == 4


def getattr_calls(path: Path) -> list[int]:
    """Lines of the file that call getattr or hasattr."""
    return [
        node.lineno
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr")
    ]


def test_scorings_core_declares_abilities_instead_of_probing_for_them() -> None:
    """Optional abilities of strategies and fitted models are declared on the protocols in
    strategies/base.py with defaults; the core never asks a strategy or a model what it has."""
    probes = {
        str(path.relative_to(ROOT)): lines
        for path in (ROOT / "services" / "scoring" / "core").rglob("*.py")
        if (lines := getattr_calls(path))
    }
    assert probes == {}


def test_the_getattr_finder_finds_them(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("x = 1\nselect = getattr(model, 'select', None)\nok = hasattr(model, 'stored')\n")
    assert getattr_calls(sample) == [2, 3]
