"""What the commands print."""

from collections.abc import Sequence


def table_lines(rows: Sequence[tuple[str, ...]]) -> list[str]:
    """Rows as left-aligned columns two spaces apart, the first row being the header. The
    last column (often a free-text reason) is not padded; no line ends in spaces."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return lines
