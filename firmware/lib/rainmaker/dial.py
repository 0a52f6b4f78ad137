# A TCP connection opened without blocking the event loop and bounded in
# time, on a socket the caller owns from its creation: whatever happens (a
# refusal, a timeout, a cancel), the caller can close it. asyncio's
# open_connection() loses the socket when the connect fails or stalls.
import asyncio
import errno
import select
import socket


async def tcp(host, port, expired, own):
    """A connected non-blocking socket. expired() -> True once the wait must
    end (OSError ETIMEDOUT); own(sock) is called with the socket first. A
    refusal raises OSError ECONNREFUSED."""
    ai = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0]  # blocking, as in open_connection
    s = socket.socket(ai[0], ai[1], ai[2])
    own(s)
    s.setblocking(False)
    try:
        s.connect(ai[-1])
    except OSError as e:
        if not e.args or e.args[0] != errno.EINPROGRESS:
            raise
    p = select.poll()
    p.register(s, select.POLLOUT)
    while True:
        ready = p.poll(0)
        if ready:
            if ready[0][1] & (select.POLLERR | select.POLLHUP):
                raise OSError(errno.ECONNREFUSED)
            return s
        if expired():
            raise OSError(errno.ETIMEDOUT)
        await asyncio.sleep_ms(20)
