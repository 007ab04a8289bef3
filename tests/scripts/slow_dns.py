"""A DNS server that answers every A query with 127.0.0.1 and every other query with
no records, each after DELAY seconds, logging each query it answers.

    python3 slow_dns.py ADDRESS PORT LOG DELAY

Prints `ready` once it listens. For tests of lookups shared by dials in flight
(cli/tests/dialer.rs): its log is the count of lookups the resolver really made.
"""

import socket
import struct
import sys
import threading
import time


def question(packet):
    """The queried name and type, and where the question ends."""
    labels, at = [], 12
    while packet[at]:
        length = packet[at]
        labels.append(packet[at + 1 : at + 1 + length].decode("ascii", "replace"))
        at += 1 + length
    qtype = struct.unpack("!H", packet[at + 1 : at + 3])[0]
    return ".".join(labels), qtype, at + 5


def answer(sock, log, delay, packet, client):
    time.sleep(delay)
    name, qtype, end = question(packet)
    records = b""
    count = 0
    if qtype == 1:
        # A pointer to the question's name, A, IN, TTL 0, 127.0.0.1.
        records = struct.pack("!HHHIH", 0xC00C, 1, 1, 0, 4) + bytes([127, 0, 0, 1])
        count = 1
    header = packet[:2] + struct.pack("!HHHHH", 0x8180, 1, count, 0, 0)
    sock.sendto(header + packet[12:end] + records, client)
    with open(log, "a") as out:
        out.write(f"{'A' if qtype == 1 else 'AAAA' if qtype == 28 else qtype} {name}\n")


def main():
    address, port, log, delay = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((address, port))
    print("ready", flush=True)
    while True:
        packet, client = sock.recvfrom(512)
        threading.Thread(
            target=answer, args=(sock, log, delay, packet, client), daemon=True
        ).start()


main()
