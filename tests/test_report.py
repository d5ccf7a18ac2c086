"""Reports: self-contained HTML (checked in a real headless chromium), Markdown, JSON, CSV."""

from __future__ import annotations

import csv
import dataclasses
import json
import re
import subprocess
from importlib.metadata import entry_points
from pathlib import Path

import pytest

import llem
from llem import plugins, report
from llem.errors import UnknownNameError
from llem.results import Result

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]

TINY = {"model": "tiny-random-llama", "num_prompts": 2, "repeats": 2, "sampling_interval_s": 0.02,
        "decoder": {"max_new_tokens": 8}}


@pytest.fixture(scope="module")
def result():
    return llem.run(TINY)


@pytest.fixture(scope="module")
def two(result):
    """The run, and a copy labelled as another setting (a second run would cost seconds)."""
    other = dataclasses.replace(
        result, id="other", config={**result.config, "pytorch": {**result.config["pytorch"], "batch_size": 2}})
    return [result, other]


# ------------------------------------------------------------------------------ HTML
def test_html_is_one_self_contained_file(result, tmp_path):
    pytest.importorskip("vl_convert")
    out = report.export(result, tmp_path / "r.html")
    text = out.read_text(encoding="utf-8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html"]
    assert "<script" not in text.lower() and "<link" not in text.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", text, re.I)
    assert "url(http" not in text
    imgs = re.findall(r'<img [^>]*src="data:image/svg\+xml;base64,', text)
    assert len(imgs) == 5  # timeline, energy/token, vs latency, vs throughput, phases
    # what a reader must know first
    assert "NOT FOR PUBLICATION" in text and "Energy is ESTIMATED" in text
    # config (from the table, with units and help), method per device, environment, notes
    for needle in ("decoder.max_new_tokens", "experiment.sampling_interval_s", "Power sampling interval.",
                   "estimate: process CPU time", "Capability notes for the settings used",
                   "Runs on CPU on pytorch: yes", "How to read this report", "torch_version"):
        assert needle in text, needle


def test_publication_profile_drops_the_warning(result, tmp_path):
    pub = dataclasses.replace(result, config={**result.config, "profile": "publication"})
    text = report.export(pub, tmp_path / "p.html", charts=False).read_text(encoding="utf-8")
    assert "NOT FOR PUBLICATION" not in text and "<img" not in text


def test_html_with_png_charts_and_several_results(two, tmp_path):
    pytest.importorskip("vl_convert")
    text = report.export(two, tmp_path / "two.html", chart_format="png").read_text(encoding="utf-8")
    assert len(re.findall(r'src="data:image/png;base64,', text)) == 6  # two timelines
    assert "Comparison" in text and "pytorch.batch_size" in text and "batch_size=2" in text


def test_html_report_shows_its_charts_in_headless_chromium_offline(two):
    """Open the report in Debian's chromium with every network request refused."""
    pytest.importorskip("vl_convert")
    if not CHROMIUM.exists():
        pytest.skip("Debian chromium is not installed at /usr/bin/chromium "
                    "(apt-get update && apt-get install -y chromium)")
    ARTIFACTS.mkdir(exist_ok=True)
    page_path = report.export(two, ARTIFACTS / "report.html")
    shot = ARTIFACTS / "report-screenshot.png"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if sync_playwright is None:  # chromium's own screenshot: proves it renders, less detail
        subprocess.run([str(CHROMIUM), *CHROMIUM_FLAGS, "--hide-scrollbars", "--window-size=1200,1600",
                        f"--screenshot={shot}", page_path.as_uri()], check=True, capture_output=True,
                       timeout=120)
        assert shot.stat().st_size > 20_000
        return
    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        try:
            ctx = browser.new_context(viewport={"width": 1200, "height": 900}, offline=True)

            def refuse(route):
                url = route.request.url
                if url.startswith(("file:", "data:")):
                    return route.continue_()
                requests.append(url)
                return route.abort()

            ctx.route("**/*", refuse)
            page = ctx.new_page()
            page.goto(page_path.as_uri(), wait_until="load")
            charts = page.evaluate("""() => Array.from(document.querySelectorAll('figure.chart img')).map(
                img => ({ok: img.complete && img.naturalWidth > 100 && img.naturalHeight > 50,
                         shown: img.getBoundingClientRect().width > 300}))""")
            page.screenshot(path=str(shot), full_page=True)
            first = page.evaluate("document.querySelector('h1').textContent")
        finally:
            browser.close()
    assert requests == []
    assert len(charts) == 6 and all(c["ok"] and c["shown"] for c in charts), charts
    assert first.startswith("llem report")
    assert shot.stat().st_size > 50_000


# -------------------------------------------------------------------------- Markdown
def test_markdown_with_png_charts_beside_it(two, tmp_path):
    pytest.importorskip("vl_convert")
    out = report.export(two, tmp_path / "rep.md")
    text = out.read_text(encoding="utf-8")
    links = re.findall(r"!\[[^\]]*\]\((rep_files/[^)]+\.png)\)", text)
    assert len(links) == 6
    for link in links:
        assert (tmp_path / link).read_bytes().startswith(b"\x89PNG")
    assert "NOT FOR PUBLICATION" in text and "ESTIMATED" in text
    assert "| energy per output token |" in text


# ------------------------------------------------------------------------- JSON / CSV
def test_json_holds_every_result_in_full(two, tmp_path):
    data = json.loads(report.export(two, tmp_path / "r.json").read_text(encoding="utf-8"))
    assert data["schema"] == "llem.report/1" and data["not_for_publication"] is True
    assert len(data["results"]) == 2
    first = data["results"][0]
    assert first["method"] == "estimated"
    assert {d["device"] for d in first["energy_by_device"]} == {"cpu", "ram"}
    assert any(f["figure"] == "energy per output token" for f in first["key_figures"])
    back = Result.from_dict(first["result"])
    assert back.summary["energy_j"].mean == pytest.approx(two[0].summary["energy_j"].mean)
    assert len(back.runs[0].measurement.timeline) == len(two[0].runs[0].measurement.timeline)


def test_csv_has_one_row_per_run_and_a_column_per_setting_and_metric(two, tmp_path):
    out = report.export(two, tmp_path / "r.csv")
    with out.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == sum(len(r.runs) for r in two) == 4
    cols = rows[0].keys()
    for col in ("config.pytorch.batch_size", "config.decoder.max_new_tokens", "energy_per_token_j",
                "tokens_per_s", "ttft_p50_s", "energy_method", "profile"):
        assert col in cols, col
    assert [r["config.pytorch.batch_size"] for r in rows] == ["1", "1", "2", "2"]
    assert {r["energy_method"] for r in rows} == {"estimated"}


def test_to_dataframe_shape(two):
    pd = pytest.importorskip("pandas")
    df = report.to_dataframe(two)
    assert isinstance(df, pd.DataFrame)
    assert len(df) == 4
    from llem.spec import flatten

    assert len([c for c in df.columns if c.startswith("config.")]) == len(flatten(two[0].config))
    assert df["energy_per_token_j"].notna().all()


# ------------------------------------------------------------------------- exporters
def test_builtin_exporters_are_found_through_the_entry_point_group():
    eps = {ep.name: ep.value for ep in entry_points(group="llem.exporters")}
    assert eps == report.BUILTIN_EXPORTERS
    for name in ("html", "markdown", "json", "csv"):
        assert isinstance(report.get_exporter(name), report.Exporter)
    assert report.exporter_for_path("a/b.HTML") == "html"
    assert report.exporter_for_path("x.md") == "markdown"


def test_unknown_formats_say_what_exists(result, tmp_path):
    with pytest.raises(UnknownNameError, match=r"report file type '\.pdf'.*\.html"):
        report.export(result, tmp_path / "r.pdf")
    with pytest.raises(UnknownNameError, match="Did you mean 'html'"):
        report.export(result, tmp_path / "r.out", format="htmll")
    with pytest.raises(TypeError, match="no option"):
        report.export(result, tmp_path / "r.csv", chart_format="png")


def test_a_plugin_is_checked_when_registered():
    class NotAnExporter:
        pass

    with pytest.raises(report.ExporterPluginError, match="lacks export, extensions"):
        report.register_exporter("broken", NotAnExporter)

    class Txt(report.Exporter):
        name, extensions = "txt", (".txt",)

        def export(self, results, path, **options):
            path.write_text("\n".join(r.model for r in results))
            return path

    report.register_exporter("txt", Txt)
    try:
        assert "txt" in report.exporter_names()
        assert report.exporter_for_path("r.txt") == "txt"
    finally:
        plugins._registered["exporter"].pop("txt")


def test_export_reads_result_files_and_folders(result, tmp_path):
    saved = result.save(tmp_path / "res")
    (tmp_path / "res" / "broken.json").write_text("{not json")
    with pytest.warns(UserWarning, match="broken.json"):
        out = report.export(tmp_path / "res", tmp_path / "r.json")
    assert len(json.loads(out.read_text())["results"]) == 1
    assert report.export([saved], tmp_path / "r.csv").exists()
    with pytest.raises(llem.LlemError, match="no results"):
        report.export([], tmp_path / "r.csv")


def test_result_export_method(result, tmp_path):
    if not hasattr(Result, "export"):
        pytest.skip("Result.export is not there yet (llem/results.py)")
    assert result.export(tmp_path / "r.csv").exists()


# ------------------------------------------------------------------ capability notes
def test_capability_notes_come_from_the_table(result):
    notes = {n["setting"]: n for n in report.capability_notes(result)}
    assert "float32 on pytorch: yes" in notes["pytorch.dtype"]["notes"]
    fa2 = dataclasses.replace(result, config={**result.config, "pytorch": {
        **result.config["pytorch"], "attn_implementation": "flash_attention_2"}})
    note = {n["setting"]: n for n in report.capability_notes(fa2)}["pytorch.attn_implementation"]
    assert "compute capability 8.0+" in note["notes"]
    assert "not on this run's tier (cpu)" in note["notes"]
    assert "FlashAttention-2 on pytorch: yes" in note["notes"]
    h100 = dataclasses.replace(fa2, environment={**fa2.environment, "tier": "hopper",
                                                  "compute_capability": "9.0"})
    note = {n["setting"]: n for n in report.capability_notes(h100)}["pytorch.attn_implementation"]
    assert "this run's tier (hopper) has it" in note["notes"]
