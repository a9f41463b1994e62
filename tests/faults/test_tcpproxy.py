"""The TCP proxy the fault tests cut in front of PostgreSQL: a cut must end every open
connection for both peers at once, as a stopped server would. Before, ``cut`` closed the
sockets under the pump threads blocked reading them, which neither wakes those reads nor
lets the kernel close the sockets: the server kept a backend idle in its transaction
(holding its locks) and the client waited for an answer, both for ever. The fault run
(tests/faults/fault_run.py) hung that way after a 30 s PostgreSQL cut: every upload on
both gateways waited until the other gateway was killed."""
from __future__ import annotations

import socket

from tests.faults.tcpproxy import TcpProxy


def ended(sock: socket.socket, timeout: float = 5.0) -> bool:
    """True when the peer closed or reset ``sock`` within ``timeout``."""
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_cut_ends_open_connections_for_both_peers() -> None:
    upstream = socket.create_server(("127.0.0.1", 0))
    proxy = TcpProxy("127.0.0.1", upstream.getsockname()[1]).start()
    try:
        client = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        upstream.settimeout(5)
        server, _ = upstream.accept()
        client.sendall(b"ping")
        server.settimeout(5)
        assert server.recv(4) == b"ping"  # the pumps are running, blocked in recv
        server.sendall(b"pong")
        assert client.recv(4) == b"pong"
        proxy.cut()
        assert ended(server), "the server side still open after the cut"
        assert ended(client), "the client side still open after the cut"
        try:
            refused = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        except OSError:
            pass  # reset while connecting
        else:
            assert ended(refused), "a new connection was let through during the cut"
            refused.close()
        proxy.restore()
        again = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        server2, _ = upstream.accept()
        again.sendall(b"back")
        server2.settimeout(5)
        assert server2.recv(4) == b"back"
        for sock in (client, server, again, server2):
            sock.close()
    finally:
        proxy.stop()
        upstream.close()
