"""The report's interactive charts in a real browser (issue 16): headless Chromium at 1400 and 800 px wide;
each chart's plot area lies inside its box and the page, and its x axis shows every epoch. Skips without
a `chromium` on the PATH."""
import copy
import json
import re
import shutil
import subprocess

import pytest

import seglab
from seglab.config import config_from_dict

from conftest import TINY

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on the PATH for the browser check")

PROBE = """<script>
window.addEventListener("load", () => setTimeout(() => {
  const out = [];
  document.querySelectorAll(".js-plotly-plot").forEach(gd => {
    const box = gd.parentElement.getBoundingClientRect();
    const area = (gd.querySelector(".nsewdrag") || gd).getBoundingClientRect();
    const section = gd.closest("section").getBoundingClientRect();
    const xs = gd.data.flatMap(t => (t.x || []).filter(v => typeof v === "number"));
    const xr = gd._fullLayout.xaxis.range;
    out.push({id: gd.id, inside: area.left >= box.left - 1 && area.right <= Math.min(box.right, section.right, innerWidth) + 1,
              all_x: xs.length === 0 || (Math.min(...xs) >= xr[0] && Math.max(...xs) <= xr[1])});
  });
  const pre = document.createElement("pre"); pre.id = "probe"; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
}, 1500));
</script>"""


@pytest.mark.parametrize("width", [1400, 800])
def test_charts_fit_their_boxes_in_chromium(tmp_path_factory, width):
    root = tmp_path_factory.getbasetemp() / "layout"
    report = root / "runs" / "tiny" / "report.html"
    if not report.is_file():
        raw = copy.deepcopy(TINY)
        raw["output"] = {"dir": str(root / "runs"), "name": "tiny"}
        raw["train"].update(epochs=12, estimate_steps=0)
        raw["data"]["synthetic"].update(num_train=8, num_val=4, num_test=2)
        seglab.train(config_from_dict(raw))
    page = report.parent / "probe.html"
    page.write_text(report.read_text().replace("</body>", PROBE + "</body>"))
    dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--window-size={width},1000",
                          "--virtual-time-budget=10000", "--dump-dom", str(page)],
                         capture_output=True, text=True, timeout=180).stdout
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom)
    assert found, "the page's script did not run"
    charts = json.loads(found.group(1).replace("&quot;", '"'))
    assert {c["id"] for c in charts} == {"curve_loss", "curve_metrics"}
    assert all(c["inside"] and c["all_x"] for c in charts), charts
    from seglab.reporting.interactive import BUNDLE

    if BUNDLE.is_file():  # `make install` fetched it
        assert report.stat().st_size < 3_000_000  # plotly's basic bundle (1.2 MB), not the full 4.8 MB plotly.js
