"""Benchmarks (`make bench`): printed, never asserted. See __main__.py."""
