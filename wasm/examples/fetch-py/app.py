"""fetch-py: a wasi:http 0.2 command in Python, built by componentize-py 0.25.1 from
PyPI: `fetch-py URL [COUNT]` GETs URL COUNT times (1 by default), one after another,
each body read to its end, and prints each status and body length. Built by the
tests (cli/tests/run.rs) with:

    componentize-py -d wasm/examples/fetch-py/wit -w fetch-py componentize app -o fetch-py.wasm
"""

from urllib.parse import urlsplit

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import environment, outgoing_handler
from wit_world.imports import wasi_http_types as types
from wit_world.imports.streams import StreamError_Closed


def fetch(url):
    parts = urlsplit(url)
    request = types.OutgoingRequest(types.Fields())
    request.set_scheme(types.Scheme_Https() if parts.scheme == "https" else types.Scheme_Http())
    request.set_authority(parts.netloc)
    request.set_path_with_query(parts.path or "/")
    pending = outgoing_handler.handle(request, None)
    pending.subscribe().block()
    response = pending.get().value.value
    body = response.consume()
    stream = body.stream()
    length = 0
    while True:
        try:
            length += len(stream.blocking_read(65536))
        except Err as e:
            if isinstance(e.value, StreamError_Closed):
                break
            raise
    stream.__exit__(None, None, None)
    types.IncomingBody.finish(body)
    return response.status(), length


class Run(exports.Run):
    def run(self):
        args = environment.get_arguments()
        url = args[1]
        count = int(args[2]) if len(args) > 2 else 1
        for _ in range(count):
            try:
                status, length = fetch(url)
                print(f"{status} {length} bytes")
            except Err as e:
                print(f"error: {e.value}")
                raise SystemExit(1)
