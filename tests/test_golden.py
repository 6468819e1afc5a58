"""Golden outputs: every registered model (and a timm encoder) built from a fixed seed gives the logits
stored in tests/golden/model_logits.json for a fixed input, so a refactor that changes numbers fails here
(as torchvision's `_assert_expected`). After an intended change of a model's numbers:

    .venv/bin/python tests/test_golden.py --update
"""
import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_zoo import FAST  # noqa: E402  (the same small widths as the model-zoo tests)

from seglab.models import create_model, list_models  # noqa: E402

GOLDEN = Path(__file__).resolve().parent / "golden" / "model_logits.json"
CASES = {name: {**FAST.get(name, {})} for name in list_models()}
y_size = 3 * 64 * 64  # values in the logits
CASES["unet_timm_lite0"] = {"encoder": "timm/tf_efficientnet_lite0", "decoder_channels": [32, 16, 16, 8, 8]}


def golden_logits(case: str) -> dict:
    """Seed 0: build the model, then a (1, 3, 64, 64) normal input; eval-mode logits (1, 3, 64, 64), kept
    as their sum, their mean absolute value and a (3, 8, 8) grid of values."""
    options = dict(CASES[case])
    name = "unet" if case == "unet_timm_lite0" else case
    torch.manual_seed(0)
    model = create_model(name, in_channels=3, num_classes=3, **options).eval()
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).double()
    return {"sum": float(y.sum()), "mean_abs": float(y.abs().mean()), "grid": y[0, :, ::8, ::8].flatten().tolist()}


def _recorded() -> dict:
    if not GOLDEN.is_file():
        pytest.fail(f"{GOLDEN} is missing: run python tests/test_golden.py --update")
    return json.loads(GOLDEN.read_text())


@pytest.mark.parametrize("case", sorted(CASES))
def test_model_logits_equal_the_recorded_ones(case):
    recorded = _recorded()
    version = ".".join(torch.__version__.split(".")[:2])
    if recorded["torch"] != version:  # another torch may draw its initial weights differently
        pytest.skip(f"golden logits recorded with torch {recorded['torch']}, this is {version}: "
                    "run python tests/test_golden.py --update and check the diff")
    assert case in recorded["cases"], f"no golden logits for {case}: run python tests/test_golden.py --update"
    want, got = recorded["cases"][case], golden_logits(case)
    # float32 on different CPUs (AVX-512 or not, thread counts) rounds differently in the last bits
    assert got["grid"] == pytest.approx(want["grid"], rel=1e-3, abs=1e-4), case
    assert got["mean_abs"] == pytest.approx(want["mean_abs"], rel=1e-4)
    assert got["sum"] == pytest.approx(want["sum"], rel=1e-3, abs=1e-4 * got["mean_abs"] * y_size)


def test_every_registered_model_has_golden_logits():
    assert set(list_models()) <= set(_recorded()["cases"])


if __name__ == "__main__" and "--update" in sys.argv:
    data = {"torch": ".".join(torch.__version__.split(".")[:2]), "input": "seed 0 model, seed 1 (1, 3, 64, 64) input",
            "cases": {case: golden_logits(case) for case in sorted(CASES)}}
    GOLDEN.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {GOLDEN}: {len(data['cases'])} models")
