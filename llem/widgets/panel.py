"""The config panel: a form generated from the table, two-way linked to an ExperimentConfig.

Every control comes from a table row (:mod:`llem.widgets.controls` picks its kind), for
the experiment section, the decoder, the chosen backend's section and the method sections
(warmup, baseline, dataset, study). An edit in the form is applied to the config; an edit
of the config (in code, or by another panel) shows in the form. A value the config refuses,
or one the GPU tier cannot run, is not applied: its reason shows next to the form and the
control goes back to the config's value. Nothing here raises from a callback.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import Any

from traitlets import TraitError

from llem import spec
from llem.config import ExperimentConfig
from llem.spec.flat import flatten
from llem.spec.model import BACKENDS
from llem.widgets.controls import RowControl, _ParseError, label_width, machine_cc, require_ipywidgets
from llem.widgets.runview import RunView

_w = require_ipywidgets()

#: Sections shown, in tab order; ``"backend"`` stands for the chosen backend's section.
PANEL_SECTIONS = ("experiment", "decoder", "backend", "warmup", "baseline", "dataset", "study")


class ConfigPanel(_w.VBox):  # type: ignore[misc, name-defined]
    """A form for an :class:`~llem.config.ExperimentConfig`, with a Run button.

    Parameters
    ----------
    config : ExperimentConfig, optional
        The config to edit (a new default one when None). The panel edits this object:
        changes made in code show in the form, and the other way round.
    target : str, optional
        Sets ``config.target_gpu`` (``"cpu"``, ``"T4"``, ``"A100"``, ``"H100"``, ``"8.6"``):
        the tier the form gates against. Without it (and without a target in the config)
        the form gates against this machine's GPU, or the ``cpu`` tier.
    prompts : optional
        Prompts for the Run button (default: the config's ``prompts``); the form lists them.
    runner : callable, optional
        ``runner(config, prompts, progress=..., on_sample=...)``; default :func:`llem.run`.

    Attributes
    ----------
    controls : dict
        ``section.field`` -> :class:`~llem.widgets.controls.RowControl`.
    error : ipywidgets.HTML
        The last refused edit's reason (empty when the last edit was applied).
    notes : ipywidgets.HTML
        Settings that will have no effect, and what the config noted.
    prompts_view : ipywidgets.HTML
        The prompts the Run button uses.
    switch_note : ipywidgets.HTML
        After a change of backend: which settings were kept, which were reset, and which
        the new backend does not use (``switch_text`` holds the same as text).
    output : ipywidgets.Output
        Where the Run button's results appear.
    result : Result or None
        The last run's result; ``results`` keeps all of them.
    """

    def __init__(self, config: ExperimentConfig | None = None, *, target: str | float | None = None,
                 prompts: Any = None, runner: Callable[..., Any] | None = None, **kwargs: Any) -> None:
        self.config = config if config is not None else ExperimentConfig()
        if target is not None:
            self.config.target_gpu = str(target)
        self.prompts = prompts
        self._runner = runner
        self.controls: dict[str, RowControl] = {}
        self.result: Any = None
        self.results: list[Any] = []
        self.last_error = ""
        self.switch_text = ""
        self._switch_reset: dict[str, Any] = {}
        self.title = _w.HTML()
        self.prompts_view = _w.HTML(value=self._prompts_html())
        self.prompts_view.add_class("llem-prompts")
        self.switch_note = _w.HTML(value="")
        self.switch_note.add_class("llem-switch-note")
        self.tabs = _w.Tab()
        self.error = _w.HTML(value="")
        self.error.add_class("llem-error")
        self.notes = _w.HTML(value="")
        self.run_button = _w.Button(description="Run", button_style="primary", icon="play",
                                    tooltip="Run this experiment (llem.run) and show the result below")
        self.run_button.add_class("llem-run-button")
        self.run_button.on_click(self._on_run_click)
        self.live = _w.VBox()
        self.output = _w.Output()
        self._built_for: str | None = None
        self._build()
        self._observe_config()
        super().__init__(
            children=[self.title, self.prompts_view, self.switch_note, self.tabs, self.error, self.notes,
                      self.run_button, self.live, self.output],
            **kwargs,
        )
        self.add_class("llem-config-panel")

    # -- the tier ----------------------------------------------------------------------------------
    @property
    def cc(self) -> float | None:
        """Compute capability the form gates against (None = cpu)."""
        if self.config.target_gpu is not None:
            return spec.parse_target(self.config.target_gpu)
        return machine_cc()

    def tier_text(self) -> str:
        """``tier ampere: 8.0+ (Ampere) - target 'A100'`` or ``... - this machine``."""
        tier = spec.tier_for(self.cc)
        where = f"target {self.config.target_gpu!r}" if self.config.target_gpu else "this machine"
        return f"tier {tier.name}: {tier.display} ({where})"

    # -- building ----------------------------------------------------------------------------------
    def _sections(self) -> list[str]:
        backend = self.config.backend
        return [backend if s == "backend" else s for s in PANEL_SECTIONS]

    def _build(self) -> None:
        """(Re)make every control for the config's backend and gate it."""
        backend = self.config.backend
        for rc in self.controls.values():
            rc.widget.close()
            if rc.reset is not None:
                rc.reset.close()
        self.controls = {}
        pages, titles = [], []
        cc = self.cc
        for section in self._sections():
            rows = spec.params(section, backend) if backend in spec.BACKENDS else ()
            boxes = []
            width = label_width(rows)  # one label column per tab, wide enough for its longest label
            for row in rows:
                rc = RowControl(row, backend, self._on_edit, label_px=width)
                value = self.config.get(row.path)
                rc.value = value
                rc.gate(cc)
                rc.show(value)
                self.controls[row.path] = rc
                boxes.append(rc.box)
            if boxes:
                pages.append(_w.VBox(boxes))
                titles.append(section)
        selected = self.tabs.selected_index
        self.tabs.children = pages
        self.tabs.titles = titles
        if selected is not None and selected < len(pages):
            self.tabs.selected_index = selected
        self._built_for = backend
        self._refresh_header()

    def _config_objects(self) -> list[Any]:
        cfg = self.config
        return [cfg, *(getattr(cfg, name) for name in ("decoder", *BACKENDS, "warmup", "baseline",
                                                        "dataset", "study"))]

    def _observe_config(self) -> None:
        for obj in self._config_objects():
            obj.observe(self._from_config, names=list(obj._rows))

    def close(self) -> None:
        """Stop following the config and close every control."""
        for obj in self._config_objects():
            try:
                obj.unobserve(self._from_config, names=list(obj._rows))
            except ValueError:
                pass
        for rc in self.controls.values():
            rc.widget.close()
            if rc.reset is not None:
                rc.reset.close()
        self.controls = {}
        super().close()

    def _refresh_header(self) -> None:
        cfg = self.config
        self.prompts_view.value = self._prompts_html()
        self.title.value = (f"<b>llem config</b>: {html.escape(str(cfg.model))} on "
                            f"{html.escape(cfg.backend)} &mdash; {html.escape(self.tier_text())}")
        skipped = {}
        try:
            skipped = cfg.skipped({"cc": self.cc} if self.cc is not None else None)
        except Exception:  # noqa: BLE001 - a rule that cannot be read must not break the form
            pass
        items = [f"<li><code>{html.escape(k)}</code> will have no effect: {html.escape(v)}</li>"
                 for k, v in skipped.items()]
        items += [f"<li>{html.escape(n)}</li>" for n in cfg.notes[-3:]]
        self.notes.value = f"<ul class='llem-notes'>{''.join(items)}</ul>" if items else ""

    # -- config -> form ----------------------------------------------------------------------------
    def _from_config(self, change: dict[str, Any]) -> None:
        owner = change["owner"]
        section = "experiment" if isinstance(owner, ExperimentConfig) else owner._section
        path = f"{section}.{change['name']}"
        if path == "experiment.backend" and change["new"] != self._built_for:
            self._switched(str(change["old"]), str(change["new"]))
            self._build()
            return
        if self._built_for is not None and self.config.backend != self._built_for:
            # the config resets what the new backend does not take before the panel hears of
            # the switch itself: remember what it was, for the switch note
            if change["old"] is not None and change["new"] is None:
                self._switch_reset[path] = change["old"]
        rc = self.controls.get(path)
        if rc is not None:
            rc.show(change["new"])
        if path == "experiment.target_gpu":
            self._regate()
        self._refresh_header()

    def _switched(self, old: str, new: str) -> None:
        """Say what a change of backend did to the settings (the ``switch_note``)."""
        reset, self._switch_reset = self._switch_reset, {}
        flat = flatten(self.config.to_dict(only_set=True))
        kept = {p: v for p, v in flat.items() if p.startswith("decoder.")
                and v != spec.param(p).default}
        unused = {}
        if old in BACKENDS:
            section = getattr(self.config, old)
            unused = {f"{old}.{name}": getattr(section, name) for name, row in section._rows.items()
                      if getattr(section, name) is not None and getattr(section, name) != row.default}

        def listing(values: dict[str, Any]) -> str:
            return ", ".join(f"{p}={v!r}" for p, v in values.items())

        lines = [f"Backend changed from {old} to {new}."]
        lines.append(f"Kept: {listing(kept)}." if kept else "No decoder setting to keep.")
        if reset:
            lines.append(f"Reset (unset): {listing(reset)}: {new} does not take "
                         f"{'it' if len(reset) == 1 else 'them'}.")
        if unused:
            lines.append(f"Not used by {new}: {listing(unused)} (kept in the {old} section; "
                         f"switching back to {old} uses {'it' if len(unused) == 1 else 'them'} again).")
        self.switch_text = " ".join(lines)
        self.switch_note.value = ("<div class='llem-switch' style='white-space:pre-wrap'>&#8644; "
                                  + html.escape("\n".join(lines)) + "</div>")

    def _prompts_html(self) -> str:
        """The prompts the Run button uses, as a short list."""
        return "<div>" + html.escape(self.prompts_text()).replace("\n", "<br>") + "</div>"

    def prompts_text(self) -> str:
        """``prompts (2, given to the panel): 1. Hello! ...``, or the config's prompt set."""
        items = self.prompts
        if items is None:
            return f"prompts: the config's set {self.config.prompts!r}"
        if isinstance(items, str):
            items = [items]
        try:
            items = [str(getattr(p, "text", p)) for p in items]
        except TypeError:
            return f"prompts: {items!r}"
        shown = [f"{i}. {p if len(p) <= 120 else p[:119] + '...'}" for i, p in enumerate(items[:8], 1)]
        more = f"\n... and {len(items) - 8} more" if len(items) > 8 else ""
        return f"prompts ({len(items)}, given to the panel; Run uses them):\n" + "\n".join(shown) + more

    def _regate(self) -> None:
        cc = self.cc
        for rc in self.controls.values():
            rc.gate(cc)

    def sync(self) -> None:
        """Show the config's current values in every control."""
        if self.config.backend != self._built_for:
            self._build()
            return
        for path, rc in self.controls.items():
            rc.show(self.config.get(path))
        self._regate()
        self._refresh_header()

    # -- form -> config ----------------------------------------------------------------------------
    def _on_edit(self, rc: RowControl, value: Any) -> None:
        path = rc.row.path
        try:
            if isinstance(value, _ParseError):
                self._refuse(rc, value.message)
                return
            if rc.kind == "dropdown" and value in rc.gated:
                self._refuse(rc, f"{path}={value!r} refused: {rc.gated[value]}")
                return
            if rc.disabled_reason and value not in (None, False):
                self._refuse(rc, f"{path}={value!r} refused: {rc.disabled_reason}")
                return
            try:
                self.config.update({path: value})
            except (TraitError, ValueError, KeyError) as e:  # InvalidValue is both
                self._refuse(rc, str(e))
                return
            self.last_error = ""
            self.error.value = ""
            # the config may have kept the value in another form (int -> float)
            rc.show(self.config.get(path))
            self._refresh_header()
        except Exception as e:  # noqa: BLE001 - a widget callback must never raise
            self._refuse(rc, f"{path}: {type(e).__name__}: {e}")

    def _refuse(self, rc: RowControl, message: str) -> None:
        self.last_error = message
        self.error.value = ("<div style='color:var(--jp-error-color1, #b00020);white-space:pre-wrap'>"
                            f"&#9888; {html.escape(message)}</div>")
        try:
            self.sync()  # the refused value goes back to the config's, everywhere
        except Exception:  # noqa: BLE001
            rc.show(self.config.get(rc.row.path))

    # -- running -----------------------------------------------------------------------------------
    def _on_run_click(self, _button: Any = None) -> None:
        self.run()

    def run(self) -> Any:
        """Run the experiment as configured; show progress, live power and the result below.

        Returns the Result, or None when the run failed (the reason is shown, not raised).
        """
        runner: Callable[..., Any]
        if self._runner is not None:
            runner = self._runner
        else:
            from llem.runner import run as runner
        view = RunView(title=f"{self.config.model} on {self.config.backend}")
        self.live.children = (view,)
        self.run_button.disabled = True
        self.output.outputs = ()
        try:
            result = runner(self.config, self.prompts, progress=view.progress, on_sample=view.on_sample)
        except Exception as e:  # noqa: BLE001 - shown, never raised from a button
            message = f"{type(e).__name__}: {e}"
            view.failed(str(e).splitlines()[0] if str(e) else type(e).__name__)
            self.output.append_display_data(_Message(message))
            return None
        finally:
            self.run_button.disabled = False
        view.done(result)
        self.result = result
        self.results.append(result)
        self.output.append_display_data(result)
        return result

    # -- text --------------------------------------------------------------------------------------
    def text(self) -> str:
        """The config (only what is set) as YAML, with the tier and the last refusal."""
        lines = [f"ConfigPanel ({self.tier_text()})", self.prompts_text(), self.config.to_yaml().rstrip()]
        if self.switch_text:
            lines.append(self.switch_text)
        if self.last_error:
            lines.append(f"refused: {self.last_error}")
        if self.result is not None:
            lines.append(f"last run: {self.result!r}".splitlines()[0])
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.text()

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any] | None:
        data = super()._repr_mimebundle_(**kwargs)
        if isinstance(data, dict):
            data["text/plain"] = self.text()
        return data


class _Message:
    """A short error message for an Output widget (text and red HTML)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, str]:
        return {"text/plain": self.text,
                "text/html": "<div style='color:var(--jp-error-color1, #b00020)'>"
                              f"{html.escape(self.text)}</div>"}


__all__ = ["PANEL_SECTIONS", "ConfigPanel"]
