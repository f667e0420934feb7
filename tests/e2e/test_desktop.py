"""Issue 16: E2B's Desktop SDK (`e2b_desktop`, unmodified) against `soulbox server`.

`Sandbox.create()` of the Desktop SDK starts the template `desktop`, which the server builds on first use
(tests/e2e/run.sh builds it ahead, so no test's timeout includes a build), then itself starts Xvfb at the
resolution it is given and an Xfce session, and drives everything through `commands.run` (xdotool, scrot,
xrandr, x11vnc, noVNC). The stream's URL (`https://6080-<id>.<domain>/vnc.html`) is fetched from the local
server with that host name in `Host`, so nothing is looked up or sent off the machine."""

from __future__ import annotations

import base64
import os
import socket
import struct
import urllib.parse
import uuid

import pytest
from e2b import CommandExitException
from e2b_desktop import Sandbox as Desktop

from conftest import API_URL, DOMAIN, RUN_ID, wait_until

# Under Debian 12's runsc the SDK's Xfce session never comes up (`create` fails with "Could not start XFCE"); not
# investigated yet, so the desktop is a runc template for now (README).
pytestmark = pytest.mark.skipif(
    os.environ.get("SOULBOX_RUNTIME") == "runsc", reason="the desktop session does not start under gVisor yet"
)

# A cold first use builds the template (apt from the Debian mirror): generous, and longer than the SDK's
# default 60 s request timeout.
FIRST_CREATE_TIMEOUT_S = 1800
# Not the SDK's default (1024x768), so the screenshot's size proves the SDK's resolution is the one used.
RESOLUTION = (800, 600)
NOVNC_PORT = 6080


@pytest.fixture(scope="module")
def desk(api) -> Desktop:
    sbx = Desktop.create(
        resolution=RESOLUTION,
        timeout=600,
        metadata={"e2e-run": RUN_ID, "role": "desktop"},
        request_timeout=FIRST_CREATE_TIMEOUT_S,
    )
    try:
        yield sbx
    finally:
        api.delete(f"/sandboxes/{sbx.sandbox_id}")


def windows_of(desk: Desktop, application: str) -> list[str]:
    """The SDK's `get_application_windows`, empty while there is none (xdotool then exits 1)."""
    try:
        return [w for w in desk.get_application_windows(application) if w]
    except CommandExitException:
        return []


def windows_named(desk: Desktop, title: str) -> list[str]:
    found = desk.commands.run(f"xdotool search --onlyvisible --name {title} || true").stdout.split()
    return [w for w in found if w]


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height from a PNG's IHDR chunk (the first one, right after the signature)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", data[:16]
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_a_screenshot_is_a_png_of_the_configured_size(desk):
    shot = bytes(desk.screenshot())
    assert png_size(shot) == RESOLUTION
    assert shot.endswith(b"IEND\xaeB`\x82"), "a truncated PNG"
    assert desk.get_screen_size() == RESOLUTION
    # the screenshot's temporary file is removed
    assert desk.commands.run("ls /tmp | grep -c '^screenshot-' || true").stdout.strip() == "0"


def test_the_mouse_moves_and_a_click_reaches_the_window_under_it(desk):
    events = f"/tmp/xev-{uuid.uuid4().hex[:8]}.log"
    # xev draws a window at a known place and prints every event it gets
    desk.commands.run(f"xev -geometry 300x200+50+60 -name soulbox-xev > {events}", background=True, timeout=0)
    # xev sets no WM_CLASS for the SDK's get_application_windows to find: by its title
    wait_until(lambda: windows_named(desk, "soulbox-xev"), 30, "the xev window")
    before = bytes(desk.screenshot())

    desk.move_mouse(150, 140)
    assert desk.get_cursor_position() == (150, 140)
    desk.left_click()
    desk.double_click(170, 150)
    assert desk.get_cursor_position() == (170, 150)

    def clicks():
        log = desk.files.read(events)
        return log.count("ButtonPress event") >= 3 and log
    log = wait_until(clicks, 30, "three button presses in xev's log")
    assert "button 1," in log and "ButtonRelease event" in log
    # xev reports the press at the pointer's place inside its window (window origin 50,60)
    assert "root:(170,150)" in log

    # the screen changed: a right click on the desktop opens xfdesktop's menu (and the pointer moved)
    desk.right_click(600, 450)
    wait_until(lambda: bytes(desk.screenshot()) != before, 30, "a different screen after the clicks")
    # the menu grabs the keyboard: Escape closes it, so that later keys reach the focused window
    desk.press("escape")


def test_typed_text_and_keys_reach_an_application(desk):
    typed = f"/tmp/typed-{uuid.uuid4().hex[:8]}.txt"
    title = f"soulbox-typing-{uuid.uuid4().hex[:6]}"
    # a terminal whose shell writes the line it reads to a file
    desk.commands.run(
        f"xterm -T {title} -geometry 60x10+200+200 -e sh -c 'read line; printf %s \"$line\" > {typed}'",
        background=True,
        timeout=0,
    )
    window = wait_until(lambda: windows_of(desk, "xterm"), 30, "the xterm window")[0]
    assert desk.get_window_title(window) == title
    # the focus on it, so the keys go there
    desk.commands.run(f"xdotool windowactivate --sync {window}")
    wait_until(lambda: desk.get_current_window_id() == window, 30, "the focus on the xterm")

    text = "Hello from e2b_desktop, 42 & <ok>"
    desk.write(text, delay_in_ms=10)
    desk.press("enter")
    content = wait_until(
        lambda: desk.commands.run(f"cat {typed} 2>/dev/null || true").stdout, 30, "the typed line in the file"
    )
    assert content == text


def test_the_clipboard_tools_are_there(desk):
    # xclip, which agents use to read what an application copied, against the session's X server
    desk.commands.run("printf %s 'copied text' | xclip -selection clipboard -i")
    assert desk.commands.run("xclip -selection clipboard -o").stdout == "copied text"
    assert desk.commands.run("wmctrl -m").stdout.startswith("Name: Xfwm4")


def test_open_shows_a_page_in_the_browser(desk):
    page_title = f"soulbox-page-{uuid.uuid4().hex[:8]}"
    page = f"/home/user/{page_title}.html"
    desk.files.write(page, f"<html><head><title>{page_title}</title></head><body>served from a file</body></html>")
    try:
        # xdg-open hands an HTML file to the default browser (firefox-esr); its window is titled after the page
        desk.open(page)
        # by the window manager's list (wmctrl): xdotool's search by name does not see Firefox's top window
        def listed():
            return [line.split()[0] for line in desk.commands.run("wmctrl -l").stdout.splitlines() if page_title in line]

        window = wait_until(listed, 120, "a browser window showing the page")[0]
        assert desk.get_window_title(str(int(window, 16))) == f"{page_title} — Mozilla Firefox"
    finally:
        desk.commands.run("pkill -x firefox-esr || true")


def rfb_security_types_over_websocket(host: str) -> list[int]:
    """Opens noVNC's websocket (`/websockify`) through the server's proxy with `Host: host` and reads the VNC
    server's greeting and the security types it offers (RFB 3.8)."""
    api = urllib.parse.urlsplit(API_URL)
    key = base64.b64encode(os.urandom(16)).decode()
    with socket.create_connection((api.hostname, api.port), timeout=30) as s:
        s.sendall(
            (
                f"GET /websockify HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: binary\r\n\r\n"
            ).encode()
        )
        stream = s.makefile("rb")
        status = stream.readline()
        assert b" 101 " in status, status
        while stream.readline() not in (b"\r\n", b""):
            pass

        def read_frame() -> bytes:
            head = stream.read(2)
            assert head[1] & 0x80 == 0, "a server frame must not be masked"
            length = head[1] & 0x7F
            if length == 126:
                length = struct.unpack(">H", stream.read(2))[0]
            return stream.read(length)

        def send_frame(payload: bytes):
            mask = os.urandom(4)
            masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            s.sendall(bytes([0x82, 0x80 | len(payload)]) + mask + masked)

        greeting = read_frame()
        assert greeting.startswith(b"RFB 003."), greeting
        send_frame(b"RFB 003.008\n")
        types = read_frame()
        return list(types[1 : 1 + types[0]])


def test_the_stream_serves_novnc_through_the_proxy_with_its_auth_key(desk, anon):
    desk.stream.start(require_auth=True)
    try:
        key = desk.stream.get_auth_key()
        assert len(key) == 16
        url = urllib.parse.urlsplit(desk.stream.get_url(auth_key=key))
        assert url.hostname == f"{NOVNC_PORT}-{desk.sandbox_id}.{DOMAIN}"
        assert url.path == "/vnc.html"
        assert urllib.parse.parse_qs(url.query)["password"] == [key]

        page = anon.get(url.path, headers={"Host": url.hostname})
        assert page.status_code == 200, page.text
        assert "<title>noVNC</title>" in page.text
        # the page's own script is served too
        script = anon.get("/app/ui.js", headers={"Host": url.hostname})
        assert script.status_code == 200 and "RFB" in script.text
        # the websocket reaches x11vnc, which asks for the password (VNC authentication, type 2) and nothing else
        assert rfb_security_types_over_websocket(url.hostname) == [2]
    finally:
        desk.stream.stop()
