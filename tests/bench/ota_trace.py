# Diagnostic hook: `python -m tests.bench.ota --at KB --trace` deploys this as
# benchtrace.py and imports it first from the example's bench app. The agent
# catches a MemoryError of the OTA download and reports "out of memory" only;
# this prints the traceback before it does, for the two calls the download
# makes that can allocate much: the TLS context for the file server (Update.
# _context) and fetch.download (the connection, the response head, the sink's
# buffers and the stream). It imports rainmaker.fetch and rainmaker.update at
# boot, so the heap is not the same as without it: for the why, not the figures.
import sys

from rainmaker import fetch, update

_download = fetch.download
_context = update.Updater._context


async def _traced_download(*args, **kw):
    try:
        return await _download(*args, **kw)
    except MemoryError as e:
        print("BENCH trace: fetch.download")
        sys.print_exception(e)
        raise


def _traced_context(self):
    try:
        return _context(self)
    except MemoryError as e:
        print("BENCH trace: Updater._context")
        sys.print_exception(e)
        raise


fetch.download = _traced_download
update.Updater._context = _traced_context
