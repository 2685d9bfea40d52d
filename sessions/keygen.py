"""``python -m sessions.keygen``: print a new random 256-bit session key.

A module of its own (not ``python -m sessions.keys``) because the package imports
``sessions.keys`` first, and running an already-imported module as ``__main__``
makes Python warn about it.
"""

from __future__ import annotations

from .keys import generate_key


def main() -> None:
    print(generate_key())


if __name__ == "__main__":
    main()
