"""Result documents of jobs (a benchmark's JSON): at most one per job, bounded in size."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from sqlalchemy import select

from npucenter.errors import InvalidConfigError, NotFoundError
from npucenter.store.base import StoreBase
from npucenter.store.keys import redact_document
from npucenter.store.models import Job, JobResult

__all__ = ["MAX_RESULT_BYTES", "ResultStore"]

MAX_RESULT_BYTES = 16 * 1024 * 1024  # a result document, as compact JSON


class ResultStore(StoreBase):
    """Job result documents."""

    def set_job_result(self, job: Job, document: dict[str, Any], *, source: str) -> JobResult:
        """Attach (or replace) the job's result document; at most MAX_RESULT_BYTES as JSON."""
        if not isinstance(document, dict):
            raise InvalidConfigError(
                "result", type(document).__name__, "a result must be a JSON object"
            )
        document = redact_document(document)  # a key a job reported is not kept
        try:
            num_bytes = len(json.dumps(document, separators=(",", ":"), allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise InvalidConfigError(
                "result", type(document).__name__, f"not storable as JSON: {exc}"
            ) from exc
        if num_bytes > MAX_RESULT_BYTES:
            raise InvalidConfigError(
                "result",
                f"{num_bytes} bytes",
                f"larger than {MAX_RESULT_BYTES} bytes",
                hint="drop per-request records (keep the summary) before uploading",
            )
        row = self.session.scalar(select(JobResult).where(JobResult.job_id == job.id))
        if row is None:
            row = JobResult(job_id=job.id)
            self.session.add(row)
        row.document = document
        row.num_bytes = num_bytes
        row.source = source
        row.created_at_s = self.now_s()
        self.session.flush()
        return row

    def job_result(self, job: Job) -> JobResult:
        """The job's result document; NotFoundError when it has none."""
        row = self.session.scalar(select(JobResult).where(JobResult.job_id == job.id))
        if row is None:
            raise NotFoundError("job result", str(job.id))
        return row

    def jobs_with_results(self, job_ids: Iterable[int]) -> set[int]:
        """Which of ``job_ids`` have a result document."""
        ids = list(job_ids)
        if not ids:
            return set()
        stmt = select(JobResult.job_id).where(JobResult.job_id.in_(ids))
        return set(self.session.scalars(stmt))
