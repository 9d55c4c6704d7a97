"""The store's own tests: each runs against every backend (SQLite and a real PostgreSQL)
through the ``backend`` factory, on a fresh, empty store."""

from __future__ import annotations

import pytest

from pfhjem_msg.store.edi2 import DaemonStore
from tests.store_backends import StoreFactory


@pytest.fixture
def store(backend: StoreFactory) -> DaemonStore:
    """An empty store of the backend under test (every store protocol: the daemon's store is
    all of them)."""
    return backend()
