"""A tiny DNS server for the domain test: answers A queries for `<domain>` and every name under it with one
address, AAAA (and other types) under it with no records, and NXDOMAIN for anything else, so nothing the SDK
resolves inside the test's network namespace ever leaves it.

Usage: dns.py <listen address> <domain> <answer address>   (UDP port 53; runs until killed)
"""

import socket
import struct
import sys


def parse_question(packet: bytes):
    """The first question's (name, qtype, end offset); None if the packet is not a plain query."""
    if len(packet) < 12:
        return None
    labels, pos = [], 12
    while True:
        if pos >= len(packet):
            return None
        n = packet[pos]
        pos += 1
        if n == 0:
            break
        if n & 0xC0 or pos + n > len(packet):
            return None  # no compression in a question we are sent
        labels.append(packet[pos : pos + n].decode("ascii", "replace").lower())
        pos += n
    if pos + 4 > len(packet):
        return None
    qtype, _qclass = struct.unpack("!HH", packet[pos : pos + 4])
    return ".".join(labels), qtype, pos + 4


def answer(packet: bytes, domain: str, address: bytes):
    q = parse_question(packet)
    if q is None:
        return None
    name, qtype, end = q
    (ident,) = struct.unpack("!H", packet[:2])
    ours = name == domain or name.endswith("." + domain)
    rcode = 0 if ours else 3  # NXDOMAIN outside the test's domain
    records = b""
    count = 0
    if ours and qtype == 1:
        # A pointer to the question's name (offset 12), type A, class IN, TTL 5 s, 4 bytes.
        records = struct.pack("!HHHIH", 0xC00C, 1, 1, 5, 4) + address
        count = 1
    flags = 0x8400 | rcode  # response, authoritative
    if packet[2] & 0x01:
        flags |= 0x0100  # echo "recursion desired"
    header = struct.pack("!HHHHHH", ident, flags, 1, count, 0, 0)
    return header + packet[12:end] + records


def main():
    listen, domain, address = sys.argv[1], sys.argv[2].lower().rstrip("."), socket.inet_aton(sys.argv[3])
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((listen, 53))
    print(f"dns: {domain} and *.{domain} -> {sys.argv[3]} on {listen}:53", flush=True)
    while True:
        packet, peer = sock.recvfrom(4096)
        reply = answer(packet, domain, address)
        if reply is not None:
            sock.sendto(reply, peer)


if __name__ == "__main__":
    main()
