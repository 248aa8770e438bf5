"""The drift report: one self-contained HTML page, a bar chart (inline SVG) per drifted feature.

Pure: `watcher.reconcile.drift` renders it from `watcher.decide.drift` figures and logs it to MLflow as an artifact
of the version. No script and no external asset, so it opens the same from the MLflow UI, a laptop
or an air-gapped cluster. Every name comes from a contract or a registry: all of it is escaped.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from watcher.decide.drift import FeatureDrift, Verdict, Window, day_span

WIDTH, HEIGHT, MARGIN = 640, 260, 40
REFERENCE_COLOUR, LIVE_COLOUR = "#7f8c9a", "#e4572e"


def report_html(*, model: str, version: str, reference: str, features: Sequence[FeatureDrift],
                prediction: FeatureDrift | None, window: Window, outcome: Verdict, max_psi: float) -> str:
    """The whole page: the verdict, a chart per drifted feature (and for the predictions), a table of all."""
    charts = "\n".join(chart_svg(f) for f in outcome.drifted) or "<p>No feature drifted.</p>"
    rows = "\n".join(_row(f, max_psi) for f in sorted((*features, *([prediction] if prediction else [])),
                                                       key=lambda f: -f.psi))
    status = escape(outcome.status or "no verdict")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Drift: {escape(model)} version {escape(version)}</title>
<style>body{{font-family:sans-serif;margin:2em;color:#222}} .drifted{{color:{LIVE_COLOUR}}}
table{{border-collapse:collapse}} td,th{{padding:4px 10px;border-bottom:1px solid #ddd;text-align:left}}
figure{{margin:1.5em 0}} .legend span{{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px}}</style>
</head><body>
<h1>Drift of {escape(model)} version {escape(version)}: <span class="{status}">{status}</span></h1>
<p>{escape(outcome.summary)}</p>
<p>Live: {window.rows:,} logged instances in {window.requests:,} requests, {escape(day_span(window.start, window.end))}
({escape(window.start.isoformat(timespec="minutes"))} to {escape(window.end.isoformat(timespec="minutes"))}).
Reference: {escape(reference)}. A feature drifts when its PSI is above {max_psi:g}.</p>
<p class="legend"><span style="background:{REFERENCE_COLOUR}"></span>reference
<span style="background:{LIVE_COLOUR}"></span>live</p>
{charts}
<h2>Every feature</h2>
<table><tr><th>feature</th><th>PSI</th><th></th></tr>
{rows}
</table></body></html>
"""


def chart_svg(feature: FeatureDrift) -> str:
    """Grouped bars: the reference's and the live share of each bin."""
    count = len(feature.bins)
    slot = (WIDTH - 2 * MARGIN) / max(count, 1)
    top = max((*feature.reference, *feature.live, 0.01))
    scale = (HEIGHT - 2 * MARGIN) / top
    bars = []
    for i, (label, ref, live) in enumerate(zip(feature.bins, feature.reference, feature.live, strict=True)):
        x = MARGIN + i * slot
        for offset, share, colour in ((0.1, ref, REFERENCE_COLOUR), (0.5, live, LIVE_COLOUR)):
            height = share * scale
            bars.append(f'<rect x="{x + offset * slot:.1f}" y="{HEIGHT - MARGIN - height:.1f}" '
                        f'width="{0.4 * slot:.1f}" height="{height:.1f}" fill="{colour}"/>')
        bars.append(f'<text x="{x + slot / 2:.1f}" y="{HEIGHT - MARGIN + 14}" font-size="9" '
                    f'text-anchor="middle">{escape(label[:14])}</text>')
    title = f"{feature.name}: PSI {feature.psi:.2f}"
    return (f'<figure><figcaption><strong>{escape(title)}</strong></figcaption>'
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" role="img" '
            f'aria-label="{escape(title)}"><line x1="{MARGIN}" y1="{HEIGHT - MARGIN}" x2="{WIDTH - MARGIN}" '
            f'y2="{HEIGHT - MARGIN}" stroke="#444"/>{"".join(bars)}'
            f'<text x="{MARGIN}" y="{MARGIN - 12}" font-size="11">share of instances (max {top:.0%})</text>'
            f'</svg></figure>')


def _row(feature: FeatureDrift, max_psi: float) -> str:
    mark = ' class="drifted"' if feature.psi > max_psi else ""
    return f"<tr{mark}><td>{escape(feature.name)}</td><td>{feature.psi:.3f}</td>" \
           f"<td>{'drifted' if feature.psi > max_psi else ''}</td></tr>"
