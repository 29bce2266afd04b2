"""report.html: one self-contained page (inline CSS and SVG, no script, nothing fetched) for the pharmacy
and therapeutics committee, built from summary.json only (so it carries no patient identifier)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jinja2 import Environment, select_autoescape

_PRIORITY_COLOURS = {"high": "#b42318", "medium": "#b54708", "low": "#475467"}
_KIND_LABELS = {
    "active_drug_conflict": "Active drug conflicts",
    "test_candidate": "Test candidates",
    "actionable_result": "Actionable results",
}
_KIND_HELP = {
    "active_drug_conflict": "a current medication for which CPIC advises something other than standard dosing "
                            "for this patient's genotype: review now",
    "test_candidate": "a current medication with a CPIC gene and no usable result on file (none, or one that "
                      "could not be read): consider testing",
    "actionable_result": "a non-normal result that changes CPIC advice for drugs the patient does not take yet: "
                         "make sure it is visible to prescribers",
}

_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>PGx population screening - {{ s.screeningDate }}</title>
<style>
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#101828;background:#f9fafb}
header{background:#1d2939;color:#fff;padding:18px 28px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;color:#d0d5dd}main{max-width:1180px;margin:0 auto;padding:18px 28px 40px}
section{background:#fff;border:1px solid #eaecf0;border-radius:8px;padding:14px 18px;margin:14px 0}
h2{font-size:17px;margin:0 0 10px}.tiles{display:flex;flex-wrap:wrap;gap:12px}
.tile{flex:1 1 150px;background:#fff;border:1px solid #eaecf0;border-radius:8px;padding:12px 14px}
.tile b{display:block;font-size:24px}.tile span{color:#475467}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:5px 8px;border-bottom:1px solid #eaecf0;vertical-align:top}
th{color:#475467;font-weight:600;font-size:12px;text-transform:uppercase}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:14px}.grid section{margin:0}
.pill{display:inline-block;border-radius:10px;padding:0 8px;color:#fff;font-size:12px}
.muted{color:#667085}svg text{font:12px system-ui,sans-serif;fill:#101828}
@media (max-width:900px){.grid{grid-template-columns:1fr}}
@media print{body{background:#fff}section{break-inside:avoid}}
</style></head>
<body>
<header><h1>Pharmacogenomic population screening</h1>
<p>Screening date {{ s.screeningDate }} · {{ s.knowledgeVersion }} · engine {{ s.engine.name }}</p></header>
<main>
<div class="tiles" id="tiles">
<div class="tile"><b>{{ "{:,}".format(s.patients.read) }}</b><span>patients screened</span></div>
<div class="tile"><b>{{ "{:,}".format(s.patients.with_results) }}</b><span>with PGx results</span></div>
<div class="tile"><b>{{ "{:,}".format(s.patients.with_findings) }}</b><span>on the worklist</span></div>
{% for k in kinds %}<div class="tile"><b>{{ "{:,}".format(s.findings.by_kind[k]) }}</b><span>{{ labels[k]|lower }}</span></div>{% endfor %}
</div>

<section id="how-to-read"><h2>How to read this report</h2>
<p>Every patient in the export was evaluated with the same CPIC knowledge and engine as the CDS Hooks cards
({{ s.knowledgeVersion }}). Each current medication was assessed as if it were being prescribed again today,
and each result as if any affected drug were prescribed. The findings are listed per patient in
<code>worklist.ndjson</code> (which identifies patients and must be handled as PHI); this page shows counts only.</p>
<ul>{% for k in kinds %}<li><b>{{ labels[k] }}</b>: {{ help[k] }}.</li>{% endfor %}
<li><b>Priority</b> follows the card indicator: <span class="pill" style="background:{{ colours.high }}">high</span>
= critical (avoid, or a serious risk), <span class="pill" style="background:{{ colours.medium }}">medium</span>
= warning (dose change or alternative), <span class="pill" style="background:{{ colours.low }}">low</span> = information.</li>
<li>Results that could not be read are never treated as normal: they are counted below and, for a current
medication, listed as test candidates.</li></ul></section>

<section id="findings"><h2>Findings by kind and priority</h2>{{ kind_chart|safe }}
<table><tr><th>kind</th>{% for p in priorities %}<th class="n">{{ p }}</th>{% endfor %}<th class="n">findings</th><th class="n">patients</th></tr>
{% for k in kinds %}<tr><td>{{ labels[k] }}</td>{% for p in priorities %}<td class="n">{{ "{:,}".format(s.findings.by_kind_and_priority.get(k, {}).get(p, 0)) }}</td>{% endfor %}
<td class="n">{{ "{:,}".format(s.findings.by_kind[k]) }}</td><td class="n">{{ "{:,}".format(s.findings.patients_by_kind.get(k, 0)) }}</td></tr>{% endfor %}</table></section>

<section id="conflicts"><h2>Top drug-gene conflicts in current medications</h2>
{% if s.top_conflicts %}{{ conflict_chart|safe }}
<table><tr><th>drug</th><th>result</th><th>CPIC action</th><th>priority</th><th class="n">findings</th></tr>
{% for c in s.top_conflicts[:20] %}<tr><td>{{ c.drug }}</td><td>{{ c.genes }}</td><td>{{ c.action|replace("_", " ") }}</td>
<td><span class="pill" style="background:{{ colours[c.priority] }}">{{ c.priority }}</span></td><td class="n">{{ "{:,}".format(c.findings) }}</td></tr>{% endfor %}</table>
{% else %}<p class="muted">No current medication conflicts with a result on file.</p>{% endif %}</section>

<div class="grid">
<section id="test-candidates"><h2>Test candidates per drug</h2>
{% if s.test_candidates_by_drug %}{{ test_chart|safe }}{% else %}<p class="muted">None.</p>{% endif %}</section>
<section id="drug-actions"><h2>Findings per drug and action</h2>
<table><tr><th>drug</th><th>action</th><th class="n">findings</th></tr>
{% for drug, action, n in drug_actions[:40] %}<tr><td>{{ drug }}</td><td>{{ action|replace("_", " ") }}</td><td class="n">{{ "{:,}".format(n) }}</td></tr>{% endfor %}
</table>{% if drug_actions|length > 40 %}<p class="muted">{{ drug_actions|length - 40 }} more rows in summary.json.</p>{% endif %}</section>
</div>

<section id="phenotypes"><h2>Results per gene and phenotype</h2>
<table><tr><th>gene</th><th>phenotype</th><th class="n">patients</th><th style="width:40%"></th></tr>
{% for gene, rows in phenotypes %}{% for ph, n, w in rows %}<tr><td>{% if loop.first %}<b>{{ gene }}</b>{% endif %}</td><td>{{ ph }}</td><td class="n">{{ "{:,}".format(n) }}</td>
<td><svg width="100%" height="10" role="img" aria-label="{{ n }}"><rect width="{{ w }}%" height="10" fill="#2e90fa"/></svg></td></tr>{% endfor %}{% endfor %}
</table></section>

<section id="unreadable"><h2>Results that could not be read</h2>
{% if s.unreadable_results %}<table><tr><th>gene</th><th>reason</th><th class="n">results</th></tr>
{% for u in s.unreadable_results %}<tr><td>{{ u.gene }}</td><td>{{ u.reason }}</td><td class="n">{{ "{:,}".format(u.count) }}</td></tr>{% endfor %}</table>
{% else %}<p class="muted">Every genomic result on file was read.</p>{% endif %}</section>

<section id="run"><h2>About this run</h2>
<table><tr><td>input</td><td>{{ s.input.path }} ({{ s.input.files }} files, {{ "{:,}".format(s.input.bytes) }} bytes)</td></tr>
<tr><td>resources read</td><td>{% for t, n in s.resources.items() %}{{ t }} {{ "{:,}".format(n) }}{% if not loop.last %} · {% endif %}{% endfor %}</td></tr>
<tr><td>options</td><td>since {{ s.options.since or "-" }} · drugs {{ s.options.drugs|join(", ") or "all" }}</td></tr>
<tr><td>timings</td><td>{{ s.timings.total_s }} s in total{% if s.timings.patients_per_s %} ({{ "{:,.0f}".format(s.timings.patients_per_s) }} patients/s){% endif %}</td></tr>
<tr><td>generated</td><td>{{ s.generatedAt }}</td></tr></table></section>
</main></body></html>
"""


def _bars(rows: list[tuple[str, int, str]], width: int = 560, label_w: int = 190) -> str:
    """A horizontal bar chart as inline SVG: (label, value, colour) rows."""
    if not rows:
        return ""
    top = max(v for _, v, _ in rows) or 1
    h = 22
    bar_w = width - label_w - 70
    parts = [f'<svg viewBox="0 0 {width} {h * len(rows) + 4}" width="100%" style="max-width:{width}px" role="img">']
    for i, (label, value, colour) in enumerate(rows):
        y = i * h + 2
        w = max(1.0, bar_w * value / top)
        esc = label[:label_w // 7].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        parts.append(f'<text x="{label_w - 6}" y="{y + 14}" text-anchor="end">{esc}</text>'
                     f'<rect x="{label_w}" y="{y + 3}" width="{w:.1f}" height="{h - 8}" rx="2" fill="{colour}"/>'
                     f'<text x="{label_w + w + 5:.1f}" y="{y + 14}">{value:,}</text>')
    parts.append("</svg>")
    return "".join(parts)


def render_report(summary: dict[str, Any]) -> str:
    kinds = list(_KIND_LABELS)
    priorities = ["high", "medium", "low"]
    by = summary["findings"]["by_kind_and_priority"]
    kind_rows = [(f"{_KIND_LABELS[k]}: {p}", by.get(k, {}).get(p, 0), _PRIORITY_COLOURS[p])
                 for k in kinds for p in priorities if by.get(k, {}).get(p, 0)]
    conflict_rows = [(f"{c['drug']} ({c['genes'].split(' ')[0]})", c["findings"], _PRIORITY_COLOURS[c["priority"]])
                     for c in summary["top_conflicts"][:10]]
    test_rows = [(d, n, "#7a5af8") for d, n in list(summary["test_candidates_by_drug"].items())[:15]]
    drug_actions = sorted(((d, a, n) for d, acts in summary["drug_action"].items() for a, n in acts.items()),
                          key=lambda r: (-r[2], r[0], r[1]))
    phenotypes = []
    for gene, phs in summary["gene_phenotype"].items():
        top = max(phs.values()) or 1
        phenotypes.append((gene, [(ph, n, round(100 * n / top, 1)) for ph, n in sorted(phs.items(), key=lambda kv: -kv[1])]))
    env = Environment(autoescape=select_autoescape(default=True, default_for_string=True))
    return env.from_string(_TEMPLATE).render(
        s=summary, kinds=kinds, priorities=priorities, labels=_KIND_LABELS, help=_KIND_HELP,
        colours=_PRIORITY_COLOURS, kind_chart=_bars(kind_rows, label_w=250), conflict_chart=_bars(conflict_rows, label_w=230),
        test_chart=_bars(test_rows, width=520, label_w=150), drug_actions=drug_actions, phenotypes=phenotypes)


def write_report(summary: dict[str, Any], path: Path) -> None:
    path.write_text(render_report(summary), encoding="utf-8")
