"""Builds the optional C training step; everything else is declared in pyproject.toml.

The step (`hooked_mlp/training/_c_kernel.c`) is a plain C library loaded with `ctypes` by
`hooked_mlp/training/c_kernel.py`; it is built as an extension only so that setuptools compiles
it for the platform and installs it beside the package. It is optional: without a C compiler the
package installs all the same and trains through its torch path.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "hooked_mlp.training._c_kernel",
            sources=["hooked_mlp/training/_c_kernel.c"],
            extra_compile_args=["-O3", "-fno-math-errno", "-ffp-contract=off", "-std=c11"],
            libraries=["m"],
            optional=True,
        )
    ]
)
