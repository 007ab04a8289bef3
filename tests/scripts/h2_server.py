#!/usr/bin/python3
"""A scripted HTTP/2 server (h2c, prior knowledge) on Python's `h2` (Debian python3-h2),
for what well-behaved servers never do. Roundtrip's tests (tests/tests/http2.rs) start
it on a free loopback port:

    h2_server.py --port P --log FILE [--max-streams N] [--window BYTES]
                 [--goaway-at K] [--silent-after N] [--no-window-updates]
                 [--window-at-first-data]

Paths:
  /small             200 "hello\\n"
  /echo              200, the request body back; `x-body-bytes`; a request trailer
                     `x-check` comes back as the response trailer `x-got-check`
  /slow?ms=M         200 after M milliseconds
  /refuse-once/TAG   RST_STREAM(REFUSED_STREAM) the first time TAG is seen, then 200
  /hold              held; once K (--goaway-at) are held on a connection, the first
                     two are answered, GOAWAY names the second as the last stream, the
                     rest are never processed and the connection closes; after that,
                     /hold is answered at once
  /reset-mid-body    headers and 16 KiB of body, then RST_STREAM(INTERNAL_ERROR)
  /big-headers       a 20 000-byte response header
Every request processed (answered or reset on purpose) is logged to FILE as a JSON
line: {"conn": n, "stream": id, "path": p, "id": x-id header}; so are the client's
SETTINGS ({"conn": n, "settings": {code: value}}) and its connection-level
WINDOW_UPDATEs ({"conn": n, "window_update": increment}).
--silent-after N: after N answers on a connection the server reads on but never
answers anything again (not even PING).
--no-window-updates: the server never gives flow-control window back: a request body
longer than the window stalls.
--window BYTES is announced in a second SETTINGS frame once the client has acknowledged
the first; --window-at-first-data: only once the connection's first DATA frame has come
too, so the smaller window always races the client's first DATA frames (sent under the
65 535-byte default).
"""

import argparse
import json
import socket
import threading
import time
from urllib.parse import parse_qs, urlsplit

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

parser = argparse.ArgumentParser()
parser.add_argument("--port", type=int, required=True)
parser.add_argument("--log", required=True)
parser.add_argument("--max-streams", type=int, default=100)
parser.add_argument("--window", type=int, default=65535)
parser.add_argument("--goaway-at", type=int, default=0)
parser.add_argument("--silent-after", type=int, default=0)
parser.add_argument("--no-window-updates", action="store_true")
parser.add_argument("--window-at-first-data", action="store_true")
args = parser.parse_args()

lock = threading.Lock()
refused = set()
connections = [0]
goaway_sent = [False]


def log(entry):
    with lock:
        with open(args.log, "a") as f:
            f.write(json.dumps(entry) + "\n")


class Connection:
    def __init__(self, sock, number):
        self.sock = sock
        self.number = number
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        )
        codes = h2.settings.SettingCodes
        self.conn.local_settings = h2.settings.Settings(
            client=False,
            initial_values={codes.MAX_CONCURRENT_STREAMS: args.max_streams},
        )
        self.streams = {}
        self.outgoing = {}  # stream id -> [remaining bytes, trailers or None]
        self.timers = []  # (due, stream id)
        self.held = []
        self.answers = 0
        self.silent = False
        self.closing_at = None
        self.first_data_seen = False
        self.initial_settings_acked = False
        self.window_announced = False

    def flush(self):
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def run(self):
        self.conn.initiate_connection()
        self.flush()
        self.sock.settimeout(0.02)
        while True:
            try:
                data = self.sock.recv(65536)
                if not data:
                    return
            except socket.timeout:
                data = b""
            if self.silent:
                continue
            if data:
                try:
                    events = self.conn.receive_data(data)
                except h2.exceptions.ProtocolError:
                    self.flush()
                    return
                for event in events:
                    self.on_event(event)
            now = time.monotonic()
            for due, stream in [t for t in self.timers if t[0] <= now]:
                self.timers.remove((due, stream))
                self.answer(stream, b"slow\n")
            self.pump()
            if not self.silent:
                self.flush()
            if self.closing_at and now >= self.closing_at:
                return

    def announce_window(self):
        """Sends --window once the first SETTINGS is acknowledged (and, with
        --window-at-first-data, the first DATA frame has come).

        It takes effect once the client acknowledges it: the client may send 65 535
        bytes on a stream before it has seen it. Never while the first SETTINGS is
        unacknowledged: h2 applies every pending setting at the first ACK it gets,
        so the client's ACK of the first SETTINGS would shrink the server's windows
        before the client has even seen the smaller one (a FLOW_CONTROL_ERROR on
        bytes the client was allowed to send).
        """
        due = self.initial_settings_acked and (
            self.first_data_seen or not args.window_at_first_data
        )
        if due and not self.window_announced and args.window != 65535:
            self.window_announced = True
            self.conn.update_settings(
                {h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: args.window}
            )

    def on_event(self, event):
        if isinstance(event, h2.events.RequestReceived):
            self.streams[event.stream_id] = {
                "headers": dict(event.headers),
                "body": bytearray(),
                "trailers": {},
            }
        elif isinstance(event, h2.events.DataReceived):
            self.first_data_seen = True
            self.announce_window()
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream["body"] += event.data
            self.give_back(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.TrailersReceived):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream["trailers"] = dict(event.headers)
        elif isinstance(event, h2.events.SettingsAcknowledged):
            self.initial_settings_acked = True
            self.announce_window()
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            log({
                "conn": self.number,
                "settings": {
                    int(code): change.new_value
                    for code, change in event.changed_settings.items()
                },
            })
        elif isinstance(event, h2.events.WindowUpdated) and event.stream_id == 0:
            log({"conn": self.number, "window_update": event.delta})
        elif isinstance(event, h2.events.StreamEnded):
            self.handle(event.stream_id)
        elif isinstance(event, h2.events.StreamReset):
            self.streams.pop(event.stream_id, None)
            self.outgoing.pop(event.stream_id, None)

    def give_back(self, length, stream_id):
        """Returns a DATA frame's window at once, to the connection and its stream.

        Not `acknowledge_received_data`: h2's window manager gives window back only
        once half a window has been processed, and counts from the window in force
        when the bytes arrived. Bytes the client sent under the first 65 535-byte
        window, before it acknowledged a smaller --window, are then never given back:
        the client's window stays at or below zero and it waits forever (one run in
        ten of a 256 KiB upload against --window 16384, seen 2026-12-05).
        """
        if not length or args.no_window_updates:
            return
        self.conn.increment_flow_control_window(length)
        try:
            self.conn.increment_flow_control_window(length, stream_id)
        except h2.exceptions.StreamClosedError:
            pass

    def processed(self, stream_id, path):
        headers = self.streams[stream_id]["headers"]
        log(
            {
                "conn": self.number,
                "stream": stream_id,
                "path": path,
                "id": headers.get("x-id"),
            }
        )

    def handle(self, stream_id):
        request = self.streams[stream_id]
        url = urlsplit(request["headers"][":path"])
        path = url.path
        if path == "/hold" and args.goaway_at and not goaway_sent[0]:
            self.held.append(stream_id)
            if len(self.held) == args.goaway_at:
                goaway_sent[0] = True
                first, second = self.held[0], self.held[1]
                for stream in (first, second):
                    self.processed(stream, path)
                    self.answer(stream, b"held\n", log_it=False)
                # (Python's h2 sends nothing after its GOAWAY: the answers go first.)
                self.pump()
                self.conn.close_connection(
                    error_code=h2.errors.ErrorCodes.NO_ERROR, last_stream_id=second
                )
                self.closing_at = time.monotonic() + 0.3
            return
        if path.startswith("/refuse-once/"):
            self.processed(stream_id, path)
            with lock:
                first = path not in refused
                refused.add(path)
            if first:
                self.conn.reset_stream(
                    stream_id, error_code=h2.errors.ErrorCodes.REFUSED_STREAM
                )
                return
            self.answer(stream_id, b"ok\n", log_it=False)
            return
        if path == "/slow":
            ms = int(parse_qs(url.query).get("ms", ["300"])[0])
            self.processed(stream_id, path)
            self.timers.append((time.monotonic() + ms / 1000, stream_id))
            return
        if path == "/reset-mid-body":
            self.processed(stream_id, path)
            self.conn.send_headers(stream_id, [(":status", "200")])
            self.conn.send_data(stream_id, b"x" * 16384)
            self.conn.reset_stream(
                stream_id, error_code=h2.errors.ErrorCodes.INTERNAL_ERROR
            )
            return
        if path == "/big-headers":
            self.processed(stream_id, path)
            self.conn.send_headers(
                stream_id, [(":status", "200"), ("x-big", "a" * 20000)], end_stream=True
            )
            self.answered()
            return
        if path == "/echo":
            self.processed(stream_id, path)
            body = bytes(request["body"])
            trailers = None
            check = request["trailers"].get("x-check")
            if check is not None:
                trailers = [("x-got-check", check)]
            self.answer(
                stream_id,
                body,
                headers=[("x-body-bytes", str(len(body)))],
                trailers=trailers,
                log_it=False,
            )
            return
        self.answer(stream_id, b"hello\n")
        if path != "/small":
            pass

    def answer(self, stream_id, body, headers=(), trailers=None, log_it=True):
        if log_it:
            self.processed(stream_id, urlsplit(self.streams[stream_id]["headers"][":path"]).path)
        self.conn.send_headers(
            stream_id,
            [(":status", "200"), ("content-length", str(len(body)))] + list(headers),
        )
        self.outgoing[stream_id] = [body, trailers]
        self.answered()

    def answered(self):
        self.answers += 1
        if args.silent_after and self.answers >= args.silent_after:
            self.pump()
            self.flush()
            self.silent = True

    def pump(self):
        for stream_id in list(self.outgoing):
            body, trailers = self.outgoing[stream_id]
            while True:
                window = min(
                    self.conn.local_flow_control_window(stream_id),
                    self.conn.max_outbound_frame_size,
                )
                if not body:
                    if trailers:
                        self.conn.send_headers(stream_id, trailers, end_stream=True)
                    else:
                        self.conn.send_data(stream_id, b"", end_stream=True)
                    del self.outgoing[stream_id]
                    break
                if window <= 0:
                    self.outgoing[stream_id][0] = body
                    break
                chunk, body = body[:window], body[window:]
                self.conn.send_data(stream_id, chunk)


def main():
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", args.port))
    listener.listen(64)
    while True:
        sock, _ = listener.accept()
        with lock:
            connections[0] += 1
            number = connections[0]

        def serve(sock=sock, number=number):
            try:
                Connection(sock, number).run()
            except (OSError, h2.exceptions.ProtocolError):
                pass
            finally:
                sock.close()

        threading.Thread(target=serve, daemon=True).start()


main()
