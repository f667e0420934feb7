"""A server for the fake outside world that answers every GET with the request's headers, one per line.
Under `/hashed` each value is replaced by its SHA-256 (hex), so a client can check what was sent without ever
receiving it (the tests that look for a secret in a sandbox's memory need the sandbox never to hold it).

    header_echo.py PORT                 plain HTTP
    header_echo.py PORT CERT KEY        HTTPS with that certificate
"""

import hashlib
import http.server
import ssl
import sys


class Echo(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        hashed = self.path.startswith("/hashed")
        shown = (lambda v: hashlib.sha256(v.encode()).hexdigest()) if hashed else (lambda v: v)
        body = "".join(f"{k}: {shown(v)}\n" for k, v in self.headers.items()).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("0.0.0.0", int(sys.argv[1])), Echo)
if len(sys.argv) > 3:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(sys.argv[2], sys.argv[3])
    server.socket = context.wrap_socket(server.socket, server_side=True)
server.serve_forever()
