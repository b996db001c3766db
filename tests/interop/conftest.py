"""Fixtures for the interop suite: the Rust twin (``interop/rust``), built once per session.

The Rust project compiles the origin crate's ``run.rs`` by path from ``shared/``,
which sits beside the repository (here and in CI). It is built twice, into
binaries that differ only in serde_json's ``float_roundtrip`` feature:

* ``default``: the origin crate's features (``preserve_order`` only). This is
  the serde that Rust agents actually run.
* ``float_roundtrip``: serde_json's exact float parser. Where ``default`` reads
  a float 1 ULP off, this one does not, which pins the blame on serde's parser
  rather than on runfold's text.

Both share ``interop/rust/target`` (git-ignored), so after the first build
(about 15 s of compiling on two cores) a session pays only cargo's no-op check.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RUST_PROJECT = REPO / "interop" / "rust"
ORIGIN_RUN_RS = REPO.parent / "shared" / "origin" / "run.rs"


def _find_cargo() -> str | None:
    # CI runs without the login shell's PATH additions, so look where rustup puts cargo.
    found = shutil.which("cargo")
    if found:
        return found
    home_cargo = Path(os.environ.get("CARGO_HOME", Path.home() / ".cargo")) / "bin" / "cargo"
    return str(home_cargo) if home_cargo.exists() else None


@dataclass(frozen=True)
class SerdeTwin:
    """The built ``runfold-serde`` binaries and a way to talk to them in JSON lines."""

    default: Path
    float_roundtrip: Path

    def run(
        self, args: Sequence[str], lines: Sequence[str] = (), *, exact_floats: bool = False
    ) -> list[str]:
        """Run a subcommand, feeding ``lines`` on stdin; return its output lines."""
        binary = self.float_roundtrip if exact_floats else self.default
        stdin = "".join(f"{line}\n" for line in lines).encode("utf-8")
        # Bytes in and out: text mode would translate newlines behind our back.
        done = subprocess.run([str(binary), *args], input=stdin, capture_output=True, timeout=60)
        assert done.returncode == 0, (
            f"runfold-serde {' '.join(args)} failed: {done.stderr.decode()}"
        )
        out = done.stdout.decode("utf-8")
        return out[:-1].split("\n") if out else []

    def roundtrip(
        self, what: str, lines: Sequence[str], *, exact_floats: bool = False
    ) -> list[str]:
        """Each line read by serde as ``what`` ("events", "runs", "values") and written back."""
        answers = self.run([f"roundtrip-{what}"], lines, exact_floats=exact_floats)
        assert len(answers) == len(lines), "runfold-serde must answer every line exactly once"
        return answers


def _cargo_build(cargo: str, features: Sequence[str]) -> Path:
    command = [cargo, "build", "--locked", "--quiet", "--bin", "runfold-serde", *features]
    done = subprocess.run(command, cwd=RUST_PROJECT, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        pytest.fail(f"`{' '.join(command)}` in {RUST_PROJECT} failed:\n{done.stderr[-4000:]}")
    return RUST_PROJECT / "target" / "debug" / "runfold-serde"


@pytest.fixture(scope="session")
def serde_twin() -> SerdeTwin:
    """Build both flavours of ``runfold-serde`` (skip when cargo or shared/ is missing)."""
    cargo = _find_cargo()
    if cargo is None:
        pytest.skip(
            "cargo not found (PATH, $CARGO_HOME/bin): install Rust to run the serde interop tests"
        )
    if not ORIGIN_RUN_RS.is_file():
        pytest.skip(
            f"{ORIGIN_RUN_RS} not found: the Rust twin compiles the origin's run.rs from shared/"
        )
    # cargo writes one target/debug/runfold-serde whatever the features; keep a copy of each.
    keep = RUST_PROJECT / "target" / "interop-bin"
    keep.mkdir(parents=True, exist_ok=True)
    exact = shutil.copy2(
        _cargo_build(cargo, ["--features", "float_roundtrip"]),
        keep / "runfold-serde-float-roundtrip",
    )
    default = shutil.copy2(_cargo_build(cargo, []), keep / "runfold-serde")
    return SerdeTwin(default=Path(default), float_roundtrip=Path(exact))
