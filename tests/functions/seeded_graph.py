"""Seeded graph functions on igraph, as a public serverless benchmark suite writes them.

igraph's C core keeps its random number generator per thread: ``random.seed`` in the
handler governs the graph it generates only in the thread that seeded it, so these
return the same result through broker-sched as when called directly only if the
handler runs as it would on its own.
"""

from __future__ import annotations

import random
from typing import Any

import igraph


def _graph(event: dict[str, Any]) -> igraph.Graph:
    random.seed(event.get("seed", 42))
    return igraph.Graph.Barabasi(int(event.get("size", 200)), 10)


def bfs(event: dict[str, Any]) -> dict[str, Any]:
    vertices, layers, parents = _graph(event).bfs(0)
    return {"vertices": vertices, "layers": layers, "parents": parents}


def pagerank(event: dict[str, Any]) -> dict[str, Any]:
    ranks = _graph(event).pagerank()
    return {
        "first": round(ranks[0], 12),
        "top": sorted(range(len(ranks)), key=ranks.__getitem__)[-5:],
    }


def mst(event: dict[str, Any]) -> dict[str, Any]:
    return {"edges": _graph(event).spanning_tree(None, False)}
