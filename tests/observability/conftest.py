"""The session's observed stack (observed.py), shared by the scrape, dashboard and
browser tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from observed import Observed, observed_stack


@pytest.fixture(scope="session")
def observed(redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    yield from observed_stack(redis_url, tmp_path_factory.mktemp("observed"))
