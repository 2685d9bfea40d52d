"""``python -m sessions.keygen``: print a new random 256-bit session key.

A module of its own (not ``python -m sessions.keys``) because the package imports
``sessions.keys`` first, and running an already-imported module as ``__main__``
makes Python warn about it.
"""

from __future__ import annotations

import argparse

from .keys import KEY_BYTES, generate_key


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m sessions.keygen",
        description=(
            f"Print new random {KEY_BYTES * 8}-bit session keys (base64url), one per line. "
            "Put them in SESSION_KEYS, newest first and comma-separated: the first key seals, "
            "every key opens, so adding a new key in front rotates without logging anyone out."
        ),
    )
    parser.add_argument("-n", "--count", type=int, default=1, help="how many keys to print (default 1)")
    args = parser.parse_args(argv)
    if not 1 <= args.count <= 100:
        parser.error("--count must be 1-100")
    for _ in range(args.count):
        print(generate_key())


if __name__ == "__main__":
    main()
