"""The capability matrix and the parameter reference, rendered from the table."""

from __future__ import annotations

import html
from typing import Any

from llem.spec.capabilities import CAPABILITIES
from llem.spec.model import BACKENDS, SECTIONS
from llem.spec.params import PRESETS, PROFILES
from llem.spec.queries import aliases, params
from llem.spec.rules import RULES
from llem.spec.tiers import TIERS, tier_for

_MARK = {"yes": "yes", "no": "no", "partial": "partial"}


def capability_matrix_rows(backends: tuple[str, ...] = BACKENDS) -> list[dict[str, Any]]:
    """One dict per capability: name, display, help, gate tier, and per backend (level, note)."""
    rows = []
    for c in CAPABILITIES:
        rows.append({
            "name": c.name,
            "display": c.display,
            "help": c.help,
            "kind": c.kind,
            "min_cc": c.gate.min_cc if c.gate else None,
            "tier": tier_for(c.gate.min_cc).name if c.gate and c.gate.min_cc else None,
            "support": {b: (c.support[b].level, c.support[b].note) for b in backends},
        })
    return rows


def capability_matrix_markdown(backends: tuple[str, ...] = BACKENDS) -> str:
    """The backend x capability matrix as a Markdown table (notes as footnote-style text)."""
    head = "| Capability | " + " | ".join(backends) + " | Needs |"
    sep = "|---|" + "---|" * len(backends) + "---|"
    lines = [head, sep]
    for row in capability_matrix_rows(backends):
        cells = []
        for b in backends:
            level, note = row["support"][b]
            cells.append(_MARK[level] + (f" ({note})" if note else ""))
        need = f"{row['min_cc']}+" if row["min_cc"] else ""
        lines.append(f"| {row['display']} | " + " | ".join(cells) + f" | {need} |")
    return "\n".join(lines) + "\n"


def capability_matrix_html(
    backends: tuple[str, ...] = BACKENDS, highlight_cc: float | None = None, highlight: bool = False
) -> str:
    """The matrix as a self-contained HTML table; notes are hover titles.

    With ``highlight=True`` rows the GPU at ``highlight_cc`` (None = cpu) cannot run are dimmed.
    """
    esc = html.escape
    colors = {"yes": "#d8f3dc", "no": "#ffe0e0", "partial": "#fff3c4"}
    out = [
        '<table class="llem-matrix" style="border-collapse:collapse;font-family:sans-serif;font-size:13px">',
        "<thead><tr><th style='text-align:left;padding:4px'>Capability</th>",
    ]
    out += [f"<th style='padding:4px'>{esc(b)}</th>" for b in backends]
    out.append("<th style='padding:4px'>Needs</th></tr></thead><tbody>")
    for row in capability_matrix_rows(backends):
        dim = False
        if highlight and row["min_cc"] is not None:
            dim = highlight_cc is None or highlight_cc + 1e-9 < row["min_cc"]
        style = " style='opacity:0.45'" if dim else ""
        title = esc(row["help"])
        out.append(f"<tr{style}><td style='padding:4px' title='{title}'>{esc(row['display'])}</td>")
        for b in backends:
            level, note = row["support"][b]
            out.append(
                f"<td style='padding:4px;text-align:center;background:{colors[level]}' "
                f"title='{esc(note or level)}'>{_MARK[level]}{' *' if note else ''}</td>"
            )
        need = f"{row['min_cc']}+ ({row['tier']})" if row["min_cc"] else ""
        if dim:
            need += " - not on this GPU"
        out.append(f"<td style='padding:4px'>{esc(need)}</td></tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _fmt(v: Any) -> str:
    if v is None:
        return "unset"
    return f"`{v!r}`"


def reference_markdown() -> str:
    """The full parameter reference: every row, rule, capability and tier."""
    lines = ["# llem parameter reference", "",
             "Generated from `llem/spec/` by `python -m llem.spec` - do not edit by hand.", "",
             "A default of *unset* means the backend's own default applies; the value the backend "
             "actually used is recorded in `result.effective_config`.", ""]
    for section in SECTIONS:
        rows = params(section)
        if not rows:
            continue
        lines += [f"## `{section}`", "", "| Field | Type | Default | Allowed | Unit | Backends | Help |",
                  "|---|---|---|---|---|---|---|"]
        for p in rows:
            allowed = ", ".join(map(str, p.choices)) if p.choices else _bounds(p)
            extra = []
            if p.value_gates:
                extra.append("gated: " + ", ".join(
                    f"{v} needs {g.min_cc or 'CUDA'}" for v, g in p.value_gates.items()))
            if p.aliases:
                extra.append("also accepted as: " + ", ".join(p.aliases))
            if p.seed_name:
                extra.append(f"seed name: {p.seed_name}")
            if p.source:
                extra.append(f"default from: {p.source}")
            if p.note:
                extra.append(p.note)
            help_text = p.help + ("<br>" + "; ".join(extra) if extra else "")
            lines.append(
                f"| `{p.name}` | {p.type} | {_fmt(p.default)} | {allowed} | {p.unit or ''} | "
                f"{', '.join(p.backends)} | {help_text} |"
            )
        lines.append("")
    lines += ["## Decoder presets", ""]
    lines += [f"- `{name}`: " + ", ".join(f"{k}={v!r}" for k, v in fields.items())
              for name, fields in PRESETS.items()]
    lines += ["", "## Profiles", ""]
    lines += [f"- `{name}`: " + ", ".join(f"{k}={v!r}" for k, v in fields.items())
              for name, fields in PROFILES.items()]
    lines += ["", "## Rules", "", "| Rule | Severity | Backends | Reason | Fix | Seed rule |",
              "|---|---|---|---|---|---|"]
    for r in RULES:
        lines.append(f"| `{r.id}` | {r.severity} | {', '.join(r.backends)} | {r.reason} | {r.fix} | "
                     f"{r.seed_rule or ''} |")
    lines += ["", "## GPU tiers", "", "| Tier | Compute capability | Examples | Adds |", "|---|---|---|---|"]
    for t in TIERS:
        lines.append(f"| {t.name} | {t.display} | {', '.join(t.examples)} | {t.adds} |")
    lines += ["", "## Names from the seed benchmark and the engines", "",
              "A config may use these names; it loads with a note (an `AliasWarning`), not an error.", "",
              "| Other name | llem field |", "|---|---|"]
    lines += [f"| `{alias}` | `{path}` |" for alias, path in sorted(aliases().items())]
    lines += ["", "## Capability matrix", "", capability_matrix_markdown()]
    notes = [f"- **{c.display}**: {c.note}" for c in CAPABILITIES if c.note]
    if notes:
        lines += ["### Where the seed benchmark's table was corrected", "", *notes, ""]
    return "\n".join(lines)


def _bounds(p: Any) -> str:
    if p.min is None and p.max is None:
        return ""
    lo = "" if p.min is None else f"{p.min}{' <' if p.min_exclusive else ' <='}"
    hi = "" if p.max is None else f"{'< ' if p.max_exclusive else '<= '}{p.max}"
    return f"{lo} x {hi}".strip()


__all__ = [
    "capability_matrix_html",
    "capability_matrix_markdown",
    "capability_matrix_rows",
    "reference_markdown",
]
