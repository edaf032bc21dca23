"""Benchmark: RSNA-sized DICOMs → TFRecords, against a naive converter and the decode floor.

Generates N RSNA-sized DICOMs (1024 px, JPEG Baseline) with `synth`, then times in
one run:
  (a) naive: pydicom `pixel_array`, Pillow resize, PNG at the default level, one process;
  (b) `python cli.py convert --workers 1`, as a user runs it (a fresh process);
  (c) the same with all cores;
  (d) decode floor: Pillow decoding every encapsulated JPEG frame, one process.
(b) and (d) are timed `--repeats` times, alternating, and the medians reported.
With `--full-rsna`, (e) converts 26,684 patients (the files linked repeatedly, as
many as RSNA has) with all cores and samples the resident memory of the parent
process during the run, to show that memory stays flat.

Writes `benchmarks/out/bench_convert.json` (atomically) and prints the Markdown.

    python -m benchmarks.bench_convert --images 2000 [--full-rsna]
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from benchmarks import common

NAME = "bench_convert"
RSNA_PATIENTS = 26_684


def naive_convert(files: list[Path], size: int) -> None:
    """(a): what a first script would do, one process."""
    import pydicom
    from PIL import Image

    for path in files:
        pixels = pydicom.dcmread(path).pixel_array
        image = Image.fromarray(pixels).resize((size, size))
        image.save(io.BytesIO(), format="PNG")


def decode_floor(files: list[Path]) -> None:
    """(d): only decode each encapsulated JPEG frame at full size, one process."""
    import pydicom
    from PIL import Image

    for path in files:
        ds = pydicom.dcmread(path)
        frame = pydicom.encaps.get_frame(ds.PixelData, 0, number_of_frames=1)
        Image.open(io.BytesIO(frame)).load()


def timed(func, *args, **kwargs) -> float:
    start = time.perf_counter()
    func(*args, **kwargs)
    return time.perf_counter() - start


def rss_mib() -> float:
    """Resident set size of this process now, MiB."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class RssSampler(threading.Thread):
    """Samples this process's RSS every `interval` seconds."""

    def __init__(self, interval: float = 0.5):
        super().__init__(daemon=True)
        self.interval, self.samples, self._stop_event = interval, [], threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.samples.append(rss_mib())
            time.sleep(self.interval)

    def stop(self) -> list[float]:
        self._stop_event.set()
        self.join()
        return self.samples


def link_full_rsna(synth_dir: Path, target: Path, patients: int) -> None:
    """Builds an RSNA-sized folder by hard-linking the synthetic files repeatedly."""
    images = target / "stage_2_train_images"
    images.mkdir(parents=True)
    rows = (synth_dir / "stage_2_train_labels.csv").read_text().splitlines()
    by_patient: dict[str, list[str]] = {}
    for row in rows[1:]:
        by_patient.setdefault(row.split(",")[0], []).append(row)
    sources = sorted(by_patient)
    out_rows = [rows[0]]
    for index in range(patients):
        source = sources[index % len(sources)]
        patient = f"{index:08d}-{source[9:]}"
        os.link(synth_dir / "stage_2_train_images" / f"{source}.dcm", images / f"{patient}.dcm")
        out_rows += [patient + row[len(source) :] for row in by_patient[source]]
    (target / "stage_2_train_labels.csv").write_text("\n".join(out_rows) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000, help="RSNA-sized DICOMs to generate")
    parser.add_argument("--size", type=int, default=256, help="stored image side, px")
    parser.add_argument("--workdir", type=Path, default=None, help="keep generated data here")
    parser.add_argument("--full-rsna", action="store_true", help="also run (e): 26,684 patients")
    parser.add_argument("--repeats", type=int, default=3, help="timings of (b) and (d) each")
    parser.add_argument("--out", type=Path, help="JSON path (default benchmarks/out/NAME.json)")
    args = parser.parse_args(argv)
    machine = common.machine()

    cores = os.cpu_count() or 1
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_convert_"))
    synth_dir = workdir / "synth"
    if not (synth_dir / "stage_2_train_labels.csv").is_file():
        print(f"generating {args.images} RSNA-sized DICOMs in {synth_dir} ...", flush=True)
        from pneumokeras.synth import generate

        generate(synth_dir, patients=args.images, size=1024, seed=0, workers=None, progress=True)
    files = sorted((synth_dir / "stage_2_train_images").glob("*.dcm"))[: args.images]
    n = len(files)
    labels = synth_dir / "stage_2_train_labels.csv"

    def ours(workers: int, limit: int | None = None) -> float:
        """Seconds of `cli.py convert` in a fresh process, start-up included."""
        arguments = [
            "--images",
            str(synth_dir / "stage_2_train_images"),
            "--labels",
            str(labels),
            "--size",
            str(args.size),
            "--workers",
            str(workers),
        ]
        return common.time_convert_cli(arguments, workdir / f"out_{workers}", limit)

    # Warm the page cache so every variant reads from memory.
    for path in files:
        path.read_bytes()
    one_worker, one_worker_tenth, floor = [], [], []
    tenth = max(1, n // 10)
    for _ in range(args.repeats):
        one_worker.append(ours(1))
        one_worker_tenth.append(ours(1, limit=tenth))
        floor.append(timed(decode_floor, files))
    results = {
        "naive": timed(naive_convert, files, args.size),
        "ours_1_worker": statistics.median(one_worker),
        f"ours_{cores}_workers": ours(cores),
        "decode_floor": statistics.median(floor),
    }
    rate = {k: n / v for k, v in results.items()}
    report: dict[str, Any] = {
        "script": NAME,
        "command": common.command_line(argv, NAME),
        "machine": machine,
        "cores": cores,
        "repeats": args.repeats,
        "images": n,
        "stored_size": args.size,
        "seconds": results,
        "repeats_seconds": {
            "ours_1_worker": one_worker,
            "decode_floor": floor,
            f"ours_1_worker_limit_{tenth}": one_worker_tenth,
        },
        "images_per_second": rate,
        "ms_per_image": {k: 1000 * v / n for k, v in results.items()},
        "ratios": {
            "all_cores_vs_naive": rate[f"ours_{cores}_workers"] / rate["naive"],
            "one_worker_per_image_vs_decode_floor": results["ours_1_worker"]
            / results["decode_floor"],
            # Marginal cost of an image: the same command on a tenth of the files
            # (same listing, start-up and TensorFlow import) taken away.
            "one_worker_marginal_per_image_vs_decode_floor": (
                (statistics.median(one_worker) - statistics.median(one_worker_tenth)) / (n - tenth)
            )
            / (results["decode_floor"] / n),
        },
        "targets": {"all_cores_vs_naive_min": 4.0, "one_worker_vs_floor_max": 1.5},
    }
    if args.full_rsna:
        from pneumokeras.records.convert import ConvertOptions, convert

        full = workdir / "full_rsna"
        shutil.rmtree(full, ignore_errors=True)
        link_full_rsna(synth_dir, full, RSNA_PATIENTS)
        sampler = RssSampler()
        sampler.start()
        seconds = timed(
            convert,
            ConvertOptions(
                images=full / "stage_2_train_images",
                out=full / "out",
                labels=full / "stage_2_train_labels.csv",
                size=args.size,
                workers=cores,
            ),
            progress=False,
        )
        samples = sampler.stop()
        quarter = samples[len(samples) // 4 :]
        report["full_rsna"] = {
            "patients": RSNA_PATIENTS,
            "seconds": seconds,
            "images_per_second": RSNA_PATIENTS / seconds,
            "parent_rss_mib": {
                "peak": max(samples),
                "at_25_percent": quarter[0],
                "at_end": samples[-1],
            },
            "worker_peak_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
        }
        shutil.rmtree(full)
    common.finish_machine(machine)
    path = common.write_results(NAME, report, args.out)
    print(render_markdown(report))
    print(f"\nJSON: {path}")


def render_markdown(results: Mapping[str, Any]) -> str:
    """The documentation's section for one run of this script (its JSON)."""
    n, cores, repeats = results["images"], results["cores"], results["repeats"]
    seconds, rate = results["seconds"], results["images_per_second"]
    lines = [
        f"Machine: {common.describe_machine(results['machine'])}.",
        "",
        f"{n} synthetic RSNA-sized DICOMs (1024 px, JPEG Baseline) → "
        f"{results['stored_size']} px PNG TFRecords, page cache warm:",
        "",
        "| variant | images/s | ms/image |",
        "|---|---:|---:|",
    ]
    names = {
        "naive": "(a) naive: pydicom `pixel_array` + Pillow resize + PNG default, 1 process",
        "ours_1_worker": f"(b) `pneumokeras convert --workers 1` (median of {repeats})",
        f"ours_{cores}_workers": f"(c) `pneumokeras convert`, {cores} workers",
        "decode_floor": f"(d) decode floor: Pillow JPEG decode only, 1 process "
        f"(median of {repeats})",
    }
    for key, label in names.items():
        lines.append(f"| {label} | {rate[key]:.1f} | {1000 * seconds[key] / n:.2f} |")
    ratios = results["ratios"]
    lines += [
        "",
        f"- (c) / (a) = {ratios['all_cores_vs_naive']:.2f}× (target ≥ 4).",
        f"- (b) per image / (d) = {ratios['one_worker_per_image_vs_decode_floor']:.2f} "
        "(target ≤ 1.5); the marginal cost of an image (start-up taken away) / (d) = "
        f"{ratios['one_worker_marginal_per_image_vs_decode_floor']:.2f}.",
    ]
    if "full_rsna" in results:
        full = results["full_rsna"]
        lines.append(
            f"- Full RSNA size: {full['patients']:,} patients in {full['seconds']:.0f} s "
            f"({full['images_per_second']:.0f} img/s); parent memory (RSS) peak "
            f"{full['parent_rss_mib']['peak']:.0f} MiB (at 25 %: "
            f"{full['parent_rss_mib']['at_25_percent']:.0f}, at the end: "
            f"{full['parent_rss_mib']['at_end']:.0f}); worker peak "
            f"{full['worker_peak_rss_mib']:.0f} MiB."
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
