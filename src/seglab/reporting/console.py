"""What the commands print: the text of `inspect`'s summary, `convert`'s conversion, `init`'s detection and
`models`' listing. Each function returns lines; cli.py prints them."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Sequence


def inspect_lines(s: dict[str, Any]) -> list[str]:
    """`seglab inspect`'s summary (api.inspect's dict) as lines."""
    out = [f"classes ({len(s['classes'])}): {', '.join(s['classes'])}; ignore index {s['ignore_index']}"]
    if s.get("sources"):
        out.append(f"merged from {len(s['sources'])} sources (loss.strategy: {s['strategy']}):")
        for src in s["sources"]:
            counts = ", ".join(f"{k} {v}" for k, v in src["samples"].items() if v)
            left = f"; unannotated: {', '.join(src['unannotated'])}" if src["unannotated"] else "; fully labelled"
            out.append(f"  {src['source']} ({src['encoding']} masks): {counts}; annotates {', '.join(src['annotates'])}{left}")
    for name, sp in s["splits"].items():
        out += _split_lines(name, sp)
    out += [f"warning: {w}" for w in s.get("warnings", [])]
    if s["problems"]:
        out.append(f"{len(s['problems'])} problem(s), which would make train refuse the data:")
        out += [f"  - {p}" for p in s["problems"]]
    else:
        out.append("no problems found: every image and mask decoded")
    out.append(f"written: {s['out_dir']}/inspect.json" + (f", {s['sample_grid']}" if s.get("sample_grid") else ""))
    return out


def _split_lines(name: str, sp: dict[str, Any]) -> list[str]:
    sizes = ", ".join(f"{k} ({v})" for k, v in sorted(sp["sizes_wxh"].items(), key=lambda kv: -kv[1])[:5])
    freq = ", ".join(f"{k} {100 * v:.2f}%" for k, v in sp["class_pixel_fraction"].items())
    out = [f"{name}: {sp['samples']} samples, {sp['readable']} readable; sizes WxH: {sizes}",
           f"  class pixels: {freq}; ignored pixels: {sp['ignored_pixels']}"]
    if sp["classes_without_pixels"]:
        out.append(f"  classes with no pixel in this split: {', '.join(sp['classes_without_pixels'])}")
    if sp["image_kinds"]:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(sp["image_kinds"].items(), key=lambda kv: -kv[1]))
        out.append(f"  image files: {kinds}")
    out += [f"  {rule}: {px} px" for rule, px in sp["pixels_decoded_by_rule"].items()]
    return out


def conversion_lines(s: Any) -> list[str]:
    """`seglab convert`'s account of a data.convert.ConvertSummary: masks written, pixels per class, what overlapped
    or was skipped, and the config lines that read the result."""
    from ..data.convert import OVERLAP_RULES

    out = [f"wrote {s.masks} masks to {s.out_dir}/masks; classes: "
           + ", ".join(f"{i} {n} ({s.class_pixels[n]} px)" for i, n in enumerate(s.classes))]
    out += [f"  {note}" for note in s.notes]
    notes = [f"{s.overlapping_pixels} px overlapped"]
    if s.ignored_pixels:
        notes.append(f"{s.ignored_pixels} px -> ignore (255)")
    notes += [f"{n} {what} skipped" for what, n in s.skipped.items()]
    out.append("; ".join(notes))
    other = [r for r in OVERLAP_RULES if r != s.overlap][0]
    losers = {n: v for n, v in s.lost_in_overlaps.items() if v[s.overlap] or v[other]}
    if losers:
        out.append(f"  pixels of each class painted over where regions overlap, --overlap {s.overlap} (used) / {other}: "
                   + ", ".join(f"{n} {v[s.overlap]:,} / {v[other]:,}" for n, v in losers.items()))
    root = Path(s.out_dir).resolve()  # absolute: the config works from any folder and under any data.root
    absent = [n for n in s.classes if not s.class_pixels.get(n)]
    if absent:
        out.append(f"  classes never drawn: {', '.join(absent)} (kept, so class ids stay the tool's; "
                   "absent_classes lets training accept them)")
    extra = f", absent_classes: [{', '.join(absent)}]" if absent else ""
    if s.list_files:
        splits = ", ".join(f"{k}: {{list: {v}}}" for k, v in s.list_files.items())
        out.append(f"config: data: {{kind: folder, root: {root}, {splits}, mask_encoding: index, "
                   f"palette_file: label_colors.txt{extra}}}")
    else:
        out.append(f"config: data: {{kind: folder, train: {{images: YOUR_IMAGE_FOLDER, masks: {root}/masks}}, "
                   "mask_encoding: index, "
                   f"palette_file: {root}/label_colors.txt{extra}}}")
    return out


def detection_lines(out: Path, det: Any) -> list[str]:
    """`seglab init`'s account of a workflows.init_config detection: what it found and could not decide."""
    counts = ", ".join(f"{n} {s}" for s, n in det.num_images.items())
    return ([f"{det.root}: {counts} images"] + [f"  found: {line}" for line in det.found]
            + [f"  not decided: {line}" for line in det.undecided] + [f"wrote {out}; check it with: seglab inspect {out}"])


def _options_text(defaults: dict[str, Any], hidden: Sequence[str] = ()) -> str:
    shown = [f"{k}={list(v) if isinstance(v, tuple) else v}" for k, v in defaults.items() if k not in hidden]
    return " ".join(shown) or "-"


def timm_encoder_lines(names: list[str]) -> list[str]:
    """`seglab models --encoders`: the matching timm encoder names and the models they go under."""
    from ..models.encoder_table import TIMM_ANY
    from ..registry import MODEL_ENCODERS

    under = ", ".join(m for m, encs in MODEL_ENCODERS.items() if TIMM_ANY in encs)
    return names + [f"{len(names)} timm encoders (model.encoder: timm/NAME, under {under})"]


def model_listing() -> Iterator[str]:
    """`seglab models`: each model with its size, encoders and `model.*` options, each loss with its `loss.*`
    options, each loss.strategy with the losses it has a form of. The header comes before torch's import."""
    yield f"{'model':<14} {'params':>9} {'GFLOPs@512':>11}  encoders (default first)"
    from ..losses import list_losses, list_strategies, loss_options, strategy_forms
    from ..models import describe_model, list_models, model_options

    for name in list_models():
        d = describe_model(name)
        encs = list(d["encoders"])
        if d["default_encoder"] in encs:
            encs.remove(d["default_encoder"])
            encs.insert(0, d["default_encoder"])
        text = ", ".join(encs) if encs else "-"
        if name == "unet":
            text = "none (from scratch) or " + text
        yield f"{name:<14} {d['parameters'] / 1e6:>8.2f}M {d['gflops_512']:>11.1f}  {text}"
        # encoder is listed above; condition_channels is set by the conditional strategy, not by hand
        hidden = ("in_channels", "num_classes", "encoder", "condition_channels")
        yield f"{'':<14} options: {_options_text(model_options(name), hidden)}"
    yield f"\n{'loss':<14} options (loss.*, defaults)"
    for name in list_losses():
        yield f"{name:<14} {_options_text(loss_options(name))}"
    yield "\nloss.strategy (how the losses above read the labels), with the losses each has a form of:"
    for name in list_strategies():
        yield f"{name:<18} {', '.join(strategy_forms(name)) or 'every loss'}"
