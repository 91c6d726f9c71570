"""The merge benchmark's child runner reports the child's own peak RSS, not its (large) parent's."""

from __future__ import annotations

import sys

import pytest
import torch

from tutti.merging.bench import run_child


def test_child_rss_is_its_own_not_the_parents():
    big = torch.ones(400 * 2**20 // 4)  # this process now holds 400 MB more than a fresh Python
    _, small = run_child([sys.executable, "-c", "pass"])
    _, grown = run_child([sys.executable, "-c", "b = bytearray(200 * 2**20)"])
    del big
    assert small < 150 * 2**20  # a bare interpreter, not this process's 400+ MB
    assert grown - small > 180 * 2**20  # the 200 MB the child touched


def test_child_failure_names_the_command_and_shows_its_stderr():
    with pytest.raises(RuntimeError, match=r"failed \(3\).*boom"):
        run_child([sys.executable, "-c", "import sys; sys.stderr.write('boom'); sys.exit(3)"])
