"""The import rules of DESIGN.md, checked by parsing every module's imports.

runtime  -> numpy, gguf, jinja2, regex, numba (its bfloat16 kernels, with llvmlite) and
            the standard library only
registry -> runtime's format modules (gguf, quants, model_info, quantize, ollama_template)
            and third-party libraries
daemon   -> registry, runtime, and the wire types (corral.client.api)
client   -> nothing of corral but the wire types; api.py imports nothing of corral
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("runtime", "registry", "daemon", "client")
RUNTIME_THIRD_PARTY = {"numpy", "gguf", "jinja2", "markupsafe", "regex", "numba", "llvmlite"}
RUNTIME_FORMAT_MODULES = {
    "corral.runtime.gguf",
    "corral.runtime.quants",
    "corral.runtime.model_info",
    "corral.runtime.quantize",
    "corral.runtime.ollama_template",  # a Modelfile's TEMPLATE: which syntax, and is it valid
}


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}: use absolute corral.* imports, not relative ones")
    return names


def modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def corral_imports(path: Path) -> set[str]:
    return {n for n in imports_of(path) if n.startswith("corral.")}


def is_wire_module(path: Path) -> bool:
    """The wire types (client/api/) may import only each other."""
    return (ROOT / "client" / "api") in path.parents


def allowed(package: str, path: Path, name: str) -> bool:
    if name.startswith(f"corral.{package}"):
        return not is_wire_module(path) or name.startswith("corral.client.api")
    rules = {
        "runtime": lambda n: False,
        "registry": lambda n: any(n == m or n.startswith(m + ".") for m in RUNTIME_FORMAT_MODULES),
        "daemon": lambda n: n.startswith(
            ("corral.registry", "corral.runtime", "corral.client.api")
        ),
        "client": lambda n: False,
    }
    return rules[package](name)


@pytest.mark.parametrize("package", PACKAGES)
def test_corral_imports_follow_design(package: str) -> None:
    bad = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in modules(package)
        for name in sorted(corral_imports(path))
        if not allowed(package, path, name)
    ]
    assert not bad, "\n".join(bad)


def test_runtime_uses_only_numpy_gguf_jinja2_and_stdlib() -> None:
    bad = []
    for path in modules("runtime"):
        for name in imports_of(path):
            top = name.split(".")[0]
            if top in ("corral", "__future__") or top in sys.stdlib_module_names:
                continue
            if top not in RUNTIME_THIRD_PARTY:
                bad.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not bad, "\n".join(bad)


def test_the_check_itself_catches_a_violation(tmp_path: Path) -> None:
    sample = tmp_path / "x.py"
    sample.write_text("import aiohttp\nfrom corral.registry.store import Store\n")
    assert "corral.registry.store" in corral_imports(sample)
    assert not allowed("runtime", sample, "corral.registry.store")
    assert not allowed("client", sample, "corral.daemon.app")
    assert allowed("daemon", sample, "corral.client.api")
    wire = ROOT / "client" / "api" / "codec.py"
    assert not allowed("client", wire, "corral.client.http")
    assert allowed("client", wire, "corral.client.api.values")
