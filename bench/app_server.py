"""The demo app as the benchmark runs it: ``server.py``'s own config and serve loop,
but logging at WARNING.

``server.main()`` configures logging at INFO, so Tornado's access log would write
a line to stderr for every request; a production deployment behind a proxy that
logs requests would not, and the bare baseline does not either. Everything else
(flags, environment, store choice, key loading) is exactly ``server.py``'s.

``--app-root DIR`` serves another checkout's ``server.py`` and ``sessions/`` (to
measure a change side by side with this tree); it defaults to this repository.

    SESSION_KEYS=... python bench/app_server.py --store memory:// --data-dir /tmp/x --port 8891
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import sys
from pathlib import Path


def main() -> None:
    argv = sys.argv[1:]
    root = Path(__file__).resolve().parent.parent
    if "--app-root" in argv:
        i = argv.index("--app-root")
        root = Path(argv[i + 1]).resolve()
        del argv[i : i + 2]
    sys.path.insert(0, str(root))  # the repository root is not a package
    server = importlib.import_module("server")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    args, config = server.parse_config(argv)
    asyncio.run(server.serve(args, config))


if __name__ == "__main__":
    main()
