"""Where a real engine finds a deployment's model: a local directory, built when it can be.

A model is a catalog id backed by a local directory (``<data dir>/models/<model id>`` unless the
deployment's ``engine.model_path`` says otherwise; a relative path is under ``<data dir>/models``)
or a hub id passed to the engine as it is (engines run with ``HF_HUB_OFFLINE=1`` where they
support it: nothing is downloaded at run time). The tiny test model is built on first use.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from npucenter.engines.tiny import TINY_MODEL_ID, ensure_tiny_model, is_model_dir

__all__ = ["BUILDABLE_MODELS", "ensure_model", "resolve_model_path"]

#: Models the center can build itself into a directory (no download).
BUILDABLE_MODELS: dict[str, Callable[[Path], Path]] = {TINY_MODEL_ID: ensure_tiny_model}


def resolve_model_path(
    model_id: str, model_path: str | None, models_dir: Path | None
) -> str | None:
    """The path (or hub id) the engine loads ``model_id`` from; None: the model id itself.

    An absolute ``model_path`` is used as given; a relative one is a directory under
    ``models_dir`` when that exists or the model can be built there, else a hub id. Without a
    ``model_path``, ``<models_dir>/<model_id>`` is used when it holds a model or can be built.
    """
    if model_path is not None:
        given = Path(model_path).expanduser()
        if given.is_absolute() or models_dir is None:
            return str(given) if given.is_absolute() else model_path
        local = models_dir / given
        if local.exists() or model_id in BUILDABLE_MODELS:
            return str(local)
        return model_path  # a hub id such as "org/name"
    if models_dir is None:
        return None
    local = models_dir / model_id
    if is_model_dir(local) or model_id in BUILDABLE_MODELS:
        return str(local)
    return None


def ensure_model(model_id: str, path: str | None) -> bool:
    """Build ``model_id`` into ``path`` when it is buildable and missing; whether it built.

    Blocking (imports torch and transformers): call it from a worker thread.
    """
    if path is None or model_id not in BUILDABLE_MODELS:
        return False
    target = Path(path)
    if is_model_dir(target):
        return False
    BUILDABLE_MODELS[model_id](target)
    return True
