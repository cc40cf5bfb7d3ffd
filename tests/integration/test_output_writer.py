"""The output's rows written by the Python workers (arrow_files.write_parts) against Spark's
own writer: the same rows and columns, no part file (nor side file) from a failed task."""

from __future__ import annotations

import os

import numpy as np
import pytest

from featurizer import arrow_files, pipeline, reduce, vectors

DIM, K = 24, 5


def staged(spark, rows: int, partitions: int = 3):
    """Rows as the featurizing tasks stage them: path, label, float32 bytes."""
    rng = np.random.default_rng(rows)
    x = rng.standard_normal((rows, DIM)).astype(np.float32)
    data = [(f"/in/c{i % 4}/{i}.jpg", f"c{i % 4}", vectors.pack(x[i])) for i in range(rows)]
    return spark.createDataFrame(data, "path string, label string, features binary").repartition(
        partitions
    ), x


def each(transform):
    """A write_parts partition function applying `transform` to every batch."""
    return lambda batches: map(transform, batches)


def components() -> np.ndarray:
    return np.random.default_rng(7).standard_normal((DIM, K))


def sorted_rows(spark, uri: str) -> list:
    return sorted(spark.read.parquet(uri).collect(), key=lambda row: row["path"])


def part_files(folder) -> list[str]:
    return sorted(name for name in os.listdir(folder) if not name.startswith((".", "_")))


def test_both_writers_give_the_same_rows_and_columns(spark, tmp_path):
    df, x = staged(spark, 300)
    pipeline.write_features(df, components(), str(tmp_path / "arrow"))
    reduce.project(df, components(), "features", "pca").write.parquet(str(tmp_path / "spark"))

    arrow, spark_rows = (
        sorted_rows(spark, str(tmp_path / "arrow")),
        sorted_rows(spark, str(tmp_path / "spark")),
    )
    assert arrow == spark_rows and len(arrow) == 300
    read = spark.read.parquet(str(tmp_path / "arrow")).schema
    assert [(f.name, f.dataType.simpleString()) for f in read.fields] == [
        ("path", "string"),
        ("label", "string"),
        ("features", "array<float>"),
        ("pca", "array<float>"),
    ]
    by_path = {row["path"]: row for row in arrow}
    i = 17
    row = by_path[f"/in/c{i % 4}/{i}.jpg"]
    np.testing.assert_array_equal(np.array(row["features"], np.float32), x[i])
    expected = (x[i].astype(np.float64) @ components()).astype(np.float32)
    np.testing.assert_array_equal(np.array(row["pca"], np.float32), expected)
    assert part_files(tmp_path / "arrow") == [f"part-{p:05d}.parquet" for p in range(3)]
    assert (tmp_path / "arrow" / "_SUCCESS").exists()
    assert not (tmp_path / "arrow" / arrow_files.TEMPORARY).exists()


def test_vectors_are_not_dictionary_encoded_and_labels_are(spark, tmp_path):
    import pyarrow.parquet as pq

    df, _ = staged(spark, 200, partitions=1)
    pipeline.write_features(df, components(), str(tmp_path / "out"))
    meta = pq.ParquetFile(tmp_path / "out" / "part-00000.parquet").metadata.row_group(0)
    encodings = {meta.column(c).path_in_schema: meta.column(c).encodings for c in range(4)}
    assert "RLE_DICTIONARY" in encodings["label"]
    vector_columns = [path for path in encodings if path.startswith(("features", "pca"))]
    assert len(vector_columns) == 2
    for path in vector_columns:
        assert "RLE_DICTIONARY" not in encodings[path] and "PLAIN_DICTIONARY" not in encodings[path]


def test_a_failing_task_leaves_no_part_file_and_a_rewrite_replaces_all(spark, tmp_path):
    df, _ = staged(spark, 300)
    target = tmp_path / "out"
    transform = reduce.projection(components(), 2, "pca")
    schema = reduce.projected_schema(df.schema, "features", "pca")

    def failing(batch):  # the task of partition 1 fails after its first batch was written
        from pyspark import TaskContext

        if TaskContext.get().partitionId() == 1:
            raise RuntimeError("disk gone")
        return transform(batch)

    with pytest.raises(Exception, match="disk gone"):
        arrow_files.write_parts(df, str(target), each(failing), schema)
    assert "part-00001.parquet" not in part_files(target)
    assert not (target / arrow_files.TEMPORARY).exists()
    assert not (target / "_SUCCESS").exists()

    assert arrow_files.write_parts(df, str(target), each(transform), schema) == 300
    assert len(sorted_rows(spark, str(target))) == 300
    assert part_files(target) == [f"part-{p:05d}.parquet" for p in range(3)]


def test_side_files_are_committed_with_their_part_and_hidden_from_parquet_readers(spark, tmp_path):
    """What the featurizing tasks leave beside their staged parts (their PCA sums)."""
    df, _ = staged(spark, 300)
    target = tmp_path / "out"
    transform = reduce.projection(components(), 2, "pca")
    schema = reduce.projected_schema(df.schema, "features", "pca")

    def with_side_file(fail: bool):
        def partition(batches):
            from pyspark import TaskContext

            rows = 0
            for batch in batches:
                rows += batch.num_rows
                yield transform(batch)
            part = TaskContext.get().partitionId()
            yield arrow_files.SideFile("rows", f"{part}:{rows}".encode())
            if fail and part == 1:  # after its side file was written
                raise RuntimeError("disk gone")

        return partition

    with pytest.raises(Exception, match="disk gone"):
        arrow_files.write_parts(df, str(target), with_side_file(fail=True), schema)
    assert not any(name.startswith("_part-00001") for name in os.listdir(target))

    assert arrow_files.write_parts(df, str(target), with_side_file(fail=False), schema) == 300
    assert sorted(name for name in os.listdir(target) if name.startswith("_part")) == [
        f"_part-{p:05d}.parquet.rows" for p in range(3)
    ]
    sides = sorted(data.decode() for data in arrow_files.side_files(str(target), "rows", spark))
    assert [side.split(":")[0] for side in sides] == ["0", "1", "2"]
    assert sum(int(side.split(":")[1]) for side in sides) == 300
    assert len(sorted_rows(spark, str(target))) == 300  # Spark reads past them
    assert list(arrow_files.side_files(str(tmp_path / "absent"), "rows", spark)) == []


def test_a_failed_write_returns_only_when_no_task_of_it_can_write_any_more(spark, tmp_path):
    """The job's other tasks are killed asynchronously; returning before they end would let
    them write (on S3: upload into _temporary/) after the clean-up."""
    df, _ = staged(spark, 300, partitions=2)
    transform = reduce.projection(components(), 2, "pca")
    schema = reduce.projected_schema(df.schema, "features", "pca")
    ended = tmp_path / "ended"

    def failing(batch):  # partition 0 fails at once; partition 1 is still busy for a second
        import time

        from pyspark import TaskContext

        if TaskContext.get().partitionId() == 0:
            raise RuntimeError("disk gone")
        time.sleep(1.0)
        ended.write_text("done")
        return transform(batch)

    with pytest.raises(Exception, match="disk gone"):
        arrow_files.write_parts(df, str(tmp_path / "out"), each(failing), schema)
    assert ended.exists()
    assert not (tmp_path / "out" / arrow_files.TEMPORARY).exists()


def test_no_rows_still_give_a_readable_folder_with_the_columns(spark, tmp_path):
    df, _ = staged(spark, 10)
    pipeline.write_features(df.where("false"), components(), str(tmp_path / "out"))
    read = spark.read.parquet(str(tmp_path / "out"))
    assert read.count() == 0
    assert read.columns == ["path", "label", "features", "pca"]


def test_only_uris_pyarrow_reaches_with_sparks_credentials_are_written_by_workers(spark):
    assert arrow_files.reachable("/tmp/out") and arrow_files.reachable("file:///tmp/out")
    assert arrow_files.reachable("s3a://bucket/out", spark)
    assert not arrow_files.reachable("hdfs://namenode/out", spark)
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    key = "fs.s3a.aws.credentials.provider"
    default = conf.get(key)
    try:
        conf.set(key, "software.amazon.awssdk.auth.credentials.DefaultCredentialsProvider")
        assert arrow_files.reachable("s3://bucket/out", spark)
        conf.set(key, f"{default},com.example.CustomProvider")
        assert not arrow_files.reachable("s3://bucket/out", spark)
    finally:
        conf.set(key, default)


def test_an_errors_folder_known_empty_reads_as_sparks_own(spark, tmp_path):
    staged = spark.createDataFrame(
        [("/in/a/1.jpg", "a", b"\0" * 8, None)],
        "path string, label string, features binary, error string",
    )
    pipeline._write_errors(staged, str(tmp_path / "known"), failed=0)
    pipeline._write_errors(staged, str(tmp_path / "spark"))
    known, by_spark = (spark.read.parquet(str(tmp_path / name)) for name in ("known", "spark"))
    assert known.count() == by_spark.count() == 0
    assert known.schema.simpleString() == by_spark.schema.simpleString()
    assert (tmp_path / "known" / "_SUCCESS").exists()


def staged_parts(spark, staged_uri, x: np.ndarray, batches: tuple[range, ...]) -> None:
    """Staged parts as the featurizing tasks commit them (a folder per micro-batch, a side
    file beside each part), plus what is not rows: error rows (every 17th file), side files,
    _SUCCESS and a half-written part under _temporary/."""
    for batch, rows in enumerate(batches):
        data = [
            (f"/in/c{i % 3}/{i}.jpg", f"c{i % 3}", None, "cannot decode")
            if i % 17 == 0
            else (f"/in/c{i % 3}/{i}.jpg", f"c{i % 3}", vectors.pack(x[i]), None)
            for i in rows
        ]
        df = spark.createDataFrame(
            data, "path string, label string, features binary, error string"
        ).repartition(2)

        def with_side_file(batches):
            yield from batches
            yield arrow_files.SideFile("moments.npz", b"not rows")

        arrow_files.write_parts(
            df, str(staged_uri / f"batch={batch:06d}"), with_side_file, df.schema
        )
    (staged_uri / arrow_files.TEMPORARY).mkdir(exist_ok=True)
    (staged_uri / arrow_files.TEMPORARY / "part-00009.parquet").write_bytes(b"half a file")


def test_features_from_staged_parts_read_by_the_workers_equal_sparks_read(spark, tmp_path):
    """pipeline.write_staged_features (the workers read the staged parts with pyarrow) gives
    the rows the JVM's read of the same parts gives; error rows, side files, _SUCCESS and
    _temporary/ are not rows."""
    x = np.random.default_rng(5).standard_normal((250, DIM)).astype(np.float32)
    staged_uri = tmp_path / "featurized"
    staged_parts(spark, staged_uri, x, (range(0, 180), range(180, 250)))

    pipeline.write_staged_features(spark, str(staged_uri), components(), str(tmp_path / "w"), 3)
    staged = spark.read.parquet(str(staged_uri)).drop("batch")
    pipeline.write_features(pipeline._vectors(staged), components(), str(tmp_path / "jvm"))

    workers, jvm = (
        sorted_rows(spark, str(tmp_path / "w")),
        sorted_rows(spark, str(tmp_path / "jvm")),
    )
    assert workers == jvm and len(workers) == 250 - len(range(0, 250, 17))
    assert part_files(tmp_path / "w") == [f"part-{p:05d}.parquet" for p in range(3)]
    row = next(row for row in workers if row["path"] == "/in/c2/5.jpg")
    np.testing.assert_array_equal(np.array(row["features"], np.float32), x[5])


def test_counts_of_staged_parts_read_by_the_driver_equal_sparks(spark, tmp_path):
    """pipeline._staged_counts (pyarrow over the part files) counts what Spark's aggregation
    of the same parts counts: rows, failures, classes of featurized rows only (c9 has only a
    failed file), and a path staged twice."""
    x = np.random.default_rng(6).standard_normal((120, DIM)).astype(np.float32)
    staged_uri = tmp_path / "featurized"
    staged_parts(spark, staged_uri, x, (range(0, 51), range(50, 120)))  # file 50 twice
    failed_only = spark.createDataFrame(
        [("/in/c9/1.jpg", "c9", None, "cannot decode")],
        "path string, label string, features binary, error string",
    )
    arrow_files.write_parts(failed_only, str(staged_uri / "batch=000002"), iter, failed_only.schema)
    frame = spark.read.parquet(str(staged_uri)).drop("batch")
    by_spark = pipeline._counts(frame, 100)
    by_driver = pipeline._staged_counts(spark, str(staged_uri), None, 100)
    assert by_driver == by_spark
    assert by_driver == {
        "found": 122,
        "selected": 122,
        "featurized": 122 - 9,
        "failed": 9,
        "classes": 3,
        "duplicate_paths": 1,
    }
