"""Static files with the demo's security headers, and odd paths as clean 4xx answers."""

from __future__ import annotations

from tornado.web import HTTPError, StaticFileHandler

from .base import SecureHeadersMixin

#: Characters no static file name of ours has; asking for them is a 404, not a lookup.
_FORBIDDEN = frozenset(chr(c) for c in range(32)) | {"\x7f", "\\"}


class SecureStaticFileHandler(SecureHeadersMixin, StaticFileHandler):
    """``StaticFileHandler`` plus the security headers; NUL bytes and the like are 404.

    Tornado's own checks already refuse paths outside the static directory (403) and
    directories (403); a NUL byte (``/static/style.css%00.txt``) would reach ``os.stat``
    and fail with a ValueError (a 500), so such names stop here.
    """

    def parse_url_path(self, url_path: str) -> str:
        if not url_path or any(ch in _FORBIDDEN for ch in url_path) or len(url_path) > 255:
            raise HTTPError(404)
        return super().parse_url_path(url_path)
