"""cg-analyze explore: the page's data against the run's files, and the page itself in headless Chromium.

The browser test drives Debian's chromium through its chromedriver with selenium (the driver path is given, so
selenium-manager never downloads one); it is skipped where chromium is not installed (the Makefile installs it as
root before the tests; a test never installs anything).
"""
from __future__ import annotations

import base64
import json
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.cli import main as analyze
from conftest import train

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
pytestmark = pytest.mark.xdist_group("explorer")  # one worker builds the digits run once for all of them


@pytest.fixture(scope="module")
def digits_run(mnist_small: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny real run of the embedded digits with path logs, scored by `cg-analyze noise`."""
    out = tmp_path_factory.mktemp("explore") / "run"
    assert train(mnist_small, out, "--epochs", "3", "--paths", "--paths-topk", "10", "--noise-type", "symmetric",
                 "--corrupt-fraction", "0.3", "--sample-size", "50", "--seed", "1") == 0
    assert analyze(["noise", str(out)]) == 0
    return out


def page_data(page: Path) -> dict:
    text = page.read_text()
    assert "<script src" not in text and "<link" not in text and not re.search(r"https?://", text)  # all inline
    return json.loads(re.search(r'<script type="application/json" id="data">(.*?)</script>', text, re.S).group(1))


def u16(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<u2")


def test_page_data_matches_the_scores_and_the_path_logs(digits_run: Path, tmp_path: Path) -> None:
    assert analyze(["explore", str(digits_run), "-o", str(tmp_path), "--top", "40", "--random", "25",
                    "--by", "mean_loss", "--topk", "3"]) == 0
    data = page_data(tmp_path / "explorer.html")
    scores = pd.read_parquet(digits_run / "noise" / "scores.parquet")
    rows = data["rows"]
    # the 40 highest mean losses (ties: lower index first), then 25 of the other 260 in index order
    top = scores.sort_values(["mean_loss", "index"], ascending=[False, True])["index"].to_numpy()
    assert rows["index"][:40] == top[:40].tolist()
    rest = rows["index"][40:]
    assert len(rest) == 25 and rest == sorted(rest) and set(rest) <= set(top[40:])
    assert rows["top"] == [1] * 40 + [0] * 25
    again = tmp_path / "again"
    assert analyze(["explore", str(digits_run), "-o", str(again), "--top", "40", "--random", "25",
                    "--by", "mean_loss", "--topk", "3"]) == 0
    assert page_data(again / "explorer.html")["rows"]["index"] == rows["index"]  # seeded
    table = scores.set_index("index").loc[rows["index"]]
    assert rows["given"] == table.observed.tolist() and rows["true"] == table["true"].tolist()
    for name in ("aum", "mean_loss", "forgetting", "confident_learning", "lstm"):
        np.testing.assert_allclose(rows["scores"][name], table[name], rtol=1e-5)
    # learning path and top-3 per epoch, read back independently with pandas from paths/
    paths = pd.read_parquet(digits_run / "paths")
    paths["epoch"] = paths.epoch.astype(int)
    assert data["epochs"] == [1, 2, 3] and data["topk_epochs"] == [1, 2, 3] and data["k"] == 3
    n = len(rows["index"])
    series = u16(data["series"]).reshape(n, 3, 2)
    classes, probs = u16(data["topk_classes"]).reshape(n, 3, 3), u16(data["topk_probs"]).reshape(n, 3, 3)
    logged = paths.set_index(["index", "epoch"])
    for r, index in enumerate(rows["index"]):
        for t in range(3):
            row = logged.loc[(index, t)]
            assert abs(series[r, t, 0] / 65534 - row.p_observed) <= 1 / 65534
            assert abs(series[r, t, 1] / 65534 - row.p_true) <= 1 / 65534
            assert classes[r, t].tolist() == [row[f"top{i}_class"] for i in (1, 2, 3)]
            np.testing.assert_allclose(probs[r, t] / 65534, [row[f"top{i}_prob"] for i in (1, 2, 3)], atol=1 / 65534)
        assert rows["pred"][r] == logged.loc[(index, 2)].top1_class  # top-1 of the last epoch
    assert rows["thumb"][0].startswith("data:image/webp;base64,")
    assert data["classes"] == [str(k) for k in range(10)]


def test_explore_scores_a_run_without_a_noise_report_and_rejects_bad_input(
        digits_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    shutil.copytree(digits_run, run, ignore=shutil.ignore_patterns("noise"))
    assert analyze(["explore", str(run), "-o", str(tmp_path / "page"), "--thumb-size", "0"]) == 0
    made = pd.read_parquet(tmp_path / "page" / "scores.parquet")
    pd.testing.assert_frame_equal(made, pd.read_parquet(digits_run / "noise" / "scores.parquet"))
    assert page_data(tmp_path / "page" / "explorer.html")["rows"]["thumb"][0] == ""
    capsys.readouterr()
    assert analyze(["explore", str(digits_run), "-o", str(tmp_path / "x"), "--by", "nonsense"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--by nonsense" in err[0] and "aum" in err[0], err
    assert analyze(["explore", str(tmp_path / "missing")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


# ---------------------------------------------------------------------------------------------- the browser
def chromium(downloads: Path):
    """Headless Chromium driven by selenium through Debian's chromedriver, with nothing that calls home."""
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--disable-extensions", "--disable-default-apps", "--window-size=1500,1000",
                f"--user-data-dir={downloads.parent / 'profile'}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    os.environ["SE_OFFLINE"] = "true"  # selenium-manager, if it ran at all, must not go online
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    return driver


def downloaded(folder: Path, name: str) -> Path:
    """The file once the browser has finished writing it (Chromium writes *.crdownload first)."""
    path = folder / name
    for _ in range(500):
        if path.is_file() and not list(folder.glob("*.crdownload")):
            return path
        time.sleep(0.02)
    raise AssertionError(f"{name} was not downloaded: {sorted(p.name for p in folder.iterdir())}")


@pytest.mark.skipif(not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
                    reason="needs Debian's chromium and chromium-driver (the Makefile installs them as root)")
def test_explorer_in_headless_chromium_sorts_filters_marks_and_exports_for_exclude(
        digits_run: Path, mnist_small: Path, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    assert analyze(["explore", str(digits_run), "-o", str(tmp_path / "page")]) == 0
    page = tmp_path / "page" / "explorer.html"
    scores = pd.read_parquet(digits_run / "noise" / "scores.parquet")
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    driver = chromium(downloads)
    try:
        startup = driver.get_log("performance")  # the browser's own start (its new-tab page), before the page
        driver.get(page.as_uri())
        rows = lambda: driver.find_elements(By.CSS_SELECTOR, "#samples tbody tr")  # noqa: E731
        assert len(rows()) == 100  # the first page of all 300 samples
        shot = tmp_path / "explorer.png"
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000

        # sorting by a score column puts the highest-scoring sample first (ties: lower index first)
        for name in ("mean_loss", "aum", "forgetting"):
            header = driver.find_element(By.CSS_SELECTOR, f'th[data-key="{name}"]')
            header.click()
            if "sorted-desc" not in header.get_attribute("class"):
                header.click()
            want = scores.sort_values([name, "index"], ascending=[False, True])["index"].tolist()
            shown = [int(r.get_attribute("data-index")) for r in rows()]
            assert shown == want[:100], name

        # the class filter hides every other class
        Select(driver.find_element(By.ID, "class-filter")).select_by_value("3")
        given = {int(r.get_attribute("data-given")) for r in rows()}
        assert given == {3} and len(rows()) == int((scores.observed == 3).sum())
        Select(driver.find_element(By.ID, "class-of")).select_by_value("true")
        assert {int(r.get_attribute("data-true")) for r in rows()} == {3}
        Select(driver.find_element(By.ID, "class-filter")).select_by_value("")
        driver.find_element(By.ID, "mismatch").click()
        assert all(r.get_attribute("data-given") != r.get_attribute("data-pred") for r in rows())
        driver.find_element(By.ID, "mismatch").click()
        Select(driver.find_element(By.ID, "status-filter")).select_by_value("corrupt")
        assert len(rows()) == min(100, int(scores.is_corrupt.sum()))
        Select(driver.find_element(By.ID, "status-filter")).select_by_value("")

        # a click shows the learning path and the top-k per epoch; marks export as --exclude and --labels files
        first = rows()[0]
        first.find_element(By.CSS_SELECTOR, "td.col-index").click()
        assert driver.find_element(By.ID, "path-plot").find_elements(By.TAG_NAME, "polyline")
        assert len(driver.find_elements(By.CSS_SELECTOR, "#topk tbody tr")) == 3
        marked = []
        for row in rows()[:3]:
            row.find_element(By.CSS_SELECTOR, "input.mark").click()
            marked.append(int(row.get_attribute("data-index")))
        driver.find_element(By.ID, "export-exclude").click()
        exclude = downloaded(downloads, "exclude.txt")
        assert exclude.read_text().split() == [str(i) for i in sorted(marked)]
        assert driver.find_element(By.ID, "export-text").get_attribute("value").split() == exclude.read_text().split()
        driver.find_element(By.ID, "export-labels").click()
        driver.find_element(By.ID, "export-labels-parquet").click()
        labels_csv, labels = pd.read_csv(downloaded(downloads, "labels.csv")), \
            pd.read_parquet(downloaded(downloads, "labels.parquet"))
        performance = driver.get_log("performance")
        console = driver.get_log("browser")
        resources = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    finally:
        driver.quit()

    # no network request: only the page itself (file://), its inline data: images and the export blobs
    def requested(log: list[dict]) -> list[str]:
        events = [json.loads(e["message"])["message"] for e in log]
        return [e["params"]["request"]["url"] for e in events if e["method"] == "Network.requestWillBeSent"]

    # the browser's own pages (its new-tab page loads its scripts at start-up, and later) are no network
    internal = ("chrome://", "chrome-untrusted://", "devtools://")
    assert not [u for u in requested(startup) if not u.startswith((*internal, "data:"))]
    urls = [u for u in requested(performance) if not u.startswith(internal)]
    assert page.as_uri() in urls and all(u.startswith(("file://", "data:", "blob:")) for u in urls), urls
    assert all(u.startswith(("data:", "blob:")) for u in resources), resources
    assert not [e for e in console if e["level"] == "SEVERE"], console

    # the label table: the columns --labels reads, the marked samples relabelled to the model's prediction
    paths = pd.read_parquet(digits_run / "paths")
    predicted = paths[paths.epoch.astype(int) == 2].set_index("index").top1_class
    for table in (labels_csv, labels):
        assert list(table.columns) == ["index", "old_label", "new_label", "source", "score"]
        assert table["index"].tolist() == sorted(marked)
        assert table.old_label.tolist() == scores.set_index("index").observed.loc[sorted(marked)].tolist()
        assert table.new_label.tolist() == predicted.loc[sorted(marked)].astype(int).tolist()
        assert set(table.source) == {"model"}
    assert labels["index"].dtype == np.int64 and labels.score.dtype == np.float64
    np.testing.assert_allclose(labels.score, labels_csv.score)

    # the exported list is what a real cg-train --exclude run leaves out
    retrain = tmp_path / "retrain"
    assert train(mnist_small, retrain, "--epochs", "0", "--sample-size", "10", "--noise-type", "symmetric",
                 "--corrupt-fraction", "0.3", "--seed", "1", "--exclude", str(exclude)) == 0
    record = pd.read_parquet(retrain / "corruption.parquet")
    assert record.index[record.removed].tolist() == sorted(marked)
