"""The committed stubs match proto/, and the check catches a .proto edited without regenerating."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from services.common import protogen


def test_committed_stubs_are_fresh() -> None:
    protogen.check()


def test_check_fails_when_a_proto_changes_without_regenerating(tmp_path: Path) -> None:
    edited = tmp_path / "proto"
    shutil.copytree(protogen.PROTO_ROOT, edited)
    verifier = edited / "legibility" / "v1" / "verifier.proto"
    verifier.write_text(
        verifier.read_text().replace("  string solution = 2;\n", "  string solution = 2;\n  string note = 9;\n", 1)
    )
    with pytest.raises(protogen.StaleStubsError) as info:
        protogen.check(proto_root=edited)
    assert "verifier_pb2.py" in str(info.value) and "verifier_pb2.pyi" in str(info.value)
    assert "common_pb2.py" not in str(info.value).replace("verifier_pb2", "")


def test_check_fails_when_a_stub_is_edited_by_hand(tmp_path: Path) -> None:
    stubs = tmp_path / "genproto"
    shutil.copytree(protogen.OUTPUT_DIR, stubs, ignore=shutil.ignore_patterns("__pycache__"))
    target = stubs / "legibility" / "v1" / "learner_pb2_grpc.py"
    target.write_text(target.read_text() + "\n# hand edit\n")
    (stubs / "legibility" / "v1" / "stray_pb2.py").write_text("")
    with pytest.raises(protogen.StaleStubsError) as info:
        protogen.check(stubs_dir=stubs)
    assert "learner_pb2_grpc.py" in str(info.value) and "stray_pb2.py" in str(info.value)


def test_generated_imports_point_into_the_package() -> None:
    for path in protogen.OUTPUT_DIR.rglob("*.py*"):
        text = path.read_text()
        assert "from legibility.v1" not in text and "import legibility.v1" not in text, path
