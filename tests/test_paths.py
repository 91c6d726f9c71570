"""Atomic file writes: readers see the old file or the whole new one, and a failed write leaves no temp file."""

from __future__ import annotations

from pathlib import Path

import pytest

from tutti.paths import atomic_file, write_text_atomic


def test_write_text_atomic_replaces_and_leaves_nothing_else(tmp_path: Path) -> None:
    f = tmp_path / "sub" / "a.json"
    write_text_atomic(f, "old")
    write_text_atomic(f, "new")
    assert f.read_text() == "new"
    assert [p.name for p in f.parent.iterdir()] == ["a.json"]


def test_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    f = tmp_path / "a.txt"
    f.write_text("old")
    with pytest.raises(RuntimeError), atomic_file(f) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert f.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]
