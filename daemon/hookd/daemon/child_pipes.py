"""A child process of the daemon on a pair of enlarged pipes, as the event loop sees it.

The writer (writer_link.py) and the OTLP decoding process (otlp_link.py) are both fed frames on
their stdin and answer on their stdout. Real pipes, enlarged by ``wire.pipe``: asyncio (uvloop)
would give socketpairs with 208 KiB buffers, which starve the writer (measured 1.17x ingest with
bigger buffers).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any

from hookd import wire


async def spawn(argv: list[str], limit: int) -> tuple[asyncio.subprocess.Process, asyncio.StreamReader, Any]:
    """Start ``argv``; return the process, a reader of its stdout (lines up to ``limit`` bytes)
    and the write transport of its stdin."""
    to_r, to_w = wire.pipe()
    from_r, from_w = wire.pipe()
    try:
        proc = await asyncio.create_subprocess_exec(*argv, stdin=to_r, stdout=from_w)
    except BaseException:
        close(from_r, to_w)
        raise
    finally:
        close(to_r, from_w)  # the child's ends
    loop = asyncio.get_running_loop()
    replies = asyncio.StreamReader(limit=limit)
    # open() only wraps the pipe descriptors: no file system access, nothing blocks.
    read_pipe = open(from_r, "rb", buffering=0)  # noqa: ASYNC230, SIM115
    write_pipe = open(to_w, "wb", buffering=0)  # noqa: ASYNC230, SIM115
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(replies), read_pipe)
    out, _ = await loop.connect_write_pipe(asyncio.Protocol, write_pipe)
    return proc, replies, out


def close(*fds: int) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
