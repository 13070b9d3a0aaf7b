"""A self-contained SVG of flows between external zones and namespaces, with the CDE highlighted.

Layout is three fixed columns (external zones, other namespaces, CDE namespaces) in sorted order,
so the same matrix always renders to the same bytes and an auditor can diff two evidence packs.
No scripts, fonts or external references; every label is XML-escaped (namespace and zone names
come from user input).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from xml.sax.saxutils import escape, quoteattr

from kubepci.analyzers.netpol.model import Matrix

__all__ = ["render_svg"]

_NODE_W, _NODE_H, _GAP, _COL_GAP, _MARGIN, _TOP = 220, 28, 14, 260, 24, 70
_CDE_FILL, _CDE_STROKE = "#fde2e1", "#c0392b"
_EXT_FILL, _EXT_STROKE = "#e8f0fe", "#3367d6"
_NS_FILL, _NS_STROKE = "#f1f3f4", "#5f6368"


def _short(text: str, limit: int = 30) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render_svg(matrix: Matrix, cde_namespaces: Collection[str], title: str = "Allowed flows",
               namespace_zone: Mapping[str, str] | None = None) -> str:
    """Render ``matrix`` (namespace level, zones as ``zone/<name>``) as an SVG document string."""
    cde = set(cde_namespaces)
    zone_of = dict(namespace_zone or {})
    nodes = sorted(set(matrix.nodes) | {n for s, d, _ in matrix.cells for n in (s, d)})
    columns: list[list[str]] = [
        [n for n in nodes if n.startswith("zone/")],
        [n for n in nodes if not n.startswith("zone/") and n not in cde],
        [n for n in nodes if n in cde],
    ]
    pos: dict[str, tuple[int, int]] = {}
    for ci, col in enumerate(columns):
        x = _MARGIN + ci * (_NODE_W + _COL_GAP)
        for ri, name in enumerate(col):
            pos[name] = (x, _TOP + ri * (_NODE_H + _GAP))
    rows = max((len(c) for c in columns), default=0)
    cde_cells = [(s, d, p) for s, d, p in matrix.cells if s != d and (s in cde or d in cde)]
    width = _MARGIN * 2 + 3 * _NODE_W + 2 * _COL_GAP + 120  # room for same-column loops on the right
    list_top = _TOP + rows * (_NODE_H + _GAP) + 50
    height = list_top + 24 + 18 * len(cde_cells) + 20
    out: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f"<title>{escape(title)}</title>",
        "<defs>",
        '<marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#80868b"/></marker>',
        '<marker id="arrow-cde" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" '
        f'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="{_CDE_STROKE}"/></marker>',
        "</defs>",
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="{_MARGIN}" y="24" font-size="16" font-weight="bold">{escape(title)}</text>',
    ]
    for ci, heading in enumerate(("External zones", "Namespaces", "Cardholder-data environment (CDE)")):
        x = _MARGIN + ci * (_NODE_W + _COL_GAP)
        out.append(f'<text x="{x}" y="52" font-weight="bold">{escape(heading)}</text>')
    out.append('<g id="flows" fill="none">')
    for src, dst, ports in matrix.cells:
        if src == dst or src not in pos or dst not in pos:
            continue
        sx, sy = pos[src]
        dx, dy = pos[dst]
        y1, y2 = sy + _NODE_H // 2, dy + _NODE_H // 2
        if sx == dx:  # same column: loop out to the right
            x1 = x2 = sx + _NODE_W
            bend = x1 + 40 + abs(y2 - y1) // 4
            path = f"M{x1},{y1} C{bend},{y1} {bend},{y2} {x2},{y2}"
        else:
            x1, x2 = (sx + _NODE_W, dx) if sx < dx else (sx, dx + _NODE_W)
            mid = (x1 + x2) // 2
            path = f"M{x1},{y1} C{mid},{y1} {mid},{y2} {x2},{y2}"
        touches_cde = src in cde or dst in cde
        stroke, marker, w = (_CDE_STROKE, "arrow-cde", "1.8") if touches_cde else ("#9aa0a6", "arrow", "1")
        cls = "flow cde" if touches_cde else "flow"
        label = f"{src} -> {dst}: {ports}"
        out.append(f'<path class={quoteattr(cls)} d="{path}" stroke="{stroke}" stroke-width="{w}" '
                   f'marker-end="url(#{marker})"><title>{escape(label)}</title></path>')
    out.append("</g>")
    out.append('<g id="nodes">')
    for name in nodes:
        x, y = pos[name]
        if name in cde:
            fill, stroke, cls, sw = _CDE_FILL, _CDE_STROKE, "node cde", "2.5"
        elif name.startswith("zone/"):
            fill, stroke, cls, sw = _EXT_FILL, _EXT_STROKE, "node zone", "1.2"
        else:
            fill, stroke, cls, sw = _NS_FILL, _NS_STROKE, "node", "1.2"
        scope = zone_of.get(name)
        tip = name + (f" (scope: {scope})" if scope else "") + (" [CDE]" if name in cde else "")
        out.append(f'<g class={quoteattr(cls)} data-name={quoteattr(name)}>'
                   f'<rect x="{x}" y="{y}" width="{_NODE_W}" height="{_NODE_H}" rx="6" fill="{fill}" '
                   f'stroke="{stroke}" stroke-width="{sw}"/>'
                   f'<text x="{x + 10}" y="{y + 18}">{escape(_short(name))}</text>'
                   f"<title>{escape(tip)}</title></g>")
    out.append("</g>")
    ly = list_top - 20
    out.append(f'<g id="legend"><rect x="{_MARGIN}" y="{ly - 11}" width="14" height="14" fill="{_CDE_FILL}" '
               f'stroke="{_CDE_STROKE}" stroke-width="2"/>'
               f'<text x="{_MARGIN + 20}" y="{ly}">CDE namespace; red arrows are flows into or out of the CDE '
               "(hover an arrow for its ports)</text></g>")
    out.append(f'<g id="cde-flows"><text x="{_MARGIN}" y="{list_top + 10}" font-weight="bold">'
               f"Flows crossing the CDE boundary or inside it ({len(cde_cells)})</text>")
    for i, (src, dst, ports) in enumerate(cde_cells):
        out.append(f'<text x="{_MARGIN}" y="{list_top + 30 + 18 * i}">'
                   f"{escape(f'{src} -> {dst}: {ports}')}</text>")
    out.append("</g>")
    out.append("</svg>")
    return "\n".join(out) + "\n"
