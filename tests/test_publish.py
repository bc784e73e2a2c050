from r1kit.publish import fresh_staging_dir, publish_dir, staging_dir


def test_publish_replaces_a_folder_whole_and_leaves_nothing_beside_it(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old-only.txt").write_text("from the earlier run")
    (tmp_path / ".out.partial").mkdir()
    (tmp_path / ".out.partial" / "junk").write_text("what a crashed run left")

    staged = fresh_staging_dir(target)
    assert staged == staging_dir(target) and list(staged.iterdir()) == []  # the leftovers are gone
    (staged / "new.txt").write_text("complete")
    assert publish_dir(staged, target) == target
    assert [p.name for p in target.iterdir()] == ["new.txt"]  # no file of the earlier output survives
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_publish_into_a_new_folder(tmp_path):
    target = tmp_path / "a" / "b"
    staged = fresh_staging_dir(target)
    (staged / "x").write_text("1")
    publish_dir(staged, target)
    assert (target / "x").read_text() == "1" and not staged.exists()
