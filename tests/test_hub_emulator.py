"""Tests for tests/hub_emulator.py: the real huggingface_hub client uploads to it and downloads from it.

The client reads HF_ENDPOINT at import, so it runs in a subprocess with HF_ENDPOINT / HF_HOME / HF_TOKEN set.
Each test has a timeout: a request that escapes to the real Hub would retry for ~40 s.
"""

import hashlib
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch
from hub_emulator import HubEmulator
from safetensors.torch import save_file

REPO_ID = "test-user/tiny-ddpm"
README = """---
library_name: diffusers
license: mit
tags:
- diffusers
- unconditional-image-generation
---

# tiny-ddpm

A test model.
"""

# The client side, run as `python -c CLIENT <action> <repo_id> [folder]`; prints one JSON line.
CLIENT = r"""
import json, os, sys
from huggingface_hub import HfApi, snapshot_download

action, repo_id, folder = (sys.argv[1:] + [""])[:3]
api, out = HfApi(), {}
try:
    if action in ("upload", "upload_private"):
        out["url"] = str(api.create_repo(repo_id, private=action == "upload_private"))
        out["url_again"] = str(api.create_repo(repo_id, exist_ok=True))
        try:
            api.create_repo(repo_id)
        except Exception as err:
            out["conflict_status"] = err.response.status_code
        out["commit"] = api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message="Upload model").oid
    if action == "whoami":
        out["errors"] = []
        for token in (None, "hf_not_the_token"):
            try:
                api.whoami(token=token)
            except Exception as err:
                out["errors"].append(type(err).__name__)
        out["name"] = api.whoami(token=os.environ["EMULATOR_TOKEN"])["name"]
    else:
        out["snapshot"] = snapshot_download(repo_id)
except Exception as err:
    out["error"] = f"{type(err).__name__}: {err}"
print(json.dumps(out))
"""


def _run_client(hub: HubEmulator, hf_home: Path, *args: str, **env: str) -> dict:
    """Run CLIENT against `hub` in a fresh interpreter; check the token never reaches its output."""
    base = {key: value for key, value in os.environ.items() if not key.startswith(("HF_", "HUGGING_FACE_"))}
    base.pop("TRANSFORMERS_OFFLINE", None)
    proxy_free = {"NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    full_env = {**base, **proxy_free, "HF_ENDPOINT": hub.url, "HF_HOME": str(hf_home), **env}
    proc = subprocess.run(
        [sys.executable, "-c", CLIENT, *args], check=False, env=full_env, capture_output=True, text=True, timeout=50
    )
    assert hub.token not in proc.stdout + proc.stderr
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _read_tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def model_folder(tmp_path: Path) -> Path:
    """A small diffusers-style folder: model card, unet weights (safetensors) and a json config."""
    folder = tmp_path / "model"
    (folder / "unet").mkdir(parents=True)
    (folder / "README.md").write_text(README)
    (folder / "unet" / "config.json").write_text(json.dumps({"sample_size": 28, "in_channels": 1}))
    weights = {"conv.weight": torch.arange(96, dtype=torch.float32).reshape(4, 2, 3, 4), "conv.bias": torch.ones(4)}
    save_file(weights, str(folder / "unet" / "diffusion_pytorch_model.safetensors"))
    return folder


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("lfs_mode", "client_env"),
    [("regular", {}), ("lfs", {"HF_HUB_DISABLE_XET": "1"})],
    ids=["xet-on-all-regular", "xet-off-safetensors-lfs"],
)
def test_upload_then_download_then_offline(
    tmp_path: Path, model_folder: Path, lfs_mode: str, client_env: dict[str, str]
) -> None:
    expected = _read_tree(model_folder)
    weights_path = "unet/diffusion_pytorch_model.safetensors"
    weights_sha256 = hashlib.sha256(expected[weights_path]).hexdigest()
    hf_home = tmp_path / "hf_home"
    with HubEmulator(lfs_mode=lfs_mode) as hub:
        out = _run_client(hub, hf_home, "upload", REPO_ID, str(model_folder), HF_TOKEN=hub.token, **client_env)
        assert "error" not in out, out["error"]
        assert out["url"] == out["url_again"] == f"{hub.url}/{REPO_ID}"
        assert out["conflict_status"] == 409
        assert hub.repos[REPO_ID] == expected
        assert f"Bearer {hub.token}" in hub.auth_headers_seen
        assert ("POST", f"/api/models/{REPO_ID}/preupload/main") in hub.requests
        assert ("POST", f"/api/models/{REPO_ID}/commit/main") in hub.requests
        lfs_requests = [r for r in hub.requests if "lfs" in r[1]]
        if lfs_mode == "lfs":
            assert lfs_requests == [
                ("POST", f"/{REPO_ID}.git/info/lfs/objects/batch"),
                ("PUT", f"/lfs-upload/{weights_sha256}"),
                ("POST", f"/lfs-verify/{weights_sha256}"),
            ]
        else:
            assert lfs_requests == []

        snapshot = Path(out["snapshot"])
        assert snapshot.is_relative_to(hf_home)
        assert _read_tree(snapshot) == expected
        # The cache names each blob after the ETag the HEAD returned: sha256 for lfs files, git sha1 otherwise.
        weights_blob = (snapshot / weights_path).resolve().name
        git_sha1 = hashlib.sha1(b"blob %d\0" % len(expected[weights_path]) + expected[weights_path]).hexdigest()
        assert weights_blob == (weights_sha256 if lfs_mode == "lfs" else git_sha1)
        assert hub.unknown_routes == []

        seen = len(hub.requests)
        out = _run_client(hub, hf_home, "download", REPO_ID, HF_TOKEN=hub.token, HF_HUB_OFFLINE="1", **client_env)
        assert "error" not in out, out["error"]
        assert _read_tree(Path(out["snapshot"])) == expected
        assert len(hub.requests) == seen  # offline: served from the cache, nothing reached the emulator
        assert hub.unknown_routes == []


@pytest.mark.timeout(60)
def test_private_repo_downloads_only_with_the_token(tmp_path: Path, model_folder: Path) -> None:
    with HubEmulator() as hub:
        out = _run_client(hub, tmp_path / "owner", "upload_private", REPO_ID, str(model_folder), HF_TOKEN=hub.token)
        assert "error" not in out, out["error"]
        anonymous = _run_client(hub, tmp_path / "anonymous", "download", REPO_ID)
        assert "RepositoryNotFoundError" in anonymous["error"]
        owner = _run_client(hub, tmp_path / "owner2", "download", REPO_ID, HF_TOKEN=hub.token)
        assert _read_tree(Path(owner["snapshot"])) == _read_tree(model_folder)
        assert hub.unknown_routes == []


@pytest.mark.timeout(60)
def test_whoami_needs_a_valid_token(tmp_path: Path) -> None:
    with HubEmulator(token="hf_emulator_secret") as hub:
        out = _run_client(hub, tmp_path / "hf_home", "whoami", REPO_ID, EMULATOR_TOKEN=hub.token)
        # No token at all fails in the client; a wrong one gets the emulator's 401.
        assert out["errors"] == ["LocalTokenNotFoundError", "HfHubHTTPError"]
        assert out["name"] == "test-user"
        assert hub.auth_headers_seen == ["Bearer hf_not_the_token", "Bearer hf_emulator_secret"]
        assert hub.unknown_routes == []


def _request(url: str, method: str = "GET", data: bytes | None = None, token: str | None = None) -> int:
    """One plain HTTP request (no proxies), returning the status code."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(urllib.request.Request(url, data, headers, method=method), timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


@pytest.mark.timeout(60)
def test_unknown_routes_are_recorded_but_the_agent_probe_is_not() -> None:
    with HubEmulator() as hub:
        assert _request(f"{hub.url}/api/agent-harnesses") == 404
        assert _request(f"{hub.url}/api/spaces/a/b/runtime") == 404
        assert _request(f"{hub.url}/api/whoami-v2") == 401
        assert hub.unknown_routes == [("GET", "/api/spaces/a/b/runtime")]


@pytest.mark.timeout(60)
def test_lfs_upload_accepts_only_announced_objects_with_matching_bytes() -> None:
    data = b"weights"
    oid = hashlib.sha256(data).hexdigest()
    with HubEmulator(lfs_mode="lfs") as hub:
        upload_url, batch_url = f"{hub.url}/lfs-upload/{oid}", f"{hub.url}/{REPO_ID}.git/info/lfs/objects/batch"
        batch = json.dumps({"operation": "upload", "objects": [{"oid": oid, "size": len(data)}]}).encode()
        assert _request(upload_url, "PUT", data) == 403  # no batch request announced it
        assert _request(f"{hub.url}/api/repos/create", "POST", b'{"name": "tiny-ddpm"}', hub.token) == 200
        assert _request(batch_url, "POST", batch) == 401
        assert _request(batch_url, "POST", batch, hub.token) == 200
        assert _request(upload_url, "PUT", b"tampered") == 400
        assert _request(upload_url, "PUT", data) == 200
        assert hub.unknown_routes == []
