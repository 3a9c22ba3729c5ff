"""Pure renderers shared by every face: text in, text out, no I/O (inline-SVG charts in :mod:`.svg`).

A leaf below the core: it imports nothing else of npucenter, so the simulator's report, the
benchmark report and the dashboard all draw with the same code.
"""

from npucenter.render.svg import Series, bar_chart, line_chart

__all__ = ["Series", "bar_chart", "line_chart"]
