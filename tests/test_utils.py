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


def test_disk_full_is_found_through_wrapping_errors(tmp_path):
    """torch and MLflow wrap the OSError of a full disk: the chain is searched for it."""
    import errno

    from suhmo.utils import DiskFullError, disk_full_cause

    full = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "last.pt"))
    try:
        try:
            raise full
        except OSError as e:
            raise RuntimeError("unexpected pos 704 vs 598") from e
    except RuntimeError as wrapped:
        assert disk_full_cause(wrapped) is full
        err = DiskFullError.check(wrapped, tmp_path / "last.pt", 3 << 20)
    assert err is not None and "last.pt" in str(err) and "3.0 MiB needed" in str(err) and "free" in str(err)
    assert disk_full_cause(RuntimeError("other")) is None
    assert DiskFullError.check(OSError(errno.EACCES, "denied"), tmp_path) is None


def test_check_memory_names_the_input_and_the_bound(monkeypatch):
    from suhmo.utils import SuhmoError, check_memory, format_bytes

    monkeypatch.setenv("SUHMO_MAX_ALLOC_BYTES", str(1 << 20))
    check_memory(1 << 19, "small")
    with pytest.raises(SuhmoError, match=r"--frames 9 needs 2.0 MiB of memory, over the 1.0 MiB allowed here "
                                         r"\(SUHMO_MAX_ALLOC_BYTES"):
        check_memory(2 << 20, "--frames 9", "fewer frames")
    assert format_bytes(3.5 * 2**40) == "3.5 TiB" and format_bytes(512) == "512 B"
