"""`asyncio` with MicroPython's API (extmod/asyncio), running on CPython's event loop.

Only MicroPython's names exist (no Queue, Semaphore, TaskGroup, shield, to_thread...).
MicroPython behaviours reproduced here:
  * one loop: run() runs on the current loop and does not close it; create_task()
    works before the loop runs; new_event_loop() starts over with a fresh loop;
  * sleep()/sleep_ms() return an awaitable that is not a coroutine, so
    create_task(sleep(1)) / wait_for(sleep(1), 2) raise TypeError;
  * asyncio.TimeoutError is its own class (not an OSError);
  * wait_for() cancels the awaitable on timeout and raises at once;
  * streams are MicroPython's Stream (read/readinto/readexactly/readline, write + drain,
    close() does nothing and wait_closed() closes the socket). open_connection() raises
    only when the connect itself fails (no route: OSError(EHOSTUNREACH), DNS: -202);
    a refused/reset connection and every TLS error (handshake, certificate) surface on
    the first read/write/drain, because the TLS handshake runs inside them;
  * a task that dies with an exception nobody awaits prints
    "Task exception wasn't retrieved" and the traceback on stdout.
"""

import asyncio as _aio
import errno as _errno
import inspect as _inspect
import socket as _socket
import threading as _threading
import types
import warnings as _warnings

from .runtime import oserror

CancelledError = _aio.CancelledError


class TimeoutError(Exception):  # noqa: A001 - MicroPython's asyncio.TimeoutError
    pass


class _Sleep:
    """What MicroPython's sleep()/sleep_ms() return: awaitable, not a coroutine."""

    __slots__ = ("_t",)

    def __init__(self, t):
        self._t = max(0.0, t)

    def __await__(self):
        return _aio.sleep(self._t).__await__()

    def __repr__(self):
        return "<SingletonGenerator>"


def install_policy(rt):
    def handler(loop, context):
        msg = context.get("message", "")
        exc = context.get("exception")
        fut = context.get("future") or context.get("task")
        if exc is not None and isinstance(fut, _aio.Task):
            print("Task exception wasn't retrieved")
            print("future:", "<Task>", "coro=", _coro_repr(fut))
            rt.print_exception(exc)
        else:
            print(msg)
            if exc is not None:
                rt.print_exception(exc)

    class Policy(_aio.DefaultEventLoopPolicy):
        def new_event_loop(self):
            loop = super().new_event_loop()
            rt.sched.loops.add(loop)
            loop.set_exception_handler(handler)
            return loop

    rt._old_policy = _aio.get_event_loop_policy()
    _aio.set_event_loop_policy(Policy())


def uninstall_policy(rt):
    old = getattr(rt, "_old_policy", None)
    loop = getattr(rt, "_mp_loop", None)
    if loop is not None and not loop.is_running() and not loop.is_closed():
        loop.close()
    _aio.set_event_loop_policy(old)


def _coro_repr(task):
    coro = task.get_coro()
    name = getattr(coro, "__name__", "?")
    return "<generator object '%s' at %x>" % (name, id(coro) & 0xFFFFFFFF)


def make(rt):
    m = types.ModuleType("asyncio")
    m.__doc__ = "asyncio (MicroPython API, simulated on CPython's event loop)"

    def _current_loop():
        try:
            return _aio.get_running_loop()
        except RuntimeError:
            pass
        loop = getattr(rt, "_mp_loop", None)
        if loop is None or loop.is_closed():
            loop = _aio.get_event_loop_policy().new_event_loop()
            _aio.set_event_loop(loop)
            rt._mp_loop = loop
        return loop

    def get_event_loop(runq_len=0, waitq_len=0):
        return _current_loop()

    def new_event_loop():
        loop = _aio.get_event_loop_policy().new_event_loop()
        _aio.set_event_loop(loop)
        rt._mp_loop = loop
        return loop

    def _report_later(task):
        # MicroPython reports an exception of a task nobody waits for when it ends.
        # Give the awaiting task (if any) two loop turns to collect it first.
        if task.cancelled():
            return
        loop = task.get_loop()

        def check2():
            if getattr(task, "_log_traceback", False) and task._exception is not None:
                task._log_traceback = False
                print("Task exception wasn't retrieved")
                print("future:", "<Task>", "coro=", _coro_repr(task))
                rt.print_exception(task._exception)

        loop.call_soon(lambda: loop.call_soon(check2))

    def create_task(coro):
        if not _inspect.iscoroutine(coro):
            raise TypeError("coroutine expected")
        task = _current_loop().create_task(coro)
        task.add_done_callback(_report_later)
        return task

    def _promote(aw):
        if isinstance(aw, _aio.Future):
            return aw
        return create_task(aw)

    def run(coro):
        loop = _current_loop()
        return loop.run_until_complete(create_task(coro))

    def sleep(t):
        return _Sleep(t)

    def sleep_ms(t):
        return _Sleep(t / 1000)

    async def wait_for(aw, timeout, sleep=None):
        aw = _promote(aw)
        if timeout is None:
            return await aw
        try:
            done, _ = await _aio.wait({aw}, timeout=max(0, timeout))
        except _aio.CancelledError:
            aw.cancel()
            raise
        if aw in done:
            return aw.result()
        aw.cancel()
        raise TimeoutError

    def wait_for_ms(aw, timeout):
        return wait_for(aw, None if timeout is None else timeout / 1000)

    async def gather(*aws, return_exceptions=False):
        tasks = [_promote(a) for a in aws]
        return await _aio.gather(*tasks, return_exceptions=return_exceptions)

    def current_task():
        t = _aio.current_task()
        if t is None:
            raise RuntimeError("no running task")
        return t

    class ThreadSafeFlag:
        """Set from any thread/IRQ, awaited by one task; wait() clears it."""

        def __init__(self):
            self._lock = _threading.Lock()
            self._flag = False
            self._waiter = None  # (loop, future)

        def set(self):
            with self._lock:
                self._flag = True
                w = self._waiter
            if w is not None:
                loop, fut = w
                try:
                    loop.call_soon_threadsafe(self._wake, fut)
                except RuntimeError:
                    pass

        @staticmethod
        def _wake(fut):
            if not fut.done():
                fut.set_result(None)

        def clear(self):
            with self._lock:
                self._flag = False

        def ioctl(self, req, flags):
            return 0

        async def wait(self):
            loop = _aio.get_running_loop()
            while True:
                with self._lock:
                    if self._flag:
                        self._flag = False
                        self._waiter = None
                        return
                    fut = loop.create_future()
                    self._waiter = (loop, fut)
                try:
                    await fut
                except BaseException:
                    with self._lock:
                        self._waiter = None
                    raise

    # -- streams ---------------------------------------------------------------

    def _fd(s):
        f = getattr(s, "_sim_fd", None)
        return f() if f is not None else s.fileno()

    async def _wait(s, write, prio):
        stalled = getattr(s, "_sim_stalled", None)
        if stalled is not None and stalled():
            await _aio.sleep(0.02)  # dead link: no readiness will come, poll until the abort
            return
        fd = _fd(s)
        if fd < 0:
            raise oserror(_errno.EBADF)
        await rt.io.wait(fd, write, prio)

    def _want_write(s, default):
        w = getattr(s, "_want", None)
        return default if w is None else w == "w"

    class Stream:
        def __init__(self, s, e={}):
            self.s = s
            self.e = e
            self.out_buf = b""

        def get_extra_info(self, v):
            return self.e[v]

        def close(self):
            pass

        async def wait_closed(self):
            self.s.close()

        async def _rd(self, op):
            await _aio.sleep(0)  # like queue_read(): always a trip through the scheduler
            while True:
                r = op()
                if r is not None:
                    return r
                await _wait(self.s, _want_write(self.s, False), 0)

        async def read(self, n=-1):
            r = b""
            while True:
                r2 = await self._rd(lambda: self.s.read(n))
                if n >= 0:
                    return r2
                if not len(r2):
                    return r
                r += r2

        async def readinto(self, buf):
            return await self._rd(lambda: self.s.readinto(buf))

        async def readexactly(self, n):
            r = b""
            while n:
                r2 = await self._rd(lambda: self.s.read(n))
                if not len(r2):
                    raise EOFError
                r += r2
                n -= len(r2)
            return r

        async def readline(self):
            line = b""
            while True:
                l2 = await self._rd(self.s.readline)
                line += l2
                if not l2 or line[-1] == 10:
                    return line

        def write(self, buf):
            if isinstance(buf, memoryview):
                buf = bytes(buf)
            if not self.out_buf:
                ret = self.s.write(buf)
                if ret == len(buf):
                    return
                if ret is not None:
                    buf = buf[ret:]
            self.out_buf += buf

        async def drain(self):
            if self.out_buf:
                mv = memoryview(self.out_buf)
                off = 0
                while off < len(mv):
                    await _aio.sleep(0)
                    ret = self.s.write(mv[off:])
                    if ret is not None:
                        off += ret
                    else:
                        await _wait(self.s, _want_write(self.s, True), 1)
                self.out_buf = b""
            else:
                await _aio.sleep(0)  # drain always yields
            pending = getattr(self.s, "_sim_pending_out", None)
            while pending is not None and pending():
                if self.s._sim_flush():
                    break
                await _wait(self.s, True, 1)

        async def aclose(self):
            await self.wait_closed()

        async def awrite(self, buf, off=0, sz=-1):
            if off != 0 or sz != -1:
                buf = memoryview(buf)
                if sz == -1:
                    sz = len(buf)
                buf = buf[off:off + sz]
            self.write(buf)
            await self.drain()

        awritestr = awrite

    async def open_connection(host, port, ssl=None, server_hostname=None):
        sm = rt.modules["socket"]
        ai = sm.getaddrinfo(host, port, 0, sm.SOCK_STREAM)[0]  # blocking, as on the board
        s = sm.socket(ai[0], ai[1], ai[2])
        s.setblocking(False)
        try:
            s.connect(ai[-1])
        except OSError as er:
            if er.errno != _errno.EINPROGRESS:
                s.close()
                raise er
        if ssl:
            if ssl is True:
                ssl = rt.modules["ssl"].SSLContext(rt.modules["ssl"].PROTOCOL_TLS_CLIENT)
            if not server_hostname:
                server_hostname = host
        # queue_write(s): wait for the TCP connect to finish before TLS touches it
        await rt.io.wait(s.fileno(), True)
        err = s.getsockopt(_socket.SOL_SOCKET, _socket.SO_ERROR)
        if err:
            # lwIP reports a refused/reset connect on the next operation
            s._sim_aborted = True
            s._sim_error_errno = _errno.ECONNRESET
        if ssl:
            s = ssl.wrap_socket(s, server_hostname=server_hostname, do_handshake_on_connect=False)
            s.setblocking(False)
        ss = Stream(s)
        return ss, ss

    class Server:
        async def __aenter__(self):
            return self

        async def __aexit__(self, exc_type, exc, tb):
            self.close()
            await self.wait_closed()

        def close(self):
            self.state = True
            self.task.cancel()

        async def wait_closed(self):
            try:
                await self.task
            except _aio.CancelledError:
                pass

        async def _serve(self, s, cb, ssl):
            self.state = False
            while True:
                try:
                    await rt.io.wait(s.fileno(), False)
                except _aio.CancelledError:
                    s.close()
                    if self.state:
                        return
                    raise
                try:
                    s2, addr = s.accept()
                except Exception:
                    continue
                if ssl:
                    try:
                        s2 = ssl.wrap_socket(s2, server_side=True, do_handshake_on_connect=False)
                    except OSError as e:
                        rt.print_exception(e)
                        s2.close()
                        continue
                s2.setblocking(False)
                s2s = Stream(s2, {"peername": addr})
                create_task(cb(s2s, s2s))

    async def start_server(cb, host, port, backlog=5, ssl=None):
        sm = rt.modules["socket"]
        ai = sm.getaddrinfo(host, port)[0]
        s = sm.socket(ai[0])
        s.setblocking(False)
        s.setsockopt(sm.SOL_SOCKET, sm.SO_REUSEADDR, 1)
        s.bind(ai[-1])
        s.listen(backlog)
        srv = Server()
        srv.task = create_task(srv._serve(s, cb, ssl))
        try:
            await sleep_ms(0)
        except _aio.CancelledError:
            srv.task.cancel()
            raise
        return srv

    class Loop:
        """asyncio.Loop: MicroPython's single loop, forwarding to the current loop."""

        @staticmethod
        def create_task(coro):
            return create_task(coro)

        @staticmethod
        def run_forever():
            return _current_loop().run_forever()

        @staticmethod
        def run_until_complete(aw=None):
            return _current_loop().run_until_complete(_promote(aw))

        @staticmethod
        def stop():
            return _current_loop().stop()

        @staticmethod
        def close():
            pass

        @staticmethod
        def set_exception_handler(handler):
            return _current_loop().set_exception_handler(handler)

        @staticmethod
        def get_exception_handler():
            return _current_loop().get_exception_handler()

        @staticmethod
        def default_exception_handler(loop, context):
            return _current_loop().default_exception_handler(context)

        @staticmethod
        def call_exception_handler(context):
            return _current_loop().call_exception_handler(context)

    with _warnings.catch_warnings():
        _warnings.simplefilter("ignore")
        m.CancelledError = CancelledError
        m.TimeoutError = TimeoutError
        m.Task = _aio.Task
        m.Event = _aio.Event
        m.Lock = _aio.Lock
        m.ThreadSafeFlag = ThreadSafeFlag
        m.create_task = create_task
        m.current_task = current_task
        m.run = run
        m.sleep = sleep
        m.sleep_ms = sleep_ms
        m.wait_for = wait_for
        m.wait_for_ms = wait_for_ms
        m.gather = gather
        m.get_event_loop = get_event_loop
        m.new_event_loop = new_event_loop
        m.Loop = Loop
        m.Stream = Stream
        m.StreamReader = Stream
        m.StreamWriter = Stream
        m.open_connection = open_connection
        m.start_server = start_server
        m.Server = Server
    return m
