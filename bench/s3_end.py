"""`make bench-s3-end`: the driver's reads at the end of a run whose work area is in S3.

Writes, to a moto server on 127.0.0.1, what a run of --rows images on --parts featurizing tasks
leaves: one staged part per task (path, label, ..., the vector as float32 bytes) and beside each
the task's PCA sums (reduce.Moments, 6.5 MB). Then times, twice each, what the driver does with
them after the stream: `pipeline._staged_counts` (three columns of every part) and
`pipeline._staged_moments` (every sums file), with 1 and with 8 reads in flight, twice each
in turn. Prints the times; nothing is saved.

    python bench/s3_end.py [--parts 96] [--rows 90380] [--reads 1,8]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

BUCKET = "bench-s3-end"
OUTPUT = f"s3a://{BUCKET}/out"
FILES_PER_BATCH_TASKS = 8  # parts per batch=N folder, as 2 tasks per core on 4 cores


def write_work_area(parts: int, rows: int) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from featurizer import arrow_files, reduce
    from featurizer.output import Layout

    location = arrow_files.locate(Layout(OUTPUT).featurized)
    rng = np.random.default_rng(0)
    per_part = rows // parts
    vector = rng.standard_normal(1280).astype(np.float32).tobytes()
    sums = reduce.Moments(1280)
    sums.add_rows(rng.standard_normal((per_part, 1280)).astype(np.float32))
    sums_file = sums.to_bytes()
    for part in range(parts):
        first = part * per_part
        labels = [f"Class {(first + i) % 131}" for i in range(per_part)]
        table = pa.table(
            {
                "path": [f"s3a://in/{label}/{first + i}.jpg" for i, label in enumerate(labels)],
                "label": labels,
                "length": pa.array([5000] * per_part, pa.int64()),
                "modificationTime": pa.array([0] * per_part, pa.timestamp("us", "UTC")),
                "features": pa.array([vector] * per_part, pa.binary()),
                "error": pa.nulls(per_part, pa.string()),
            }
        )
        folder = f"{location.path}/batch={part // FILES_PER_BATCH_TASKS}"
        with location.fs.open_output_stream(f"{folder}/part-{part:05d}.parquet") as stream:
            pq.write_table(table, stream)
        with location.fs.open_output_stream(f"{folder}/_part-{part:05d}.moments.npz") as stream:
            stream.write(sums_file)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", type=int, default=96, help="featurizing tasks (staged parts)")
    parser.add_argument("--rows", type=int, default=90_380, help="staged rows in all")
    parser.add_argument(
        "--reads", default="1,8", help="reads in flight to compare (arrow_files.S3_READS)"
    )
    args = parser.parse_args()

    from servers import MotoServer

    with MotoServer(Path(tempfile.mkdtemp(prefix="bench-s3-end-"))) as moto:
        os.environ.update(moto.env())
        import boto3

        from featurizer import arrow_files, pipeline
        from featurizer.output import Layout

        boto3.client("s3", endpoint_url=moto.url).create_bucket(Bucket=BUCKET)
        start = time.monotonic()
        write_work_area(args.parts, args.rows)
        print(f"wrote {args.parts} parts and sums files in {time.monotonic() - start:.1f} s")

        layout = Layout(OUTPUT)
        for reads in [int(n) for n in args.reads.split(",")] * 2:
            arrow_files.S3_READS = reads
            start = time.monotonic()
            counts = pipeline._staged_counts(None, layout.featurized, None, 0)
            counted = time.monotonic() - start
            start = time.monotonic()
            moments = pipeline._staged_moments(layout, None)
            summed = time.monotonic() - start
            print(
                f"{reads} in flight: counts {counted:.2f} s ({counts['selected']:,} rows, "
                f"{counts['classes']} classes), PCA sums {summed:.2f} s "
                f"({args.parts} files, {moments.count:,} rows)"
            )


if __name__ == "__main__":
    main()
