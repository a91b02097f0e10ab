"""`agroml report`: the monitoring page, read as HTML and opened in a real headless Chromium.

The page is built once per module from the demo's rows plus what an operator's folder holds: a
registered run with metrics, two promotions, a production model card, and rows whose free text is
hostile (a farm location and a crop that are HTML with script, a model card with a remote image).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agroml.core.config import SETTINGS
from agroml.data import records as rec
from agroml.data.store import Store
from agroml.lifecycle.registry import Registry

HOSTILE = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'
CARD = "# pest model 20250315-090000\n\nTest accuracy 0.91.\n\n<script>window.__pwned=3</script>\n![x](https://example.invalid/x.png)\n"
MODELS = ("pest", "disease", "storage")
SECTIONS = [
    "readiness",
    *(f"{kind}-{m}" for m in MODELS for kind in ("growth", "accuracy", "season", "wrong")),
    "runs",
    "model-card",
    "generated",
]


def _operator_folder(root: Path, demo_template: Path) -> None:
    """The demo's rows plus hostile ones, a run with metrics, two promotions and a production card, under root."""
    (root / "data").mkdir()
    with sqlite3.connect(demo_template) as src, sqlite3.connect(root / "data" / "agroml.db") as dst:
        src.backup(dst)
    hostile = [
        dict(
            id=f"h{i}",
            source="test",
            model_type="pest",
            image_url=f"test://h{i}.jpg",
            predicted_label="aphids",
            confidence=0.7,
            user_confirmed=False,
            actual_label="fall_armyworm",
            crop=HOSTILE,
            location=HOSTILE,
            created_at="2025-06-10T08:00:00Z",
        )
        for i in range(3)
    ]
    with Store(root / "data" / "agroml.db") as store:
        store.upsert(rec.make_records(hostile))
    models = root / "models"
    with Registry(models) as registry:
        run = registry.start("pest", "20250315-090000", "mobilenet_v2", {"epochs": 3, "note": HOSTILE})
        run.finish("succeeded", metrics={"test": {"accuracy": 0.912, "macro_f1": 0.874}}, path=models / "pest" / "r")
        for run_id, when in (("20240610-120000", datetime(2024, 6, 10)), ("20250315-090000", datetime(2025, 3, 15, 9))):
            registry.record_promotion("pest", run_id, None, models / "pest" / "production")
            at = when.replace(tzinfo=UTC).timestamp()  # promote records "now": date them as an operator's history
            registry.con.execute("UPDATE promotions SET promoted_at = ? WHERE run_id = ?", (at, run_id))
        registry.con.commit()
    (models / "pest" / "production").mkdir(parents=True)
    (models / "pest" / "production" / "MODEL_CARD.md").write_text(CARD)


@pytest.fixture(scope="module")
def page(tmp_path_factory, demo_template) -> tuple[Path, dict, str]:
    """(the page's path, `agroml report --json`'s document, its stderr), built once in a clean folder."""
    from agroml.cli.main import app

    root = tmp_path_factory.mktemp("report")
    _operator_folder(root, demo_template)
    with pytest.MonkeyPatch.context() as mp:
        for env in [e for s in SETTINGS for e in s.env] + [e for e in os.environ if e.startswith("AGROML_")]:
            if env != "AGROML_DEBUG":
                mp.delenv(env, raising=False)
        mp.chdir(root)
        result = CliRunner().invoke(app, ["report", "--out", "site/agroml/index.html", "--json"])
    assert result.exit_code == 0, result.output
    return root / "site" / "agroml" / "index.html", json.loads(result.stdout), result.stderr


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def test_the_page_is_one_self_contained_file_with_every_section(page):
    path, result, _ = page
    html = path.read_text(encoding="utf-8")
    assert result["path"] == "site/agroml/index.html" and result["bytes"] == path.stat().st_size
    assert result["sections"] == SECTIONS and result["model_types"] == list(MODELS)
    parser = _Tags()
    parser.feed(html)
    sections = [a["data-section"] for t, a in parser.tags if t == "section"]
    assert sections == SECTIONS
    assert not [t for t, _ in parser.tags if t in ("script", "iframe", "object", "embed", "base", "form")]
    for tag, attrs in parser.tags:  # nothing to fetch: every image is a data URI, every link an anchor
        if "src" in attrs:
            assert tag == "img" and str(attrs["src"]).startswith("data:image/png;base64,"), attrs
        if "href" in attrs:
            assert str(attrs["href"]).startswith(("#", "data:")), attrs
    assert sum(1 for t, _ in parser.tags if t == "img") == 2 * len(MODELS)
    assert "default-src 'none'" in html  # the Content-Security-Policy: no script, no network


def test_what_the_data_says_is_shown_escaped_never_run(page):
    path, _, _ = page
    html = path.read_text(encoding="utf-8")
    assert HOSTILE not in html and "window.__pwned=3</script>" not in html
    assert "&lt;script&gt;window.__pwned=2&lt;/script&gt;" in html  # the farm location, as text
    assert "&lt;script&gt;window.__pwned=3&lt;/script&gt;" in html  # the model card, as text
    assert "https://example.invalid/x.png" in html  # shown as text in the card, never as an image source


def test_the_page_holds_the_runs_the_deployments_and_the_card(page):
    path, _, _ = page
    html = path.read_text(encoding="utf-8")
    runs = html.split('data-section="runs"')[1].split("</section>")[0]
    assert "20250315-090000" in runs and "0.912" in runs and "0.874" in runs and "production" in runs
    accuracy = html.split('data-section="accuracy-pest"')[1].split("</section>")[0]
    assert "2024-06-10T00:00:00+00:00" in accuracy and "2025-03-15T09:00:00+00:00" in accuracy
    card = html.split('data-section="model-card"')[1].split("</section>")[0]
    assert "pest model 20250315-090000" in card and "No production model card" in card  # disease, storage have none
    wrong = html.split('data-section="wrong-pest"')[1].split("</section>")[0]
    assert "aphids" in wrong and "fall_armyworm" in wrong and "Most confused pairs" in wrong


def _chromium() -> str | None:
    for name in (os.environ.get("AGROML_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        found = name and shutil.which(name)
        if found:
            return found
    return None


def test_the_page_renders_in_headless_chromium(page, tmp_path):
    """Every section laid out, every image decoded, no console error, no request; a 1280 px screenshot."""
    why = "Playwright is not installed: pip install -e '.[test]'"
    sync_api = pytest.importorskip("playwright.sync_api", reason=why)
    chromium = _chromium()
    if chromium is None:
        pytest.skip("no Chromium on this machine: apt-get install chromium (.ci/run does), or set AGROML_CHROMIUM")
    path, _, _ = page
    problems: list[str] = []
    requests: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium)
        try:
            tab = browser.new_page(viewport={"width": 1280, "height": 900})
            tab.on("console", lambda m: problems.append(f"{m.type}: {m.text}") if m.type == "error" else None)
            tab.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            tab.on("request", lambda r: requests.append(r.url))
            tab.goto(path.as_uri(), wait_until="load", timeout=120_000)
            boxes = tab.eval_on_selector_all(
                "section[data-section]",
                "els => els.map(e => [e.dataset.section, e.getBoundingClientRect().height, e.innerText.length])",
            )
            images = tab.eval_on_selector_all("img", "els => els.map(i => [i.complete, i.naturalWidth, i.alt])")
            pwned = tab.evaluate("() => window.__pwned === undefined")
            shot = tmp_path / "report-1280.png"
            tab.screenshot(path=str(shot), full_page=True, timeout=180_000)  # a tall page on a busy CI core
        finally:
            browser.close()
    assert [b[0] for b in boxes] == SECTIONS
    assert all(height > 40 and text > 10 for _, height, text in boxes), boxes
    assert len(images) == 2 * len(MODELS) and all(done and width > 0 for done, width, _ in images), images
    assert problems == []
    assert [u for u in requests if not u.startswith(("file:", "data:"))] == []
    assert pwned, "a script from the data ran"
    from PIL import Image

    with Image.open(shot) as image:
        assert image.size[0] == 1280 and image.size[1] > 3000
    artifacts = os.environ.get("AGROML_TEST_ARTIFACTS")
    if artifacts:
        Path(artifacts).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(artifacts) / shot.name)


def test_report_refuses_a_folder_and_keeps_the_last_page_when_it_cannot_write(cli, demo_store):
    Path("site").mkdir()
    folder = cli("report", "--out", "site")
    assert folder.exit_code == 2 and "directory" in folder.output
    Path("site/index.html").write_text("the last good page")
    Path("blocker").write_text("a file where a folder should be")
    blocked = cli("report", "--model", "storage", "--out", "blocker/index.html")
    assert blocked.exit_code == 1 and "cannot write blocker/index.html: blocker is not a folder" in blocked.output
    assert Path("site/index.html").read_text() == "the last good page"


def test_report_without_data_says_how_to_get_some(cli):
    result = cli("report")
    assert result.exit_code == 1 and "no data" in result.output and not Path("report.html").exists()
