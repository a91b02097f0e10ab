"""Publishing: the production model to a Supabase Storage bucket, for a backend on another host.

Layout in the bucket (AGROML_MODEL_BUCKET, default ``models``)::

    <type>/<run_id>/model.keras, model.tflite (when made), labels.json, MODEL_CARD.md
    <type>/production.json    {run_id, files: {name: {path, sha256, size}}, metrics, classes, published_at}

Why production.json last: a backend polls one small object to learn what to serve. The model's files
go first, each under a folder of its own run id (so the files production.json names now are never
overwritten by the next model's), and only when all of them are up is production.json replaced, in
one object write. A kill or a failure half-way leaves production.json naming the old, complete model;
running publish again uploads everything again (the same bytes) and then production.json. The
backend can check each file against its sha256 and size.

The upload goes through supabase-py's storage client over the same httpx session as our reads (no
redirects followed, the key is never sent elsewhere); storage3 has no retries, so ours
(agroml.core.retry) retry 429, 5xx and dropped connections, never a 4xx.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agroml.core import retry
from agroml.core.config import Settings
from agroml.core.errors import ConfigError, ModelNotFoundError, SourceError, UnreachableError
from agroml.core.files import json_text, utc_stamp
from agroml.core.progress import NoticeFn, ProgressFn, no_notice, no_progress
from agroml.data.supabase import SupabaseSource
from agroml.lifecycle.journal import guarded, pause_point, production_lock, recover
from agroml.lifecycle.locating import PRODUCTION, _read_json, folder_run_id
from agroml.lifecycle.registry import Registry

#: The files a backend needs, in upload order; model.tflite only where training made one.
PUBLISHED_FILES = ("model.keras", "model.tflite", "labels.json", "MODEL_CARD.md")
_REQUIRED = ("model.keras", "labels.json")
MANIFEST = "production.json"
_CONTENT_TYPES = {
    ".keras": "application/octet-stream",
    ".tflite": "application/octet-stream",
    ".json": "application/json",
    ".md": "text/markdown; charset=utf-8",
}


@dataclass
class PublishResult:
    """What `agroml publish` uploaded: the run, where, each file's checksum, the manifest written last."""

    model_type: str
    run_id: str
    bucket: str
    prefix: str
    production_json: str
    files: dict[str, dict[str, Any]]
    previous_run_id: str | None
    requests: int
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        keys = ("model_type", "run_id", "bucket", "prefix", "production_json", "files", "previous_run_id", "requests")
        return {k: getattr(self, k) for k in keys}


def _manifest(model_type: str, run_id: str, folder: Path, files: dict[str, dict[str, Any]]) -> dict[str, Any]:
    metrics = _read_json(folder / "metrics.json")
    labels = json.loads((folder / "labels.json").read_text())
    return {
        "model_type": model_type,
        "run_id": run_id,
        "published_at": utc_stamp(time.time()),
        "files": files,
        "classes": labels.get("classes") if isinstance(labels, dict) else labels,
        "metrics": metrics.get("test", metrics),
    }


class _Uploader:
    """One bucket's uploads, each retried as agroml retries (storage3 itself never does)."""

    def __init__(self, settings: Settings, notice: NoticeFn) -> None:
        self.settings = settings
        self.source = SupabaseSource(settings, notice=notice)
        self.bucket = self.source.client.storage.from_(settings.model_bucket)
        self.requests = 0

    def close(self) -> None:
        self.source.close()

    def download(self, path: str) -> bytes | None:
        """An object's bytes, or None when it is not there (any other failure: None too, it is only a hint)."""
        try:
            self.requests += 1
            return bytes(self.bucket.download(path))
        except Exception:  # the previous manifest only names the run replaced: never worth failing for
            return None

    def upload(self, path: str, data: bytes, content_type: str) -> None:
        import httpx
        from storage3.exceptions import StorageApiError

        host = self.source.host
        where = f"{self.settings.model_bucket}/{path}"

        def attempt() -> None:
            self.requests += 1
            try:
                self.bucket.upload(path, data, {"content-type": content_type, "upsert": "true"})
            except httpx.TransportError as exc:
                raise retry.transport_error(exc, host) from None
            except StorageApiError as exc:
                status = int(exc.status) if str(exc.status).isdigit() else 0
                if retry.is_retryable_status(status):
                    raise retry.TransientError(f"http_{status}", str(exc.message)[:200], host=host) from None
                raise _refused(where, status, str(exc.message), self.settings) from None

        try:
            self.source.policy.call(attempt)
        except retry.RetriesExhausted as exc:
            if exc.unreachable:
                raise UnreachableError(
                    f"could not reach Supabase at {host} ({exc.last.unreachable}) to upload {where}",
                    fix=f"check SUPABASE_URL ({self.settings.supabase_url}) and this machine's network",
                ) from None
            raise SourceError(
                f"Supabase Storage kept failing on {where}: {exc}",
                fix="run `agroml publish` again later (production.json still names the model published before)",
            ) from None


def _refused(where: str, status: int, message: str, settings: Settings) -> SourceError:
    if status == 404 and "bucket" in message.lower():
        return SourceError(
            f"Storage has no bucket {settings.model_bucket!r} ({message})",
            fix=f"create a private bucket {settings.model_bucket!r} in Supabase Storage, or set AGROML_MODEL_BUCKET",
        )
    if status in (401, 403):
        return SourceError(
            f"Storage refused the upload of {where} ({status}: {message})",
            fix="set SUPABASE_SERVICE_KEY to the project's service_role key: uploads need it",
        )
    return SourceError(f"Storage refused the upload of {where} ({status}: {message})", fix="check the bucket settings")


def publish(
    settings: Settings,
    registry: Registry,
    model_type: str,
    *,
    progress: ProgressFn = no_progress,
    notice: NoticeFn = no_notice,
) -> PublishResult:
    """Upload ``models/<type>/production/`` to the bucket, then point ``<type>/production.json`` at it."""
    if not settings.supabase_url or not settings.supabase_key:
        raise ConfigError(
            "publishing needs Supabase: SUPABASE_URL or SUPABASE_SERVICE_KEY is not set",
            fix="set both in the environment or .env (`agroml doctor` shows them)",
        )
    type_dir = registry.models_dir / model_type
    production = type_dir / PRODUCTION
    with production_lock(type_dir):  # a promotion cannot swap the folder while its files are read
        guarded("recover", production, lambda: recover(registry, type_dir))
        missing = [name for name in _REQUIRED if not (production / name).is_file()]
        if missing:
            raise ModelNotFoundError(
                f"no production {model_type} model to publish ({', '.join(missing)} missing in {production})",
                fix=f"promote a run first: `agroml promote RUN_ID --model {model_type}`",
            )
        run_id = folder_run_id(production)
        payload = {name: (production / name).read_bytes() for name in PUBLISHED_FILES if (production / name).is_file()}
        manifest_files: dict[str, dict[str, Any]] = {}
    prefix = f"{model_type}/{run_id}"
    for name, data in payload.items():
        manifest_files[name] = {
            "path": f"{prefix}/{name}",
            "sha256": hashlib.sha256(data).hexdigest(),
            "size": len(data),
        }
    manifest = _manifest(model_type, run_id, production, manifest_files)
    uploader = _Uploader(settings, notice)
    try:
        old = uploader.download(f"{model_type}/{MANIFEST}")
        previous = None
        if old:
            try:
                previous = json.loads(old).get("run_id")
            except (ValueError, AttributeError):
                previous = None
        for i, (name, data) in enumerate(payload.items(), start=1):
            uploader.upload(f"{prefix}/{name}", data, _CONTENT_TYPES.get(Path(name).suffix, "application/octet-stream"))
            progress("files", i, len(payload))
            pause_point("uploaded")
        pause_point("manifest")
        uploader.upload(f"{model_type}/{MANIFEST}", json_text(manifest).encode(), "application/json")
    finally:
        uploader.close()
    return PublishResult(
        model_type=model_type,
        run_id=run_id,
        bucket=settings.model_bucket,
        prefix=prefix,
        production_json=f"{settings.model_bucket}/{model_type}/{MANIFEST}",
        files=manifest_files,
        previous_run_id=previous if isinstance(previous, str) else None,
        requests=uploader.requests,
    )
