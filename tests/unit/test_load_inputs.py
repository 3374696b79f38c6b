"""Which files load's ``--input`` names (spark_jobs.units.list_units): a glob that matches nothing
fails with the pattern named, and an existing file whose name holds glob characters is that file."""
from __future__ import annotations

import pytest

from spark_jobs import units


def test_a_glob_that_matches_nothing_is_an_error_naming_it(tmp_path):
    (tmp_path / "amazon2018_toys.jsonl.gz").write_bytes(b"")
    pattern = str(tmp_path / "*.jsonl.gzz")
    with pytest.raises(FileNotFoundError, match=r"\*\.jsonl\.gzz"):
        units.list_units([pattern])
    # one empty pattern among others fails the same
    with pytest.raises(FileNotFoundError, match=r"\*\.jsonl\.gzz"):
        units.list_units([str(tmp_path / "*.jsonl.gz"), pattern])


def test_a_file_whose_name_holds_glob_characters_is_loaded_as_itself(tmp_path):
    literal = tmp_path / "reviews_toys[1].jsonl"
    literal.write_text('{"asin": "a"}\n')
    (tmp_path / "reviews_toys1.jsonl").write_text('{"asin": "b"}\n')  # what "[1]" matches as a glob
    assert [u.path for u in units.list_units([str(literal)])] == [str(literal)]


def test_a_glob_still_matches_its_files(tmp_path):
    for name in ("amazon2018_b.jsonl", "amazon2018_a.jsonl"):
        (tmp_path / name).write_text("{}\n")
    assert [u.name for u in units.list_units([str(tmp_path / "*.jsonl")])] == ["amazon2018_a.jsonl", "amazon2018_b.jsonl"]


def test_two_inputs_of_one_file_name_are_refused_naming_both_paths(tmp_path):
    """A unit is its file name: two files of one name in a run would replace each other's rows."""
    paths = []
    for folder in ("part1", "part2"):
        (tmp_path / folder).mkdir()
        paths.append(tmp_path / folder / "amazon2018_toys.jsonl")
        paths[-1].write_text(f'{{"asin": "{folder}"}}\n')
    with pytest.raises(ValueError, match=f"amazon2018_toys.jsonl: {paths[0]} and {paths[1]}"):
        units.list_units([str(p) for p in paths])
    with pytest.raises(ValueError, match="share the file name"):  # a glob among them too
        units.list_units([str(paths[0]), str(tmp_path / "part*" / "*.jsonl")])
    # the same file named twice (a path and a glob that matches it) is one input, not two
    assert len(units.list_units([str(paths[0]), str(tmp_path / "part1" / "*.jsonl")])) == 1


def test_a_file_name_loaded_earlier_from_another_folder_is_named_with_that_path(tmp_path):
    """A later run's file of a loaded name, from another folder, replaces it (a re-download kept
    elsewhere): load logs which path it replaces, from the ledger entry's path."""
    new = tmp_path / "new" / "amazon2018_toys.jsonl"
    new.parent.mkdir()
    new.write_text('{"asin": "b"}\n')
    (unit,) = units.list_units([str(new)])
    assert units.loaded_elsewhere({"amazon2018_toys.jsonl": {"path": "/old/amazon2018_toys.jsonl"}}, [unit]) == {
        "amazon2018_toys.jsonl": "/old/amazon2018_toys.jsonl"}
    assert units.loaded_elsewhere({"amazon2018_toys.jsonl": {"path": str(new)}}, [unit]) == {}  # the same file
    assert units.loaded_elsewhere({"amazon2018_toys.jsonl": {}}, [unit]) == {}  # an entry without a path
    assert units.loaded_elsewhere({}, [unit]) == {}


@pytest.fixture
def data_dir(monkeypatch):
    """Sets DATA_DIR for the settings load's input rules read (core.inputs.input_files)."""
    from core.settings import get_settings

    def set_to(value: str) -> None:
        monkeypatch.setenv("DATA_DIR", value)
        get_settings.cache_clear()

    yield set_to
    monkeypatch.undo()
    get_settings.cache_clear()


def test_an_object_store_input_needs_data_dir_in_an_object_store(data_dir):
    """An s3a:// input is read by Spark with the s3a settings DATA_DIR in a bucket gives it; with a
    local DATA_DIR it is refused naming the way out, before anything is listed."""
    from core import inputs

    data_dir("/tmp/local-data")
    found = inputs.input_files(["s3a://bucket/in/reviews.jsonl.gz"])
    assert found.files == [] and "needs DATA_DIR in an object store" in found.refusal


def test_glob_characters_of_an_object_store_input_only_in_its_file_name(data_dir):
    from core import inputs

    data_dir("s3a://bucket/data")
    found = inputs.input_files(["s3a://bucket/*/reviews.jsonl.gz"])
    assert "in an object-store input's file name only" in found.refusal


def test_other_uris_are_refused():
    from core import inputs

    assert "only local or object-store (s3a://, s3://) input files" in inputs.input_files(["hdfs://nn/in/reviews.json"]).refusal


def test_a_file_spark_would_not_read_is_refused(tmp_path):
    """Spark skips a file whose name starts with "." or "_" (Hadoop's hidden files), even named
    alone: load read 0 lines of it, balanced, and its ledger then skipped it for good."""
    from core import inputs

    (tmp_path / "_reviews_Books.json").write_text('{"overall": 5}\n')
    refusal = inputs.input_files([str(tmp_path / "*.json")]).refusal
    assert "_reviews_Books.json: Spark reads no file whose name starts with" in refusal
