"""Postgres WAL positions (LSNs): text form `X/Y` (two hex halves) <-> integers."""

import re

_LSN = re.compile(r"([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})")


def lsn_to_int(text: str) -> int:
    """Parse `16/B374D848`; raise ValueError on anything else."""
    match = _LSN.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not an LSN: {text[:40]!r}")
    return (int(match[1], 16) << 32) | int(match[2], 16)


def int_to_lsn(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"
