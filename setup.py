"""Only the compiled part of the build; everything else is in pyproject.toml.

The rewriter's inner loop and the link codec's fast paths (middleware/_speedups.c) and both shells' start
of the commonest requests, with the ASGI shell's send (middleware/_asgi_send.c), are optional: without a C
compiler the build goes on and trackgate runs on its pure-Python code, which is also the reference the
tests compare them with.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("trackgate._speedups", ["middleware/_speedups.c"], optional=True),
        Extension("trackgate._asgi_send", ["middleware/_asgi_send.c"], optional=True),
    ]
)
