"""spark_jobs.jvm_jar: the project's JVM functions compiled into a jar named by its sources."""
import zipfile

import pytest

from spark_jobs import jvm_jar


def test_builds_a_jar_named_by_its_sources_once(tmp_path):
    if jvm_jar.javac() is None:
        pytest.fail("no javac: bin/setup needs a JDK (Java 17)")
    jar = jvm_jar.build(tmp_path)
    assert jar is not None and jar.parent == tmp_path and jar.name.startswith(jvm_jar.PREFIX)
    assert "amazonrec/CleanText.class" in zipfile.ZipFile(jar).namelist()
    built = jar.stat().st_mtime_ns
    assert jvm_jar.build(tmp_path) == jar and jar.stat().st_mtime_ns == built  # not compiled again
    assert [p.name for p in tmp_path.iterdir()] == [jar.name]  # no partial file left


def test_a_changed_source_is_a_new_jar_and_a_broken_one_raises(tmp_path, monkeypatch):
    sources = tmp_path / "jvm"
    (sources / "x").mkdir(parents=True)
    (sources / "x" / "A.java").write_text("package x; public final class A { public static int f() { return 1; } }")
    monkeypatch.setattr(jvm_jar, "SOURCES", sources)
    first = jvm_jar.build(tmp_path / "out")
    (sources / "x" / "A.java").write_text("package x; public final class A { public static int f() { return 2; } }")
    second = jvm_jar.build(tmp_path / "out")
    assert first != second and first.exists() and second.exists()
    (sources / "x" / "A.java").write_text("package x; public final class A { nonsense }")
    with pytest.raises(RuntimeError, match="javac failed"):
        jvm_jar.build(tmp_path / "out")


def test_without_javac_nothing_is_built(tmp_path, monkeypatch):
    monkeypatch.setattr(jvm_jar, "javac", lambda: None)
    assert jvm_jar.build(tmp_path) is None
    assert not any(tmp_path.iterdir())


def test_spark_jars_keep_each_jar_once_by_its_file_name():
    from spark_jobs.common import _jars

    assert _jars("file:/a/x.jar,file:/b/y.jar", "/a/x.jar", None, "/c/z.jar") == "file:/a/x.jar,file:/b/y.jar,/c/z.jar"
    assert _jars(None, "", None) == ""


def test_no_sources_no_jar(tmp_path, monkeypatch):
    """Imported from spark-submit's --py-files zip: the jar came with --jars, nothing is compiled."""
    monkeypatch.setattr(jvm_jar, "SOURCES", tmp_path / "code.zip" / "spark_jobs" / "jvm")
    assert jvm_jar.build(tmp_path / "out") is None
