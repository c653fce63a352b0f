"""A loopback stand-in for the Hugging Face Hub, so tests can run the real, unpatched huggingface_hub client.

The client reads ``HF_ENDPOINT`` when it is imported, so run it in a subprocess whose environment has
``HF_ENDPOINT=emulator.url`` (plus ``HF_HOME`` and ``HF_TOKEN``), then inspect what the emulator received.
Written against huggingface_hub 2.4.0. With hf_xet installed, files the server marks "lfs" go through Xet,
which is not emulated: use ``lfs_mode="regular"`` there, or ``lfs_mode="lfs"`` with ``HF_HUB_DISABLE_XET=1``.

Routes ({type}: model|dataset|space; {repo}: "namespace/name"; {rev}: "main" or a commit sha; a model repo
has no "{type}s/" URL prefix, a dataset or space repo has one):
    GET      /api/whoami-v2                             user "test-user", role write (or read); 401 without a token
    POST     /api/repos/create                          200 {url, name, id}; 409 if it exists (body keeps url)
    POST     /api/validate-yaml                         200 {errors: [], warnings: []}
    POST     /api/{type}s/{repo}/preupload/{rev}        per file uploadMode regular|lfs, shouldIgnore false, oid null
    POST     /api/{type}s/{repo}/commit/{rev}           NDJSON: header, then file|lfsFile|deletedFile|deletedFolder
    POST     /[{type}s/]{repo}.git/info/lfs/objects/batch  upload + verify actions pointing back here
    PUT      /lfs-upload/{oid}                          stores the body if its sha256 is oid
    POST     /lfs-verify/{oid}                          200 if that object was stored
    GET      /api/{type}s/{repo}[/revision/{rev}]       repo info: id, sha, private, siblings
    GET      /api/{type}s/{repo}/tree/{rev}[/{path}]    tree listing, ?recursive=true|false, one page
    HEAD|GET /[{type}s/]{repo}/resolve/{rev}/{file}     bytes, X-Repo-Commit, ETag (+ X-Linked-Etag/-Size if lfs)
    GET      /api/agent-harnesses                       404 (the client probes it; not counted as unknown)
Any other request is logged in ``unknown_routes`` and answered 404. Writes need the token (a read-only token gets
403); reads of a private repo need a token too. One branch ("main") per repo; repo ids of all types share one
namespace.
"""

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal, Self
from urllib.parse import parse_qs, unquote, urlsplit

USER = "test-user"
LFS_THRESHOLD = 10 * 1024 * 1024  # in lfs_mode="lfs", files above this size are lfs (the Hub's regular-file limit)

_T = r"(?P<type>model|dataset|space)s"
_P = r"(?:(?P<type>dataset|space)s/)?"  # model repos have no prefix in git / download URLs
_R = r"(?P<repo>[\w.-]+/[\w.-]+)"
_V = r"(?P<rev>[^/]+)"
_ROUTES = [  # (methods, regex matched in full against the still-quoted path, handler, the token role it needs)
    ({"GET"}, r"/api/whoami-v2", "_whoami", "read"),
    ({"POST"}, r"/api/repos/create", "_create_repo", "write"),
    ({"POST"}, r"/api/validate-yaml", "_validate_yaml", None),
    ({"POST"}, rf"/api/{_T}/{_R}/preupload/{_V}", "_preupload", "write"),
    ({"POST"}, rf"/api/{_T}/{_R}/commit/{_V}", "_commit", "write"),
    ({"POST"}, rf"/{_P}{_R}\.git/info/lfs/objects/batch", "_lfs_batch", "write"),
    ({"PUT"}, r"/lfs-upload/(?P<oid>[0-9a-f]{64})", "_lfs_upload", None),
    ({"POST"}, r"/lfs-verify/(?P<oid>[0-9a-f]{64})", "_lfs_verify", "write"),
    ({"GET"}, rf"/api/{_T}/{_R}(?:/revision/{_V})?", "_repo_info", None),
    ({"GET"}, rf"/api/{_T}/{_R}/tree/{_V}(?:/(?P<path>.+))?", "_tree", None),
    ({"HEAD", "GET"}, rf"/{_P}{_R}/resolve/{_V}/(?P<file>.+)", "_resolve", None),
]
_TOLERATED = {("GET", "/api/agent-harnesses")}

Response = tuple[int, dict[str, str], bytes]


@dataclass
class _Commit:
    sha: str
    files: dict[str, bytes]
    lfs: frozenset[str]  # paths committed as lfsFile


@dataclass
class _Repo:
    type: str
    private: bool
    head: str = ""
    commits: dict[str, _Commit] = field(default_factory=dict)


def _git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob: what the Hub reports as the oid / ETag of a regular file."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _json(status: int, obj: object, content_type: str = "application/json") -> Response:
    return status, {"Content-Type": content_type}, json.dumps(obj).encode()


def _error(status: int, code: str | None, message: str, **headers: str) -> Response:
    """An error the way the client parses it: X-Error-Code picks the exception class (RepoNotFound, ...)."""
    extra = {"X-Error-Message": message, **({"X-Error-Code": code} if code else {}), **headers}
    return status, {"Content-Type": "application/json", **extra}, json.dumps({"error": message}).encode()


class HubEmulator:
    """The Hub on 127.0.0.1 (random port), served from a background thread; a context manager.

    Args:
        token: The only token that may write ("Authorization: Bearer <token>").
        read_token: A token that may read (private repos, whoami) but not write, or None.
        lfs_mode: "regular": preupload marks every file regular (use with Xet on); "lfs": *.safetensors and
            files over ``LFS_THRESHOLD`` bytes are lfs (use with ``HF_HUB_DISABLE_XET=1``).
    """

    def __init__(
        self,
        token: str = "hf_test_token",
        lfs_mode: Literal["regular", "lfs"] = "regular",
        read_token: str | None = None,
    ):
        if lfs_mode not in ("regular", "lfs"):
            raise ValueError(f"lfs_mode must be 'regular' or 'lfs', got {lfs_mode!r}")
        self.token, self.lfs_mode, self.read_token = token, lfs_mode, read_token
        self.repos: dict[str, dict[str, bytes]] = {}  # repo_id -> {path: bytes} at the latest commit
        self.requests: list[tuple[str, str]] = []  # (method, path without query)
        self.unknown_routes: list[tuple[str, str]] = []
        self.auth_headers_seen: list[str] = []  # every Authorization header value received
        self._state: dict[str, _Repo] = {}
        self._lfs_objects: dict[str, bytes] = {}  # sha256 -> bytes
        self._lfs_expected: dict[str, int] = {}  # sha256 -> size announced in a batch request
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), type("Handler", (_Handler,), {"hub": self}))
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop serving and release the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def handle(self, method: str, raw_path: str, headers: dict[str, str], body: bytes) -> Response:
        """Route one request (called from the HTTP handler threads, one at a time under a lock)."""
        path, query = urlsplit(raw_path).path, parse_qs(urlsplit(raw_path).query)
        self.requests.append((method, path))
        if auth := headers.get("authorization"):
            self.auth_headers_seen.append(auth)
        tokens = {self.token: "write", **({self.read_token: "read"} if self.read_token else {})}
        role = tokens.get(auth.removeprefix("Bearer ")) if auth and auth.startswith("Bearer ") else None
        authorized = role is not None
        for methods, pattern, name, needs in _ROUTES:
            if method not in methods or not (match := re.fullmatch(pattern, path)):
                continue
            if needs and not authorized:
                return _error(401, None, "Invalid credentials in Authorization header")
            if needs == "write" and role != "write":
                return _error(403, None, "You don't have the rights to write with this token")
            args = {"type": "model", **{k: unquote(v) for k, v in match.groupdict().items() if v is not None}}
            with self._lock:
                if "repo" in args:  # resolve the repo and revision once, for every repo route
                    found = self._lookup(args["repo"], args["type"], args.get("rev", "main"), authorized)
                    if not isinstance(found, _Commit):
                        return found
                    args["commit"] = found
                return getattr(self, name)(authorized=authorized, role=role, query=query, body=body, **args)
        if (method, path) not in _TOLERATED:
            self.unknown_routes.append((method, path))
        return _error(404, None, f"{method} {path} is not emulated")

    def _repo_url(self, repo: str, type: str) -> str:
        return f"{self.url}/{'' if type == 'model' else type + 's/'}{repo}"

    def _lookup(self, repo: str, type: str, rev: str, authorized: bool) -> _Commit | Response:
        """The commit ``rev`` of ``repo``, or the error response the Hub would give."""
        state = self._state.get(repo)
        if state is None or state.type != type or (state.private and not authorized):
            return _error(401 if state and not authorized else 404, "RepoNotFound", f"Repository {repo} not found")
        if (sha := state.head if rev == "main" else rev) not in state.commits:
            return _error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        return state.commits[sha]

    def _add_commit(self, repo: str, files: dict[str, bytes], lfs: set[str], summary: str) -> str:
        state = self._state[repo]
        digest = hashlib.sha1(f"{state.head}\0{summary}\0".encode())
        for path in sorted(files):
            digest.update(f"{path}\0{_git_blob_sha1(files[path])}\0".encode())
        state.head = digest.hexdigest()
        state.commits[state.head] = _Commit(state.head, dict(files), frozenset(lfs & files.keys()))
        self.repos[repo] = dict(files)
        return state.head

    # Route handlers. Keyword arguments: the regex groups, authorized, query, body and (repo routes) commit.
    def add_repo(
        self,
        repo_id: str,
        private: bool = False,
        files: dict[str, bytes] | None = None,
        repo_type: Literal["model", "dataset", "space"] = "model",
    ) -> None:
        """Create ``repo_id`` (a ``repo_type`` repo, a model by default, with one commit holding ``files``, none by
        default), as if someone had created it on the Hub."""
        if repo_type not in ("model", "dataset", "space"):
            raise ValueError(f"repo_type must be 'model', 'dataset' or 'space', got {repo_type!r}")
        with self._lock:
            self._state[repo_id] = _Repo(type=repo_type, private=private)
            self._add_commit(repo_id, dict(files or {}), set(), "initial commit")

    def _whoami(self, role: str, **_: object) -> Response:
        auth = {"type": "access_token", "accessToken": {"displayName": "emulator", "role": role}}
        return _json(200, {"type": "user", "name": USER, "fullname": "Test User", "orgs": [], "auth": auth})

    def _create_repo(self, body: bytes, **_: object) -> Response:
        spec = json.loads(body)
        repo, type = f"{spec.get('organization') or USER}/{spec['name']}", spec.get("type") or "model"
        url = self._repo_url(repo, type)
        if repo in self._state:
            return _json(409, {"error": "You already created this repo", "url": url})
        private = spec.get("visibility", "private" if spec.get("private") else "public") == "private"
        self._state[repo] = _Repo(type=type, private=private)
        self._add_commit(repo, {}, set(), "initial commit")
        return _json(200, {"url": url, "name": repo, "id": repo})

    def _validate_yaml(self, **_: object) -> Response:
        return _json(200, {"errors": [], "warnings": []})

    def _preupload(self, commit: _Commit, body: bytes, **_: object) -> Response:
        modes = []
        for f in json.loads(body)["files"]:
            lfs = self.lfs_mode == "lfs" and (f["path"].endswith(".safetensors") or f["size"] > LFS_THRESHOLD)
            modes.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False})
        return _json(200, {"files": [{**mode, "oid": None} for mode in modes], "commitOid": commit.sha})

    def _commit(self, repo: str, type: str, commit: _Commit, query: dict, body: bytes, **_: object) -> Response:
        if query.get("create_pr"):
            return _error(400, None, "create_pr is not emulated")
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not lines or lines[0]["key"] != "header":
            return _error(400, None, "the first NDJSON line must be the header")
        if lines[0]["value"].get("parentCommit") not in (None, commit.sha):
            return _error(412, None, "parentCommit is not the head of the branch")
        files, lfs = dict(commit.files), set(commit.lfs)
        for op in lines[1:]:
            key, value = op["key"], op["value"]
            if key == "file":
                files[value["path"]] = base64.b64decode(value["content"])
                lfs.discard(value["path"])
            elif key == "lfsFile":
                if value["oid"] not in self._lfs_objects:
                    return _error(422, None, f"LFS object {value['oid']} of {value['path']} was never uploaded")
                files[value["path"]] = self._lfs_objects[value["oid"]]
                lfs.add(value["path"])
            elif key == "deletedFile":
                if files.pop(value["path"], None) is None:
                    return _error(404, "EntryNotFound", f"A file with this name doesn't exist: {value['path']}")
            elif key == "deletedFolder":
                files = {p: data for p, data in files.items() if not p.startswith(value["path"].rstrip("/") + "/")}
            else:
                return _error(400, None, f"unknown commit operation {key!r}")
        sha = self._add_commit(repo, files, lfs, lines[0]["value"]["summary"])
        commit_url = f"{self._repo_url(repo, type)}/commit/{sha}"
        return _json(200, {"commitOid": sha, "commitUrl": commit_url, "pullRequestUrl": None})

    def _lfs_batch(self, body: bytes, **_: object) -> Response:
        objects = []
        for obj in json.loads(body)["objects"]:
            if obj["oid"] not in self._lfs_objects:  # else no "actions": the client skips the upload
                self._lfs_expected[obj["oid"]] = obj["size"]
                hrefs = {
                    "upload": f"{self.url}/lfs-upload/{obj['oid']}",
                    "verify": f"{self.url}/lfs-verify/{obj['oid']}",
                }
                obj = {**obj, "authenticated": True, "actions": {k: {"href": v} for k, v in hrefs.items()}}
            objects.append(obj)
        return _json(200, {"transfer": "basic", "objects": objects}, "application/vnd.git-lfs+json")

    def _lfs_upload(self, oid: str, body: bytes, **_: object) -> Response:
        if oid not in self._lfs_expected:
            return _error(403, None, f"no batch request announced an upload of {oid}")
        if hashlib.sha256(body).hexdigest() != oid or len(body) != self._lfs_expected[oid]:
            return _error(400, None, f"the uploaded bytes do not match oid {oid} and its size")
        self._lfs_objects[oid] = body
        return 200, {}, b""

    def _lfs_verify(self, oid: str, body: bytes, **_: object) -> Response:
        if oid not in self._lfs_objects or json.loads(body).get("size") != len(self._lfs_objects[oid]):
            return _error(404, None, f"LFS object {oid} is missing")
        return _json(200, {"success": True})

    def _repo_info(self, repo: str, commit: _Commit, **_: object) -> Response:
        siblings = [{"rfilename": path} for path in sorted(commit.files)]
        info = {"id": repo, "author": repo.split("/")[0], "sha": commit.sha, "private": self._state[repo].private}
        return _json(200, {**info, "gated": False, "disabled": False, "siblings": siblings})

    def _tree(self, commit: _Commit, query: dict, path: str = "", **_: object) -> Response:
        base = path.strip("/") + "/" if path.strip("/") else ""
        recursive = query.get("recursive", ["false"])[0].lower() in ("true", "1")
        entries: dict[str, dict] = {}
        for name in sorted(p for p in commit.files if p.startswith(base)):
            parts = name[len(base) :].split("/")
            for depth in range(1, len(parts) if recursive else min(len(parts), 2)):
                folder = base + "/".join(parts[:depth])  # the Hub lists folders too (their oid here is made up)
                entries[folder] = {"type": "directory", "oid": _git_blob_sha1(folder.encode()), "path": folder}
            if len(parts) > 1 and not recursive:
                continue
            data = commit.files[name]
            entries[name] = {"type": "file", "oid": _git_blob_sha1(data), "size": len(data), "path": name}
            if name in commit.lfs:
                entries[name]["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
        if base and not entries:
            return _error(404, "EntryNotFound", f"{path} does not exist at {commit.sha}")
        return _json(200, list(entries.values()))

    def _resolve(self, commit: _Commit, file: str, **_: object) -> Response:
        if file not in commit.files:
            return _error(
                404, "EntryNotFound", f"{file} does not exist at {commit.sha}", **{"X-Repo-Commit": commit.sha}
            )
        data = commit.files[file]
        headers = {"X-Repo-Commit": commit.sha, "ETag": f'"{_git_blob_sha1(data)}"'}
        if file in commit.lfs:  # the real Hub would also redirect to a CDN; serving the bytes here is enough
            sha256 = hashlib.sha256(data).hexdigest()
            headers.update({"ETag": f'"{sha256}"', "X-Linked-Etag": f'"{sha256}"', "X-Linked-Size": str(len(data))})
        return 200, {**headers, "Content-Type": "application/octet-stream"}, data


class _Handler(BaseHTTPRequestHandler):
    hub: HubEmulator  # set on the subclass each HubEmulator creates

    def _serve(self) -> None:
        if self.headers.get("Transfer-Encoding"):  # the 2.4.0 client always sends a Content-Length
            self.hub.unknown_routes.append((self.command, urlsplit(self.path).path))
            self.send_error(411, "chunked request bodies are not emulated")
            return
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {key.lower(): value for key, value in self.headers.items()}
        status, response_headers, payload = self.hub.handle(self.command, self.path, headers, body)
        self.send_response(status)
        for key, value in {**response_headers, "Content-Length": str(len(payload))}.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _serve

    def log_message(self, format: str, *args: object) -> None:
        """Silence the per-request log lines on stderr."""
