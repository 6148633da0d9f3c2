"""Writing outputs: every writer gets its chance, failures are reported, publishing moves them together."""
from digits import outputs


def test_a_writer_that_raises_is_reported_and_the_others_are_still_written(tmp_path, capsys):
    def broken(path):
        raise RuntimeError("the picture could not be drawn")

    staging = tmp_path / "staging"
    staging.mkdir()
    written = outputs.write_outputs([("a.json", lambda p: outputs.write_json({"a": 1}, p)), ("b.png", broken),
                                     ("c.json", lambda p: outputs.write_json({"c": 3}, p))], staging)
    assert written.done == ["a.json", "c.json"] and written.failed == ["b.png"]
    assert sorted(p.name for p in staging.iterdir()) == ["a.json", "c.json"]
    assert "warning: could not write b.png: RuntimeError: the picture could not be drawn" in capsys.readouterr().err

    out = tmp_path / "out"
    out.mkdir()
    (out / "c.json").mkdir()  # a folder in the file's place: that one cannot be published
    published = outputs.publish(staging, out, written.done)
    assert published.done == [out / "a.json"] and published.failed == ["c.json"]
    assert (out / "a.json").read_text() == '{\n  "a": 1\n}\n'


def test_the_staging_folder_goes_whatever_happens(tmp_path):
    kept, fresh = tmp_path / "kept", tmp_path / "fresh" / "out"
    kept.mkdir()
    (kept / "metrics.json").write_text("previous run")
    for out in (kept, fresh):
        try:
            with outputs.staging_folder(out) as staging:
                (staging / "model.keras").write_text("half")
                raise KeyboardInterrupt
        except KeyboardInterrupt:
            pass
    assert [p.name for p in kept.iterdir()] == ["metrics.json"]  # as it was
    assert not (tmp_path / "fresh").exists()  # the folders made for the run go with it
