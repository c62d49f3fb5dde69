"""What the commands print."""

from collections.abc import Sequence
from typing import Any


def table_lines(rows: Sequence[tuple[str, ...]]) -> list[str]:
    """Rows as left-aligned columns two spaces apart, the first row being the header. The
    last column (often a free-text reason) is not padded; no line ends in spaces."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return lines


REBUILD_OUTCOMES = {
    "built": "built",
    "rebuilt": "rebuilt",
    "not_needed": "exact: fewer rows than MEMORY_ANN_MIN_ROWS, no index needed",
    "busy": "another process is building it now; the rebuild request stays recorded",
    "failed": "build failed (see the log and `index status`)",
}


def format_index(statuses: list[dict[str, Any]]) -> str:
    header = (
        "table",
        "state",
        "method",
        "rows",
        "tail",
        "at build",
        "built at",
        "recall",
        "last error",
    )
    rows = [header]
    for s in statuses:
        recall = ", ".join(
            f"{selectivity} {value['recall']:.3f} (n={value['samples']})"
            for selectivity, value in sorted(s["recall"].items())
        )
        rows.append(
            (
                s["table"],
                s["index_state"],
                s["method"] or "-",
                str(s["rows"]),
                str(s["tail_rows"]),
                "-" if s["rows_at_build"] is None else str(s["rows_at_build"]),
                "-" if s["built_at"] is None else s["built_at"].isoformat(timespec="seconds"),
                recall or "-",
                s["last_error"] or "",
            )
        )
    return "\n".join(table_lines(rows))


def format_providers(body: dict[str, Any]) -> str:
    space = body["space"]
    lines = [
        f"space {space['name']}: {space['model']} ({space['dimension']}-dim); "
        f"best: {body['best'] or 'none'}",
        body["score_formula"],
        "",
    ]
    header = ("provider", "kind", "state", "score", "latency", "errors", "parity", "eligibility")
    rows = [header]
    for p in body["providers"]:
        rows.append(
            (
                p["name"],
                p["kind"],
                p["state"],
                *_health_cells(p),
                "-" if p["parity"] is None else f"{p['parity']:.4f}",
                p["reason"],
            )
        )
    lines.extend(table_lines(rows))
    chat = body.get("chat") or []
    if chat:
        chat_rows = [
            ("chat provider", "kind", "tier", "state", "score", "latency", "errors", "eligibility")
        ]
        for p in chat:
            chat_rows.append(
                (p["name"], p["kind"], p["tier"], p["state"], *_health_cells(p), p["reason"])
            )
        lines.extend(["", *table_lines(chat_rows)])
    return "\n".join(lines)


def _health_cells(p: dict[str, Any]) -> tuple[str, str, str]:
    return (
        "-" if p["score"] is None else f"{p['score']:.3f}",
        "-" if p["latency_ms"] is None else f"{p['latency_ms']:.0f} ms",
        f"{p['error_rate']:.2f}",
    )
