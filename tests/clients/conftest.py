from __future__ import annotations

from collections.abc import Iterator

import pytest
from fake_analytics_server import Server, serve


@pytest.fixture
def server() -> Iterator[Server]:
    """A tiny analytics server on 127.0.0.1 that records every call."""
    with serve() as running:
        yield running
