import numpy as np
import pytest

import fedsoft


@pytest.fixture
def shapes():
    return [fedsoft.ModuleShape("q", 12, 10, 4), fedsoft.ModuleShape("v", 12, 10, 4), fedsoft.ModuleShape("o", 7, 9, 4)]


def random_factors(shapes, seed, scale=1.0):
    rng = np.random.default_rng(seed)
    return fedsoft.factors(
        [(s.name, rng.normal(size=(s.d, s.r)) * scale, rng.normal(size=(s.r, s.k)) * scale) for s in shapes]
    )
