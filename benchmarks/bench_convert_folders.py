"""Benchmark: Kermany-sized grayscale JPEGs in class folders → TFRecords (`--layout folders`).

Generates N JPEGs shaped like the Kaggle "Chest X-Ray Images (Pneumonia)" set
(Kermany et al., Cell 2018): `train/NORMAL/IM-xxxx-0001.jpeg` and
`train/PNEUMONIA/personK_bacteria_J.jpeg` (27 % / 73 %, as Kermany's), widths
drawn from 1,400-2,000 px and heights from 1,000-1,600 px, 5 % of them saved as RGB
of a gray picture (Kermany has a few per cent). Pictures: a pool of `synth`
radiographs rendered at 1024 px, scaled to each size and given fresh grain, so
every file differs. Then times:
  (a) `python cli.py convert --layout folders` with all cores, as a user runs it
      (a fresh process: start-up, TensorFlow import and worker spawn included);
  (b) the same with `--workers 1`, on the first N/10 images (`--limit`), and
      its per-image cost without start-up (against a run on N/100);
  (c) decode floor: Pillow decoding N/10 of the JPEGs at full size, one process.

Writes JSON (default benchmarks/out/bench_convert_folders.json) and prints a
Markdown table.

    python benchmarks/bench_convert_folders.py --images 10000
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import common

NAME = "bench_convert_folders"

BASES = 40  # rendered radiographs per generating process
GRAIN = 3.0  # grey levels (σ) of per-file grain
QUALITY = 85  # JPEG quality
RGB_SHARE = 0.05
POSITIVE_SHARE = 0.73  # Kermany: 4,273 pneumonia of 5,856
_bases: list[np.ndarray] = []
_grain: np.ndarray | None = None


def _picture(index: int, seed: int) -> tuple[np.ndarray, bool]:
    """Worker: picture `index` (H, W) uint8 and whether to save it as RGB."""
    from PIL import Image

    from pneumokeras import synth

    global _grain
    if not _bases:
        for base in range(BASES):
            spec = synth.sample_patient(synth.patient_seed(seed, base), synth.CLASSES[base % 3])
            _bases.append(synth.render_image(spec, 1024))
        _grain = np.random.default_rng(seed).normal(0, GRAIN, (2048, 2048)).astype(np.int16)
    rng = np.random.default_rng([seed, index])
    width, height = int(rng.integers(1400, 2001)), int(rng.integers(1000, 1601))
    side = max(width, height)
    big = np.asarray(
        Image.fromarray(_bases[index % BASES]).resize((side, side), Image.Resampling.BILINEAR)
    )
    top, left = (side - height) // 2, (side - width) // 2
    oy, ox = int(rng.integers(0, 2048 - height)), int(rng.integers(0, 2048 - width))
    grain = _grain[oy : oy + height, ox : ox + width]
    crop = big[top : top + height, left : left + width].astype(np.int16) + grain
    return np.clip(crop, 0, 255).astype(np.uint8), bool(rng.random() < RGB_SHARE)


def _name(index: int) -> str:
    """Kermany-like file name: pneumonia `personK_bacteria_J` (1 or 2 per person)."""
    if index % 100 < round(100 * POSITIVE_SHARE):
        kind = "bacteria" if index % 3 else "virus"
        return f"PNEUMONIA/person{index // 2}_{kind}_{index}.jpeg"
    return f"NORMAL/IM-{index:05d}-0001.jpeg"


def _write_one(task: tuple[int, int, str]) -> int:
    """Worker: writes JPEG `index` under `folder`; returns its size in bytes."""
    from PIL import Image

    index, seed, folder = task
    pixels, rgb = _picture(index, seed)
    image = Image.fromarray(pixels)
    if rgb:
        image = image.convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=QUALITY)
    path = Path(folder) / _name(index)
    path.write_bytes(buffer.getvalue())
    return len(buffer.getvalue())


def generate(root: Path, images: int, seed: int = 0) -> dict[str, float]:
    """Writes `images` JPEGs under `root/train/{NORMAL,PNEUMONIA}`; returns their sizes."""
    for label in ("NORMAL", "PNEUMONIA"):
        (root / "train" / label).mkdir(parents=True, exist_ok=True)
    from pneumokeras.utils.workers import WorkerPool

    tasks = [(i, seed, str(root / "train")) for i in range(images)]
    with WorkerPool(os.cpu_count() or 1) as pool:
        sizes = list(pool.imap(_write_one, tasks, chunksize=16))
    return {"mean_kb": float(np.mean(sizes)) / 1024, "total_mb": float(np.sum(sizes)) / 2**20}


def decode_floor(files: list[Path]) -> float:
    """(c): seconds to decode each JPEG at full size with Pillow, one process."""
    from PIL import Image

    start = time.perf_counter()
    for path in files:
        with Image.open(path) as image:
            image.load()
    return time.perf_counter() - start


def cli_convert(data: Path, out: Path, size: int, workers: int, limit: int | None) -> float:
    """Seconds of `cli.py convert --layout folders` in a fresh process."""
    arguments = ["--layout", "folders", "--images", str(data), "--size", str(size),
                 "--workers", str(workers)]  # fmt: skip
    return common.time_convert_cli(arguments, out, limit)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000, help="JPEGs to generate")
    parser.add_argument("--size", type=int, default=256, help="stored image side, px")
    parser.add_argument("--workdir", type=Path, default=None, help="keep generated data here")
    parser.add_argument("--out", type=Path, help="JSON path (default benchmarks/out/NAME.json)")
    args = parser.parse_args(argv)
    machine = common.machine()

    cores = os.cpu_count() or 1
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_convert_folders_"))
    data = workdir / "chest_xray"
    start = time.perf_counter()
    files = sorted(data.rglob("*.jpeg")) if data.is_dir() else []
    if len(files) != args.images:
        shutil.rmtree(data, ignore_errors=True)
        print(f"generating {args.images} Kermany-sized JPEGs in {data} ...", flush=True)
        sizes = generate(data, args.images)
        files = sorted(data.rglob("*.jpeg"))
    else:
        sizes = {"mean_kb": sum(p.stat().st_size for p in files) / len(files) / 1024}
    generation = time.perf_counter() - start
    n, hundredth = len(files), max(20, len(files) // 100)  # 20: enough to split
    tenth = max(2 * hundredth, n // 10)
    for path in files:  # warm the page cache so every variant reads from memory
        path.read_bytes()

    all_cores = cli_convert(data, workdir / "out", args.size, cores, None)
    one_tenth = cli_convert(data, workdir / "out", args.size, 1, tenth)
    one_hundredth = cli_convert(data, workdir / "out", args.size, 1, hundredth)
    floor = decode_floor(files[:tenth])
    marginal_ms = 1000 * (one_tenth - one_hundredth) / (tenth - hundredth)
    report = {
        "script": NAME,
        "command": common.command_line(argv, NAME),
        "machine": machine,
        "cores": cores,
        "images": n,
        "sample": {"tenth": tenth, "hundredth": hundredth},
        "jpeg": {**sizes, "quality": QUALITY, "rgb_share": RGB_SHARE,
                 "width_px": [1400, 2000], "height_px": [1000, 1600]},
        "stored_size": args.size,
        "generation_seconds": generation,
        "seconds": {f"convert_{cores}_workers": all_cores, f"convert_1_worker_{tenth}": one_tenth,
                    f"convert_1_worker_{hundredth}": one_hundredth, f"decode_floor_{tenth}": floor},
        "images_per_second": {f"convert_{cores}_workers": n / all_cores,
                              "convert_1_worker": tenth / one_tenth,
                              "decode_floor": tenth / floor},
        "one_worker_marginal_ms_per_image": marginal_ms,
        "decode_floor_ms_per_image": 1000 * floor / tenth,
    }  # fmt: skip
    common.finish_machine(machine)
    path = common.write_results(NAME, report, args.out)
    print(render_markdown(report))
    print(f"\nJSON: {path}")


def render_markdown(results: Mapping[str, Any]) -> str:
    """The documentation's section for one run of this script (its JSON)."""
    n, cores, tenth = results["images"], results["cores"], results["sample"]["tenth"]
    rate, jpeg = results["images_per_second"], results["jpeg"]
    all_cores = rate[f"convert_{cores}_workers"]
    return "\n".join(
        [
            f"Machine: {common.describe_machine(results['machine'])}.",
            "",
            f"{n:,} synthetic Kermany-sized grayscale JPEGs (mean {jpeg['mean_kb']:.0f} KB, "
            f"{jpeg['width_px'][0]}–{jpeg['width_px'][1]} × {jpeg['height_px'][0]}–"
            f"{jpeg['height_px'][1]} px, quality {jpeg['quality']}, "
            f"{100 * jpeg['rgb_share']:.0f} % saved as RGB) → {results['stored_size']} px PNG "
            "TFRecords with `--layout folders`, page cache warm:",
            "",
            "| variant | images/s | ms/image |",
            "|---|---:|---:|",
            f"| (a) `pneumokeras convert --layout folders`, {cores} workers, {n:,} images | "
            f"{all_cores:.1f} | {1000 / all_cores:.1f} |",
            f"| (b) the same, `--workers 1`, {tenth:,} images (marginal "
            f"{results['one_worker_marginal_ms_per_image']:.1f} ms) | "
            f"{rate['convert_1_worker']:.1f} | {1000 / rate['convert_1_worker']:.1f} |",
            f"| (c) decode floor: Pillow full JPEG decode, 1 process, {tenth:,} images | "
            f"{rate['decode_floor']:.1f} | {results['decode_floor_ms_per_image']:.1f} |",
        ]
    )


if __name__ == "__main__":
    main()
