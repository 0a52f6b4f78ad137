"""The OTA parsers' heap on MicroPython itself (micropython32): what they keep
alive while streaming does not grow with the download (tests/bench/ota_heap.py
prints the figures)."""
from pathlib import Path

import pytest

from tests.bench import ota_heap

pytestmark = pytest.mark.skipif(not Path(ota_heap.MICROPYTHON).exists(), reason="no MicroPython binary")


@pytest.mark.parametrize("mode,limit", [("len", 2048 + 512), ("chunked", 2048 + 512), ("bundle", 1024)])
def test_heap_is_flat(mode, limit):
    small = ota_heap.guest(mode, ota_heap.SIZES[0])
    big = ota_heap.guest(mode, ota_heap.SIZES[1])
    for n, (got, held, after, done, _us) in zip(ota_heap.SIZES, (small, big)):
        assert got == n and done
        assert held <= limit, (mode, n, held)
    assert abs(big[1] - small[1]) <= 64, (small, big)


@pytest.mark.parametrize("mode", ["len", "chunked", "bundle"])
def test_streams_in_a_small_heap(mode):
    got, _held, _after, done, _us = ota_heap.guest(mode, ota_heap.SIZES[1], heap=ota_heap.SMALL)
    assert got == ota_heap.SIZES[1] and done
