"""Frame ranges (`1001-1100x2`) and numbered file patterns (`plate.####.exr`).

Pattern syntax, as artists write it, in the file name (not the folder):

* `plate.####.exr`: one `#` per digit (Nuke convention), so `####` is 4-digit padding;
* `plate.@@@@.exr`: the same with `@`;
* `plate.%04d.exr`: printf style; `%d` means unpadded.

Padding is a minimum width: frame 12345 of `####` is `plate.12345.exr`, as every
host writes it. Negative frame numbers are not supported.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

from howard_core.errors import HowardError
from howard_core.settings import MAX_FRAMES, format_frames, parse_frames  # noqa: F401 - the io package's names

_TOKEN = re.compile(r"#+|@+|%(0?\d*)d")
_NUMBERED = re.compile(r"^(.*?)(\d+)(\.[A-Za-z0-9]+)$")


@dataclass(frozen=True)
class SequencePattern:
    """A numbered file sequence: `folder/prefix + frame (zero-padded to padding) + suffix`."""

    folder: Path
    prefix: str
    suffix: str
    padding: int  # 0 = unpadded (`%d`)

    @classmethod
    def parse(cls, spec: str | os.PathLike) -> SequencePattern | None:
        """The pattern in `spec`'s file name, or None when it has no `#`, `@` or `%0Nd` token."""
        path = Path(spec)
        name = path.name
        tokens = list(_TOKEN.finditer(name))
        if not tokens:
            return None
        if len(tokens) > 1:
            raise HowardError(
                f"{spec}: file name has {len(tokens)} frame-number tokens; keep exactly one, e.g. plate.####.exr"
            )
        tok = tokens[0]
        if tok.group(0)[0] in "#@":
            padding = len(tok.group(0))
        else:
            padding = int(tok.group(1) or 0)
        # `#` alone and `%d` both mean "as many digits as the number needs".
        padding = 0 if padding == 1 else padding
        return cls(path.parent, name[: tok.start()], name[tok.end() :], padding)

    @classmethod
    def from_numbered_file(cls, path: str | os.PathLike) -> tuple[SequencePattern, int] | None:
        """(pattern, frame) for a file named like `plate.1001.exr`, else None."""
        path = Path(path)
        m = _NUMBERED.match(path.name)
        if not m:
            return None
        digits = m.group(2)
        padding = len(digits) if digits.startswith("0") or len(digits) > 1 else 0
        return cls(path.parent, m.group(1), m.group(3), padding), int(digits)

    @property
    def display(self) -> str:
        """The pattern as an artist writes it, e.g. `/shots/plate.####.exr`."""
        token = "#" * self.padding if self.padding > 1 else "%d"
        return str(self.folder / f"{self.prefix}{token}{self.suffix}")

    @property
    def ext(self) -> str:
        return Path(self.suffix).suffix.lower()

    def path(self, frame: int) -> Path:
        return self.folder / f"{self.prefix}{frame:0{self.padding}d}{self.suffix}"

    def _digits_match(self, digits: str) -> bool:
        if len(digits) == self.padding:
            return True
        # Wider than the padding only when the number needs it (no extra leading zeros).
        return len(digits) > self.padding and (digits[0] != "0" or digits == "0")

    def discover(self) -> list[int]:
        """Frame numbers of the files on disk that match this pattern, sorted."""
        if not self.folder.is_dir():
            return []
        rx = re.compile(re.escape(self.prefix) + r"(\d+)" + re.escape(self.suffix) + "$")
        found = set()
        for name in os.listdir(self.folder):
            m = rx.match(name)
            if m and self._digits_match(m.group(1)):
                found.add(int(m.group(1)))
        return sorted(found)

    def padding_hint(self) -> str:
        """When nothing matches, the padding the files on disk really use (for the error message)."""
        if not self.folder.is_dir():
            return ""
        rx = re.compile(re.escape(self.prefix) + r"(\d+)" + re.escape(self.suffix) + "$")
        widths = sorted({len(m.group(1)) for n in os.listdir(self.folder) if (m := rx.match(n))})
        if not widths:
            return ""
        token = "#" * widths[0]
        return f" (files there use {widths[0]}-digit numbers: try {self.prefix}{token}{self.suffix})"


def full_range(existing: list[int]) -> list[int]:
    """The frames a sequence should have: first to last existing, on the step the files share.

    A sequence rendered on twos (1001, 1003, ...) has step 2, so its odd frames are not
    reported as missing; any other hole is.
    """
    if not existing:
        return []
    step = 0
    for f in existing[1:]:
        step = math.gcd(step, f - existing[0])
    return list(range(existing[0], existing[-1] + 1, step or 1))
