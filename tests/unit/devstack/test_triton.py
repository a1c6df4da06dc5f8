"""The local Triton's command line and the cleanup of what its python backend leaves in /dev/shm."""

from pathlib import Path

from devstack.triton import TritonInstall, remove_shared_memory


def test_the_python_backend_names_its_regions_with_the_given_prefix(tmp_path: Path) -> None:
    command = TritonInstall(tmp_path).command(
        tmp_path / "repo", tmp_path / "backends", 1, 2, 3, "pcam-triton-2-"
    )
    assert "--backend-config=python,shm-region-prefix-name=pcam-triton-2-" in command
    assert command.count("--backend-config=python,shm-region-prefix-name=pcam-triton-2-") == 1


def test_only_the_regions_with_the_prefix_are_removed(tmp_path: Path) -> None:
    for name in (
        "pcam-triton-2-a",
        "pcam-triton-2-b",
        "pcam-triton-21-a",
        "triton_python_backend_shm_region_x",
    ):
        (tmp_path / name).write_bytes(b"x")
    removed = remove_shared_memory("pcam-triton-2-", tmp_path)
    assert sorted(removed) == ["pcam-triton-2-a", "pcam-triton-2-b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "pcam-triton-21-a",
        "triton_python_backend_shm_region_x",
    ]
    assert remove_shared_memory("pcam-triton-2-", tmp_path) == []
