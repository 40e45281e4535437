"""Pytest fixtures for HTTP callees; loaded by tests/conftest.py through `pytest_plugins`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.http_sink import HttpSink


@pytest.fixture
def http_sink() -> Iterator[HttpSink]:
    """A fresh recording HTTP server on 127.0.0.1 for one test."""
    with HttpSink() as sink:
        yield sink
