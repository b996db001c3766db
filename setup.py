"""Build the batch lane's optional C decoder (consumers/service/_lane.c); all metadata is in
pyproject.toml.

The extension is optional: without a compiler or Python headers the install still
succeeds and every record takes the fold's general path. Where a compiler is present
(CI), tests/consumers/service/test_lane.py fails if it did not build.
"""

from __future__ import annotations

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "consumers.service._lane",
            sources=["consumers/service/_lane.c"],
            optional=True,
        )
    ]
)
