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
