"""What may import what (docs/architecture.md, "What may import what").

The import graph is grimp's (the library behind import-linter): it resolves relative
and function-level imports and follows chains through any number of modules, which a
check of each file's own import lines would miss. Imports under ``TYPE_CHECKING`` are
left out: they never run.
"""

from __future__ import annotations

import grimp
import pytest

BROKER_CLIENTS = ("aiokafka", "confluent_kafka", "nats", "redis")


@pytest.fixture(scope="module")
def graph() -> grimp.ImportGraph:
    return grimp.build_graph(
        "broker_sched",
        "transports",
        include_external_packages=True,
        exclude_type_checking_imports=True,
        cache_dir=None,
    )


@pytest.mark.parametrize("client", BROKER_CLIENTS)
def test_the_core_reaches_no_broker_client_even_through_a_transport(
    graph: grimp.ImportGraph, client: str
) -> None:
    chain = graph.find_shortest_chain(importer="broker_sched", imported=client, as_packages=True)
    assert chain is None, " -> ".join(chain or ())


def test_no_module_imports_one_that_imports_it_back(graph: grimp.ImportGraph) -> None:
    ours = sorted(m for m in graph.modules if m.partition(".")[0] in ("broker_sched", "transports"))
    cycles = [
        (module, *back)
        for module in ours
        for imported in sorted(graph.find_modules_directly_imported_by(module))
        if imported != module
        and (back := graph.find_shortest_chain(importer=imported, imported=module))
    ]
    assert not cycles, "\n".join(" -> ".join(cycle) for cycle in cycles)


def package_of(module: str) -> str:
    """A subpackage of ours (``broker_sched.invoker``) or a top-level module, as a unit."""
    return ".".join(module.split(".")[:2])


def test_no_package_imports_one_that_imports_it_back(graph: grimp.ImportGraph) -> None:
    """The layers of docs/architecture.md are packages: a loop between two of them would
    make either unreadable without the other, even with no loop between modules."""
    ours = [m for m in graph.modules if m.partition(".")[0] in ("broker_sched", "transports")]
    imports: dict[str, set[str]] = {}
    for importer in ours:
        for imported in graph.find_modules_directly_imported_by(importer):
            if imported.partition(".")[0] in ("broker_sched", "transports"):
                imports.setdefault(package_of(importer), set()).add(package_of(imported))
    loops = [
        f"{package} -> {back}"
        for package, imported in sorted(imports.items())
        for back in sorted(imported - {package})
        if package in reachable(imports, back)
    ]
    assert not loops, "\n".join(loops)


def reachable(imports: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        package = todo.pop()
        if package not in seen:
            seen.add(package)
            todo += imports.get(package, set())
    return seen
