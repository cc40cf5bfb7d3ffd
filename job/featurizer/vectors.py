"""How feature vectors travel between the stages: staged as raw float32 bytes.

The featurizing tasks stage each image's 1280 floats as one `binary` value (little-endian
float32, 5,120 bytes) rather than an `array<float>`: Spark copies an array element by
element from Arrow, Parquet writes and reads one value with its repetition and definition
levels per element, and the projection's Arrow conversion walks them once more; a binary
value is one copy each way. Only the output keeps `array<float>` (what users read).
`unpack` reads either form, so the output's own rows (`--refit-pca`) and the staged ones
meet the same code.
"""

from __future__ import annotations

from typing import Any

import numpy as np

FLOAT32 = np.dtype("<f4")
STAGED_TYPE = "binary"  # the staged `features` column
FORMAT = "float32 bytes"  # named in a work area's fingerprint: --resume refuses another


def pack(vector: np.ndarray) -> bytes:
    """One vector as the bytes staged for it."""
    return np.ascontiguousarray(vector, dtype=FLOAT32).tobytes()


def as_binary(matrix: np.ndarray, missing: np.ndarray | None = None) -> Any:
    """An (n, d) matrix as an Arrow binary column of staged vectors (each row `pack`ed), with
    nulls where `missing` is True: one copy of the kept rows, no Python object per row."""
    import pyarrow as pa

    n, d = matrix.shape
    present = np.ones(n, dtype=bool) if missing is None else ~np.asarray(missing, dtype=bool)
    size = d * FLOAT32.itemsize
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(present * size, out=offsets[1:])
    data = np.ascontiguousarray(matrix[present], dtype=FLOAT32)
    validity = None if present.all() else pa.py_buffer(np.packbits(present, bitorder="little"))
    return pa.Array.from_buffers(
        pa.binary(), n, [validity, pa.py_buffer(offsets), pa.py_buffer(data)]
    )


def unpack(column: Any, dim: int | None = None) -> np.ndarray:
    """An Arrow column of staged bytes or of float lists (no nulls) as an (n, dim) float32
    matrix; staged bytes and float32 lists are viewed, not copied (the view is read-only).
    Without `dim`, the width is the first row's; a column whose vectors are not all that
    wide is refused (ValueError)."""
    import pyarrow as pa

    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if len(column) == 0:
        return np.zeros((0, dim or 0), dtype=FLOAT32)
    if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
        width = np.int64 if pa.types.is_large_binary(column.type) else np.int32
        offsets = np.frombuffer(
            column.buffers()[1], width, len(column) + 1, column.offset * np.dtype(width).itemsize
        )
        start, end = int(offsets[0]), int(offsets[-1])
        size = FLOAT32.itemsize
        dim = dim or (int(offsets[1]) - start) // size
        if np.any(np.diff(offsets) != dim * size):
            raise ValueError(f"staged vectors are not {dim} float32 values each")
        data = np.frombuffer(column.buffers()[2], FLOAT32, (end - start) // size, start)
        return data.reshape(len(column), dim)
    lengths = column.value_lengths().to_numpy(zero_copy_only=False)
    dim = dim or int(lengths[0])
    if np.any(lengths != dim):
        raise ValueError(f"the vectors are not {dim} values each")
    values = column.flatten().to_numpy(zero_copy_only=False)
    return values.astype(FLOAT32, copy=False).reshape(-1, dim)


def as_lists(matrix: np.ndarray) -> Any:
    """An (n, d) matrix as an Arrow list<float> column (the output's `array<float>`)."""
    import pyarrow as pa

    n, d = matrix.shape
    offsets = pa.array(np.arange(0, n * d + 1, d, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(np.ascontiguousarray(matrix).ravel()))


def packed(df: Any, column: str, dim: int) -> Any:
    """`df` with its `array<float>` `column` as staged bytes (the output's rows meeting
    staged ones, --refit-pca)."""
    from pyspark.sql.types import BinaryType, StructField, StructType

    index = df.columns.index(column)
    schema = StructType(
        [
            StructField(field.name, BinaryType()) if i == index else field
            for i, field in enumerate(df.schema.fields)
        ]
    )

    def to_bytes(batches: Any) -> Any:  # in a Python worker
        import pyarrow as pa

        for batch in batches:
            matrix = unpack(batch.column(index), dim)
            values = pa.array([row.tobytes() for row in matrix], pa.binary())
            columns = list(batch.columns)
            columns[index] = values
            yield pa.RecordBatch.from_arrays(columns, names=batch.schema.names)

    return df.mapInArrow(to_bytes, schema)
