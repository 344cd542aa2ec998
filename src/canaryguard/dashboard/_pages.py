"""Serve the dashboard's files: the page at ``/`` and its assets at ``/dashboard/<file>``.

The files are read once, when the app is built, from the package (they ship in the wheel), and
served from memory with an ETag. Every response carries headers that let the browser run these
files and nothing else: a page that shows operator-typed reasons and names must not become a
way to run someone's script with an operator's token.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources

from fastapi import FastAPI, Request, Response

__all__ = ["ASSETS", "CONTENT_SECURITY_POLICY", "SECURITY_HEADERS", "mount_dashboard"]

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        # a string assigned to innerHTML (or any other HTML sink) throws: data reaches the page
        # as text only, even if a later change forgets it
        "require-trusted-types-for 'script'",
        "trusted-types 'none'",
    )
)

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate it
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    # revalidated on every load (a 304 when unchanged), so an upgraded server serves its own
    # page and script together, never a cached script from the release before
    "Cache-Control": "no-cache",
}

PAGE = "index.html"
ASSETS = {
    "app.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
    "icon.svg": "image/svg+xml",
}


@dataclass(frozen=True)
class _File:
    body: bytes
    media_type: str
    etag: str

    @classmethod
    def load(cls, name: str, media_type: str) -> _File:
        body = resources.files("canaryguard.dashboard").joinpath("static", name).read_bytes()
        return cls(body, media_type, f'"{hashlib.sha256(body).hexdigest()[:32]}"')

    def response(self, request: Request) -> Response:
        headers = {**SECURITY_HEADERS, "ETag": self.etag}
        if self.etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        return Response(self.body, media_type=self.media_type, headers=headers)


def _endpoint(file: _File) -> Callable[[Request], Awaitable[Response]]:
    async def serve(request: Request) -> Response:
        return file.response(request)

    return serve


def mount_dashboard(app: FastAPI) -> None:
    """Serve the dashboard on ``app``: the page at ``/``, its assets at ``/dashboard/<file>``.

    Only the named files are served (no directory behind a path), and none is in the OpenAPI
    document: the pages are not part of the API.
    """
    page = _File.load(PAGE, "text/html; charset=utf-8")
    app.add_api_route("/", _endpoint(page), methods=["GET", "HEAD"], include_in_schema=False)
    for name, media_type in ASSETS.items():
        app.add_api_route(
            f"/dashboard/{name}",
            _endpoint(_File.load(name, media_type)),
            methods=["GET", "HEAD"],
            include_in_schema=False,
        )
