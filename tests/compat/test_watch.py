"""Directory watching, sync (CreateWatcher/GetWatcherEvents) and async (WatchDir stream); spec §2.5.

Mirrors E2B's tests/sync/sandbox_sync/files/test_watch.py and tests/async/sandbox_async/files/test_watch.py. The
sync tests read events right after `files.write(...)` returns, with no sleep: events caused by a completed upload
must already be queued (spec §2.5).
"""

import asyncio

import pytest

from e2b import (
    AsyncSandbox,
    FilesystemEvent,
    FilesystemEventType,
    FileType,
    NotFoundException,
    Sandbox,
    SandboxException,
)


# --- sync ------------------------------------------------------------------------------------------------------------


def test_watch_directory_changes(sandbox: Sandbox, name):
    filename = "test_watch.txt"
    content = "This file will be watched."
    sandbox.files.make_dir(name)
    sandbox.files.write(f"{name}/{filename}", content)

    handle = sandbox.files.watch_dir(name)
    try:
        sandbox.files.write(f"{name}/{filename}", content)
        events = handle.get_new_events()
        assert events, "no event queued by the time the write returned"
        assert events[0].type == FilesystemEventType.WRITE
        assert events[0].name == filename
    finally:
        handle.stop()


def test_watch_new_file_events(sandbox: Sandbox, name):
    # E2B's test_watch_iterated: a new file written through the SDK gives exactly 3 events (CREATE, CHMOD, WRITE).
    filename = "test_watch_iterated.txt"
    sandbox.files.make_dir(name)
    handle = sandbox.files.watch_dir(name)
    try:
        sandbox.files.write(f"{name}/{filename}", "This file will be watched.")
        events = handle.get_new_events()
        assert [(e.type, e.name) for e in events] == [
            (FilesystemEventType.CREATE, filename),
            (FilesystemEventType.CHMOD, filename),
            (FilesystemEventType.WRITE, filename),
        ]
        sandbox.files.write(f"{name}/{filename}", "This file has been modified.")
        events = handle.get_new_events()
        assert any(e.type == FilesystemEventType.WRITE and e.name == filename for e in events)
    finally:
        handle.stop()


def test_watch_remove_and_rename_events(sandbox: Sandbox, name):
    sandbox.files.make_dir(name)
    sandbox.files.write(f"{name}/a.txt", "a")
    handle = sandbox.files.watch_dir(name)
    try:
        sandbox.files.rename(f"{name}/a.txt", f"{name}/b.txt")
        sandbox.files.remove(f"{name}/b.txt")
        events = [(e.type, e.name) for e in handle.get_new_events()]
        assert (FilesystemEventType.RENAME, "a.txt") in events
        assert (FilesystemEventType.CREATE, "b.txt") in events
        assert (FilesystemEventType.REMOVE, "b.txt") in events
    finally:
        handle.stop()


def test_watch_recursive_directory_changes(sandbox: Sandbox, name):
    nested = "test_nested_watch_dir"
    filename = "test_watch.txt"
    sandbox.files.make_dir(f"{name}/{nested}")
    handle = sandbox.files.watch_dir(name, recursive=True)
    try:
        sandbox.files.write(f"{name}/{nested}/{filename}", "This file will be watched.")
        events = handle.get_new_events()
        assert len(events) == 3, [(e.type, e.name) for e in events]
        assert events[0].type == FilesystemEventType.CREATE
        assert events[0].name == f"{nested}/{filename}"
    finally:
        handle.stop()


def test_watch_recursive_directory_after_nested_folder_addition(sandbox: Sandbox, name):
    nested = "test_nested_watch_dir"
    filename = "test_watch.txt"
    sandbox.files.make_dir(name)
    handle = sandbox.files.watch_dir(name, recursive=True)
    try:
        sandbox.files.make_dir(f"{name}/{nested}")
        sandbox.files.write(f"{name}/{nested}/{filename}", "This file will be watched.")
        events = handle.get_new_events()
        names = [(e.type, e.name) for e in events]
        assert (FilesystemEventType.CREATE, nested) in names
        assert (FilesystemEventType.WRITE, f"{nested}/{filename}") in names
    finally:
        handle.stop()


def test_watch_non_recursive_ignores_nested(sandbox: Sandbox, name):
    sandbox.files.make_dir(f"{name}/sub")
    handle = sandbox.files.watch_dir(name)
    try:
        sandbox.files.write(f"{name}/sub/deep.txt", "x")
        sandbox.files.write(f"{name}/top.txt", "x")
        events = handle.get_new_events()
        assert all("/" not in e.name for e in events), [e.name for e in events]
        assert any(e.name == "top.txt" for e in events)
    finally:
        handle.stop()


def test_watch_include_entry(sandbox: Sandbox, name):
    content = "entry info"
    sandbox.files.make_dir(name)
    handle = sandbox.files.watch_dir(name, include_entry=True)
    try:
        sandbox.files.write(f"{name}/e.txt", content)
        events = handle.get_new_events()
        writes = [e for e in events if e.type == FilesystemEventType.WRITE]
        assert writes, [(e.type, e.name) for e in events]
        entry = writes[-1].entry
        assert entry is not None
        assert entry.name == "e.txt"
        assert entry.path.endswith(f"/{name}/e.txt")
        assert entry.type == FileType.FILE
        assert entry.size == len(content)
        assert (entry.owner, entry.group, entry.mode) == ("user", "user", 0o644)

        # REMOVE events never carry an entry (the path is gone)
        sandbox.files.remove(f"{name}/e.txt")
        removes = [e for e in handle.get_new_events() if e.type == FilesystemEventType.REMOVE]
        assert removes and all(e.entry is None for e in removes)
    finally:
        handle.stop()


def test_watch_without_include_entry_has_no_entry(sandbox: Sandbox, name):
    sandbox.files.make_dir(name)
    handle = sandbox.files.watch_dir(name)
    try:
        sandbox.files.write(f"{name}/e.txt", "x")
        events = handle.get_new_events()
        assert events and all(e.entry is None for e in events)
    finally:
        handle.stop()


def test_watch_non_existing_directory(sandbox: Sandbox, name):
    with pytest.raises(NotFoundException):
        sandbox.files.watch_dir(f"{name}/non_existing_watch_dir")


def test_watch_file(sandbox: Sandbox, name):
    sandbox.files.write(f"{name}/test_watch.txt", "This file will be watched.")
    with pytest.raises(SandboxException):
        sandbox.files.watch_dir(f"{name}/test_watch.txt")


def test_watch_stopped_handle(sandbox: Sandbox, name):
    sandbox.files.make_dir(name)
    handle = sandbox.files.watch_dir(name)
    handle.stop()
    # the watcher id is gone on envd's side: GetWatcherEvents -> not_found
    with pytest.raises(SandboxException):
        handle.get_new_events()


# --- async -----------------------------------------------------------------------------------------------------------


async def test_async_watch_directory_changes(async_sandbox: AsyncSandbox, name):
    filename = "test_watch.txt"
    await async_sandbox.files.make_dir(name)
    await async_sandbox.files.write(f"{name}/{filename}", "This file will be watched.")

    triggered = asyncio.Event()

    def handle_event(e: FilesystemEvent):
        if e.type == FilesystemEventType.WRITE and e.name == filename:
            triggered.set()

    handle = await async_sandbox.files.watch_dir(name, on_event=handle_event)
    try:
        await async_sandbox.files.write(f"{name}/{filename}", "This file has been modified.")
        await asyncio.wait_for(triggered.wait(), timeout=10)
    finally:
        await handle.stop()


async def test_async_watch_recursive_after_nested_folder_addition(async_sandbox: AsyncSandbox, name):
    nested = "test_nested_watch_dir"
    filename = "test_watch.txt"
    await async_sandbox.files.make_dir(name)
    file_event, folder_event = asyncio.Event(), asyncio.Event()

    def handle_event(e: FilesystemEvent):
        if e.type == FilesystemEventType.WRITE and e.name == f"{nested}/{filename}":
            file_event.set()
        elif e.type == FilesystemEventType.CREATE and e.name == nested:
            folder_event.set()

    handle = await async_sandbox.files.watch_dir(name, on_event=handle_event, recursive=True)
    try:
        await async_sandbox.files.make_dir(f"{name}/{nested}")
        await asyncio.wait_for(folder_event.wait(), timeout=10)
        await async_sandbox.files.write(f"{name}/{nested}/{filename}", "This file will be watched.")
        await asyncio.wait_for(file_event.wait(), timeout=10)
    finally:
        await handle.stop()


async def test_async_watch_include_entry(async_sandbox: AsyncSandbox, name):
    await async_sandbox.files.make_dir(name)
    got = asyncio.get_running_loop().create_future()

    def handle_event(e: FilesystemEvent):
        if e.type == FilesystemEventType.WRITE and not got.done():
            got.set_result(e)

    handle = await async_sandbox.files.watch_dir(name, on_event=handle_event, include_entry=True)
    try:
        await async_sandbox.files.write(f"{name}/ae.txt", "12345")
        event = await asyncio.wait_for(got, timeout=10)
        assert event.entry is not None
        assert event.entry.name == "ae.txt"
        assert event.entry.type == FileType.FILE
    finally:
        await handle.stop()


async def test_async_watch_non_existing_directory(async_sandbox: AsyncSandbox, name):
    with pytest.raises(NotFoundException):
        await async_sandbox.files.watch_dir(f"{name}/non_existing_watch_dir", on_event=lambda e: None)


async def test_async_watch_file(async_sandbox: AsyncSandbox, name):
    await async_sandbox.files.write(f"{name}/test_watch.txt", "This file will be watched.")
    with pytest.raises(SandboxException):
        await async_sandbox.files.watch_dir(f"{name}/test_watch.txt", on_event=lambda e: None)
