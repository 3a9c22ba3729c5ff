"""Data sets and job programs over the store and the artifact store (the API and runner call it).

- :func:`upload_dataset`: check a JSONL upload (size, checksum, format; the first bad line is
  named), keep its bytes and record it under the tenant; the same bytes under the same name are
  not stored twice (``npucenter job submit`` uploads its file on every submit).
- :func:`prepare_program`: a ``preprocess``/``finetune`` job's command and spec, its inputs
  resolved to the tenant's own artifacts (another tenant's data set is not found).
- :class:`JobFiles`: the job runner's hook: copies a job's inputs into its work dir before it
  starts (the job never sees the data dir), and on success stores its outputs as the tenant's
  artifacts and registers a fine-tune's adapter.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import stat
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from npucenter.artifacts.store import ArtifactStore, tree_digest
from npucenter.engines.models import ensure_model, resolve_model_path
from npucenter.engines.tiny import is_model_dir
from npucenter.errors import (
    ConflictError,
    InvalidConfigError,
    InvalidRequestError,
    NotFoundError,
    NpuCenterError,
)
from npucenter.jobs.data import MAX_DATASET_BYTES, check_jsonl
from npucenter.jobs.finetune import ADAPTER_DIR
from npucenter.jobs.preprocess import OUTPUT_FILE
from npucenter.jobs.spec import PROGRAM_KINDS, FinetuneSpec, program_spec
from npucenter.jobs.twin import TWIN_KINDS, twin_spec
from npucenter.store.models import Artifact, Job, Tenant
from npucenter.store.repository import Repository

__all__ = [
    "JobFiles",
    "artifact_key",
    "delete_artifact",
    "prepare_program",
    "program_command",
    "program_job",
    "upload_dataset",
]

#: What a fine-tune must leave in ``adapter/`` for the center to serve it.
_ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
_MAX_OUTPUT_BYTES = 1024**3  # an adapter or packed data set larger than this is refused


def artifact_key(tenant_id: int, kind: str) -> str:
    """A fresh key of the artifact store for a tenant's artifact of ``kind``."""
    return f"t{tenant_id}/{kind}/{secrets.token_hex(8)}"


def upload_dataset(
    repo: Repository,
    store: ArtifactStore,
    tenant: Tenant,
    *,
    name: str,
    content: bytes,
    sha256: str | None = None,
    max_bytes: int = MAX_DATASET_BYTES,
) -> tuple[Artifact, bool]:
    """Check and keep a data set; ``(artifact, created)``: False when these bytes were there."""
    digest = hashlib.sha256(content).hexdigest()
    if sha256 is not None and sha256.lower() != digest:
        raise InvalidRequestError(
            f"checksum mismatch: the body's sha256 is {digest}, the upload said {sha256}",
            hint="the file changed or was cut in transit; upload it again",
            details={"sha256": digest, "expected": sha256},
        )
    info = check_jsonl(content, max_bytes=max_bytes)
    existing = [
        a for a in repo.list_artifacts(tenant_id=tenant.id, kind="dataset") if a.name == name
    ]
    if existing:
        if existing[0].sha256 == digest:
            return existing[0], False
        raise ConflictError(
            f"data set {name!r} exists already with other contents",
            hint="upload under another name, or delete it first (npucenter dataset delete)",
            details={"name": name, "sha256": existing[0].sha256},
        )
    key = artifact_key(tenant.id, "dataset")
    store.put_bytes(key, content)
    try:
        row = repo.add_artifact(
            tenant,
            kind="dataset",
            name=name,
            format=info.format,
            sha256=digest,
            num_bytes=info.num_bytes,
            num_records=info.num_records,
            location=key,
        )
    except NpuCenterError:
        store.delete(key)
        raise
    return row, True


def delete_artifact(repo: Repository, store: ArtifactStore, artifact: Artifact) -> None:
    """Delete an artifact's record (and adapters made of it), then its bytes."""
    key = artifact.location
    repo.delete_artifact(artifact)
    store.delete(key)


def program_command(kind: str) -> list[str]:
    """The argv of a job program (the server's Python; run inside the job's sandbox)."""
    return [sys.executable, "-m", f"npucenter.jobs.{kind}", "--spec", "spec.json"]


def prepare_program(
    repo: Repository,
    tenant: Tenant,
    kind: str,
    doc: dict[str, Any],
    *,
    job_name: str,
    models_dir: Path,
) -> tuple[list[str], dict[str, Any]]:
    """Validate a program job's spec against the tenant's artifacts; ``(command, stored spec)``."""
    if kind in TWIN_KINDS:  # the twin: its inputs are inline, no artifact to resolve
        return program_command(kind), twin_spec(kind, doc)
    if kind not in PROGRAM_KINDS:
        raise InvalidConfigError(
            "spec", kind, f"a spec is for {' and '.join(PROGRAM_KINDS)} jobs; give others a command"
        )
    spec = program_spec(kind, doc)
    dataset = repo.get_artifact(spec.dataset, kind="dataset", owner=tenant.id, tenant_id=tenant.id)
    if resolve_model_path(spec.base_model, None, models_dir) is None:
        err = NotFoundError("model", spec.base_model)
        err.hint = (
            f"put the base model's directory (config, weights, tokenizer) at "
            f"{models_dir / spec.base_model}, or use tiny-llama (built on first use)"
        )
        raise err
    stored = spec.to_dict()
    stored.update(program=kind, dataset_id=dataset.id)
    if isinstance(spec, FinetuneSpec):
        stored["adapter"] = spec.adapter or job_name
        if repo.find_adapter(stored["adapter"], tenant_id=tenant.id) is not None:
            raise ConflictError(
                f"adapter {stored['adapter']!r} exists already",
                hint="name the fine-tune's adapter (adapter: NAME) or delete the old one",
                details={"name": stored["adapter"]},
            )
    else:
        stored["output"] = spec.output or f"{dataset.name}-packed"
    return program_command(kind), stored


def program_job(
    repo: Repository,
    tenant: Tenant,
    *,
    kind: str,
    spec: dict[str, Any] | None,
    command: list[str],
    image: str | None,
    job_name: str,
    models_dir: Path,
) -> tuple[list[str], dict[str, Any]] | None:
    """A submitted job's program ``(command, spec)``, or None for a job with its own command."""
    if spec is None:
        if kind in TWIN_KINDS:
            raise InvalidRequestError(
                f"a {kind} job runs the center's twin: give it a spec, not a command",
                hint="see docs/console.md (the twin page) for the spec",
            )
        return None
    if command or image:
        raise InvalidRequestError(
            "a job with a spec runs the center's own program: give it no command or image",
            hint="drop command/image, or drop the spec and run your own command",
        )
    return prepare_program(repo, tenant, kind, spec, job_name=job_name, models_dir=models_dir)


class JobFiles:
    """The job runner's hook for program jobs: stage inputs, collect outputs (see module doc)."""

    outputs: tuple[str, ...] = (ADAPTER_DIR, OUTPUT_FILE)  # what a Ray run sends back

    def __init__(
        self,
        *,
        tx: Callable[[], AbstractContextManager[Repository]],
        store: ArtifactStore,
        models_dir: Path,
    ) -> None:
        self._tx = tx
        self.store = store
        self.models_dir = models_dir

    def stage(self, job_id: int, work_dir: Path, uid: int | None) -> None:
        """Copy a program job's inputs and ``spec.json`` into its work dir (owned by ``uid``)."""
        with self._tx() as repo:
            spec = repo.job_spec(job_id)
            if spec is None:
                return
            if spec.get("program") in TWIN_KINDS:  # inputs inline: the spec is all it reads
                _write_spec(work_dir, spec, uid)
                return
            dataset = repo.get_artifact(spec["dataset_id"], kind="dataset")
            location = dataset.location
        inputs = work_dir / "inputs"
        inputs.mkdir(exist_ok=True)
        data_path = inputs / "data.jsonl"
        if not data_path.exists():  # a resumed run finds its inputs in place
            self.store.copy_to(location, data_path)
        model_dir = inputs / "model"
        if not is_model_dir(model_dir):
            source = resolve_model_path(spec["base_model"], None, self.models_dir)
            ensure_model(spec["base_model"], source)
            if source is None or not Path(source).is_dir():
                raise NotFoundError("model", spec["base_model"])
            shutil.copytree(source, model_dir, dirs_exist_ok=True)
        program = dict(spec, model_dir="inputs/model", dataset="inputs/data.jsonl")
        (work_dir / "spec.json").write_text(json.dumps(program, indent=1))
        if uid is not None:
            for root, dirs, files in os.walk(work_dir):
                for name in (*dirs, *files):
                    os.lchown(os.path.join(root, name), uid, uid)

    def collect(self, repo: Repository, job: Job, work_dir: Path) -> str:
        """After a program job succeeded: keep its output; a note for its log (raises if invalid)."""
        spec = repo.job_spec(job.id)
        if spec is None or spec.get("program") in TWIN_KINDS:  # its result is all it leaves
            return ""
        tenant = repo.get_tenant(job.tenant_id)
        if spec["program"] == "finetune":
            return self._collect_adapter(repo, tenant, job, spec, work_dir / ADAPTER_DIR)
        return self._collect_packed(repo, tenant, job, spec, work_dir / OUTPUT_FILE)

    def _collect_adapter(
        self, repo: Repository, tenant: Tenant, job: Job, spec: dict[str, Any], source: Path
    ) -> str:
        _check_output(source, _ADAPTER_FILES)
        name = spec["adapter"]
        if repo.find_adapter(name, tenant_id=tenant.id) is not None:
            raise ConflictError(f"adapter {name!r} exists already (made while the job ran)")
        key = artifact_key(tenant.id, "adapter")
        num_bytes = self.store.put_tree(key, source)
        try:
            artifact = repo.add_artifact(
                tenant,
                kind="adapter",
                name=name,
                format="peft-lora",
                sha256=tree_digest(source),
                num_bytes=num_bytes,
                location=key,
                source_job_id=job.id,
            )
            repo.add_adapter(
                tenant,
                name=name,
                base_model=spec["base_model"],
                rank=int(spec["rank"]),
                alpha=float(spec["alpha"]),
                target_modules=list(spec["target_modules"]),
                artifact=artifact,
                source_job_id=job.id,
            )
        except NpuCenterError:
            self.store.delete(key)
            raise
        return f"adapter {name!r} registered ({num_bytes} bytes): model={name!r} on /v1"

    def _collect_packed(
        self, repo: Repository, tenant: Tenant, job: Job, spec: dict[str, Any], source: Path
    ) -> str:
        _check_output(source, ())
        content = source.read_bytes()
        row, _ = upload_dataset(repo, self.store, tenant, name=spec["output"], content=content)
        row.source_job_id = job.id
        return (
            f"packed data set {row.name!r} stored ({row.num_bytes} bytes, {row.num_records} rows)"
        )


def _check_output(path: Path, required: tuple[str, ...]) -> None:
    """A job's output must be regular files only (no link out of its work dir), bounded in size."""
    what = f"the job's output {path.name}"
    try:
        top = os.lstat(path)
    except FileNotFoundError:
        raise InvalidRequestError(
            f"{what} is missing", hint="the program wrote no output"
        ) from None
    entries = [(path, top)]
    if stat.S_ISDIR(top.st_mode):
        for root, dirs, files in os.walk(path):
            entries += [(Path(root) / n, os.lstat(Path(root) / n)) for n in (*dirs, *files)]
    total = 0
    for p, st in entries:
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
            raise InvalidRequestError(f"{what} holds {p.name}, not a regular file")
        total += st.st_size if stat.S_ISREG(st.st_mode) else 0
    if total > _MAX_OUTPUT_BYTES:
        raise InvalidRequestError(f"{what} is {total} bytes, over {_MAX_OUTPUT_BYTES}")
    for name in required:
        if not (path / name).is_file():
            raise InvalidRequestError(f"{what} lacks {name}")


def _write_spec(work_dir: Path, spec: dict[str, Any], uid: int | None) -> None:
    path = work_dir / "spec.json"
    path.write_text(json.dumps(spec, indent=1))
    if uid is not None:
        os.lchown(path, uid, uid)
