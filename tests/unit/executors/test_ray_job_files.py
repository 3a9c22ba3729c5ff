"""What travels with a job's run on Ray: its staged inputs out, its outputs back (no link followed)."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from npucenter.executors.ray_jobs import pack_tree, unpack_tree


def test_inputs_and_outputs_round_trip_as_plain_files_only(tmp_path: Path) -> None:
    work = tmp_path / "work"
    (work / "inputs" / "model").mkdir(parents=True)
    (work / "inputs" / "model" / "config.json").write_text("{}")
    (work / "inputs" / "data.jsonl").write_text('{"text": "a"}\n')
    (work / "spec.json").write_text('{"steps": 1}')
    secret = tmp_path / "secret"
    secret.write_text("the store")
    (work / "adapter").mkdir()
    (work / "adapter" / "adapter_model.safetensors").write_bytes(b"w" * 10)
    (work / "adapter" / "leak").symlink_to(secret)  # a job may leave a link to anything
    (work / "packed.jsonl").symlink_to(secret)

    node = tmp_path / "node"
    assert unpack_tree(pack_tree(work / "inputs", ()), node / "inputs") == ["data.jsonl", "model"]
    assert (node / "inputs" / "model" / "config.json").read_text() == "{}"

    back = pack_tree(work, ["adapter", "packed.jsonl", "missing"])
    center = tmp_path / "center"
    assert unpack_tree(back, center) == ["adapter"]
    assert sorted(os.listdir(center / "adapter")) == ["adapter_model.safetensors"]
    assert not (center / "packed.jsonl").exists()

    with pytest.raises(ValueError, match="over 5 bytes"):
        pack_tree(work, ["adapter"], max_bytes=5)


def test_a_bundle_cannot_write_outside_its_dir_or_make_links(tmp_path: Path) -> None:
    def bundle(info: tarfile.TarInfo, content: bytes = b"") -> bytes:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
        return buffer.getvalue()

    escape = tarfile.TarInfo("../outside")
    with pytest.raises(tarfile.TarError):
        unpack_tree(bundle(escape, b"x"), tmp_path / "dest")
    assert not (tmp_path / "outside").exists()
    link = tarfile.TarInfo("adapter")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc"
    with pytest.raises(ValueError, match="plain files"):
        unpack_tree(bundle(link), tmp_path / "dest")
