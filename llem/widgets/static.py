"""Static plots in a notebook: outputs that survive saving the notebook.

:class:`StaticImage` is a drawn chart as an ``image/svg+xml`` output with a PNG beside
it; :func:`use_static_charts` makes altair charts display that way; :func:`static_chart`
draws one chart. Pure Python (no IPython import); the PNG needs vl-convert, the altair
functions altair. The live widgets (:mod:`llem.widgets.power`) stay HTML: they draw
while the kernel runs, and their saved form is this module's image.
"""

from __future__ import annotations

import base64
import re
from typing import Any

from llem.errors import import_optional
from llem.plots import to_svg


class StaticImage:
    """A drawn chart as a notebook output that survives saving: ``image/svg+xml`` and a PNG.

    SVG inside ``text/html`` is stripped from a saved notebook opened untrusted (a notebook
    from someone else), and JupyterLab shows an ``image/svg+xml`` output only when the
    notebook is trusted. So the bundle holds the SVG (crisp, chosen in a trusted notebook)
    and, where vl-convert is installed, the same drawing as a PNG (shown in an untrusted
    one), beside ``text/plain``. The SVG is shown as an image, so it carries its own opaque
    background and reads in a light and a dark theme alike.

    Parameters
    ----------
    svg : str
        The ``<svg>`` document.
    text : str
        The ``text/plain`` form (what a terminal shows).
    """

    def __init__(self, svg: str, text: str = "chart") -> None:
        self.svg = svg
        self.text = text

    def size(self) -> tuple[int, int] | None:
        """``(width, height)`` in px from the SVG's attributes, when it has them."""
        m = re.search(r'<svg[^>]*?\swidth="([\d.]+)(?:px)?"[^>]*?\sheight="([\d.]+)(?:px)?"', self.svg)
        return (round(float(m.group(1))), round(float(m.group(2)))) if m else None

    def png(self, scale: float = 1.0) -> bytes | None:
        """The SVG as PNG bytes (vl-convert, offline), or None without vl-convert."""
        try:
            import vl_convert as vlc
        except ImportError:
            return None
        try:
            return bytes(vlc.svg_to_png(self.svg, scale=scale))
        except Exception:  # noqa: BLE001 - a display falls back to the SVG alone
            return None

    def _repr_svg_(self) -> str:
        return self.svg

    def _repr_mimebundle_(self, include: Any = None,
                          exclude: Any = None) -> tuple[dict[str, Any], dict[str, Any]]:
        data: dict[str, Any] = {"text/plain": self.text, "image/svg+xml": self.svg}
        meta: dict[str, Any] = {}
        png = self.png()
        if png is not None:
            data["image/png"] = base64.b64encode(png).decode("ascii")
            size = self.size()
            if size is not None:
                meta["image/png"] = {"width": size[0], "height": size[1]}
        return data, meta

    def __repr__(self) -> str:
        return self.text


def static_chart(chart: Any, text: str | None = None) -> StaticImage:
    """An altair chart drawn offline (vl-convert) as a :class:`StaticImage`."""
    return StaticImage(to_svg(chart), text or f"{type(chart).__name__} (static image)")


def use_static_charts() -> str:
    """Show altair charts in this notebook as static images that survive saving.

    Registers and enables the altair renderer ``llem-static``: each chart is drawn offline
    by vl-convert and shown as :class:`StaticImage` (SVG, and PNG for an untrusted
    notebook). altair's ``default`` renderer is interactive but loads its JavaScript from
    the web; ``alt.renderers.enable("default")`` switches back. Returns the renderer's name.
    """
    alt = import_optional("altair", "plots", "llem's charts")

    def render(spec: dict[str, Any], **_metadata: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        return StaticImage(to_svg(spec), "altair chart (static image)")._repr_mimebundle_()

    alt.renderers.register("llem-static", render)
    alt.renderers.enable("llem-static")
    return "llem-static"


__all__ = ["StaticImage", "static_chart", "use_static_charts"]
