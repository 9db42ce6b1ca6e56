"""Benchmark: medtl's DICOM series reader against MONAI's ``PydicomReader``.

Synthesizes a CT series (default 200 slices of 512 x 512 int16, RescaleIntercept
-1024, uncompressed) once, then times ``medtl.io.dicom.read_series`` and
``monai.transforms.LoadImage(reader="PydicomReader")`` on the same folder.

Agreement: MONAI stacks ``pixel_array`` (rows, cols) along the last axis and swaps
the first two axes (``swap_ij=True``), giving ``[cols, rows, slices]`` like medtl, and
applies RescaleSlope/Intercept in float32 like medtl; it orders slices by
InstanceNumber, which the synthetic series keeps consistent with position, so the
arrays must be identical and the affines equal (both LPS->RAS).

    python benchmarks/bench_io.py [--dir DIR] [--slices 200] [--size 512] [--repeat 3]
                                  [--out benchmarks/out/bench_io.json]
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, refuse_foreign, script_key, work_folder, write_result  # noqa: E402

SCRIPT = script_key(__file__)


def write_ct_series(folder: Path, slices: int, size: int, seed: int = 0) -> None:
    """A CT series with realistic header size and noisy int16 content."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    study, series = generate_uid(), generate_uid()
    yy, xx = np.mgrid[:size, :size]
    body = ((yy - size / 2) ** 2 + (xx - size / 2) ** 2) < (0.4 * size) ** 2
    for k in range(slices):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, ds.file_meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = study, series, "CT"
        ds.SeriesNumber, ds.InstanceNumber, ds.SeriesDescription = 1, k + 1, "bench"
        ds.ImagePositionPatient = [-180.0, -200.0, 50.0 + 1.25 * k]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing, ds.SliceThickness = [0.7, 0.7], 1.25
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.WindowCenter, ds.WindowWidth = 40, 400
        img = np.where(body, 1024 + 40, 0) + rng.integers(-30, 30, (size, size))
        ds.PixelData = img.astype(np.int16).tobytes()
        ds.save_as(folder / f"slice_{k:04d}.dcm", enforce_file_format=True)


def interleaved(fns: dict, repeat: int) -> tuple[dict[str, list[float]], dict]:
    """Time each function ``repeat`` times, alternating them so machine load hits both alike."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    outs: dict = {}
    for _ in range(repeat):
        for key, fn in fns.items():
            t0 = time.perf_counter()
            outs[key] = fn()
            times[key].append(time.perf_counter() - t0)
    return times, outs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, help="series folder (written there if empty or missing)")
    ap.add_argument("--slices", type=int, default=200)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/bench_io.json"))
    args = ap.parse_args()
    refuse_foreign(args.out, SCRIPT)

    from monai.transforms import LoadImage

    from medtl.io.dicom import read_series

    folder, cleanup = work_folder(args.dir, "medtl-bench-io-")
    if not any(folder.glob("*.dcm")):
        t0 = time.perf_counter()
        write_ct_series(folder, args.slices, args.size)
        print(f"wrote {args.slices} x {args.size}^2 slices to {folder} in {time.perf_counter() - t0:.1f} s")
    n_files = len(list(folder.glob("*.dcm")))

    loader = LoadImage(reader="PydicomReader", image_only=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        read_series(folder, progress=False)  # warm the page cache for both readers
        times, outs = interleaved({
            "medtl": lambda: read_series(folder, progress=False),
            # medtl returns a transposed view of its (k, j, i) buffer; MONAI returns a
            # C-contiguous [i, j, k] copy. Also time medtl plus that copy, to compare like with like.
            "medtl_contiguous": lambda: np.ascontiguousarray(read_series(folder, progress=False).array),
            "monai": lambda: loader(str(folder))}, args.repeat)
    medtl_times, monai_times, scan, img = times["medtl"], times["monai"], outs["medtl"], outs["monai"]

    monai_arr = np.asarray(img)
    identical = bool(monai_arr.shape == scan.array.shape and np.array_equal(monai_arr, scan.array))
    affine_diff = float(np.max(np.abs(np.asarray(img.affine) - scan.affine)))
    best_m, best_n = min(medtl_times), min(monai_times)
    result = {
        "benchmark": "bench_io",
        "command": shlex.join(["python", "benchmarks/bench_io.py", *sys.argv[1:]]),
        "repeat": args.repeat,
        "median_medtl_s": round(float(np.median(medtl_times)), 4),
        "median_monai_s": round(float(np.median(monai_times)), 4),
        "median_medtl_plus_contiguous_copy_s": round(float(np.median(times["medtl_contiguous"])), 4),
        "files": n_files,
        "slice_shape": [args.size, args.size],
        "medtl_read_series_s": [round(t, 4) for t in medtl_times],
        "monai_pydicomreader_s": [round(t, 4) for t in monai_times],
        "note": "best of interleaved runs, page cache warm; 2 shared CPU cores, so expect noise",
        "medtl_best_s": round(best_m, 4),
        "medtl_plus_contiguous_copy_s": [round(t, 4) for t in times["medtl_contiguous"]],
        "medtl_plus_contiguous_copy_best_s": round(min(times["medtl_contiguous"]), 4),
        "monai_best_s": round(best_n, 4),
        "monai_over_medtl_time_ratio": round(best_n / best_m, 3),
        "median_ratio": round(float(np.median(monai_times) / np.median(medtl_times)), 3),
        "arrays_identical": identical,
        "max_affine_abs_diff": affine_diff,
        "shape": list(scan.array.shape),
        "dtype": str(scan.array.dtype),
        "cpu_count": os.cpu_count(),
        "machine": machine(),
        "python": platform.python_version(),
        "pydicom": pydicom.__version__,
    }
    print(f"medtl read_series : best {best_m:.3f} s  {result['medtl_read_series_s']}")
    print(f"medtl + C-contiguous copy: best {min(times['medtl_contiguous']):.3f} s")
    print(f"MONAI PydicomReader: best {best_n:.3f} s  {result['monai_pydicomreader_s']}")
    print(f"MONAI / medtl time ratio: {result['monai_over_medtl_time_ratio']:.2f}x; arrays identical: {identical}; "
          f"max affine diff {affine_diff:.2e}")
    write_result(args.out, result, SCRIPT)
    print(f"wrote {args.out}")
    cleanup()


if __name__ == "__main__":
    main()
