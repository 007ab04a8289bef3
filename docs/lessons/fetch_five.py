"""Fetch a URL five times, the way many scripts do — and count the connections.

    python3 fetch_five.py urllib  URL   # urllib.request.urlopen, no session
    python3 fetch_five.py session URL   # one requests.Session for all five

Run it under the inspector (`roundtrip-inspector run -- python3 fetch_five.py …`)
and compare its picture with the last line printed here: the script counts its own
connect() calls, so the two can be checked against each other. An optional third
argument is a file to write that count to.
"""

import socket
import sys

opened = 0
_connect = socket.socket.connect


def counting_connect(sock, address):
    global opened
    opened += 1
    return _connect(sock, address)


socket.socket.connect = counting_connect

mode, url = sys.argv[1], sys.argv[2]
if mode == "urllib":
    import urllib.request

    for _ in range(5):
        with urllib.request.urlopen(url) as response:
            response.read()
elif mode == "session":
    import requests

    with requests.Session() as session:
        for _ in range(5):
            session.get(url).content
else:
    sys.exit(f"unknown mode {mode!r}: urllib or session")

plural = "" if opened == 1 else "s"
print(f"{mode}: 5 requests, {opened} connection{plural} opened")
if len(sys.argv) > 3:
    with open(sys.argv[3], "w") as out:
        out.write(str(opened))
