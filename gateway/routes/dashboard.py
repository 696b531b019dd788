"""The live dashboard: a static page at ``/`` and its assets under ``/dashboard/``.

The page (``gateway/dashboard/``: plain HTML, CSS and JavaScript, uPlot
vendored) calls the REST routes from the browser with the key the user signs
in with; this module only serves the files. They are read once, from the
installed package. The page names each asset with a hash of its content
(``app.js?v=<hash>``), so an asset asked for with its current hash is cached
for good, and a new gateway version is picked up at the next page load; the
page itself is revalidated every time (ETag).
"""

import hashlib
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Annotated

from fastapi import APIRouter, Header, Query
from grpc import StatusCode
from starlette.responses import Response

from gateway.errors import GatewayError

router = APIRouter(include_in_schema=False)

ASSET_PREFIX = "/dashboard/"
_MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".md": "text/markdown; charset=utf-8",
    "LICENSE": "text/plain; charset=utf-8",
}
# Everything the page loads comes from this origin; the key travels only in
# the authorization header of fetch calls. uPlot sets inline styles.
_CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
_SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}
REVALIDATE = "no-cache"
FOREVER = "public, max-age=31536000, immutable"
SHORT = "public, max-age=300"


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    media_type: str
    etag: str
    version: str  # the hash the page puts in the asset's URL


@router.api_route("/", methods=["GET", "HEAD"])
async def page(
    if_none_match: Annotated[str | None, Header(alias="If-None-Match")] = None,
) -> Response:
    index = _files()["index.html"]
    headers = {"content-security-policy": _CONTENT_SECURITY_POLICY}
    return _respond(index, REVALIDATE, if_none_match, headers)


@router.api_route(ASSET_PREFIX + "{path:path}", methods=["GET", "HEAD"])
async def asset(
    path: str,
    version: Annotated[str | None, Query(alias="v")] = None,
    if_none_match: Annotated[str | None, Header(alias="If-None-Match")] = None,
) -> Response:
    file = _files().get(path)
    if file is None or path == "index.html":
        raise GatewayError(StatusCode.NOT_FOUND, f"No dashboard file {path!r}")
    if version is None:
        cache_control = SHORT
    elif version == file.version:
        cache_control = FOREVER
    else:  # a page of another gateway version: never keep this answer
        cache_control = REVALIDATE
    return _respond(file, cache_control, if_none_match)


def _respond(
    file: StaticFile,
    cache_control: str,
    if_none_match: str | None,
    headers: dict[str, str] | None = None,
) -> Response:
    headers = {
        **_SECURITY_HEADERS,
        **(headers or {}),
        "cache-control": cache_control,
        "etag": file.etag,
    }
    if if_none_match is not None and file.etag in (t.strip() for t in if_none_match.split(",")):
        return Response(status_code=304, headers=headers)
    return Response(file.body, media_type=file.media_type, headers=headers)


@cache
def _files() -> dict[str, StaticFile]:
    """The dashboard's files by path, the page's asset URLs carrying their hashes."""
    root = resources.files("gateway") / "dashboard"
    files: dict[str, StaticFile] = {}
    pending = [("", root)]
    while pending:
        prefix, folder = pending.pop()
        for entry in folder.iterdir():
            if entry.is_dir():
                pending.append((f"{prefix}{entry.name}/", entry))
                continue
            media_type = _media_type(entry.name)
            if media_type is not None:
                files[prefix + entry.name] = _static(entry.read_bytes(), media_type)
    index = files["index.html"].body.decode()
    for path, file in files.items():
        url = ASSET_PREFIX + path
        index = index.replace(f'"{url}"', f'"{url}?v={file.version}"')
    files["index.html"] = _static(index.encode(), _MEDIA_TYPES[".html"])
    return files


def _media_type(name: str) -> str | None:
    if name in _MEDIA_TYPES:
        return _MEDIA_TYPES[name]
    _, dot, suffix = name.rpartition(".")
    return _MEDIA_TYPES.get(f".{suffix}") if dot else None


def _static(body: bytes, media_type: str) -> StaticFile:
    digest = hashlib.sha256(body).hexdigest()
    return StaticFile(body, media_type, f'"{digest[:32]}"', digest[:12])
