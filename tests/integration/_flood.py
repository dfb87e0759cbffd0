"""
A flood of TCP connections that never send a byte, run as a process of its
own by the session daemon's tests:

    python -m tests.integration._flood HOST PORT COUNT [--source ADDRESS] [--reconnect]

It opens COUNT connections and holds them, reading and ignoring whatever the
server sends; with --reconnect it opens each again as soon as the server
closes or refuses it. It prints one line once every connection has been
started, and runs until it is killed.
"""

from __future__ import annotations

import argparse
import resource
import selectors
import socket
from typing import List, Optional


def _raiseFileLimit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    if hard != resource.RLIM_INFINITY:
        wanted = min(wanted, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def main(argv: Optional[List[str]] = None) -> None:
    """
    Run the flood.
    """
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("count", type=int)
    parser.add_argument("--source", default=None)
    parser.add_argument("--reconnect", action="store_true")
    arguments = parser.parse_args(argv)
    _raiseFileLimit(arguments.count + 64)
    selector = selectors.DefaultSelector()

    def connect() -> None:
        connection = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        connection.setblocking(False)
        if arguments.source is not None:
            connection.bind((arguments.source, 0))
        connection.connect_ex((arguments.host, arguments.port))
        selector.register(connection, selectors.EVENT_READ)

    for _ in range(arguments.count):
        connect()
    print(f"started {arguments.count} connections", flush=True)
    closed = 0
    while True:
        for key, _events in selector.select():
            connection = key.fileobj
            assert isinstance(connection, socket.socket)
            try:
                data = connection.recv(65536)
            except OSError:
                data = b""
            if data:
                continue
            selector.unregister(connection)
            connection.close()
            closed += 1
            if arguments.reconnect:
                connect()


if __name__ == "__main__":
    main()
