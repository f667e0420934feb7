"""A DNS server for the fake outside world: an A record `ADDR` for every name ending in `SUFFIX`, NXDOMAIN for
the rest (so no test lookup ever leaves the machine).

    fake_dns.py ADDR SUFFIX        (UDP port 53)
"""

import socket
import struct
import sys

ADDR, SUFFIX = socket.inet_aton(sys.argv[1]), sys.argv[2].lower().strip(".")


def name_at(packet: bytes, at: int):
    labels = []
    while packet[at]:
        length = packet[at]
        labels.append(packet[at + 1 : at + 1 + length].decode(errors="replace"))
        at += 1 + length
    return ".".join(labels).lower(), at + 1


def answer(query: bytes) -> bytes:
    (qid,) = struct.unpack("!H", query[:2])
    name, end = name_at(query, 12)
    qtype, _ = struct.unpack("!HH", query[end : end + 4])
    question = query[12 : end + 4]
    ours = name == SUFFIX or name.endswith("." + SUFFIX)
    flags = 0x8180 if ours else 0x8183  # a response, recursion available; NXDOMAIN when not ours
    records = b""
    if ours and qtype == 1:
        records = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + ADDR
    return struct.pack("!HHHHHH", qid, flags, 1, 1 if records else 0, 0, 0) + question + records


sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("0.0.0.0", 53))
while True:
    data, peer = sock.recvfrom(512)
    try:
        sock.sendto(answer(data), peer)
    except (IndexError, struct.error):
        pass
