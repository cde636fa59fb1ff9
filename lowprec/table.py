"""One text-table formatter for every table lowprec prints (CLI, demo, benchmarks)."""


def format_table(header, rows, align="l"):
    """Aligned columns under a header and a rule, two spaces apart.

    ``rows`` hold cells of any type (shown with ``str``; format numbers before).
    ``align`` is one letter per column, ``l`` or ``r``; a single letter applies to all.
    """
    if len(align) == 1:
        align = align * len(header)
    if len(align) != len(header) or set(align) - {"l", "r"}:
        raise ValueError(f"align must be 'l'/'r' once or per column ({len(header)}); "
                         f"got {align!r}")
    table = [tuple(str(c) for c in header)] + [tuple(str(c) for c in row) for row in rows]
    for row in table:
        if len(row) != len(header):
            raise ValueError(f"row {row} has {len(row)} cells; the header has {len(header)}")
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]

    def line(cells):
        return "  ".join(c.ljust(w) if a == "l" else c.rjust(w)
                         for c, w, a in zip(cells, widths, align)).rstrip()

    lines = [line(row) for row in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
