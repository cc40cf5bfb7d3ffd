import numpy as np
import pyarrow as pa
import pytest

from featurizer import vectors


def matrix(rows: int, dim: int = 6) -> np.ndarray:
    return np.random.default_rng(rows).standard_normal((rows, dim)).astype(np.float32)


def test_staged_bytes_read_back_as_the_vectors_even_from_a_slice():
    x = matrix(5)
    column = pa.array([vectors.pack(row) for row in x], pa.binary())
    np.testing.assert_array_equal(vectors.unpack(column, 6), x)
    np.testing.assert_array_equal(vectors.unpack(column.slice(2, 2), 6), x[2:4])
    large = pa.array([vectors.pack(row) for row in x], pa.large_binary())
    np.testing.assert_array_equal(vectors.unpack(pa.chunked_array([large]), 6), x)


def test_float_lists_read_as_the_same_matrix_and_lists_come_back():
    x = matrix(4)
    column = vectors.as_lists(x)
    assert column.type == pa.list_(pa.float32())
    assert column.to_pylist()[1] == x[1].tolist()
    np.testing.assert_array_equal(vectors.unpack(column, 6), x)
    assert vectors.unpack(pa.array([], pa.binary()), 6).shape == (0, 6)


def test_bytes_of_another_width_are_refused():
    column = pa.array([vectors.pack(matrix(1, 5)[0])], pa.binary())
    with pytest.raises(ValueError, match="not 6 float32 values"):
        vectors.unpack(column, 6)


def test_the_width_is_inferred_and_uneven_widths_are_refused():
    x = matrix(3, 7)
    assert vectors.unpack(vectors.as_lists(x)).shape == (3, 7)
    assert vectors.unpack(pa.array([vectors.pack(row) for row in x], pa.binary())).shape == (3, 7)
    uneven = pa.array([[1.0, 2.0], [3.0, 4.0, 5.0], [6.0]], pa.list_(pa.float32()))
    with pytest.raises(ValueError, match="not 2 values each"):
        vectors.unpack(uneven)
    ragged = pa.array([vectors.pack(x[0]), vectors.pack(x[1][:6]), vectors.pack(x[2])])
    with pytest.raises(ValueError, match="not 7 float32 values"):
        vectors.unpack(ragged)
