"""Benchmarks: planning and conversion, each against baselines measured in the same run.

    python benchmarks/run.py [--repeats 3] [--skip-conversion] [--data bench-data]

Planning: on every bundled reference layout, ``make_plan`` (lint on, as users
call it) against a naive loop over ``pipeline.apply`` in the same run; on
synthetic fine-tuned data2vec-audio key sets (10k, 100k keys), against the
seed's ``recursively_load_weights`` decisions (``benchmarks/seed_style.py``).

Conversion: a fairseq data2vec-audio CTC checkpoint of a large wav2vec2-style
layout (24 layers x 1024, ~1.26 GB float32, random values) converted by wmap,
by a plain ``torch.load`` + ``safetensors`` save of the same tensors (the
physical baseline), and by the seed's method (random-init model, load,
assign, ``save_pretrained``). Each run is a fresh process; peak memory is the
process's whole peak RSS (VmHWM, imports included) and its peak anonymous memory (RssAnon,
sampled every 2 ms), both against the checkpoint's size.

Export: the converted directory back to a fairseq checkpoint by ``wmap export``,
against the physical baseline the other way (``safetensors`` load, the same
keys renamed by a dict lookup, ``torch.save``), measured the same way.
Whole-process conversion (#29): ``wmap convert`` as the user runs it, cold and of a kind seen, against a
plain load + save script, each a fresh process, paired round by round.
Start-up (#29): ``wmap preview`` of a bundled reference layout and ``wmap models`` as whole processes,
against ``python -c "import torch"`` in the same run (paired, A B A B), the baseline #29's preview
target is a ratio of. Figures are medians over ``--repeats`` runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.originals import LARGE_ENCODER  # noqa: E402

LAYER_KEYS = (
    ("self_attn.k_proj", "attention.k_proj"),
    ("self_attn.v_proj", "attention.v_proj"),
    ("self_attn.q_proj", "attention.q_proj"),
    ("self_attn.out_proj", "attention.out_proj"),
    ("self_attn_layer_norm", "layer_norm"),
    ("fc1", "feed_forward.intermediate_dense"),
    ("fc2", "feed_forward.output_dense"),
    ("final_layer_norm", "final_layer_norm"),
)
SRC = "w2v_encoder.w2v_model."
DST = "data2vec_audio."


def key_sets(n_keys: int) -> tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]]:
    """Source (fairseq CTC names) and target (transformers names) layouts with ``n_keys`` keys."""
    source: dict[str, tuple[int, ...]] = {}
    target: dict[str, tuple[int, ...]] = {}
    layer = 0
    while len(source) < n_keys:
        for old, new in LAYER_KEYS:
            for leaf in ("weight", "bias"):
                # one shape object per key, as layouts read from files and models have (not one shared constant)
                source[f"{SRC}encoder.layers.{layer}.{old}.{leaf}"] = tuple([8])
                target[f"{DST}encoder.layers.{layer}.{new}.{leaf}"] = tuple([8])
        layer += 1
    return source, target


def median_time(function: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def paired_medians(first: Callable[[], object], second: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Medians of two functions timed in turn (A B A B ...), so that drift hits both alike."""
    a: list[float] = []
    b: list[float] = []
    for _ in range(repeats):
        for function, times in ((first, a), (second, b)):
            start = time.perf_counter()
            function()
            times.append(time.perf_counter() - start)
    return statistics.median(a), statistics.median(b)


def planning(repeats: int) -> dict[str, Any]:
    """Synthetic data2vec-audio key sets: ``make_plan`` (lint on) against the seed's decisions."""
    from transformers import Data2VecAudioConfig

    from benchmarks.seed_style import seed_decisions
    from wmap.models.data2vec_audio import ctc_pipeline
    from wmap.planner import make_plan

    pipeline = ctc_pipeline(Data2VecAudioConfig(), {})
    rows: dict[str, Any] = {}
    for n in (10_000, 100_000):
        source, target = key_sets(n)
        plan = make_plan(pipeline, source, target)
        assert plan.is_clean(), plan.problems(limit=3)
        decisions, unused = seed_decisions(source)
        assert not unused and len(decisions) == len(source)
        wmap_s = median_time(partial(make_plan, pipeline, source, target), repeats)
        seed_s = median_time(partial(seed_decisions, source), repeats)
        rows[str(n)] = {"keys": len(source), "wmap_s": wmap_s, "seed_s": seed_s, "speedup": seed_s / wmap_s}
    rows["scaling_100k_over_10k"] = rows["100000"]["wmap_s"] / rows["10000"]["wmap_s"]
    rows["bundled"] = bundled_layouts(max(repeats, 15))
    return rows


def naive_plan(pipeline: Any, source: Mapping[str, Any], target: Mapping[str, Any]) -> list[object]:
    """The floor: ``pipeline.apply`` on every key, nothing else."""
    return [pipeline.apply(key, target) for key in source]


def bundled_layouts(repeats: int) -> dict[str, dict[str, float]]:
    """For each bundled reference layout: ``make_plan`` (lint on, as users call it) against a naive loop
    over ``pipeline.apply``, timed alternately in the same run; the plans' decisions must agree."""
    from wmap.layout import build_on_meta, layout_of
    from wmap.models import registered
    from wmap.planner import make_plan

    rows: dict[str, dict[str, float]] = {}
    for spec in registered():
        layout, meta = spec.reference_layout().unwrap()
        config = spec.config_from_checkpoint(meta, layout).unwrap().config
        target = layout_of(build_on_meta(partial(spec.build, config)))
        pipeline = spec.pipeline(config, meta)
        plan_s, naive_s = paired_medians(
            partial(make_plan, pipeline, layout, target), partial(naive_plan, pipeline, layout, target), repeats
        )
        rows[spec.name] = {"keys": len(layout), "make_plan_s": plan_s, "naive_s": naive_s, "ratio": plan_s / naive_s}
    return rows


# --- conversion -----------------------------------------------------------------------------------

BIG = {
    **LARGE_ENCODER,
    "pos_conv_depth": 5,
    "conv_pos": 95,
    "conv_pos_groups": 16,
    "layer_norm_first": False,
}


def make_checkpoint(path: Path) -> int:
    """A fairseq data2vec-audio CTC checkpoint of the big layout, built by fairseq itself (random values)."""
    if not path.exists():
        import tempfile

        from tests.originals import data2vec_audio_config, data2vec_ctc_original, save_fairseq_checkpoint

        with tempfile.TemporaryDirectory() as data:
            model, saved = data2vec_ctc_original(data2vec_audio_config(**BIG), 32, Path(data))
        path.parent.mkdir(parents=True, exist_ok=True)
        save_fairseq_checkpoint(path, saved, model)
    return path.stat().st_size


WORKERS = {
    "wmap": """
from wmap.conversion import convert
result = convert("data2vec_audio_ctc", CKPT, OUT, processor_file=DICT)
assert result.unwrap()
""",
    "raw copy": """
import torch
from safetensors.torch import save_file
state = torch.load(CKPT, weights_only=True, map_location="cpu")["model"]
os.makedirs(OUT)
save_file(state, os.path.join(OUT, "model.safetensors"))
""",
    "seed style": """
import torch
from transformers import Data2VecAudioForCTC
from benchmarks.seed_style import seed_assign
from wmap.models.data2vec_audio import DATA2VEC_AUDIO_CTC
from wmap.layout import tensors_layout
checkpoint = torch.load(CKPT, weights_only=True, map_location="cpu")
translated = DATA2VEC_AUDIO_CTC.config_from_checkpoint({"cfg": checkpoint["cfg"]}, tensors_layout(checkpoint["model"]))
config = translated.unwrap().config
model = Data2VecAudioForCTC(config)
with torch.no_grad():
    seed_assign(checkpoint["model"], model)
model.save_pretrained(OUT)
""",
}

EXPORT_WORKERS = {
    "wmap export": """
from wmap.way_back import export
os.makedirs(OUT)
assert export("data2vec_audio_ctc", CKPT, os.path.join(OUT, "checkpoint.pt")).unwrap()
""",
    "raw copy back": """
import torch
from safetensors.torch import load_file
names = json.load(open(DICT))  # transformers key -> fairseq key
state = load_file(os.path.join(CKPT, "model.safetensors"))
os.makedirs(OUT)
torch.save({"model": {names[k]: v for k, v in state.items()}}, os.path.join(OUT, "checkpoint.pt"))
""",
}
"""CKPT is the converted directory, DICT the forward plan's key map (its inverse is the baseline's)."""

PRELUDE = """
import json, os, resource, sys, threading, time
sys.path.insert(0, {root!r}); sys.path.insert(0, {src!r})
import torch, transformers, safetensors  # imported before the clock starts (their memory counts)
from transformers import Data2VecAudioForCTC
import wmap.conversion
CKPT, OUT, DICT = {ckpt!r}, {out!r}, {dict!r}
def status(field):
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith(field))
anon_peak = [status("RssAnon:")]
sampling = threading.Event()
def sample():  # RssAnon has no high-water mark of its own: sampled every 2 ms
    while not sampling.wait(0.002):
        anon_peak[0] = max(anon_peak[0], status("RssAnon:"))
sampler = threading.Thread(target=sample, daemon=True)
sampler.start()
start = time.perf_counter()
"""
EPILOGUE = """
elapsed = time.perf_counter() - start
sampling.set(); sampler.join()
anon_peak[0] = max(anon_peak[0], status("RssAnon:"))
print(json.dumps({"seconds": elapsed, "peak_bytes": status("VmHWM:"), "anon_peak_bytes": anon_peak[0]}))
"""


def timed(workers: Mapping[str, str], source: Path, extra: Path, data: Path, repeats: int) -> dict[str, Any]:
    """Each worker ``repeats`` times in a fresh process: median seconds, VmHWM and peak RssAnon."""
    results: dict[str, Any] = {}
    for name, body in workers.items():
        runs = []
        for _ in range(repeats):
            out = data / "out"
            shutil.rmtree(out, ignore_errors=True)
            code = PRELUDE.format(
                root=str(ROOT), src=str(ROOT / "src"), ckpt=str(source), out=str(out), dict=str(extra)
            )
            done = subprocess.run(
                [sys.executable, "-c", code + body + EPILOGUE], capture_output=True, text=True, check=False
            )
            if done.returncode != 0:
                raise RuntimeError(f"{name} failed:\n{done.stderr[-3000:]}")
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
            shutil.rmtree(out, ignore_errors=True)
        results[name] = {
            "seconds": statistics.median(r["seconds"] for r in runs),
            "peak_bytes": statistics.median(r["peak_bytes"] for r in runs),
            "anon_peak_bytes": statistics.median(r["anon_peak_bytes"] for r in runs),
        }
    return results


def ratios(results: dict[str, Any], baseline: str, size: int) -> dict[str, Any]:
    """Time against ``baseline``'s, peaks against the model's bytes."""
    for row in results.values():
        if isinstance(row, dict):
            row["time_vs_raw"] = row["seconds"] / results[baseline]["seconds"]
            row["peak_vs_checkpoint"] = row["peak_bytes"] / size
            row["anon_peak_vs_checkpoint"] = row["anon_peak_bytes"] / size
    return results


def conversion(data: Path, repeats: int) -> dict[str, Any]:
    checkpoint = data / "data2vec_audio_ctc_large.pt"
    size = make_checkpoint(checkpoint)
    from tests.originals import write_letter_dictionary

    dictionary = write_letter_dictionary(data)
    subprocess.run(["cat", str(checkpoint)], stdout=subprocess.DEVNULL, check=True)  # warm the page cache
    results = timed(WORKERS, checkpoint, dictionary, data, repeats)
    return {"checkpoint_bytes": size, **ratios(results, "raw copy", size)}


def export_back(data: Path, repeats: int) -> dict[str, Any]:
    """The big checkpoint converted once, then exported back (against a rename-and-save baseline)."""
    from tests.originals import write_letter_dictionary

    from wmap.conversion import convert, preview

    checkpoint = data / "data2vec_audio_ctc_large.pt"
    make_checkpoint(checkpoint)
    hf = data / "hf"
    if not (hf / "model.safetensors").exists():
        shutil.rmtree(hf, ignore_errors=True)
        convert("data2vec_audio_ctc", checkpoint, hf, processor_file=write_letter_dictionary(data)).unwrap()
    names = {a.target: a.source for a in preview("data2vec_audio_ctc", checkpoint).unwrap().plan.applied}
    key_map = data / "key_map.json"
    key_map.write_text(json.dumps(names))
    size = (hf / "model.safetensors").stat().st_size
    subprocess.run(["cat", str(hf / "model.safetensors")], stdout=subprocess.DEVNULL, check=True)
    results = timed(EXPORT_WORKERS, hf, key_map, data, repeats)
    return {"model_bytes": size, **ratios(results, "raw copy back", size)}


def startup_commands(checkpoint: Path | None) -> dict[str, list[str]]:
    """Whole processes a user starts, and the baseline: each command's wall time from exec to exit. A
    preview is timed cold (``--no-cache``: planned, torch and transformers imported) and repeated (the
    kept preview, :mod:`wmap.preview_cache`); with ``checkpoint`` (the big fairseq file) on a real file
    too, and as a preview of another file of a kind seen (:data:`KIND_SEEN`)."""
    commands = {
        "import torch": ["-c", "import torch"],
        "wmap models": ["-m", "wmap", "models"],
        "wmap preview encodec_48khz (cold)": ["-m", "wmap", "preview", "encodec_48khz", "--no-cache"],
        "wmap preview encodec_48khz (repeated)": ["-m", "wmap", "preview", "encodec_48khz"],
        "wmap preview wav2vec2_ctc (cold)": ["-m", "wmap", "preview", "wav2vec2_ctc", "--no-cache"],
        "wmap preview wav2vec2_ctc (repeated)": ["-m", "wmap", "preview", "wav2vec2_ctc"],
    }
    if checkpoint is not None and checkpoint.exists():
        big = ["-m", "wmap", "preview", "data2vec_audio_ctc", str(checkpoint)]
        commands["wmap preview data2vec_audio_ctc FILE (cold)"] = [*big, "--no-cache"]
        commands[f"wmap preview data2vec_audio_ctc FILE {KIND_SEEN}"] = big
        commands["wmap preview data2vec_audio_ctc FILE (repeated)"] = big
        last = trainer_steps(checkpoint.parent)
        small = ["-m", "wmap", "preview", "data2vec_audio_ctc"]
        commands[f"wmap preview data2vec_audio_ctc checkpoint_last.pt {NEXT_STEP}"] = [*small, str(last)]
        commands[f"wmap preview data2vec_audio_ctc lr_3e-5.pt {SWEEP}"] = [*small, str(last.with_name("lr_3e-5.pt"))]
        elsewhere = last.parent / "elsewhere" / "checkpoint_best.pt"
        commands[f"wmap preview data2vec_audio_ctc elsewhere/checkpoint_best.pt {ELSEWHERE}"] = [*small, str(elsewhere)]
    return commands


NEXT_STEP = "(the next step saved in place)"
"""A preview of ``checkpoint_last.pt`` after fairseq's trainer saved the next step over it: other weights,
optimizer and loop state, the same model and configs (:mod:`wmap.pickle_structure`)."""


SWEEP = "(another run of a sweep)"
"""A preview of another fine-tuning run of the same model on the same data at another learning rate
(``lr_3e-5.pt``), never previewed itself, after the first run's (``step1.pt``) was: other weights,
training settings and trainer state (:data:`wmap.registry.FAIRSEQ_TRAINER`)."""


ELSEWHERE = "(another fine-tune elsewhere)"
"""A preview of another fine-tune of the same model in its own folder (``elsewhere/``: its own data
directory and pre-trained file's path, which the preview shows), never previewed itself, after the
first run's was (:data:`wmap.registry.FAIRSEQ_PATHS`)."""


def trainer_steps(data: Path) -> Path:
    """Two consecutive steps of a small fairseq CTC fine-tuning, as its ``Trainer`` saves them
    (``step1.pt``, ``step2.pt``), where the trainer keeps the last (``checkpoint_last.pt``), and another
    run of a sweep (``lr_3e-5.pt``) and a fine-tune in a folder of its own (``elsewhere/``)."""
    steps = data / "steps"
    if not (steps / "elsewhere" / "checkpoint_best.pt").exists():
        import torch
        from tests.originals import ctc_trainer_checkpoint

        steps.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        ctc_trainer_checkpoint(steps / "step1.pt", steps, then=steps / "step2.pt", encoder_layerdrop=0.0)
        ctc_trainer_checkpoint(steps / "lr_3e-5.pt", steps, lr=3e-5, encoder_layerdrop=0.0)
        (steps / "elsewhere").mkdir(exist_ok=True)
        ctc_trainer_checkpoint(steps / "elsewhere" / "checkpoint_best.pt", steps / "elsewhere", encoder_layerdrop=0.0)
    return steps / "checkpoint_last.pt"


KIND_SEEN = "(another file of a kind seen)"
"""A command run with no kept preview but the target's layout kept (:mod:`wmap.target_layouts`): what
a preview of another checkpoint of the same kind costs (another fine-tune, another step of a run)."""


def startup(repeats: int, checkpoint: Path | None = None) -> dict[str, Any]:
    """Each command of :data:`STARTUP` as a fresh process, in turn with the others (so drift hits all
    alike): the median wall time, and its ratio to ``import torch`` measured in the same rounds."""

    import tempfile

    kept = tempfile.mkdtemp(prefix="wmap-bench-cache-")  # the previews kept: by this run only
    environment = {**os.environ, "WMAP_CACHE_DIR": kept}
    commands = startup_commands(checkpoint)

    seen = tempfile.mkdtemp(prefix="wmap-bench-seen-")  # its own: its previews dropped, its layouts kept

    def once(arguments: list[str], kind_seen: bool = False) -> float:
        if kind_seen:
            for entry in Path(seen).glob("*.json"):
                entry.unlink()
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, *arguments],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**environment, "WMAP_CACHE_DIR": seen} if kind_seen else environment,
        )
        return time.perf_counter() - start

    times: dict[str, list[float]] = {name: [] for name in commands}
    for name, arguments in commands.items():  # once each to warm the page cache (and keep the previews), not counted
        if name.endswith(NEXT_STEP):  # kept of the first step; the second saved over it, as the trainer does
            shutil.copyfile(Path(arguments[-1]).with_name("step1.pt"), arguments[-1])
            once(arguments)
            shutil.copyfile(Path(arguments[-1]).with_name("step2.pt"), arguments[-1])
        if not name.endswith((SWEEP, ELSEWHERE)):  # shown from the first run's kept preview, never from its own
            once(arguments, name.endswith(KIND_SEEN))
    for _ in range(repeats):
        for name, arguments in commands.items():
            times[name].append(once(arguments, name.endswith(KIND_SEEN)))
    shutil.rmtree(kept, ignore_errors=True)
    shutil.rmtree(seen, ignore_errors=True)
    base = statistics.median(times["import torch"])
    return {
        name: {"seconds": statistics.median(found), "vs_import_torch": statistics.median(found) / base}
        for name, found in times.items()
    }


PLAIN_CONVERT = """
import os, sys, torch
from safetensors.torch import save_file
state = torch.load(sys.argv[1], weights_only=True, map_location="cpu", mmap=sys.argv[3] == "mmap")["model"]
os.makedirs(sys.argv[2])
save_file(state, os.path.join(sys.argv[2], "model.safetensors"))
"""
"""#29's baseline for ``wmap convert``: a plain load + save script, as a whole process; with ``mmap`` the
file is mapped rather than read into memory (a faster script than the issue's)."""


def whole_conversion(data: Path, repeats: int) -> dict[str, Any]:
    """``wmap convert`` of the big fairseq checkpoint (with its dictionary: the processor written too) as a
    whole process, from exec to exit, against :data:`PLAIN_CONVERT` in the same rounds (A B C, A B C:
    drift hits all alike): cold (``--no-cache``: the target model built, the modelling code imported)
    and of a kind seen (the target's layout kept by an earlier run, as after ``wmap preview``). Each
    output is removed before its run and the page cache's dirty pages written, outside the clock."""
    import tempfile

    checkpoint = data / "data2vec_audio_ctc_large.pt"
    make_checkpoint(checkpoint)
    from tests.originals import write_letter_dictionary

    dictionary = str(write_letter_dictionary(data))
    out = data / "whole-out"
    convert = ["-m", "wmap", "convert", "data2vec_audio_ctc", str(checkpoint), str(out), "--dict", dictionary]
    commands = {
        "plain load + save script": ["-c", PLAIN_CONVERT, str(checkpoint), str(out), "read"],
        "plain load (mmap) + save script": ["-c", PLAIN_CONVERT, str(checkpoint), str(out), "mmap"],
        "wmap convert (cold)": [*convert, "--no-cache"],
        "wmap convert (a kind seen)": convert,
    }
    kept = tempfile.mkdtemp(prefix="wmap-bench-convert-")
    environment = {**os.environ, "WMAP_CACHE_DIR": kept}

    def once(arguments: list[str]) -> float:
        shutil.rmtree(out, ignore_errors=True)
        os.sync()  # no run waits on an earlier one's writeback: each starts with no dirty pages
        start = time.perf_counter()
        subprocess.run([sys.executable, *arguments], stdout=subprocess.DEVNULL, env=environment, check=True)
        elapsed = time.perf_counter() - start
        shutil.rmtree(out, ignore_errors=True)
        return elapsed

    subprocess.run(["cat", str(checkpoint)], stdout=subprocess.DEVNULL, check=True)  # warm the page cache
    for arguments in commands.values():  # once each, not counted: the page cache, and the layout kept
        once(arguments)
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(repeats):
        for name, arguments in commands.items():
            times[name].append(once(arguments))
    shutil.rmtree(kept, ignore_errors=True)
    base, mapped = times["plain load + save script"], times["plain load (mmap) + save script"]
    return {
        name: {
            "seconds": statistics.median(found),
            "vs_plain": statistics.median(a / b for a, b in zip(found, base, strict=True)),
            "vs_mmap": statistics.median(a / b for a, b in zip(found, mapped, strict=True)),
        }
        for name, found in times.items()
    }


def _memory_table(title: str, rows: Mapping[str, Any], names: Any, baseline: str) -> Any:
    from rich.table import Table

    table = Table(title=title)
    columns = ("method", "time", f"time / {baseline}", "VmHWM", "/ model", "peak RssAnon", "/ model")
    for column in columns:
        table.add_column(column, justify="right")
    for name in names:
        row = rows[name]
        table.add_row(
            name,
            f"{row['seconds']:.2f} s",
            f"{row['time_vs_raw']:.2f}x",
            f"{row['peak_bytes'] / 1e9:.2f} GB",
            f"{row['peak_vs_checkpoint']:.2f}x",
            f"{row['anon_peak_bytes'] / 1e9:.2f} GB",
            f"{row['anon_peak_vs_checkpoint']:.2f}x",
        )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data", type=Path, default=ROOT / "bench-data")
    parser.add_argument("--skip-conversion", action="store_true")
    args = parser.parse_args()

    from rich.console import Console
    from rich.table import Table

    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    report: dict[str, Any] = {"machine": machine, "planning": planning(args.repeats)}
    console = Console()
    planned = report["planning"]
    table = Table(title=f"bundled layouts: make_plan (lint on) vs a loop over pipeline.apply ({machine})")
    for column in ("family", "keys", "make_plan", "naive loop", "ratio"):
        table.add_column(column, justify="right")
    for name, row in planned["bundled"].items():
        table.add_row(
            name,
            str(row["keys"]),
            f"{row['make_plan_s'] * 1e3:.2f} ms",
            f"{row['naive_s'] * 1e3:.2f} ms",
            f"{row['ratio']:.2f}x",
        )
    console.print(table)
    table = Table(title=f"synthetic layouts: make_plan (lint on) vs the seed's decisions (median of {args.repeats})")
    for column in ("keys", "wmap", "seed decisions", "seed / wmap"):
        table.add_column(column, justify="right")
    for n in ("10000", "100000"):
        row = planned[n]
        table.add_row(f"{row['keys']:,}", f"{row['wmap_s']:.4f} s", f"{row['seed_s']:.3f} s", f"{row['speedup']:.1f}x")
    console.print(table)
    console.print(f"10x the keys (10k -> 100k) costs {planned['scaling_100k_over_10k']:.2f}x the time")

    report["startup"] = started = startup(args.repeats, args.data / "data2vec_audio_ctc_large.pt")
    table = Table(title=f"whole processes a user starts, against import torch (median of {args.repeats})")
    for column in ("command", "wall", "/ import torch"):
        table.add_column(column, justify="right")
    for name, row in started.items():
        table.add_row(name, f"{row['seconds']:.2f} s", f"{row['vs_import_torch']:.2f}x")
    console.print(table)

    if not args.skip_conversion:
        report["conversion"] = conv = conversion(args.data, args.repeats)
        title = f"conversion of a {conv['checkpoint_bytes'] / 1e9:.2f} GB checkpoint (median of {args.repeats})"
        console.print(_memory_table(title, conv, WORKERS, "raw copy"))
        report["export"] = back = export_back(args.data, args.repeats)
        title = f"export of the {back['model_bytes'] / 1e9:.2f} GB converted directory (median of {args.repeats})"
        console.print(_memory_table(title, back, EXPORT_WORKERS, "raw copy back"))
        report["whole_conversion"] = whole = whole_conversion(args.data, args.repeats)
        table = Table(title=f"wmap convert as a whole process, against a plain script (median of {args.repeats})")
        for column in ("command", "wall", "/ plain script", "/ plain script (mmap)"):
            table.add_column(column, justify="right")
        for name, row in whole.items():
            table.add_row(name, f"{row['seconds']:.2f} s", f"{row['vs_plain']:.2f}x", f"{row['vs_mmap']:.2f}x")
        console.print(table)
    out = args.data / "results.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    console.print(f"results written to {out}")


if __name__ == "__main__":
    main()
