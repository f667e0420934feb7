"""Filesystem through the official SDK (spec §2.5, §2.7 /files; mirrors E2B's tests/sync/sandbox_sync/files/*)."""

import gzip as gziplib
import io
import os
import uuid

import pytest

from e2b import FileType, InvalidArgumentException, NotFoundException, Sandbox
from e2b.sandbox.filesystem.filesystem import WriteEntry

from conftest import HOME, TOKEN

# 2.63 added EntryInfo.is_symlink; that SDK reports a symlink as FileType.SYMLINK, older ones as the target's type.
try:
    from e2b.envd.filesystem import filesystem_pb as _fs_pb

    SDK_HAS_IS_SYMLINK = hasattr(_fs_pb.EntryInfo(), "is_symlink")
except Exception:  # pragma: no cover - layout differs
    SDK_HAS_IS_SYMLINK = False


# --- write / read ----------------------------------------------------------------------------------------------------


def test_write_and_read_text(sandbox: Sandbox, name):
    content = "This is a test file. ✓ unicode"
    info = sandbox.files.write(f"{name}.txt", content)
    try:
        assert info.name == f"{name}.txt"
        assert info.path == f"{HOME}/{name}.txt"
        assert info.type == FileType.FILE
        assert sandbox.files.read(f"{name}.txt") == content
    finally:
        sandbox.files.remove(f"{name}.txt")


def test_write_and_read_bytes(sandbox: Sandbox, name):
    data = bytes(range(256)) * 64
    sandbox.files.write(f"{name}/data.bin", data)
    read = sandbox.files.read(f"{name}/data.bin", format="bytes")
    assert isinstance(read, bytearray)
    assert bytes(read) == data


def test_read_stream_and_write_file_object(sandbox: Sandbox, name):
    data = os.urandom(3 * 1024 * 1024 + 17)
    info = sandbox.files.write(f"{name}/big.bin", io.BytesIO(data))
    assert info.path == f"{HOME}/{name}/big.bin"
    stream = sandbox.files.read(f"{name}/big.bin", format="stream")
    chunks = [bytes(c) for c in stream]
    assert len(chunks) >= 1
    assert b"".join(chunks) == data
    assert sandbox.files.get_info(f"{name}/big.bin").size == len(data)


def test_write_empty_file(sandbox: Sandbox, name):
    sandbox.files.write(f"{name}/empty.txt", "")
    assert sandbox.files.read(f"{name}/empty.txt") == ""
    assert sandbox.files.get_info(f"{name}/empty.txt").size == 0


def test_overwrite_truncates(sandbox: Sandbox, name):
    sandbox.files.write(f"{name}/f.txt", "a much longer first version")
    sandbox.files.write(f"{name}/f.txt", "short")
    assert sandbox.files.read(f"{name}/f.txt") == "short"


def test_write_absolute_and_tilde_paths(sandbox: Sandbox, name):
    info = sandbox.files.write(f"{HOME}/{name}/abs.txt", "abs")
    assert info.path == f"{HOME}/{name}/abs.txt"
    info = sandbox.files.write(f"~/{name}/tilde.txt", "tilde")
    assert info.path == f"{HOME}/{name}/tilde.txt"
    assert sandbox.files.read(f"{name}/tilde.txt") == "tilde"


def test_write_creates_parents_owned_by_user(sandbox: Sandbox, name):
    sandbox.files.write(f"{name}/a/b/c.txt", "deep")
    for path in (name, f"{name}/a", f"{name}/a/b"):
        info = sandbox.files.get_info(path)
        assert info.type == FileType.DIR
        assert (info.owner, info.group, info.mode) == ("user", "user", 0o755), path
    info = sandbox.files.get_info(f"{name}/a/b/c.txt")
    assert (info.owner, info.group, info.mode, info.permissions) == ("user", "user", 0o644, "-rw-r--r--")


def test_write_as_root(sandbox: Sandbox, name):
    sandbox.files.make_dir(name)
    sandbox.files.write(f"{HOME}/{name}/root.txt", "r", user="root")
    info = sandbox.files.get_info(f"{HOME}/{name}/root.txt")
    assert (info.owner, info.group) == ("root", "root")


def test_write_files_multiple(sandbox: Sandbox, name):
    files = [
        WriteEntry(path=f"{name}/multi_1.txt", data="File 1"),
        WriteEntry(path=f"{name}/nested/multi_2.txt", data=b"File 2 \x00\xff"),
        WriteEntry(path=f"{HOME}/{name}/multi_3.txt", data=io.BytesIO(b"File 3")),
    ]
    infos = sandbox.files.write_files(files)
    assert len(infos) == 3
    assert sorted(i.path for i in infos) == sorted(
        [f"{HOME}/{name}/multi_1.txt", f"{HOME}/{name}/nested/multi_2.txt", f"{HOME}/{name}/multi_3.txt"]
    )
    assert sandbox.files.read(f"{name}/multi_1.txt") == "File 1"
    assert bytes(sandbox.files.read(f"{name}/nested/multi_2.txt", format="bytes")) == b"File 2 \x00\xff"
    assert sandbox.files.read(f"{name}/multi_3.txt") == "File 3"


def test_read_missing_file(sandbox: Sandbox):
    with pytest.raises(NotFoundException):
        sandbox.files.read(f"compat_missing_{uuid.uuid4().hex}.txt")


def test_read_directory(sandbox: Sandbox, name):
    sandbox.files.make_dir(name)
    with pytest.raises(InvalidArgumentException):
        sandbox.files.read(name)


# --- gzip ------------------------------------------------------------------------------------------------------------


def test_write_and_read_with_gzip(sandbox: Sandbox, name):
    content = "This is a test file with gzip encoding." * 100
    info = sandbox.files.write(f"{name}/gz.txt", content, gzip=True)
    assert info.path == f"{HOME}/{name}/gz.txt"
    assert sandbox.files.read(f"{name}/gz.txt", gzip=True) == content
    # stored decompressed
    assert sandbox.files.read(f"{name}/gz.txt") == content
    assert sandbox.files.get_info(f"{name}/gz.txt").size == len(content)


def test_write_files_with_gzip(sandbox: Sandbox, name):
    files = [WriteEntry(path=f"{name}/gzip_multi_{i}.txt", data=f"File {i} content") for i in range(3)]
    infos = sandbox.files.write_files(files, gzip=True)
    assert len(infos) == len(files)
    for file in files:
        assert sandbox.files.read(file["path"]) == file["data"]


def test_read_bytes_with_gzip(sandbox: Sandbox, name):
    content = "Binary content with gzip."
    sandbox.files.write(f"{name}/b.txt", content)
    read = sandbox.files.read(f"{name}/b.txt", format="bytes", gzip=True)
    assert isinstance(read, bytearray)
    assert read.decode("utf-8") == content


def test_raw_gzip_download_and_range(sandbox: Sandbox, name, raw):
    content = b"0123456789" * 1000
    sandbox.files.write(f"{name}/r.bin", content)
    auth = {"X-Access-Token": TOKEN}
    r = raw("GET", f"/files?path={name}/r.bin", headers={**auth, "Accept-Encoding": "gzip"})
    assert r.status == 200
    assert r.headers.get("content-encoding") == "gzip"
    assert gziplib.decompress(r.body) == content
    r = raw("GET", f"/files?path={name}/r.bin", headers={**auth, "Range": "bytes=10-19"})
    assert r.status == 206
    assert r.body == b"0123456789"
    r = raw("GET", f"/files?path={name}/r.bin", headers=auth)
    assert r.status == 200 and r.body == content


def test_raw_gzip_octet_stream_upload(sandbox: Sandbox, name, raw):
    content = b"gzipped upload body\n" * 50
    r = raw(
        "POST",
        f"/files?path={name}/up.txt",
        body=gziplib.compress(content),
        headers={"X-Access-Token": TOKEN, "Content-Type": "application/octet-stream", "Content-Encoding": "gzip"},
    )
    assert r.status == 200, r.body
    body = r.json()
    assert body[0]["path"] == f"{HOME}/{name}/up.txt"
    assert body[0]["name"] == "up.txt"
    assert body[0]["type"] == "file"
    assert bytes(sandbox.files.read(f"{name}/up.txt", format="bytes")) == content


# --- list ------------------------------------------------------------------------------------------------------------


def test_list_directory(sandbox: Sandbox, name):
    parent = name
    for d in ("subdir1", "subdir2", "subdir1/subdir1_1", "subdir1/subdir1_2", "subdir2/subdir2_1", "subdir2/subdir2_2"):
        sandbox.files.make_dir(f"{parent}/{d}")
    sandbox.files.write(f"{parent}/file1.txt", "Hello, world!")

    depth1 = (["file1.txt", "subdir1", "subdir2"], [FileType.FILE, FileType.DIR, FileType.DIR], ["file1.txt", "subdir1", "subdir2"])
    depth2_rel = ["file1.txt", "subdir1", "subdir1/subdir1_1", "subdir1/subdir1_2", "subdir2", "subdir2/subdir2_1", "subdir2/subdir2_2"]
    depth2 = ([p.split("/")[-1] for p in depth2_rel], [FileType.FILE] + [FileType.DIR] * 6, depth2_rel)

    for depth, (names, types, rels) in [(None, depth1), (1, depth1), (2, depth2), (3, depth2)]:
        files = sandbox.files.list(parent, depth=depth) if depth is not None else sandbox.files.list(parent)
        assert len(files) == len(names), (depth, [f.path for f in files])
        for f, n, t, rel in zip(files, names, types, rels):
            assert f.name == n
            assert f.path == f"{HOME}/{parent}/{rel}"
            assert f.type == t


def test_list_depth_must_be_positive(sandbox: Sandbox, name):
    sandbox.files.make_dir(name)
    with pytest.raises(Exception) as exc_info:
        sandbox.files.list(name, depth=-1)
    assert "depth should be at least 1" in str(exc_info.value)


def test_list_entry_details(sandbox: Sandbox, name):
    content = "Hello, World!"
    sandbox.files.make_dir(f"{name}/subdir")
    sandbox.files.write(f"{name}/test.txt", content)
    entries = {e.name: e for e in sandbox.files.list(name, depth=1)}
    assert set(entries) == {"subdir", "test.txt"}

    d = entries["subdir"]
    assert d.path == f"{HOME}/{name}/subdir"
    assert d.type == FileType.DIR
    assert (d.mode, d.permissions, d.owner, d.group) == (0o755, "drwxr-xr-x", "user", "user")
    assert d.modified_time is not None

    f = entries["test.txt"]
    assert f.path == f"{HOME}/{name}/test.txt"
    assert f.type == FileType.FILE
    assert (f.mode, f.permissions, f.owner, f.group) == (0o644, "-rw-r--r--", "user", "user")
    assert f.size == len(content)
    assert f.modified_time is not None
    assert f.symlink_target is None


def test_list_missing_and_not_a_dir(sandbox: Sandbox, name):
    with pytest.raises(NotFoundException):
        sandbox.files.list(f"{name}/missing")
    sandbox.files.write(f"{name}/f.txt", "x")
    with pytest.raises(InvalidArgumentException):
        sandbox.files.list(f"{name}/f.txt")


# --- exists / info ---------------------------------------------------------------------------------------------------


def test_exists(sandbox: Sandbox, name):
    sandbox.files.write(f"{name}/e.txt", "x")
    assert sandbox.files.exists(f"{name}/e.txt") is True
    assert sandbox.files.exists(name) is True
    assert sandbox.files.exists(f"{name}/nope.txt") is False


def test_get_info_of_file(sandbox: Sandbox, name):
    sandbox.files.make_dir(name)
    filename = f"{name}/test_file.txt"
    sandbox.files.write(filename, "test")
    info = sandbox.files.get_info(filename)
    current_path = sandbox.commands.run("pwd")
    assert info.name == "test_file.txt"
    assert info.type == FileType.FILE
    assert info.path == f"{current_path.stdout.strip()}/{filename}"
    assert info.size == 4
    assert info.mode == 0o644
    assert info.permissions == "-rw-r--r--"
    assert info.owner == "user"
    assert info.group == "user"
    assert info.modified_time is not None
    assert info.symlink_target is None


def test_get_info_of_directory(sandbox: Sandbox, name):
    sandbox.files.make_dir(name)
    info = sandbox.files.get_info(name)
    current_path = sandbox.commands.run("pwd")
    assert info.name == name
    assert info.type == FileType.DIR
    assert info.path == f"{current_path.stdout.strip()}/{name}"
    assert info.size > 0
    assert info.mode == 0o755
    assert info.permissions == "drwxr-xr-x"
    assert info.owner == "user"
    assert info.group == "user"
    assert info.modified_time is not None


def test_get_info_of_nonexistent(sandbox: Sandbox, name):
    with pytest.raises(NotFoundException):
        sandbox.files.get_info(f"{name}/does_not_exist.txt")


def test_file_symlink(sandbox: Sandbox, name):
    sandbox.files.make_dir(name)
    sandbox.files.write(f"{name}/test.txt", "Hello, World!")
    sandbox.commands.run("ln -s test.txt symlink_to_test.txt", cwd=name)
    info = sandbox.files.get_info(f"{name}/symlink_to_test.txt")
    pwd = sandbox.commands.run("pwd").stdout.strip()
    assert info.type == (FileType.SYMLINK if SDK_HAS_IS_SYMLINK else FileType.FILE)
    assert info.symlink_target == f"{pwd}/{name}/test.txt"
    assert info.permissions == "Lrwxrwxrwx"
    assert info.path == f"{pwd}/{name}/symlink_to_test.txt"


# --- make_dir / remove / rename --------------------------------------------------------------------------------------


def test_make_dir(sandbox: Sandbox, name):
    assert sandbox.files.make_dir(name) is True
    assert sandbox.files.exists(name)
    # existing => False
    assert sandbox.files.make_dir(name) is False
    # nested parents are created
    assert sandbox.files.make_dir(f"{name}/a/b/c") is True
    info = sandbox.files.get_info(f"{name}/a/b")
    assert (info.type, info.owner, info.mode) == (FileType.DIR, "user", 0o755)


def test_make_dir_over_file(sandbox: Sandbox, name):
    sandbox.files.write(f"{name}/file", "x")
    with pytest.raises(InvalidArgumentException):
        sandbox.files.make_dir(f"{name}/file")


def test_remove_file(sandbox: Sandbox, name):
    sandbox.files.write(f"{name}/r.txt", "x")
    sandbox.files.remove(f"{name}/r.txt")
    assert sandbox.files.exists(f"{name}/r.txt") is False


def test_remove_dir_recursive_and_missing(sandbox: Sandbox, name):
    sandbox.files.write(f"{name}/deep/er/x.txt", "x")
    sandbox.files.remove(name)
    assert sandbox.files.exists(name) is False
    # removing something that does not exist is not an error
    sandbox.files.remove(f"{name}/never_existed")


def test_rename_file(sandbox: Sandbox, name):
    content = "This file will be renamed."
    sandbox.files.write(f"{name}/old.txt", content)
    info = sandbox.files.rename(f"{name}/old.txt", f"{name}/new.txt")
    assert info.path == f"{HOME}/{name}/new.txt"
    assert info.name == "new.txt"
    assert info.type == FileType.FILE
    assert sandbox.files.exists(f"{name}/old.txt") is False
    assert sandbox.files.read(f"{name}/new.txt") == content


def test_rename_creates_destination_parents(sandbox: Sandbox, name):
    sandbox.files.write(f"{name}/src.txt", "x")
    info = sandbox.files.rename(f"{name}/src.txt", f"{name}/x/y/dst.txt")
    assert info.path == f"{HOME}/{name}/x/y/dst.txt"
    assert sandbox.files.read(f"{name}/x/y/dst.txt") == "x"


def test_rename_missing_source(sandbox: Sandbox, name):
    with pytest.raises(NotFoundException):
        sandbox.files.rename(f"{name}/missing.txt", f"{name}/other.txt")


# --- metadata (user.e2b.* xattrs) ------------------------------------------------------------------------------------


def test_write_file_with_metadata(sandbox: Sandbox, name):
    metadata = {"author": "mish", "purpose": "upload"}
    info = sandbox.files.write(f"{name}/m.txt", "with metadata", metadata=metadata)
    assert info.metadata == metadata
    assert sandbox.files.get_info(f"{name}/m.txt").metadata == metadata


def test_write_file_with_metadata_octet_stream(sandbox: Sandbox, name):
    metadata = {"author": "mish", "purpose": "upload"}
    info = sandbox.files.write(f"{name}/m.txt", "with metadata", metadata=metadata, use_octet_stream=True)
    assert info.metadata == metadata
    assert sandbox.files.get_info(f"{name}/m.txt").metadata == metadata


def test_write_file_without_metadata(sandbox: Sandbox, name):
    info = sandbox.files.write(f"{name}/n.txt", "no metadata here")
    assert info.metadata is None
    assert sandbox.files.get_info(f"{name}/n.txt").metadata is None


def test_write_files_applies_metadata_to_every_file(sandbox: Sandbox, name):
    metadata = {"source": "test-suite"}
    files = [WriteEntry(path=f"{name}/mm_1.txt", data="File 1"), WriteEntry(path=f"{name}/mm_2.txt", data="File 2")]
    infos = sandbox.files.write_files(files, metadata=metadata)
    assert len(infos) == len(files)
    for info in infos:
        assert info.metadata == metadata
        assert sandbox.files.get_info(info.path).metadata == metadata


def test_metadata_surfaced_when_listing_and_after_rename(sandbox: Sandbox, name):
    metadata = {"tag": "listed"}
    sandbox.files.write(f"{name}/listed.txt", "content", metadata=metadata)
    entry = next(e for e in sandbox.files.list(name) if e.name == "listed.txt")
    assert entry.metadata == metadata
    info = sandbox.files.rename(f"{name}/listed.txt", f"{name}/renamed.txt")
    assert info.metadata == metadata


def test_overwriting_clears_stale_metadata(sandbox: Sandbox, name):
    sandbox.files.write(f"{name}/o.txt", "first", metadata={"author": "mish"})
    info = sandbox.files.write(f"{name}/o.txt", "second")
    assert info.metadata is None
    assert sandbox.files.get_info(f"{name}/o.txt").metadata is None


def test_metadata_set_via_xattrs_surfaced_in_get_info(sandbox: Sandbox, name):
    sandbox.files.write(f"{name}/x.txt", "content")
    file_path = sandbox.commands.run(f"realpath {name}/x.txt").stdout.strip()
    # envd runs on this host: set the xattr out of band, straight on the file.
    os.setxattr(file_path, "user.e2b.author", b"mish")
    assert sandbox.files.get_info(f"{name}/x.txt").metadata == {"author": "mish"}
    # and through a command in the sandbox, like E2B's test (setfattr)
    sandbox.commands.run(f"setfattr -n user.e2b.reviewer -v ana {file_path}")
    assert sandbox.files.get_info(f"{name}/x.txt").metadata == {"author": "mish", "reviewer": "ana"}
    # xattrs outside user.e2b.* are not metadata
    os.setxattr(file_path, "user.other", b"1")
    assert sandbox.files.get_info(f"{name}/x.txt").metadata == {"author": "mish", "reviewer": "ana"}


def test_write_rejects_invalid_metadata(sandbox: Sandbox, name):
    filename = f"{name}/invalid_metadata.txt"
    with pytest.raises(InvalidArgumentException):
        sandbox.files.write(filename, "x", metadata={"bad key": "value"})
    with pytest.raises(InvalidArgumentException):
        sandbox.files.write(filename, "x", metadata={"": "value"})
    with pytest.raises(InvalidArgumentException):
        sandbox.files.write(filename, "x", metadata={"good": "bad\nvalue"})
    assert not sandbox.files.exists(filename)


def test_raw_metadata_headers(sandbox: Sandbox, name, raw):
    r = raw(
        "POST",
        f"/files?path={name}/h.txt",
        body=b"hdr",
        headers={"X-Access-Token": TOKEN, "Content-Type": "application/octet-stream", "X-Metadata-Owner-Team": "core"},
    )
    assert r.status == 200, r.body
    assert r.json()[0].get("metadata") == {"owner-team": "core"}
    assert sandbox.files.get_info(f"{name}/h.txt").metadata == {"owner-team": "core"}
