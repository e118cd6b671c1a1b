"""Marks for tests that run on both training backends.

Tests of the C backend skip where the extension was not built (no C compiler at install time);
`test_the_c_kernel_is_built` fails there instead, unless HOOKED_MLP_BACKEND=torch says so.
"""

import pytest

from hooked_mlp.training import c_kernel

needs_c = pytest.mark.skipif(not c_kernel.available(), reason="the C kernel is not built here")
BACKENDS = [pytest.param("c", marks=needs_c), "torch"]
