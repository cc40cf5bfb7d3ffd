import numpy as np

from featurizer.reduce import Moments, canonical_signs, choose_k


def test_choose_k_is_the_smallest_k_reaching_the_target():
    explained = [0.5, 0.3, 0.1, 0.05, 0.05]
    assert choose_k(explained, 0.5) == 1
    assert choose_k(explained, 0.8) == 2
    assert choose_k(explained, 0.81) == 3
    assert choose_k(explained, 1.0) == 5


def test_canonical_signs_make_the_largest_loading_positive():
    components = np.array([[0.1, -0.9], [-0.8, 0.2], [0.3, 0.1]])
    flipped = canonical_signs(components)
    assert flipped[1, 0] == 0.8 and flipped[0, 1] == 0.9
    assert np.allclose(np.abs(flipped), np.abs(components))
    assert np.allclose(canonical_signs(-components), flipped)


def test_moments_added_from_parts_and_their_bytes_give_numpys_covariance():
    rows = np.random.default_rng(0).normal(size=(1500, 6)).astype(np.float32) * 3 + 1
    total = Moments(6)
    for part in (rows[:7], rows[7:1300], rows[1300:]):  # across the blocks of 512 rows
        partial = Moments(6)
        for row in part:  # the engine hands over one image at a time
            partial.add_rows(row[None])
        total += Moments.from_bytes(partial.to_bytes())  # as a task's sums travel: a file
    assert total.count == 1500
    assert np.allclose(total.covariance(), np.cov(rows.astype(np.float64), rowvar=False))


def test_empty_moments_travel_without_a_matrix():
    data = Moments(1280).to_bytes()
    assert len(data) < 2000
    empty = Moments.from_bytes(data)
    empty += Moments(1280)
    assert empty.count == 0 and empty.upper is None
