"""Signed file URLs (spec §3, §2.7): `download_url` / `upload_url` opened by a plain HTTP client with no headers.

Mirrors E2B's tests/sync/sandbox_sync/files/test_secured.py.
"""

import json
import urllib.parse
import uuid

from e2b import Sandbox

from conftest import HOME, raw_request


def _multipart(filename: str, data: bytes):
    boundary = uuid.uuid4().hex
    body = (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def _assert_no_token_in(url: str):
    from conftest import TOKEN

    assert TOKEN not in url


def test_download_url_with_signing(sandbox: Sandbox, name):
    content = "This file will be watched."
    sandbox.files.write(f"{name}/d.txt", content)
    url = sandbox.download_url(f"{name}/d.txt", "user")
    assert "signature=v1_" in url
    _assert_no_token_in(url)
    r = raw_request("GET", "", url=url)
    assert r.status == 200
    assert r.body.decode() == content


def test_download_url_default_user(sandbox: Sandbox, name):
    # no username => signed with "" and envd uses its default user
    sandbox.files.write(f"{name}/d.txt", "default user")
    url = sandbox.download_url(f"{name}/d.txt")
    assert "username=" not in url
    r = raw_request("GET", "", url=url)
    assert r.status == 200
    assert r.body == b"default user"


def test_download_url_with_signing_and_expiration(sandbox: Sandbox, name):
    content = "This file will be watched."
    sandbox.files.write(f"{name}/d.txt", content)
    url = sandbox.download_url(f"{name}/d.txt", "user", 120)
    assert "signature_expiration=" in url
    r = raw_request("GET", "", url=url)
    assert r.status == 200
    assert r.body.decode() == content


def test_download_url_with_expired_signing(sandbox: Sandbox, name):
    sandbox.files.write(f"{name}/d.txt", "This file will be watched.")
    url = sandbox.download_url(f"{name}/d.txt", "user", use_signature_expiration=-120)
    r = raw_request("GET", "", url=url)
    assert r.status == 401, f"Unexpected status {r.status}"
    assert json.loads(r.body.decode()) == {"code": 401, "message": "signature is already expired"}


def test_download_url_tampered(sandbox: Sandbox, name):
    sandbox.files.write(f"{name}/d.txt", "secret")
    url = sandbox.download_url(f"{name}/d.txt", "user")
    parts = urllib.parse.urlsplit(url)
    q = dict(urllib.parse.parse_qsl(parts.query))
    # same signature, other file
    q["path"] = f"{name}/other.txt"
    r = raw_request("GET", "", url=urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(q))))
    assert r.status == 401
    assert r.json() == {"code": 401, "message": "invalid signature"}
    # a read signature does not allow a write
    r = raw_request("POST", "", url=url, body=b"overwrite", headers={"Content-Type": "application/octet-stream"})
    assert r.status == 401
    assert sandbox.files.read(f"{name}/d.txt") == "secret"
    # an extended expiry invalidates the signature (signature checked first)
    exp_url = sandbox.download_url(f"{name}/d.txt", "user", -120)
    parts = urllib.parse.urlsplit(exp_url)
    q = dict(urllib.parse.parse_qsl(parts.query))
    q["signature_expiration"] = str(int(q["signature_expiration"]) + 100000)
    r = raw_request("GET", "", url=urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(q))))
    assert r.status == 401
    assert r.json() == {"code": 401, "message": "invalid signature"}


def test_files_without_token_or_signature(sandbox: Sandbox, name):
    sandbox.files.write(f"{name}/d.txt", "x")
    r = raw_request("GET", f"/files?path={name}/d.txt")
    assert r.status == 401
    assert r.json()["code"] == 401
    r = raw_request("GET", f"/files?path={name}/d.txt", headers={"X-Access-Token": "wrong"})
    assert r.status == 401


def test_upload_url_multipart(sandbox: Sandbox, name):
    path = f"{name}/up.txt"
    url = sandbox.upload_url(path, "user")
    _assert_no_token_in(url)
    body, headers = _multipart("up.txt", b"uploaded through a signed url")
    r = raw_request("POST", "", url=url, body=body, headers=headers)
    assert r.status == 200, r.body
    entries = r.json()
    assert isinstance(entries, list) and entries
    assert entries[0]["path"] == f"{HOME}/{path}"
    assert entries[0]["type"] == "file"
    assert sandbox.files.read(path) == "uploaded through a signed url"
    info = sandbox.files.get_info(path)
    assert (info.owner, info.group, info.mode) == ("user", "user", 0o644)


def test_upload_url_octet_stream_with_expiration(sandbox: Sandbox, name):
    path = f"{name}/up.bin"
    url = sandbox.upload_url(path, "user", 120)
    assert "signature_expiration=" in url
    r = raw_request("POST", "", url=url, body=b"\x00\x01raw", headers={"Content-Type": "application/octet-stream"})
    assert r.status == 200, r.body
    assert bytes(sandbox.files.read(path, format="bytes")) == b"\x00\x01raw"


def test_upload_url_expired(sandbox: Sandbox, name):
    path = f"{name}/expired.txt"
    url = sandbox.upload_url(path, "user", -120)
    body, headers = _multipart("expired.txt", b"nope")
    r = raw_request("POST", "", url=url, body=body, headers=headers)
    assert r.status == 401
    assert r.json() == {"code": 401, "message": "signature is already expired"}
    assert not sandbox.files.exists(path)


def test_upload_url_as_root(sandbox: Sandbox, name):
    sandbox.files.make_dir(name)
    path = f"{HOME}/{name}/root.txt"
    url = sandbox.upload_url(path, "root")
    assert "username=root" in url
    r = raw_request("POST", "", url=url, body=b"r", headers={"Content-Type": "application/octet-stream"})
    assert r.status == 200, r.body
    info = sandbox.files.get_info(path)
    assert (info.owner, info.group) == ("root", "root")
