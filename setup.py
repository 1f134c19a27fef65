"""The optional C kernel of bulk planning (:mod:`wmap.bulk`); everything else is in pyproject.toml.

``optional=True``: without a C compiler the install still succeeds and wmap
plans with its pure-Python kernel, which gives the same plans.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("wmap._bulk_native", ["src/wmap/_bulk_native.c"], optional=True),
    ]
)
