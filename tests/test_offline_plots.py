"""Offline plots: `make offline-plots`'s template, checked in a real headless Chromium.

The browser is driven over the DevTools protocol on a pipe (no extra package): it logs every request the
page makes and reads back each chart's pixels. Host name resolution is switched off, so no request can
leave the machine whatever the page asks for. Set OFFLINE_PLOTS_SCREENSHOT=<file.png> to keep a full-page
screenshot of the offline page."""

from __future__ import annotations

import base64
import fcntl
import json
import os
import re
import select
import shutil
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import dvc, edit_params, git_commit, run_module
from pipeline.runtime import UserError
from tools import offline_plots

CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-extensions", "--hide-scrollbars",
         "--host-resolver-rules=MAP * ~NOTFOUND"]  # nothing resolves: no request reaches another machine
# Whether the chart in the element of each id is drawn: a canvas with a painted pixel, or an SVG with a mark.
CHARTS_JS = """JSON.stringify(Object.fromEntries(%s.map(id => {
    const div = document.getElementById(id), canvas = div && div.querySelector('canvas');
    let drawn = !!(div && div.querySelector('svg.marks') && div.querySelector('svg.marks').querySelector('path, rect, text'));
    if (canvas && canvas.width && canvas.height) {
      const pixels = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
      for (let i = 3; i < pixels.length && !drawn; i += 4) drawn = pixels[i] > 0;
    }
    return [id, drawn];
  })))"""
# DVC's page holds one `var spec = {...}; vegaEmbed('#<id>', spec);` per chart
EMBED = re.compile(r"var spec = (.*?);\s*vegaEmbed\('#([^']+)', spec\);", re.DOTALL)


def chart_ids(html: str) -> list[str]:
    """The id of every chart DVC wrote into a page, but the empty ones it writes for folders of images."""
    return [chart_id for spec, chart_id in EMBED.findall(html) if spec.strip() != "{}"]


class Chromium:
    """Headless Chromium with the DevTools protocol on fds 3 and 4 (--remote-debugging-pipe)."""

    def __init__(self, profile: Path) -> None:
        to_browser, self._commands = os.pipe()
        self._replies, from_browser = os.pipe()

        def child_fds() -> None:  # the browser reads commands on fd 3 and writes replies on fd 4
            low = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_browser, from_browser)]
            os.dup2(low[0], 3)
            os.dup2(low[1], 4)

        self.process = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe",
                                         "about:blank"], pass_fds=(3, 4), preexec_fn=child_fds,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_browser)
        os.close(from_browser)
        self._next_id, self._buffer, self.events = 0, b"", []
        target = self.send("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.send("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]

    def send(self, method: str, session: str | None = None, **params: Any) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params, **({"sessionId": session} if session else {})}
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read(deadline=time.monotonic() + 60)
            if reply.get("id") == self._next_id:
                assert "error" not in reply, f"{method}: {reply['error']}"
                return reply["result"]
            self.events.append(reply)

    def on_page(self, method: str, **params: Any) -> dict:
        return self.send(method, self.session, **params)

    def wait_for(self, event: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not any(e.get("method") == event for e in self.events):
            self.events.append(self._read(deadline))

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._replies], [], [], max(0.0, deadline - time.monotonic()))
            assert ready, "Chromium did not answer in time"
            chunk = os.read(self._replies, 1 << 20)
            assert chunk, "Chromium closed its DevTools pipe"
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def close(self) -> None:
        try:
            self.send("Browser.close")
        finally:
            self.process.wait(timeout=30)
            os.close(self._commands)
            os.close(self._replies)


def render(page: Path, profile: Path, screenshot: Path | None = None) -> tuple[dict[str, bool], list[str]]:
    """Open `page` in headless Chromium; return whether each chart is drawn (by id) and the URL of every
    request the page made."""
    script = CHARTS_JS % json.dumps(chart_ids(page.read_text()))
    browser = Chromium(profile)
    try:
        browser.on_page("Network.enable")
        browser.on_page("Page.enable")
        browser.on_page("Emulation.setDeviceMetricsOverride", width=1400, height=900, deviceScaleFactor=1, mobile=False)
        browser.on_page("Page.navigate", url=page.as_uri())
        browser.wait_for("Page.loadEventFired")
        deadline = time.monotonic() + 10
        while True:  # vega-embed draws asynchronously
            drawn = json.loads(browser.on_page("Runtime.evaluate", expression=script)["result"]["value"])
            if all(drawn.values()) or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        if screenshot is not None:
            height = browser.on_page("Page.getLayoutMetrics")["cssContentSize"]["height"]
            browser.on_page("Emulation.setDeviceMetricsOverride", width=1400, height=int(height), deviceScaleFactor=1,
                            mobile=False)
            shot = browser.on_page("Page.captureScreenshot", format="png")
            screenshot.write_bytes(base64.b64decode(shot["data"]))
        requests = [e["params"]["request"]["url"] for e in browser.events if e.get("method") == "Network.requestWillBeSent"]
    finally:
        browser.close()
    return drawn, requests


@pytest.fixture(scope="module")
def two_commits(tiny_trained_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny project with a second commit whose figures differ (plot.grid_size), configured for offline
    plots by the tool, as `make offline-plots` does."""
    repo = tmp_path_factory.mktemp("plots") / "repo"
    shutil.copytree(tiny_trained_repo, repo, symlinks=True)
    edit_params(repo, plot__grid_size=4)
    dvc("repro", cwd=repo)
    git_commit(repo, "smaller prediction grids")
    done = run_module("tools.offline_plots", "--repo", repo, timeout=None)
    if done.returncode != 0 and ("npm not found" in done.stderr or "npm pack" in done.stderr):
        pytest.skip(f"cannot fetch Vega's npm packages: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    return repo


@pytest.mark.e2e
@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (Debian: apt-get install chromium)")
def test_plots_diff_renders_offline(two_commits: Path, tmp_path: Path) -> None:
    """Every chart of `dvc plots diff HEAD~1` draws, and the page requests nothing but its own files. The
    same page from DVC's default template, in the same browser, asks a CDN for its scripts and draws
    nothing: the check can tell."""
    offline = tmp_path / "offline"
    dvc("plots", "diff", "HEAD~1", "-o", str(offline), cwd=two_commits)
    html = (offline / "index.html").read_text()
    assert "<script src=" not in html and 'src="http' not in html and 'href="http' not in html
    drawn, requests = render(offline / "index.html", tmp_path / "profile", os.environ.get("OFFLINE_PLOTS_SCREENSHOT")
                             and Path(os.environ["OFFLINE_PLOTS_SCREENSHOT"]))
    expected = {"Validation_loss_per_epoch", "Train_accuracy_per_epoch", "results_mnist-5k_mlp_confusion_json"}
    assert expected <= set(drawn), drawn
    assert [chart for chart, done in drawn.items() if not done] == []
    assert any(url.startswith("file:") and url.endswith(".png") for url in requests), requests  # the figures
    assert [url for url in requests if url.split(":", 1)[0] not in ("file", "data", "blob", "about")] == []

    default = tmp_path / "default"
    (two_commits / ".dvc" / "config.local").rename(tmp_path / "config.local")  # DVC's own page, with its CDN tags
    try:
        dvc("plots", "diff", "HEAD~1", "-o", str(default), cwd=two_commits)
    finally:
        (tmp_path / "config.local").rename(two_commits / ".dvc" / "config.local")
    drawn, requests = render(default / "index.html", tmp_path / "profile-default")
    assert any(url.startswith("https://cdn.jsdelivr.net/") for url in requests), requests
    assert expected <= set(drawn) and not any(drawn.values()), drawn


def fake_tarball(path: Path, member: str, code: str) -> Path:
    source = path.parent / "build.js"
    source.write_text(code)
    with tarfile.open(path, "w:gz") as archive:
        archive.add(source, arcname=member)
    return path


def test_tarball_must_match_its_pin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tarball = fake_tarball(tmp_path / "vega.tgz", "package/build/vega.min.js", "var vega = {};")
    with pytest.raises(UserError, match=r"vega@5\.33\.1: tarball checksum sha512-.* does not match the pinned sha512-"):
        offline_plots.verified_build("vega", tarball)
    monkeypatch.setitem(offline_plots.PACKAGES, "vega", ("5.33.1", offline_plots.integrity(tarball.read_bytes()),
                                                         "package/build/vega.min.js"))
    assert offline_plots.verified_build("vega", tarball) == "var vega = {};"


@pytest.mark.parametrize("code", ["x = '</script>'", "x = '{plot_divs}'"])
def test_library_that_cannot_be_inlined_is_refused(code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tarball = fake_tarball(tmp_path / "vega.tgz", "package/build/vega.min.js", code)
    monkeypatch.setitem(offline_plots.PACKAGES, "vega", ("5.33.1", offline_plots.integrity(tarball.read_bytes()),
                                                         "package/build/vega.min.js"))
    with pytest.raises(UserError, match="cannot be inlined"):
        offline_plots.verified_build("vega", tarball)


def test_not_a_dvc_project_is_one_line(tmp_path: Path) -> None:
    done = run_module("tools.offline_plots", "--repo", tmp_path)
    assert done.returncode == 2
    assert done.stderr == f"error: --repo {tmp_path}: not a DVC project (no .dvc folder)\n"
