"""A loopback Hugging Face hub: the routes huggingface_hub 2.4 calls for `snapshot_download`.

Read in huggingface_hub 2.4.0 (`hf_api.py` `model_info` and `_iter_repo_tree_pages`,
`file_download.py` `get_hf_file_metadata`, `_get_metadata_or_catch_error`, `http_get`;
`utils/_http.py` `hf_raise_for_status`, `_httpx2_follow_hub_redirects_with_backoff`):

- `GET /api/models/{owner}/{name}/revision/{rev}`: the model info; `sha` is the commit the
  revision points at (a branch name, or the commit itself).
- `GET /api/models/{owner}/{name}/tree/{rev}?recursive=True&expand=False`: the files
  (`{"type": "file", "oid", "size", "path"}`, plus `lfs: {"oid", "size", "pointerSize"}` for
  large files) and folders (`{"type": "directory", "oid", "size": 0, "path"}`).
- `HEAD|GET /{owner}/{name}/resolve/{rev}/{path}`: a small file answers 200 with
  `ETag: "<git blob sha1>"`, `Content-Length`, `X-Repo-Commit`, `Accept-Ranges: bytes`; a
  large (LFS) file answers 302 to the CDN, which is another origin, with `X-Linked-Etag:
  "<sha256>"`, `X-Linked-Size`, `X-Repo-Commit` (huggingface_hub follows same-origin
  redirects only, reads the metadata off the 302, then GETs the CDN URL).
- the CDN (`CdnServer`, its own port): `GET /blobs/{sha256}`, with `Range: bytes=N-` answered
  206 and `Content-Range: bytes N-M/total`.
- errors as the hub sends them: unknown repository 401 with `X-Error-Code: RepoNotFound`,
  unknown revision 404 `RevisionNotFound`, unknown file 404 `EntryNotFound`, each with a
  JSON `{"error": ...}` body and `X-Error-Message`.

Fault: `cut_next_body(after_bytes)` on either server sends the headers (full
Content-Length) and the first `after_bytes` bytes of the next file body, then closes the
connection: what a network drop mid-file looks like to the client. It fires once.
"""

import hashlib
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from tests.servers.faults import FaultSwitch
from tests.servers.runner import LoopbackServer

LFS_THRESHOLD_BYTES = 1024 * 1024
_LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".onnx", ".gguf")
_LAST_MODIFIED = "2024-01-01T00:00:00.000Z"


@dataclass(frozen=True)
class RepoFile:
    path: str
    content: bytes
    blob_oid: str
    sha256: str

    @property
    def lfs(self) -> bool:
        return len(self.content) >= LFS_THRESHOLD_BYTES or self.path.endswith(_LFS_SUFFIXES)

    def tree_entry(self) -> dict[str, object]:
        entry: dict[str, object] = {
            "type": "file",
            "oid": self.blob_oid,
            "size": len(self.content),
            "path": self.path,
        }
        if self.lfs:
            entry["lfs"] = {"oid": self.sha256, "size": len(self.content), "pointerSize": 134}
        return entry


class HubRepo:
    """A model repository with one commit: the files of `folder`."""

    def __init__(self, repo_id: str, folder: Path) -> None:
        self.repo_id = repo_id
        self.files = {
            str(path.relative_to(folder)): _repo_file(str(path.relative_to(folder)), path)
            for path in sorted(folder.rglob("*"))
            if path.is_file()
        }
        digest = hashlib.sha1(usedforsecurity=False)
        for name, file in self.files.items():
            digest.update(f"{name}\0{file.blob_oid}\n".encode())
        self.commit = digest.hexdigest()

    def commit_of(self, revision: str) -> str | None:
        return self.commit if revision in ("main", self.commit) else None

    def folders(self) -> list[str]:
        parents = {str(Path(name).parent) for name in self.files}
        return sorted(parent for parent in parents if parent != ".")


def _repo_file(name: str, path: Path) -> RepoFile:
    content = path.read_bytes()
    header = f"blob {len(content)}\0".encode()
    blob_oid = hashlib.sha1(header + content, usedforsecurity=False).hexdigest()
    return RepoFile(name, content, blob_oid, hashlib.sha256(content).hexdigest())


class _BodyServer(LoopbackServer[FaultSwitch]):
    """Serves file bodies with Range support and a one-shot mid-body cut."""

    def __init__(self) -> None:
        super().__init__(FaultSwitch())
        self._cut_lock = threading.Lock()
        self._cut_after: int | None = None

    def cut_next_body(self, after_bytes: int) -> None:
        with self._cut_lock:
            self._cut_after = after_bytes

    def _take_cut(self) -> int | None:
        with self._cut_lock:
            cut, self._cut_after = self._cut_after, None
            return cut

    def _body(self, request: Request, content: bytes, headers: dict[str, str]) -> ASGIApp:
        total, start = len(content), _range_start(request.headers.get("range"))
        if start is not None and start >= total:
            return Response(status_code=416, headers={"Content-Range": f"bytes */{total}"})
        status, body = 200, content
        if start is not None:
            status, body = 206, content[start:]
            headers = {**headers, "Content-Range": f"bytes {start}-{total - 1}/{total}"}
        headers = {**headers, "Accept-Ranges": "bytes", "Content-Length": str(len(body))}
        if request.method == "HEAD":
            return Response(status_code=status, headers=headers)
        cut = self._take_cut()
        if cut is None:
            return Response(body, status_code=status, headers=headers)
        return self._cut_response(status, headers, body[:cut])

    def _cut_response(self, status: int, headers: dict[str, str], sent: bytes) -> ASGIApp:
        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            raw = [(key.lower().encode(), value.encode()) for key, value in headers.items()]
            await send({"type": "http.response.start", "status": status, "headers": raw})
            await send({"type": "http.response.body", "body": sent, "more_body": True})
            client = scope.get("client")
            transport = self._transports.get((client[0], client[1])) if client else None
            if transport is not None:
                transport.close()  # flushes what was sent, then closes: a short body

        return app


class CdnServer(_BodyServer):
    """The storage origin large files redirect to: `GET /blobs/{sha256}`."""

    def __init__(self) -> None:
        super().__init__()
        self.blobs: dict[str, bytes] = {}

    def _protocol_app(self) -> ASGIApp:
        return Starlette(routes=[Route("/blobs/{sha256}", self._blob, methods=["GET", "HEAD"])])

    async def _blob(self, request: Request) -> ASGIApp:
        content = self.blobs.get(request.path_params["sha256"])
        if content is None:
            return Response("NoSuchKey", status_code=404)
        return self._body(request, content, {"Content-Type": "application/octet-stream"})


class HubServer(_BodyServer):
    """The hub API and resolve routes for `repos` (id -> folder), with its own CDN."""

    def __init__(self, repos: Mapping[str, Path]) -> None:
        super().__init__()
        self.repos = {repo_id: HubRepo(repo_id, folder) for repo_id, folder in repos.items()}
        self.cdn = CdnServer()
        for repo in self.repos.values():
            self.cdn.blobs.update({f.sha256: f.content for f in repo.files.values() if f.lfs})

    def start(self, port: int = 0) -> Self:
        self.cdn.start()
        return super().start(port)

    def stop(self, timeout: float = 10.0) -> None:
        super().stop(timeout)
        self.cdn.stop(timeout)

    def _protocol_app(self) -> ASGIApp:
        repo = "/api/models/{owner}/{name}"
        return Starlette(
            routes=[
                Route(f"{repo}/revision/{{revision}}", self._info, methods=["GET"]),
                Route(f"{repo}/tree/{{revision}}", self._tree, methods=["GET"]),
                Route(
                    "/{owner}/{name}/resolve/{revision}/{path:path}",
                    self._resolve,
                    methods=["GET", "HEAD"],
                ),
            ]
        )

    def _lookup(self, request: Request) -> tuple[HubRepo, str] | Response:
        params = request.path_params
        repo = self.repos.get(f"{params['owner']}/{params['name']}")
        if repo is None:
            return _hub_error(401, "RepoNotFound", "Repository not found")
        commit = repo.commit_of(params["revision"])
        if commit is None:
            return _hub_error(404, "RevisionNotFound", f"Invalid rev id: {params['revision']}")
        return repo, commit

    async def _info(self, request: Request) -> Response:
        found = self._lookup(request)
        if isinstance(found, Response):
            return found
        repo, commit = found
        return JSONResponse(
            {
                "_id": commit[:24],
                "id": repo.repo_id,
                "modelId": repo.repo_id,
                "sha": commit,
                "lastModified": _LAST_MODIFIED,
                "createdAt": _LAST_MODIFIED,
                "private": False,
                "disabled": False,
                "gated": False,
                "tags": [],
                "siblings": [{"rfilename": name} for name in repo.files],
            }
        )

    async def _tree(self, request: Request) -> Response:
        found = self._lookup(request)
        if isinstance(found, Response):
            return found
        repo, _ = found
        recursive = request.query_params.get("recursive", "false").lower() == "true"
        entries: list[dict[str, object]] = [
            {"type": "directory", "oid": hashlib.sha1(f.encode()).hexdigest(), "size": 0, "path": f}
            for f in repo.folders()
            if recursive or "/" not in f
        ]
        entries += [f.tree_entry() for n, f in repo.files.items() if recursive or "/" not in n]
        return JSONResponse(entries)

    async def _resolve(self, request: Request) -> ASGIApp:
        found = self._lookup(request)
        if isinstance(found, Response):
            return found
        repo, commit = found
        file = repo.files.get(request.path_params["path"])
        if file is None:
            error = _hub_error(404, "EntryNotFound", "Entry not found")
            error.headers["X-Repo-Commit"] = commit
            return error
        if file.lfs:
            return Response(
                status_code=302,
                headers={
                    "Location": f"{self.cdn.url}/blobs/{file.sha256}",
                    "X-Linked-Etag": f'"{file.sha256}"',
                    "X-Linked-Size": str(len(file.content)),
                    "X-Repo-Commit": commit,
                    "ETag": f'"{file.blob_oid}"',
                },
            )
        headers = {"ETag": f'"{file.blob_oid}"', "X-Repo-Commit": commit}
        return self._body(request, file.content, headers)


def _hub_error(status: int, code: str, message: str) -> Response:
    headers = {"X-Error-Code": code, "X-Error-Message": message}
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _range_start(header: str | None) -> int | None:
    """The N of `bytes=N-` (the only form huggingface_hub sends when resuming)."""
    if not header or not header.startswith("bytes=") or not header.endswith("-"):
        return None
    return int(header[len("bytes=") : -1])
