"""Only the compiled part of the build; everything else is in pyproject.toml.

The rewriter's inner loop in C (middleware/_speedups.c) is optional: without a C compiler the build goes on
and trackgate runs on its pure-Python reading, which is also the reference the tests compare it with.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("trackgate._speedups", ["middleware/_speedups.c"], optional=True)])
