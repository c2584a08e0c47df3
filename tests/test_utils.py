import os

import pytest

from suhmo.utils import atomic_save, atomic_write_text


def test_atomic_write_replaces_whole_file_with_normal_permissions(tmp_path):
    p = tmp_path / "sub" / "f.txt"
    atomic_write_text(p, "one")
    atomic_write_text(p, "two")
    assert p.read_text() == "two"
    assert os.stat(p).st_mode & 0o777 == 0o666 & ~_umask()
    assert os.listdir(p.parent) == ["f.txt"]


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


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m
