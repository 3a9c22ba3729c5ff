"""A tenant's files: data sets, fine-tuned adapters and job outputs (issue 14).

The bytes live in an :class:`ArtifactStore` (:class:`LocalArtifactStore`: a directory under the
center's data dir; an object store such as S3/MinIO implements the same Protocol), their records
(owner, checksum, size) in the store (:mod:`npucenter.store.artifacts`). A tenant sees only its
own artifacts: another tenant's is not found (404). :mod:`.service` puts the two together for the
API (uploads, deletes, usage in bytes) and the job runner (:class:`.staging.JobFilesStager`
copies a job's inputs into its work dir and collects its outputs).
"""

from npucenter.artifacts.store import ArtifactStore, LocalArtifactStore
from npucenter.settings import Settings

__all__ = ["ArtifactStore", "LocalArtifactStore", "artifact_store"]


def artifact_store(settings: Settings) -> ArtifactStore:
    """The center's artifact store: ``<data dir>/artifacts`` (an object store plugs in here)."""
    return LocalArtifactStore(settings.data_dir / "artifacts")
