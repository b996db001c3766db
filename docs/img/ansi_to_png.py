"""Render a terminal capture (``tmux capture-pane -e -p``) to PNG, as the terminal showed it.

    tmux capture-pane -e -p -t demo > top.ansi
    python docs/img/ansi_to_png.py top.ansi docs/img/top.png --width 140

The ANSI text goes through rich (``Text.from_ansi`` → ``Console.save_svg``) and the SVG
through ``rsvg-convert`` (Debian/Ubuntu: ``apt-get install librsvg2-bin``). rsvg collapses
the leading spaces of rich's text fragments, so each fragment is first split into its
non-blank words, each placed on the character grid.
"""

from __future__ import annotations

import argparse
import html
import re
import subprocess
import tempfile
from pathlib import Path

from rich.console import Console
from rich.text import Text

_FRAGMENT = re.compile(
    r'<text ([^>]*?)x="([\d.]+)"([^>]*?)textLength="([\d.]+)"([^>]*)>([^<]*)</text>'
)


def _on_grid(svg: str) -> str:
    """Split every text fragment at blanks, placing each word at its own column."""
    def split(match: re.Match[str]) -> str:
        before, x, middle, length, after, content = match.groups()
        chars = html.unescape(content)
        if not chars:
            return match.group(0)
        cell = float(length) / len(chars)
        words = []
        for word in re.finditer(r"[^ \u00a0]+", chars):
            left = float(x) + word.start() * cell
            words.append(
                f'<text {before}x="{left:.1f}"{middle}textLength="{len(word.group()) * cell:.1f}"'
                f'{after}>{html.escape(word.group(), quote=False)}</text>'
            )
        return "".join(words)

    return _FRAGMENT.sub(split, svg)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ansi", type=Path)
    parser.add_argument("png", type=Path)
    parser.add_argument("--width", type=int, default=140, help="terminal columns")
    parser.add_argument("--title", default="runfold top")
    parser.add_argument("--zoom", type=float, default=1.0)
    args = parser.parse_args()
    lines = args.ansi.read_text().rstrip("\n").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    console = Console(record=True, width=args.width, force_terminal=True,
                      color_system="truecolor", file=open("/dev/null", "w"))  # noqa: SIM115
    for line in lines:
        console.print(Text.from_ansi(line), no_wrap=True, crop=True)
    with tempfile.TemporaryDirectory() as tmp:
        svg = Path(tmp) / "frame.svg"
        svg.write_text(_on_grid(console.export_svg(title=args.title)))
        subprocess.run(["rsvg-convert", "--zoom", str(args.zoom), "-o", str(args.png), str(svg)],
                       check=True)


if __name__ == "__main__":
    main()
