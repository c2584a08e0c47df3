import os

import pytest

from suhmo.utils import atomic_save, atomic_write_text


def test_atomic_write_replaces_whole_file_owner_only(tmp_path):
    p = tmp_path / "sub" / "f.txt"
    atomic_write_text(p, "one")
    atomic_write_text(p, "two")
    assert p.read_text() == "two"
    assert os.stat(p).st_mode & 0o777 == 0o600  # explicit, whatever the umask
    assert os.stat(p.parent).st_mode & 0o077 == 0  # a folder it created is the owner's too
    assert os.listdir(p.parent) == ["f.txt"]


def test_no_code_changes_the_process_umask():
    """os.umask is process-wide: setting it (even briefly) races with other threads' files."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    offenders = [str(f.relative_to(root)) for d in ("suhmo", "launch", "tracking")
                 for f in (root / d).rglob("*.py") if "os.umask(" in f.read_text()]
    assert offenders == []


def test_a_failing_writer_leaves_the_old_file_and_no_temporary(tmp_path):
    p = tmp_path / "ck.pt"
    atomic_write_text(p, "good")

    def half_write(tmp):
        with open(tmp, "w") as f:
            f.write("partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_save(p, half_write)
    assert p.read_text() == "good"
    assert os.listdir(tmp_path) == ["ck.pt"]
