"""The package's import rules (docs/architecture.md, "Layout"), read from the source with the AST.

Every import counts, also the ones inside functions: a lazy import is still a dependency, it only runs later.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "service"

# Top to bottom: a module may import its own layer and the layers below it, never one above.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("entry points", ("service.cli", "service.__main__", "service.compat.main")),
    ("wiring", ("service.app",)),
    # TF Serving's command line and config files -> settings and a model set; the watcher applies through an
    # injected function, so nothing here needs the manager.
    ("TF Serving compat", ("service.compat",)),
    ("operator tools", ("service.tools",)),
    ("front ends", ("service.api",)),
    ("data plane", ("service.dataplane",)),
    ("model lifecycle", ("service.manager",)),
    # One version's states, attempts, retries and leases: below the manager that drives it, blind to the others.
    ("version harness", ("service.manager.harness",)),
    ("batching", ("service.batching", "service.batch_safety")),
    ("runtime and repository", ("service.runtime", "service.repository")),
    (
        "leaves",
        (
            "service",  # the package's __init__ alone (__version__), not what is inside it
            "service.codecs",
            "service.observability",
            "service.settings",
            "service.errors",
            "service.tensors",
            "service.policy",
            "service.model_set",  # the typed model list that settings, the manager and (later) compat share
            "service.names",  # model names and versions: the strict patterns
            "service.states",  # a version's states (TF Serving's), for the manager, metrics, front ends and tools
            "service.documents",  # pydantic's first error -> a document's one-line message (serving.json, ...)
        ),
    ),
]
WEB_FRAMEWORKS = ("fastapi", "starlette", "uvicorn")
REST_FRONT_END = "service.api.rest"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def imports_in(source: str, module: str, is_package: bool = False) -> tuple[str, ...]:
    """Every module name an import statement in ``source`` names, also inside functions (``from a import b`` names
    a.b too when that is a module of the package)."""
    names: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against the importing module's package
                parts = module.split(".")
                anchor = parts[: len(parts) - node.level + (1 if is_package else 0)]
                base = ".".join([*anchor, base] if base else anchor)
            names.append(base)
            names.extend(f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in modules())
    return tuple(names)


@cache
def imported_names(module: str) -> tuple[str, ...]:
    path = modules()[module]
    return imports_in(path.read_text(), module, path.name == "__init__.py")


def dependencies(module: str) -> set[str]:
    """The service modules that importing ``module`` runs: each imported module and the packages above it that
    ``module`` is not itself inside (importing service.manager.routing runs service/manager/__init__.py)."""
    found: set[str] = set()
    for name in imported_names(module):
        parts = name.split(".")
        for end in range(1, len(parts) + 1):
            candidate = ".".join(parts[:end])
            if candidate in modules() and candidate != module and not within(module, candidate):
                found.add(candidate)
    return found


def layer_of(module: str) -> int:
    """The index in LAYERS of the most specific prefix that holds ``module``."""
    best = max(
        (
            (len(prefix), index)
            for index, (_, prefixes) in enumerate(LAYERS)
            for prefix in prefixes
            if within(module, prefix) and (prefix != "service" or module == "service")
        ),
        default=None,
    )
    assert best is not None, f"{module} is in no layer of test_layering.LAYERS: place it"
    return best[1]


def test_every_module_has_a_layer() -> None:
    for module in modules():
        layer_of(module)


def test_imports_point_down_the_layers() -> None:
    upward = [
        f"{module} ({LAYERS[layer_of(module)][0]}) imports {used} ({LAYERS[layer_of(used)][0]})"
        for module in modules()
        for used in sorted(dependencies(module))
        if layer_of(used) < layer_of(module)
    ]
    assert upward == []


def test_only_the_entry_points_import_the_operator_tools() -> None:
    importers = {
        module
        for module in modules()
        if not within(module, "service.tools") and any(within(used, "service.tools") for used in dependencies(module))
    }
    assert importers <= {"service.cli"}


def test_only_the_rest_front_end_imports_a_web_framework() -> None:
    outside = [
        f"{module} imports {name}"
        for module in modules()
        if not within(module, REST_FRONT_END)
        for name in imported_names(module)
        if any(within(name, framework) for framework in WEB_FRAMEWORKS)
    ]
    assert outside == []


def test_the_front_ends_reach_the_models_only_through_the_data_plane() -> None:
    # Status and metadata too: a front end (REST today, gRPC next) sees DataPlane's typed answers, never the manager.
    through = [
        f"{module} imports {used}"
        for module in modules()
        if within(module, "service.api")
        for used in sorted(dependencies(module))
        if within(used, "service.manager")
    ]
    assert through == []


def test_the_front_ends_build_json_answers_in_one_place() -> None:
    # JSON answers come from api/rest/responses.py (json_io.dumps), error bodies from json_io.error_body: a
    # front end that serialized its own would drift from the others' shape.
    serializing = [
        f"{module} imports {name}"
        for module in modules()
        if within(module, "service.api") and module != "service.api.rest.responses"
        for name in imported_names(module)
        if within(name, "orjson") or within(name, "json")
    ]
    assert serializing == []


def cycles() -> Iterator[list[str]]:
    """Each import cycle among the service modules, once (Tarjan's strongly connected components)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()

    def visit(module: str) -> Iterator[list[str]]:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for used in sorted(dependencies(module)):
            if used not in index:
                yield from visit(used)
                low[module] = min(low[module], low[used])
            elif used in on_stack:
                low[module] = min(low[module], index[used])
        if low[module] == index[module]:
            component: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                yield sorted(component)

    for module in sorted(modules()):
        if module not in index:
            yield from visit(module)


def test_no_import_cycles() -> None:
    assert list(cycles()) == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import fastapi.responses", {"fastapi.responses"}),
        ("def f() -> None:\n    from service.api.rest import app", {"service.api.rest", "service.api.rest.app"}),
        ("from . import routing", {"service.manager", "service.manager.routing"}),
        ("if True:\n    from ..settings import Settings", {"service.settings"}),
    ],
)
def test_lazy_relative_and_submodule_imports_are_seen(source: str, expected: set[str]) -> None:
    # The rules above are only as good as this reading of import statements.
    assert set(imports_in(source, "service.manager.manager")) == expected


def test_importing_a_submodule_depends_on_the_packages_above_it() -> None:
    # service.tools.rollout imports service.manager.routing, which runs service/manager/__init__.py.
    assert {"service.manager", "service.manager.routing"} <= dependencies("service.tools.rollout")
