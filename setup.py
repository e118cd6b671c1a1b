"""Builds the optional C training kernel; everything else is declared in pyproject.toml.

The extension is optional: without a C compiler the package installs all the same and trains
through its torch path (see hooked_mlp/cpu_kernel.py).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "hooked_mlp.training._c_kernel",
            sources=["hooked_mlp/training/_c_kernel.c"],
            extra_compile_args=["-O3", "-fno-math-errno", "-ffp-contract=off", "-std=c11"],
            libraries=["dl", "m"],
            optional=True,
        )
    ]
)
