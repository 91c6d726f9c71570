"""Fixtures for exact tests of the router and cascade tests (stub models with fixed answers)."""

from __future__ import annotations

from typing import Any

import pytest

from answer_stubs import StubModel


@pytest.fixture
def stub() -> Any:
    """The :class:`StubModel` class."""
    return StubModel
