"""`make bench`: every benchmark, printed as a report. Nothing is asserted.

Timings are ratios against a baseline measured in the same run, because
these machines are noisy; sizes and counts are absolute.

    python -m tests.bench [heap] [wire] [roundtrip] [prov] [ota]   (default: all)

heap, roundtrip and ota boot the firmware on the MicroPython unix port too
(micropython32, $MICROPYTHON) and skip that part without it. ota also prints
the OTA parsers' own heap and speed (tests/bench/ota_heap.py). If $MICROPYTHON
has the agent frozen in (make firmware ARGS="--port unix"), heap and ota
measure that build: `make bench MICROPYTHON=<it>` gives the frozen figures.

Run on their own, MicroPython only (each has --help and --frozen, for the agent
frozen into $MICROPYTHON): tests.bench.mpheap (the example node's heap and its
smallest -X heapsize), tests.bench.ota --fit / --at (the smallest heap for an
OTA of the same node), tests.bench.provfit (the smallest heap for provisioning
it).
"""
import sys
import time

from tests.bench import heap, mpheap, ota, prov, roundtrip, wire


def main():
    only = set(sys.argv[1:])
    frozen = bool(mpheap.MICROPYTHON) and (not only or bool(only & {"heap", "ota"})) and mpheap.agent_frozen()
    if frozen:
        print("%s has the agent frozen in: heap and ota measure it frozen.\n" % mpheap.MICROPYTHON)
    options = {"heap": {"frozen": frozen}, "ota": {"lib": "frozen" if frozen else "mpy"}}
    for name, mod in (("heap", heap), ("wire", wire), ("roundtrip", roundtrip), ("prov", prov), ("ota", ota)):
        if only and name not in only:
            continue
        t = time.monotonic()
        text, _ = mod.report(**options.get(name, {}))
        print(text)
        print(f"  ({name}: {time.monotonic() - t:.1f} s)\n", flush=True)


if __name__ == "__main__":
    main()
