"""relay-py: the relay (wasm/examples/relay-p2) written in Python and built by
componentize-py 0.25.1 from PyPI — a wasi:http 0.2 `proxy` component from another
toolchain, the kind most services are today.

It forwards each request (method, headers but `url`, body) to the URL in its `url`
header and answers with the status, headers and body that came back; without the
header, 400. Built by the tests (tests/tests/serve.rs) with:

    componentize-py -d wasm/examples/relay-p2/wit -w wasi:http/proxy@0.2.12 \
        componentize app -o relay-py.wasm
"""

from urllib.parse import urlsplit

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.imports import outgoing_handler, types
from wit_world.imports.streams import StreamError_Closed

# Fields a guest may not set (wasmtime-wasi-http's forbidden headers), and `url`.
NOT_FORWARDED = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
    "proxy-connection", "transfer-encoding", "upgrade", "host", "http2-settings", "url",
}


def forwarded(entries):
    return [(name, value) for name, value in entries if name.lower() not in NOT_FORWARDED]


def copy(source, sink):
    """Copies an incoming body into an outgoing one, to its end."""
    stream = source.stream()
    out = sink.write()
    while True:
        try:
            chunk = stream.blocking_read(65536)
        except Err as e:
            if isinstance(e.value, StreamError_Closed):
                break
            raise
        for at in range(0, len(chunk), 4096):
            out.blocking_write_and_flush(chunk[at:at + 4096])
    out.__exit__(None, None, None)
    stream.__exit__(None, None, None)
    types.IncomingBody.finish(source)


def answer(response_out, status):
    response = types.OutgoingResponse(types.Fields())
    response.set_status_code(status)
    body = response.body()
    types.ResponseOutparam.set(response_out, Ok(response))
    types.OutgoingBody.finish(body, None)


class IncomingHandler(exports.IncomingHandler):
    def handle(self, request, response_out):
        entries = request.headers().entries()
        target = next((v for n, v in entries if n.lower() == "url"), None)
        if target is None:
            return answer(response_out, 400)
        url = urlsplit(target.decode())
        outgoing = types.OutgoingRequest(types.Fields.from_list(forwarded(entries)))
        outgoing.set_method(request.method())
        outgoing.set_scheme(types.Scheme_Https() if url.scheme == "https" else types.Scheme_Http())
        outgoing.set_authority(url.netloc)
        outgoing.set_path_with_query(url.path + ("?" + url.query if url.query else ""))
        sink = outgoing.body()
        try:
            pending = outgoing_handler.handle(outgoing, None)
        except Err as e:
            return types.ResponseOutparam.set(response_out, Err(e.value))
        copy(request.consume(), sink)
        types.OutgoingBody.finish(sink, None)
        pending.subscribe().block()
        got = pending.get()
        if isinstance(got, Err) or isinstance(got.value, Err):
            code = got.value.value if isinstance(got.value, Err) else types.ErrorCode_InternalError("response taken")
            return types.ResponseOutparam.set(response_out, Err(code))
        upstream = got.value.value
        response = types.OutgoingResponse(types.Fields.from_list(forwarded(upstream.headers().entries())))
        response.set_status_code(upstream.status())
        body = response.body()
        types.ResponseOutparam.set(response_out, Ok(response))
        copy(upstream.consume(), body)
        types.OutgoingBody.finish(body, None)
