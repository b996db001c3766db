"""Build the optional C fast lane (consumers/_fastlane.c); all metadata is in pyproject.toml.

The extension is optional: without a compiler or Python headers the install
still succeeds and :mod:`consumers.fastlane` uses its pure-Python lane.
"""

from __future__ import annotations

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "consumers._fastlane",
            sources=["consumers/_fastlane.c"],
            optional=True,
        )
    ]
)
