"""Render an HTML report in headless Chromium and check every image loaded, no script errors.

Needs only the standard library. The page is copied, two small scripts are injected into
the copy (one records ``error`` events, failed loads and ``console.error`` calls; one writes
the state of every ``<img>`` as JSON into a ``<pre>`` on ``load``), one deliberately missing
image is added as a control, and ``chromium --headless --dump-dom`` runs on the ``file://``
URL with network features off and DNS disabled.
"""

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

CHROMIUM_TIMEOUT_S = 60


def img_sources(page: str) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', page)


_CHECK_HEAD = """<script>
window.__ifskerasErrors = [];
window.addEventListener("error", function (event) {
  var target = event.target;
  window.__ifskerasErrors.push(target && target !== window && target.getAttribute
    ? "failed to load " + target.getAttribute("src") : "error: " + event.message);
}, true);
window.addEventListener("unhandledrejection", function (event) {
  window.__ifskerasErrors.push("unhandled rejection: " + event.reason);
});
var __ifskerasConsoleError = console.error;
console.error = function () {
  window.__ifskerasErrors.push("console.error: " + Array.prototype.join.call(arguments, " "));
  __ifskerasConsoleError.apply(console, arguments);
};
</script>"""
_CHECK_BODY = """<img src="figures/control-missing.png" alt="control">
<script>
window.addEventListener("load", function () {
  var images = Array.prototype.map.call(document.images, function (img) {
    return {src: img.getAttribute("src"), complete: img.complete, naturalWidth: img.naturalWidth};
  });
  var out = document.createElement("pre");
  out.id = "ifskeras-check";
  out.textContent = JSON.stringify({images: images, errors: window.__ifskerasErrors});
  document.body.appendChild(out);
});
</script>"""
_CONTROL = "figures/control-missing.png"


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None




def assert_page_renders(index: Path, work_dir: Path) -> None:
    """Fail unless every image of the page at ``index`` loads in Chromium without errors."""
    site = work_dir / "site"
    shutil.copytree(index.parent, site)
    page = index.read_text(encoding="utf-8")
    n_images = len(img_sources(page))
    assert n_images > 0, "the page has no images"
    checked = page.replace("<head>", "<head>\n" + _CHECK_HEAD, 1).replace("</body>", _CHECK_BODY + "\n</body>", 1)
    (site / "index.html").write_text(checked, encoding="utf-8")
    command = [
        find_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", "--host-resolver-rules=MAP * ~NOTFOUND", f"--user-data-dir={work_dir / 'profile'}",
        "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000", "--dump-dom",
        (site / "index.html").as_uri(),
    ]
    run = subprocess.run(command, capture_output=True, text=True, timeout=CHROMIUM_TIMEOUT_S, check=False)
    found = re.search(r'<pre id="ifskeras-check">(.*?)</pre>', run.stdout, re.S)
    assert found, f"Chromium produced no check result (exit {run.returncode}); stderr tail: {run.stderr[-2000:]}"
    result = json.loads(html.unescape(found.group(1)))
    images = {img["src"]: img for img in result["images"]}
    assert len(result["images"]) == n_images + 1
    # The control proves the check can fail: a missing file is reported, and only that one.
    assert images[_CONTROL]["naturalWidth"] == 0
    assert result["errors"] == [f"failed to load {_CONTROL}"]
    loaded = {src for src, img in images.items() if img["complete"] and img["naturalWidth"] > 0}
    assert loaded == set(images) - {_CONTROL}
    assert "Uncaught" not in run.stderr
