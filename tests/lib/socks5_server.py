"""A small SOCKS5 server for tests (RFC 1928 CONNECT to IPv4, optional RFC 1929 user/password), run inside a test's
fake outside world: `python3 socks5_server.py PORT LOGFILE [USER PASSWORD]`. Appends `CONNECT ip:port` to LOGFILE for
every tunnel it opens and `auth refused` for bad credentials."""

import socket
import struct
import sys
import threading


def pump(src, dst):
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def recv_exact(conn, n):
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise ConnectionError("short read")
        data += chunk
    return data


def session(conn, log, creds):
    with conn:
        version, count = recv_exact(conn, 2)
        methods = recv_exact(conn, count)
        method = 2 if creds else 0
        if version != 5 or method not in methods:
            conn.sendall(b"\x05\xff")
            return
        conn.sendall(bytes([5, method]))
        if creds:
            recv_exact(conn, 1)
            user = recv_exact(conn, recv_exact(conn, 1)[0]).decode()
            password = recv_exact(conn, recv_exact(conn, 1)[0]).decode()
            if (user, password) != creds:
                log("auth refused")
                conn.sendall(b"\x01\x01")
                return
            conn.sendall(b"\x01\x00")
        _, cmd, _, atyp = recv_exact(conn, 4)
        if cmd != 1 or atyp != 1:
            conn.sendall(b"\x05\x07\x00\x01" + bytes(6))
            return
        ip = socket.inet_ntoa(recv_exact(conn, 4))
        (port,) = struct.unpack(">H", recv_exact(conn, 2))
        log(f"CONNECT {ip}:{port}")
        upstream = socket.create_connection((ip, port), timeout=10)
        upstream.settimeout(None)
        conn.sendall(b"\x05\x00\x00\x01" + bytes(6))
        t = threading.Thread(target=pump, args=(conn, upstream), daemon=True)
        t.start()
        pump(upstream, conn)
        t.join()


def main():
    port, logfile = int(sys.argv[1]), sys.argv[2]
    creds = (sys.argv[3], sys.argv[4]) if len(sys.argv) > 4 else None
    lock = threading.Lock()

    def log(line):
        with lock, open(logfile, "a") as f:
            f.write(line + "\n")

    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("0.0.0.0", port))
    server.listen(64)
    while True:
        conn, _ = server.accept()
        threading.Thread(target=session, args=(conn, log, creds), daemon=True).start()


if __name__ == "__main__":
    main()
