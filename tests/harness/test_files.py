"""Write-then-rename (harness/files.py): a failed write leaves the old file whole and no litter; a
folder published second keeps the first one's copy."""

import pytest

from advbench.harness.files import published, replaced


def test_a_failed_write_leaves_the_old_file_and_nothing_else(tmp_path):
    path = tmp_path / "cache" / "splits.json"
    with replaced(path) as staging:
        staging.write_text("first")
    assert path.read_text() == "first"
    with pytest.raises(RuntimeError), replaced(path) as staging:
        staging.write_text("half of the second")
        raise RuntimeError("killed mid-write")
    assert path.read_text() == "first" and sorted(p.name for p in path.parent.iterdir()) == ["splits.json"]


def test_a_folder_published_second_keeps_the_first_copy(tmp_path):
    path = tmp_path / "models" / "tiny"
    with published(path) as first:
        (first / "weights").write_text("first")
    with published(path) as second:  # another process built it too, and finishes later
        (second / "weights").write_text("second")
    assert (path / "weights").read_text() == "first"
    assert sorted(p.name for p in path.parent.iterdir()) == ["tiny"]
