"""Atomic writes: complete or absent, the umask's permissions, no temporary left."""

from __future__ import annotations

import os
import stat

import pytest

from pneumokeras.utils.fileio import atomic_open, atomic_path, atomic_write_json, atomic_write_text


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_files_respect_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        with atomic_path(tmp_path / "b.keras", suffix=".keras") as tmp:
            assert tmp.suffix == ".keras"
            tmp.write_bytes(b"y")
        with open(tmp_path / "plain.txt", "w") as handle:
            handle.write("z")
    finally:
        os.umask(old)
    expected = 0o666 & ~umask
    assert _mode(tmp_path / "a.txt") == expected == _mode(tmp_path / "plain.txt")
    assert _mode(tmp_path / "b.keras") == expected


def test_failure_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "metrics.json"
    atomic_write_json(target, {"a": 1})
    with pytest.raises(RuntimeError), atomic_open(target) as handle:  # noqa: PT012
        handle.write("{half")
        raise RuntimeError("killed")
    assert target.read_text() == '{\n  "a": 1\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_atomic_path_replaces_on_success(tmp_path):
    target = tmp_path / "sub" / "shard.tfrecord"
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent
        assert not target.exists()
        assert tmp.name.startswith(".shard.tfrecord.tmp-")
        assert tmp.suffix != ".tfrecord"
        tmp.write_bytes(b"data")
    assert target.read_bytes() == b"data"
    assert [p.name for p in target.parent.iterdir()] == ["shard.tfrecord"]


def test_read_json_object_or_one_line_error(tmp_path):
    from pneumokeras.errors import UserError
    from pneumokeras.utils.fileio import read_json_object

    good = tmp_path / "run.json"
    good.write_text('{"status": "running"}')
    assert read_json_object(good, "run record") == {"status": "running"}
    for name, text, message in [
        ("cut.json", '{"status": "run', "run record .*cut.json is unreadable"),
        ("list.json", "[1, 2]", "run record .*list.json is not a JSON object"),
        ("bytes.json", b"\xff\xfe{", "run record .*bytes.json is unreadable"),
    ]:
        path = tmp_path / name
        (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
        with pytest.raises(UserError, match=message) as info:
            read_json_object(path, "run record")
        assert "\n" not in str(info.value)
    with pytest.raises(UserError, match=r"missing.json is unreadable"):
        read_json_object(tmp_path / "missing.json", "run record")


def test_a_csv_table_is_read_after_its_header(tmp_path):
    from pneumokeras.errors import UserError
    from pneumokeras.utils.fileio import read_csv_table

    table = tmp_path / "t.csv"
    table.write_text("a,b\n1,2\n3,\n", encoding="utf-8")
    assert read_csv_table(table, ("a", "b")) == [["1", "2"], ["3", ""]]
    with pytest.raises(UserError, match=r"t\.csv must start with the header a,c, not a,b; re-run"):
        read_csv_table(table, ("a", "c"))
    table.write_bytes(b"\xff\xfe,")
    with pytest.raises(UserError, match=r"t\.csv is unreadable"):
        read_csv_table(table, ("a", "b"))
    with pytest.raises(UserError, match=r"gone\.csv is unreadable"):
        read_csv_table(tmp_path / "gone.csv", ("a", "b"))
