import numpy as np

from featurizer.reduce import canonical_signs, choose_k


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
