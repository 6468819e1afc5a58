"""seglab opens no network connection the user did not ask for (issue 41 item 7)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from conftest import TINY

# A child process that records every connect / DNS look-up before seglab (and so albumentations) is imported,
# then trains the tiny config, predicts with its checkpoint and reports what was attempted.
_CHILD = textwrap.dedent("""
    import json, socket, sys
    tried = []
    real_connect = socket.socket.connect

    def connect(self, address, *a, **k):
        if self.family in (socket.AF_INET, socket.AF_INET6):
            tried.append(f"connect {address}")
            raise OSError("network disabled by the test")
        return real_connect(self, address, *a, **k)

    def getaddrinfo(host, *a, **k):
        tried.append(f"getaddrinfo {host}")
        raise OSError("network disabled by the test")

    socket.socket.connect = connect
    socket.getaddrinfo = getaddrinfo
    socket.create_connection = lambda address, *a, **k: tried.append(f"create_connection {address}") or (_ for _ in ()).throw(OSError("off"))
    import seglab
    from seglab.cli import main
    cfg, out, image = sys.argv[1:4]
    rc_train = main(["train", cfg])
    rc_predict = main(["predict", out + "/tiny/checkpoints/best.pt", image, "--out", out + "/pred"])
    print("RESULT " + json.dumps({"tried": tried, "rc": [rc_train, rc_predict]}))
""")


def test_import_train_and_predict_open_no_socket(tmp_path):
    import copy

    import numpy as np
    import yaml
    from PIL import Image

    raw = copy.deepcopy(TINY)
    raw["train"]["epochs"] = 1
    raw["output"]["dir"] = str(tmp_path / "runs")
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    image = tmp_path / "image.png"
    Image.fromarray((np.random.default_rng(0).random((32, 40, 3)) * 255).astype(np.uint8)).save(image)
    env = {k: v for k, v in os.environ.items() if k != "NO_ALBUMENTATIONS_UPDATE"}  # seglab must set it itself
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(cfg), str(tmp_path / "runs"), str(image)],
                          capture_output=True, text=True, env=env, timeout=300)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, proc.stdout + proc.stderr
    result = json.loads(lines[-1][len("RESULT "):])
    assert result["rc"] == [0, 0], proc.stdout + proc.stderr
    assert result["tried"] == []
    assert "Error fetching version info" not in proc.stderr


def test_a_users_own_albumentations_setting_is_kept():
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="0")
    out = subprocess.run([sys.executable, "-c", "import os, seglab; print(os.environ['NO_ALBUMENTATIONS_UPDATE'])"],
                         capture_output=True, text=True, env=env, check=True).stdout.strip()
    assert out == "0"
