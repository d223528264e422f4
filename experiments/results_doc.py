"""`python experiments/results_doc.py`: regenerate docs/results.md, the measured figures the README may quote.

Runs the README's commands as a user would (each as its own process, on a fresh output folder), and writes
what they printed, with the commit, the thread layout, the machine, the wall-clock time and the command:

  1. the calibration: `ablate.py --calibrate --seeds 3` (seed sd, null change, what k seeds resolve);
  2. the headline ablation: `ablate.py --no-gsa --compare --seeds 3`;
  3. the paper's component chain and window-summary table on real handwriting:
     `ablate.py --grid paper --dataset digits --seeds 3` (the paper's figures beside ours);
  4. every switch against the reference on the default benchmark: `ablate.py --grid one-off --seeds 3` (the
     same runs as each `ablate.py --<switch> --compare --seeds 3`: same configurations, seeds and data);
  5. the GSA probe: `ablate.py --no-gsa --compare --seeds 3 --dataset mirror-pairs` (experiments.synthetic);
  6. the position probe: `ablate.py --grid position --dataset top-half --seeds 3` (SepViT's three sources of
     position, OPE, CPE and the learnable window tokens, removed alone and together; experiments.synthetic);
  7. the block patterns (Swin's, Twins' and global MSA in SepViT's backbone) against SepViT's block on the default
     benchmark: `ablate.py --grid patterns --seeds 3` (each row the same runs as `--block-pattern P --compare`);
  8. the headline at a longer budget, where the default's late runs have settled: `ablate.py --no-gsa --compare
     --seeds 3 --epochs 15` (is GSA's effect one of end point or of learning speed?).

`--only 3` reruns the listed sections and keeps the others as the stored document has them; every section
states its own commit and date, so a kept section says which code made it. After writing docs/results.md it
rewrites the README's measured block (the calibration, the headline and the switch table:
`experiments.readme_results`); `--readme` does only that, from the stored document.

Each section's call is kept under output/results-doc/section-K (runs, checkpoints, MLflow store, section.json),
so that `--rerender` can write the sections again with today's report code from the stored runs
(`ablate.py --resume`, which trains nothing when every run finished): a change to the statistics or the tables
then costs minutes, not the hour of training, and the section says both commits (trained, re-reported).

Nothing in the document is typed in: every number comes from these runs. `SEPVIT_SMOKE=1` (CI) runs the same
commands at a tiny budget (2 seeds each) into a temporary folder and writes the document to `--out` (never over
docs/), so the script is tested without claiming its numbers; the document then says SMOKE in its title.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from workbench.cli import OneLineParser

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "results.md"
CALLS = ROOT / "output" / "results-doc"  # section-K/: the call of section K, kept for --rerender
SECTION_FILE = "section.json"
MACHINE_MARK = "Machine: "  # each section names the machine its runs were trained on
COMMANDS = [
    ("Calibration of the default benchmark", ["--calibrate", "--seeds", "3"]),
    ("The headline ablation: SepViT without GSA against the reference", ["--no-gsa", "--compare", "--seeds", "3"]),
    ("The paper's component chain and window summaries on real handwriting (digits)",
     ["--grid", "paper", "--dataset", "digits", "--seeds", "3"]),
    ("Every switch against the reference on the default benchmark", ["--grid", "one-off", "--seeds", "3"]),
    ("The GSA probe: SepViT without GSA on mirror-pairs",
     ["--no-gsa", "--compare", "--seeds", "3", "--dataset", "mirror-pairs"]),
    ("The position probe: SepViT's sources of position on top-half",
     ["--grid", "position", "--dataset", "top-half", "--seeds", "3"]),
    ("Every block pattern against SepViT's block on the default benchmark", ["--grid", "patterns", "--seeds", "3"]),
    ("The headline at a longer budget: SepViT without GSA against the reference, 15 epochs",
     ["--no-gsa", "--compare", "--seeds", "3", "--epochs", "15"]),
]
# The smoke budget: the tests' tiny model on 32 images, 2 seeds (the numbers mean nothing).
SMOKE_ARGS = ["--model", "sepvit_micro_32", "--model-kwargs", "embed_dims=16,32,64,128", "num_heads=1,1,2,4",
              "--train-size", "32", "--val-size", "32", "-b", "16", "--epochs", "1", "--seeds", "2"]


def git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
    return done.stdout.strip() if done.returncode == 0 else "unknown"


def run_command(args: list[str], output: Path) -> tuple[str, float, int]:
    """(stdout, seconds, exit code) of `python experiments/ablate.py ARGS --output OUTPUT`."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, str(ROOT / "experiments" / "ablate.py"), *args, "--output", str(output)],
                          cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-3000:])
    return done.stdout, seconds, done.returncode


def provenance_line() -> str:
    """The commit (and whether the tree had changes) and the time: stated by every section."""
    dirty = " (with uncommitted changes)" if git("status", "--porcelain", "--untracked-files=no") else ""
    return f"commit `{git('rev-parse', 'HEAD')}`{dirty}, {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}"


def machine_line() -> str:
    """The processor, its core count and torch: a run is reproducible on one machine, not across machines."""
    import torch

    from workbench.provenance import cpu_model

    return f"{cpu_model()}, {os.cpu_count()} CPUs, torch {torch.__version__}"


def header_machine(text: str) -> str | None:
    """The one machine a stored document's header named for all its sections (the format before sections named
    their own), or None."""
    found = re.search(r"^- machine: (.+?) \(\d+ threads per process by default\)$", text, re.MULTILINE)
    return found.group(1) if found else None


def with_machine(section: str, machine: str | None) -> str:
    """A kept section's text, stating the machine the stored document's header named if it states none itself."""
    if machine is None or MACHINE_MARK in section:
        return section
    return section.replace(" UTC. `python", f" UTC. {MACHINE_MARK}{machine} (as the document's header said when "
                                             "this section was kept). `python", 1)


def render_section(s: dict) -> str:
    command = "python experiments/ablate.py " + " ".join(s["args"])
    machine = f" {MACHINE_MARK}{s['machine']}." if s.get("machine") else ""
    rerendered = (f" Report re-rendered from the stored runs by `ablate.py --resume` at {s['rerendered']} (nothing "
                  "retrained; the output below is that report).") if s.get("rerendered") else ""
    return "\n".join([f"## {s['title']}", "", f"{s['provenance']}.{machine} `{command}`: exit code {s['code']}, "
                      f"{s['seconds'] / 60:.1f} minutes wall clock (1-minute load average {s['load'][0]:.1f} at the "
                      f"start, {s['load'][1]:.1f} at the end; above 2, other work shared the 2 cores and the time is "
                      f"not the quiet machine's).{rerendered}", "", "```", s["stdout"].rstrip(), "```", ""])


def stored_call(section: Path) -> Path:
    """The call folder kept in a section's output folder (the one holding call.json)."""
    calls = sorted(section.glob("*/*/call.json"))
    if len(calls) != 1:
        raise FileNotFoundError(f"{section} holds {len(calls)} calls, not one: rerun the section (drop --rerender)")
    return calls[0].parent


def rerender(section: Path) -> dict:
    """The section kept in `section` with its report made again by today's code (`ablate.py --resume`)."""
    meta = json.loads((section / SECTION_FILE).read_text())
    stdout, _, code = run_command(["--resume", str(stored_call(section))], section)
    return {**meta, "stdout": stdout, "code": max(code, meta["code"]), "rerendered": provenance_line()}


def stored_sections(text: str) -> dict[str, str]:
    """title -> the section's text as a stored document has it (from its "## " line to the next)."""
    sections, title = {}, None
    for line in text.splitlines(keepends=True):
        if line.startswith("## "):
            title = line[3:].strip()
            sections[title] = ""
        if title is not None:
            sections[title] += line
    return sections


def render(sections: list[str], smoke: bool) -> str:
    import torch

    from workbench.provenance import cpu_model

    lines = [f"# Measured results{' (SMOKE: a tiny budget, numbers meaningless)' if smoke else ''}", "",
             "Generated by `python experiments/results_doc.py`; do not edit by hand. The README quotes only figures "
             "from this file.", "",
             f"- machine: each section names its own; the same command gives other numbers on another CPU "
             f"(reproducible per machine and thread layout: docs/benchmark-log.md). This document was last written on "
             f"{cpu_model()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
             "- thread layout: `--parallel auto` (the default) trains two one-thread runs at a time on 2 cores; a run's "
             "numbers are deterministic for its thread count", ""]
    return "\n".join(lines) + "\n" + "\n".join(section.rstrip() + "\n" for section in sections)


def main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineParser(prog="results_doc.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help=f"where to write (default {DOC.relative_to(ROOT)}; "
                                                               "required with SEPVIT_SMOKE=1)")
    parser.add_argument("--only", type=int, nargs="+", metavar="K", choices=range(1, len(COMMANDS) + 1),
                        help="rerun only these sections (1-based); the others are kept from the stored document")
    parser.add_argument("--readme", action="store_true",
                        help="train nothing: rewrite the README's measured block from the stored document")
    parser.add_argument("--rerender", action="store_true",
                        help=f"train nothing: write the sections again with today's report code from the calls kept "
                             f"in {CALLS.relative_to(ROOT)}/section-K (each section says both commits)")
    parser.add_argument("--calls", type=Path, default=None,
                        help=f"where the sections' calls are kept (default {CALLS.relative_to(ROOT)}; with "
                             "SEPVIT_SMOKE=1 a temporary folder, removed at the end)")
    args = parser.parse_args(argv)
    if args.readme:
        return write_readme(args.out or DOC)
    smoke = os.environ.get("SEPVIT_SMOKE") == "1"
    temporary = smoke and args.calls is None and not args.rerender
    calls = args.calls or (Path(tempfile.mkdtemp(prefix="sepvit-results-")) if temporary else CALLS)
    if args.rerender:
        wanted = args.only or range(1, len(COMMANDS) + 1)
        missing = [i for i in wanted if not (calls / f"section-{i}" / SECTION_FILE).is_file()]
        if missing:
            print(f"results_doc.py: error: no kept call for section(s) {', '.join(map(str, missing))} in {calls}: "
                  "run them first (drop --rerender)", file=sys.stderr)
            return 2
        failed = [i for i in wanted if json.loads((calls / f"section-{i}" / SECTION_FILE).read_text())["code"] != 0]
        if failed:  # --resume would train what the failed call left unfinished
            print(f"results_doc.py: error: the kept call of section(s) {', '.join(map(str, failed))} failed: rerun "
                  "them (drop --rerender)", file=sys.stderr)
            return 2
    if smoke and args.out is None:
        print("results_doc.py: error: SEPVIT_SMOKE=1 would overwrite docs/results.md with smoke numbers: pass --out",
              file=sys.stderr)
        return 2
    out = args.out or DOC
    stored_text = out.read_text() if args.only and out.exists() else ""
    kept_machine = header_machine(stored_text)
    stored = {title: with_machine(text, kept_machine) for title, text in stored_sections(stored_text).items()}
    sections, codes = [], []
    for i, (title, command) in enumerate(COMMANDS, start=1):
        if args.only and i not in args.only:
            if title not in stored:
                print(f"results_doc.py: error: section {i} ({title}) is not in {out}: rerun it too (add it to "
                      "--only) or drop --only", file=sys.stderr)
                return 2
            sections.append(stored[title])
            continue
        folder = calls / f"section-{i}"
        if args.rerender:
            section = rerender(folder)
        else:
            shutil.rmtree(folder, ignore_errors=True)  # the new call replaces the kept one
            load_before = os.getloadavg()[0]
            args_i = [*command, *(SMOKE_ARGS if smoke else [])]
            stdout, seconds, code = run_command(args_i, folder)
            section = {"title": title, "args": args_i, "seconds": seconds, "code": code,
                       "load": (load_before, os.getloadavg()[0]), "provenance": provenance_line(),
                       "machine": machine_line()}
            folder.mkdir(parents=True, exist_ok=True)
            (folder / SECTION_FILE).write_text(json.dumps(section, indent=1))
            section["stdout"] = stdout
        codes.append(section["code"])
        sections.append(render_section(section))
    if temporary:
        shutil.rmtree(calls, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(sections, smoke))
    print(f"wrote {out}")
    if out == DOC and not smoke and write_readme(out) != 0:
        return 1
    return 0 if all(code == 0 for code in codes) else 1


def write_readme(results: Path, readme: Path = ROOT / "README.md") -> int:
    """Rewrite the README's measured block from `results` (experiments.readme_results); 2 with one line if the
    document lacks what the block needs."""
    from experiments import readme_results

    try:
        readme_results.write(readme, results)
    except (OSError, readme_results.ResultsFormatError) as error:
        print(f"results_doc.py: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote the measured block of {readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
