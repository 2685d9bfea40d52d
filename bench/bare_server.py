"""The baseline: a bare Tornado handler with the counter API's body shape and no session.

Every ratio in the benchmark is measured against this process, so it runs with the
same Tornado defaults as the demo app (no debug, access log below WARNING) and
answers GET and POST (no XSRF check) with ``{"count": 0}``.

    python bench/bare_server.py --port 8890
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

import tornado.web


class BareHandler(tornado.web.RequestHandler):
    def get(self) -> None:
        self.write({"count": 0})

    def post(self) -> None:
        self.write({"count": 0})


async def serve(host: str, port: int) -> None:
    app = tornado.web.Application([(r"/", BareHandler)])
    server = app.listen(port, host)
    print(f"bare tornado on http://{host}:{port}/", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
