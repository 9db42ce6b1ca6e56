"""Peak memory and time per hostile input, and a seeded fuzz run over the real DICOM corpus.

    python benchmarks/bench_hostile.py                 # bombs (big) + 1000 fuzz cases
    python benchmarks/bench_hostile.py --fuzz 2000 --seed 7 --all-sources
    python benchmarks/bench_hostile.py --small --fuzz 0  # only the quick bomb cases

Each bomb case runs ``medtl.io.load_scan`` in a fresh subprocess; its peak RSS is the
child's own ``ru_maxrss`` (``os.wait4``), its time the wall clock of the child (imports
included; the ``baseline`` row is a valid 9 KB file, for comparison). Children run under
an address-space limit (``--rlimit-gb``) so that a regression cannot take the machine down.

The fuzz run mutates files of ``../shared/data/dicom`` (see ``tests/io/hostile.py``) and
feeds them to a worker subprocess with a per-case time budget (``--budget-s``): a case
over budget is a hang (the worker is killed and restarted). It counts outcomes by
exception type; anything other than medtl's ``ScanError`` family is a failure.

Prints a table and writes ``benchmarks/results/hostile.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import select
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import refuse_foreign, script_key, write_result  # noqa: E402

SCRIPT = script_key(__file__)
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("MEDTL_SHARED_DIR", REPO.parent / "shared"))

from tests.io.hostile import Case, bomb_cases, fuzz_cases  # noqa: E402

CHILD = r"""
import json, sys, time, warnings
t0 = time.perf_counter()
from medtl.errors import ScanError
from medtl.io import load_scan
t1 = time.perf_counter()
out = {"import_s": t1 - t0}
try:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scan = load_scan(sys.argv[1])
    out.update(outcome="ok", shape=list(scan.shape), message=str(scan.metadata.get("spacing_note", "")))
except ScanError as exc:
    out.update(outcome=type(exc).__name__, message=str(exc)[:240])
except BaseException as exc:
    out.update(outcome="FOREIGN " + type(exc).__name__, message=str(exc)[:240])
out["load_s"] = time.perf_counter() - t1
print(json.dumps(out))
"""

WORKER = r"""
import json, sys, warnings
from medtl.errors import ScanError
from medtl.io import load_scan
for line in sys.stdin:
    path = line.strip()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            load_scan(path)
        kind = "ok"
    except ScanError as exc:
        kind = type(exc).__name__
        if "\n" in str(exc):
            kind = "MULTILINE " + kind
    except BaseException as exc:
        kind = "FOREIGN " + type(exc).__name__ + ": " + str(exc)[:160].replace("\n", " ")
    print(kind, flush=True)
"""

SMALL_SOURCES = ["emri_small.dcm", "emri_small_RLE.dcm", "emri_small_big_endian.dcm",
                 "emri_small_jpeg_ls_lossless.dcm", "emri_small_jpeg_2k_lossless.dcm",
                 "emri_small_jpeg_2k_lossless_too_short.dcm", "JPEG-LL.dcm", "liver.dcm", "liver_rle.dcm",
                 "liver_deflate.dcm", "liver_expb.dcm", "liver_j2k.dcm", "eCT_Supplemental.dcm", "bad_sequence.dcm",
                 "US1_UNCR.dcm", "MR2_UNCR.dcm", "MR2_UNCI.dcm"]


def _limit(gb: float):
    def apply() -> None:
        cap = int(gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    return apply


def run_child(path: Path, timeout: float, rlimit_gb: float) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=_limit(rlimit_gb), cwd=REPO)
    deadline = t0 + timeout
    timed_out = False
    while True:  # wait4, not poll(): the child's own rusage (peak RSS) comes with its exit status
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            proc.kill()
            _, status, usage = os.wait4(proc.pid, 0)
            timed_out = True
            break
        time.sleep(0.01)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    stdout = proc.stdout.read().decode() if proc.stdout else ""
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    try:
        out = json.loads(stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        out = {"outcome": "hang" if timed_out else f"crashed rc={proc.returncode}",
               "message": stderr.strip().splitlines()[-1][:240] if stderr.strip() else ""}
    out.update(wall_s=round(wall, 3), peak_rss_mib=round(usage.ru_maxrss / 1024, 1))
    return out


def bombs(args: argparse.Namespace, workdir: Path) -> list[dict]:
    from pydicom.data import get_testdata_file

    t0 = time.perf_counter()
    cases = [Case("baseline_valid_9kb_dicom", Path(get_testdata_file("MR_small.dcm")), "a valid file", "ok")]
    cases += bomb_cases(workdir / "bombs", small=args.small)
    print(f"corpus written in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    rows = []
    for case in cases:
        size = sum(p.stat().st_size for p in ([case.path] if case.path.is_file() else case.path.rglob("*")))
        res = run_child(case.path, args.budget_s * 4, args.rlimit_gb)
        res.update(case=case.name, issue=case.issue, file_bytes=size, expected=case.expect)
        rows.append(res)
        print(f"{case.name:44s} {size:>12,d} B {res['outcome']:18s} {res['wall_s']:7.2f} s {res['peak_rss_mib']:8.1f} MiB",
              file=sys.stderr)
    return rows


def fuzz(args: argparse.Namespace, workdir: Path) -> dict:
    names = sorted(p.name for p in (SHARED / "data/dicom").glob("*.dcm")) if args.all_sources else SMALL_SOURCES
    sources = [SHARED / "data/dicom" / n for n in names if (SHARED / "data/dicom" / n).exists()]
    if not sources:
        return {"skipped": f"no DICOM files in {SHARED / 'data/dicom'}"}
    counts: dict[str, int] = {}
    foreign: list[str] = []
    hangs: list[str] = []
    slowest = (0.0, "")
    worker = None
    t_start = time.perf_counter()

    def start() -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-c", WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True, bufsize=1, preexec_fn=_limit(args.rlimit_gb),
                                cwd=REPO)

    case_dir = workdir / "fuzz"
    case_dir.mkdir(parents=True, exist_ok=True)
    for i, src, desc, data in fuzz_cases(sources, args.fuzz, seed=args.seed):
        path = case_dir / f"case{i:05d}.dcm"
        path.write_bytes(data)
        if worker is None or worker.poll() is not None:
            worker = start()
        t0 = time.perf_counter()
        worker.stdin.write(str(path) + "\n")
        worker.stdin.flush()
        ready, _, _ = select.select([worker.stdout], [], [], args.budget_s)
        line = worker.stdout.readline().strip() if ready else ""
        took = time.perf_counter() - t0
        if not ready:
            kind = "hang"
            hangs.append(f"{src} {desc}")
            worker.kill()
            worker.wait()
            worker = None
        elif not line:
            kind = "crash"
            foreign.append(f"{src} {desc}: worker died (rc {worker.poll()})")
            worker = None
        else:
            kind = line.split(":")[0]
            if line.startswith(("FOREIGN", "MULTILINE")):
                foreign.append(f"{src} {desc}: {line}")
        if took > slowest[0]:
            slowest = (took, f"{src} {desc}")
        counts[kind] = counts.get(kind, 0) + 1
        path.unlink()
    if worker is not None:
        worker.stdin.close()
        worker.wait()
    return {"cases": args.fuzz, "seed": args.seed, "sources": [p.name for p in sources], "outcomes": counts,
            "foreign_exceptions": foreign, "hangs": hangs, "budget_s": args.budget_s,
            "slowest_case_s": round(slowest[0], 3), "slowest_case": slowest[1],
            "seconds": round(time.perf_counter() - t_start, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="only the quick bomb cases (no GiB-sized bombs)")
    ap.add_argument("--fuzz", type=int, default=1000, help="mutated DICOM cases (0: none)")
    ap.add_argument("--seed", type=int, default=18)
    ap.add_argument("--all-sources", action="store_true", help="mutate every shared DICOM (slow J2K ones too)")
    ap.add_argument("--budget-s", type=float, default=30.0, help="time budget per fuzz case (a hang beyond it)")
    ap.add_argument("--rlimit-gb", type=float, default=6.0, help="address-space limit of each child")
    ap.add_argument("--out", default=str(REPO / "benchmarks/results/hostile.json"))
    args = ap.parse_args()
    refuse_foreign(args.out, SCRIPT)
    with tempfile.TemporaryDirectory(prefix="medtl-hostile-") as tmp:
        rows = bombs(args, Path(tmp))
        fz = fuzz(args, Path(tmp)) if args.fuzz > 0 else {"skipped": "--fuzz 0"}
    print(f"\n{'case':44s} {'file':>12s} {'outcome':18s} {'time s':>7s} {'peak RSS MiB':>12s}")
    for r in rows:
        print(f"{r['case']:44s} {r['file_bytes']:>12,d} {r['outcome']:18s} {r['wall_s']:7.2f} {r['peak_rss_mib']:12.1f}")
    if "outcomes" in fz:
        print(f"\nfuzz: {fz['cases']} cases (seed {fz['seed']}, {len(fz['sources'])} sources) in {fz['seconds']} s: "
              f"{json.dumps(fz['outcomes'], sort_keys=True)}; foreign exceptions {len(fz['foreign_exceptions'])}, "
              f"hangs {len(fz['hangs'])} (budget {fz['budget_s']} s), slowest {fz['slowest_case_s']} s")
        for line in (fz["foreign_exceptions"] + fz["hangs"])[:20]:
            print("  " + line)
    else:
        print(f"\nfuzz: {fz.get('skipped')}")
    out = Path(args.out)
    write_result(out, {"command": shlex.join(["python", "benchmarks/bench_hostile.py", *sys.argv[1:]]),
                       "python": sys.version.split()[0], "cases": rows, "fuzz": fz}, SCRIPT, indent=1)
    print(f"wrote {out}")
    bad = [r for r in rows if r["outcome"].startswith(("FOREIGN", "crashed", "hang"))]
    return 1 if bad or fz.get("foreign_exceptions") or fz.get("hangs") else 0


if __name__ == "__main__":
    raise SystemExit(main())
