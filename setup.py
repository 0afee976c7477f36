"""Only the compiled part of the build; everything else is in pyproject.toml.

The rewriter's inner loop and the link codec's fast paths (middleware/_speedups.c) and both shells' start
of the commonest requests, with the ASGI shell's send (middleware/_asgi_send.c), are optional: without a C
compiler the build goes on and trackgate runs on its pure-Python code, which is also the reference the
tests compare them with. Where OpenSSL's headers are (Debian: libssl-dev), _speedups also signs tokens with
OpenSSL's SHA-256 directly (middleware/_hmac_sha256.h); without them it uses hashlib's HMAC.
"""

import os
import shlex
import subprocess
import sysconfig
import tempfile

from setuptools import Extension, setup

_PROBE = """
#define OPENSSL_SUPPRESS_DEPRECATED
#include <openssl/sha.h>
int main(void) { SHA256_CTX ctx; return SHA256_Init(&ctx) != 1; }
"""


def openssl_links() -> bool:
    """Whether a program using OpenSSL's SHA-256 compiles and links here, with the compiler and flags the
    extensions are built with (CFLAGS and LDFLAGS from the environment included)."""
    compiler = shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")
    flags = shlex.split(os.environ.get("CFLAGS", "")) + shlex.split(os.environ.get("LDFLAGS", ""))
    with tempfile.TemporaryDirectory() as folder:
        source = os.path.join(folder, "probe.c")
        with open(source, "w") as file:
            file.write(_PROBE)
        try:
            built = subprocess.run(
                [*compiler, *flags, source, "-o", os.path.join(folder, "probe"), "-lcrypto"],
                capture_output=True,
                timeout=120,
            )
        except (OSError, subprocess.SubprocessError):  # no compiler at all
            return False
    return built.returncode == 0


openssl = (
    {"define_macros": [("TRACKGATE_OPENSSL", "1")], "libraries": ["crypto"]} if openssl_links() else {}
)

setup(
    ext_modules=[
        Extension(
            "trackgate._speedups",
            ["middleware/_speedups.c"],
            depends=["middleware/_hmac_sha256.h"],
            optional=True,
            **openssl,
        ),
        Extension("trackgate._asgi_send", ["middleware/_asgi_send.c"], optional=True),
    ]
)
