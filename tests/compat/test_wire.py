"""Raw HTTP/1.1 wire checks that the SDKs depend on implicitly (spec §2.3).

The Python SDK's Connect client (connectrpc on pyqwest/hyper) sends a server-streaming request body with chunked
transfer encoding, and its terminating `0\\r\\n\\r\\n` chunk may reach envd after the first envelope. envd must
still read the request body to its end: if it answers and closes the connection with the terminator unread, the
kernel resets the connection and the client loses the tail of the response ("Connection reset by peer" in the
middle of a command's output), or the next request on the pooled connection fails ("connection closed before
message completed").
"""

import base64
import json
import socket
import struct
import time

from conftest import ENVD_PORT, TOKEN


def _envelope(obj) -> bytes:
    payload = json.dumps(obj).encode()
    return struct.pack(">BI", 0, len(payload)) + payload


def _start_request_head() -> bytes:
    return (
        "POST /process.Process/Start HTTP/1.1\r\n"
        f"Host: localhost:{ENVD_PORT}\r\n"
        "Content-Type: application/connect+json\r\n"
        "Connect-Protocol-Version: 1\r\n"
        f"X-Access-Token: {TOKEN}\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()


def _chunk(data: bytes) -> bytes:
    return b"%X\r\n" % len(data) + data + b"\r\n"


class _Reader:
    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buf = b""

    def _fill(self):
        data = self.sock.recv(1 << 16)
        if not data:
            raise EOFError("connection closed")
        self.buf += data

    def line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def head(self):
        status = int(self.line().split()[1])
        headers = {}
        while True:
            line = self.line()
            if not line:
                return status, headers
            k, v = line.decode().split(":", 1)
            headers[k.strip().lower()] = v.strip()

    def chunked_body(self) -> bytes:
        body = b""
        while True:
            size = int(self.line().split(b";")[0], 16)
            if size == 0:
                while self.line():
                    pass
                return body
            body += self.exact(size)
            self.exact(2)


def _envelopes(body: bytes):
    out, i = [], 0
    while i < len(body):
        flags, n = struct.unpack(">BI", body[i : i + 5])
        out.append((flags, json.loads(body[i + 5 : i + 5 + n])))
        i += 5 + n
    return out


def _stdout_of(envs) -> bytes:
    import base64

    data = b""
    for flags, msg in envs:
        if flags == 0 and "data" in msg.get("event", {}):
            data += base64.b64decode(msg["event"]["data"].get("stdout", ""))
    return data


def test_late_chunk_terminator_does_not_truncate_stream():
    expected = "".join(f"{i}\n" for i in range(1, 150001)).encode()
    # the output is written at once; the stream then stays open while the process sleeps
    request = _envelope({"process": {"cmd": "/bin/bash", "args": ["-c", "seq 1 150000; sleep 0.6"]}, "stdin": False})
    with socket.create_connection(("127.0.0.1", ENVD_PORT), timeout=30) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(_start_request_head() + _chunk(request))
        # The body's terminator follows a little later (as with the SDK's client, in its own packet). A server
        # may start the response before it or wait for it (connect-go reads to EOF first); either way it must
        # not be left unread. Then let envd finish before reading on.
        time.sleep(0.2)
        sock.sendall(b"0\r\n\r\n")
        time.sleep(1.5)
        reader = _Reader(sock)
        status, headers = reader.head()
        assert status == 200
        assert headers.get("content-type") == "application/connect+json"
        envs = _envelopes(reader.chunked_body())
        assert envs[-1] == (2, {})
        assert _stdout_of(envs) == expected


def test_connection_reused_after_stream_with_late_terminator():
    request = _envelope({"process": {"cmd": "/bin/true"}, "stdin": False})
    with socket.create_connection(("127.0.0.1", ENVD_PORT), timeout=30) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(_start_request_head() + _chunk(request))
        time.sleep(0.3)  # long enough for /bin/true to end; the request body is still open
        sock.sendall(b"0\r\n\r\n")
        reader = _Reader(sock)
        status, headers = reader.head()
        assert status == 200
        envs = _envelopes(reader.chunked_body())
        assert envs[-1] == (2, {})
        if headers.get("connection", "").lower() == "close":
            return  # announced: a pooled client will not reuse it
        # a pooled client reuses the connection for its next call
        sock.sendall(f"GET /health HTTP/1.1\r\nHost: localhost:{ENVD_PORT}\r\n\r\n".encode())
        status, _ = reader.head()
        assert 200 <= status < 300


def _decode_envelopes(body: bytes):
    out, pos = [], 0
    while pos + 5 <= len(body):
        flags, length = struct.unpack(">BI", body[pos:pos + 5])
        out.append((flags, json.loads(body[pos + 5:pos + 5 + length])))
        pos += 5 + length
    assert pos == len(body), "trailing bytes after the last envelope"
    return out


def test_h2c_unary_and_streaming_with_both_codecs():
    """envd speaks HTTP/2 without TLS (prior knowledge) on the same port, for JSON and binary protobuf."""
    import httpx

    base = f"http://127.0.0.1:{ENVD_PORT}"
    headers = {"X-Access-Token": TOKEN, "Connect-Protocol-Version": "1"}
    with httpx.Client(http1=False, http2=True, timeout=30) as client:
        unary = client.post(f"{base}/process.Process/List", content=b"{}",
                            headers={**headers, "Content-Type": "application/json"})
        assert unary.http_version == "HTTP/2"
        assert unary.status_code == 200
        assert isinstance(unary.json().get("processes", []), list)

        body = _envelope({"process": {"cmd": "/bin/echo", "args": ["over", "h2c"]}})
        stream = client.post(f"{base}/process.Process/Start", content=body,
                             headers={**headers, "Content-Type": "application/connect+json"})
        assert stream.http_version == "HTTP/2"
        assert stream.headers["content-type"] == "application/connect+json"
        envelopes = _decode_envelopes(stream.content)
        assert "start" in envelopes[0][1]["event"]
        stdout = b"".join(
            base64.b64decode(m["event"]["data"]["stdout"])
            for _, m in envelopes if "data" in m.get("event", {}) and "stdout" in m["event"]["data"]
        )
        assert stdout == b"over h2c\n"
        assert envelopes[-1] == (2, {})

        # Binary protobuf codec: an empty ListRequest is zero bytes; the response decodes as protobuf, not JSON.
        proto = client.post(f"{base}/process.Process/List", content=b"",
                            headers={**headers, "Content-Type": "application/proto"})
        assert proto.status_code == 200
        assert proto.headers["content-type"] == "application/proto"
