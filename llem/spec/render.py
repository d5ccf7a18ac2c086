"""The capability matrix and the parameter reference, rendered from the table."""

from __future__ import annotations

import html
import textwrap
from typing import Any

from llem.spec.capabilities import CAPABILITIES
from llem.spec.model import BACKENDS, SECTION_CLASSES, SECTIONS, Capability, Gate
from llem.spec.params import PRESETS, PROFILES
from llem.spec.queries import (
    aliases,
    capability,
    engine_args,
    engine_targets,
    gate_for,
    named_packages,
    params,
    tier_problem,
)
from llem.spec.rules import MISSING, RULES, evaluate
from llem.spec.tiers import TIERS, tier_for

_MARK = {"yes": "yes", "no": "no", "partial": "partial", "not here": "not here"}

#: What a capability needs from the machine, read from the same gates config validation reads.
NOT_HERE = "not here"


def capability_at(cap: Capability | str, backend: str, cc: float | None) -> tuple[str, str]:
    """How ``backend`` supports capability ``cap`` on a machine of compute capability ``cc``.

    Returns ``(level, why)``: the row's ``yes`` / ``partial`` / ``no`` with its note, or
    ``"not here"`` with the reason when the tier ``cc`` (None: a CPU) cannot run it. What
    a tier can run is read from the gates that config validation checks: the backend's own
    (``experiment.backend``'s value gates: vLLM and TensorRT-LLM need CUDA), then those of
    the settings that turn the capability on for that backend (``Capability.settings``),
    and the capability's own gate where it has no setting there.
    """
    c = capability(cap) if isinstance(cap, str) else cap
    support = c.support[backend]
    if support.level == "no":
        return "no", support.note
    gates: list[Gate] = []
    backend_gate = gate_for("experiment.backend", backend)
    if backend_gate is not None:
        gates.append(backend_gate)
    settings = c.settings.get(backend)
    if settings:
        gates += [g for g in (gate_for(p, v) for p, v in settings.items()) if g is not None]
    elif c.gate is not None:
        gates.append(c.gate)
    for gate in gates:
        problem = tier_problem(gate, cc)
        if problem:
            return NOT_HERE, gate.reason or problem
    if settings:
        skipped = _skipped_at(settings, cc)
        if skipped:
            return NOT_HERE, skipped
    return support.level, support.note


def tier_facts(cc: float | None) -> dict[str, Any]:
    """The ``env`` facts of a machine of the tier ``cc`` as the matrix assumes it.

    A node of that tier with enough GPUs (8; none on a CPU), every package the table names
    installed, a checkpoint that fits the setting, and nothing failing: what stays is what
    the tier itself cannot run.
    """
    packages = dict.fromkeys(named_packages(), True)
    return {"cc": cc, "gpu_count": 0 if cc is None else 8, "cuda": cc is not None,
            "packages": packages, "compile_failed": False, "model_prequantized": True,
            "prompt_overlap": True}


def _skipped_at(settings: dict[str, Any], cc: float | None) -> str:
    """Why a skip rule would drop one of ``settings`` on the tier ``cc`` ("" if none would)."""
    facts = tier_facts(cc)

    def get(path: str) -> Any:
        if path.startswith("env."):
            key = path[4:]
            if key.startswith("packages."):
                return facts["packages"].get(key[9:], MISSING)
            return facts.get(key, MISSING)
        return settings.get(path)

    for v in evaluate(get, severity="skip"):
        if set(v.rule.skip) & set(settings):
            return v.message
    return ""


def capability_matrix_rows(
    backends: tuple[str, ...] = BACKENDS, cc: Any = None, at_tier: bool = False
) -> list[dict[str, Any]]:
    """One dict per capability: name, display, help, gate tier, and per backend (level, note).

    With ``at_tier=True`` each backend's level is the one on a machine of compute
    capability ``cc`` (None: a CPU): ``"not here"`` with the reason where that tier cannot
    run it (see :func:`capability_at`).
    """
    rows = []
    for c in CAPABILITIES:
        support = {}
        for b in backends:
            if at_tier:
                support[b] = capability_at(c, b, cc)
            else:
                support[b] = (c.support[b].level, c.support[b].note)
        rows.append({
            "name": c.name,
            "display": c.display,
            "help": c.help,
            "kind": c.kind,
            "min_cc": c.gate.min_cc if c.gate else None,
            "tier": tier_for(c.gate.min_cc).name if c.gate and c.gate.min_cc else None,
            "support": support,
        })
    return rows


def capability_matrix_markdown(
    backends: tuple[str, ...] = BACKENDS, cc: Any = None, at_tier: bool = False
) -> str:
    """The backend x capability matrix as a Markdown table (notes as footnote-style text).

    With ``at_tier=True``, cells the tier ``cc`` cannot run say ``not here`` and why.
    """
    head = "| Capability | " + " | ".join(backends) + " | Needs |"
    sep = "|---|" + "---|" * len(backends) + "---|"
    lines = [head, sep]
    for row in capability_matrix_rows(backends, cc, at_tier):
        cells = []
        for b in backends:
            level, note = row["support"][b]
            cells.append(_MARK[level] + (f" ({note})" if note else ""))
        need = f"{row['min_cc']}+" if row["min_cc"] else ""
        lines.append(f"| {row['display']} | " + " | ".join(cells) + f" | {need} |")
    return "\n".join(lines) + "\n"


def capability_matrix_html(
    backends: tuple[str, ...] = BACKENDS, highlight_cc: float | None = None, highlight: bool = False,
    where: str = "",
) -> str:
    """The matrix as a self-contained HTML table; notes are hover titles.

    With ``highlight=True`` each cell is the backend's support on a machine of compute
    capability ``highlight_cc`` (None: a CPU): what that tier cannot run is dimmed and
    marked ``not here``, its title says why. ``where`` names that machine in the words
    ("this machine (CPU only)", "the target 'T4'"); by default its tier.
    """
    esc = html.escape
    colors = {"yes": "#d8f3dc", "no": "#ffe0e0", "partial": "#fff3c4", NOT_HERE: "#e6e6e6"}
    place = where or f"tier {tier_for(highlight_cc).name}"
    out = [
        '<table class="llem-matrix" style="border-collapse:collapse;font-family:sans-serif;'
        'font-size:13px;color:inherit">',
        "<thead><tr><th style='text-align:left;padding:4px'>Capability</th>",
    ]
    out += [f"<th style='padding:4px'>{esc(b)}</th>" for b in backends]
    out.append("<th style='padding:4px'>Needs</th></tr></thead><tbody>")
    for row in capability_matrix_rows(backends, highlight_cc, at_tier=highlight):
        levels = [row["support"][b][0] for b in backends]
        dim = highlight and NOT_HERE in levels and all(lv in (NOT_HERE, "no") for lv in levels)
        style = " style='opacity:0.45'" if dim else ""
        title = esc(row["help"])
        out.append(f"<tr{style}><td style='padding:4px' title='{title}'>{esc(row['display'])}</td>")
        for b in backends:
            level, note = row["support"][b]
            tip = f"not on {place}: {note}" if level == NOT_HERE else (note or level)
            cell_style = ";opacity:0.45" if level == NOT_HERE and not dim else ""
            out.append(
                f"<td style='padding:4px;text-align:center;color:#1b1b1b;background:{colors[level]}"
                f"{cell_style}' title='{esc(tip)}'>{_MARK[level]}{' *' if note else ''}</td>"
            )
        need = f"{row['min_cc']}+ ({row['tier']})" if row["min_cc"] else ""
        if highlight and NOT_HERE in levels:
            need = (need + " - " if need else "") + f"not on {place}"
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
                    f"{v} needs {_gate_words(g)}" for v, g in p.value_gates.items()))
            if p.registry:
                extra.append(f"also any registered {p.registry} (llem.plugins)")
            if p.aliases:
                extra.append("also accepted as: " + ", ".join(p.aliases))
            if p.value_aliases:
                extra.append("values also accepted as: " + ", ".join(
                    f"{k} ({v})" for k, v in p.value_aliases.items()))
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
    lines += engine_arguments_markdown()
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


def _gate_words(g: Gate) -> str:
    """``8.0+``, ``CUDA``, ``CUDA and vllm``, ``torch``: what a gate asks for, briefly."""
    parts = []
    if g.min_cc is not None:
        parts.append(f"{g.min_cc}+")
    elif g.cuda:
        parts.append("CUDA")
    if g.package:
        parts.append(g.package)
    return " and ".join(parts) or "nothing"


def _engine_value(v: Any) -> str:
    return "nothing" if v is None else f"`{v}`"


def engine_arguments_markdown() -> list[str]:
    """What each backend passes to its engine for each field, as Markdown lines."""
    lines = ["## Engine arguments", "",
             "What each backend passes to its engine for each field: where it goes, the engine's "
             "name for it and, where the engine spells values differently, each value's spelling "
             "(from the rows' `engine_target`, `engine_names` and `engine_values`). A field a "
             "backend takes that is not listed here is used by llem itself (the runner, the "
             "batching, the engine cache).", ""]
    for backend in BACKENDS:
        targets = engine_targets(backend)
        lines += [f"### {backend}", "", "| Field | Goes to | Engine argument | Values |", "|---|---|---|---|"]
        for arg in engine_args(backend):
            where = "; ".join(targets[t].display for t in arg.targets)
            values = ", ".join(f"{k} -> {_engine_value(v)}" for k, v in (arg.values or {}).items())
            lines.append(f"| `{arg.path}` | {where} | `{arg.name}` | {values} |")
        notes = [f"- {t.display}: {t.note}" for t in targets.values() if t.note]
        if notes:
            lines += ["", *notes]
        protocol = [(t, name, why) for t in targets.values() for name, why in t.protocol.items()]
        if protocol:
            lines += ["", "Also passed, named by no field:", ""]
            lines += [f"- `{name}` to {t.display}: {why}" for t, name, why in protocol]
        lines.append("")
    return lines


def _bounds(p: Any) -> str:
    if p.min is None and p.max is None:
        return ""
    lo = "" if p.min is None else f"{p.min}{' <' if p.min_exclusive else ' <='}"
    hi = "" if p.max is None else f"{'< ' if p.max_exclusive else '<= '}{p.max}"
    return f"{lo} x {hi}".strip()


__all__ = [
    "NOT_HERE",
    "capability_at",
    "tier_facts",
    "capability_matrix_html",
    "capability_matrix_markdown",
    "capability_matrix_rows",
    "engine_arguments_markdown",
    "reference_markdown",
]


_PY_TYPES = {"int": "int", "float": "float", "bool": "bool", "str": "str", "dict": "dict[str, Any]",
             "list": "list[Any]", "str_or_list": "str | list[str]"}


def _py_type(p: Any) -> str:
    if p.type == "enum":
        kinds = {type(c).__name__ for c in p.choices or ()}
        base = kinds.pop() if len(kinds) == 1 else "Any"
    else:
        base = _PY_TYPES.get(p.type, "Any")
    return f"{base} | None" if p.allow_none and base != "Any" else base


def config_types_module() -> str:
    """The text of ``llem/_config_types.py``: every section's fields with their Python types.

    Type checkers and editors read it (``cfg.pytorch.batch_size`` completes and is an
    ``int``); at run time the same classes are built from the rows by
    :func:`llem.sections.make_section`.
    """
    out = ['"""Typed fields of the config sections, for type checkers and editors.', "",
           "Generated from llem/spec by ``python -m llem.spec types > llem/_config_types.py``: do",
           "not edit (a test fails when it is stale). At run time :mod:`llem.config` builds the same",
           "classes from the rows with :func:`llem.sections.make_section`.", '"""', "",
           "from __future__ import annotations", "", "from typing import Any", "",
           "from llem.sections import Section", ""]
    for section in SECTIONS:
        cls_name, doc = SECTION_CLASSES[section]
        out += ["", f"class {cls_name}(Section):", f'    """{doc}"""', ""]
        for p in params(section):
            out.append(f"    {p.name}: {_py_type(p)}")
            help_text = p.help.replace("\\", "\\\\").replace('"""', "'''")
            lines = textwrap.wrap(help_text, 96)
            if len(lines) == 1:
                out.append(f'    """{help_text}"""')
            else:
                out += [f'    """{lines[0]}', *(f"    {line}" for line in lines[1:]), '    """']
    return "\n".join(out)
