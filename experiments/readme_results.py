"""The README's measured block: the calibration and the switch table, read from docs/results.md, never typed in.

`python experiments/results_doc.py` rewrites the README between the markers below after it writes docs/results.md;
`python experiments/results_doc.py --readme` does only this, from the stored document. The figures are parsed
from the runner's own printed tables (`experiments.report`'s comparison table and calibration sentence), so the
README says exactly what the stored runs printed, with the commit and date of the section each came from.
"""
from __future__ import annotations

import re
from pathlib import Path

from experiments.stats import VERDICT_RULES

BEGIN = "<!-- measured: begin (written by experiments/results_doc.py from docs/results.md; do not edit) -->"
END = "<!-- measured: end -->"
CALIBRATION = "Calibration of the default benchmark"
HEADLINE = "The headline ablation: SepViT without GSA against the reference"
SWITCH_TABLE = "Every switch against the reference on the default benchmark"
# probe sections (title -> the dataset its call trains on): their rows join the switch table under their task
PROBES = {"The GSA probe: SepViT without GSA on mirror-pairs": "mirror-pairs",
          "The position probe: SepViT's sources of position on top-half": "top-half"}
# label of a one-off grid row (experiments.grids.SWITCHES) -> the ablate.py flags that make that configuration
SWITCH_FLAGS = {
    "no-dssa": "--no-dssa", "no-gsa": "--no-gsa", "no-lwt": "--no-lwt", "avgpool-token": "--window-token avgpool",
    "dwconv-token": "--window-token dwconv", "no-ope": "--no-ope", "no-cpe": "--no-cpe",
    "paper-equations": "--paper-equations",
    # the position grid's (experiments.grids.POSITION_SOURCES) combinations
    "tokens only (no-ope, no-cpe)": "--no-ope --no-cpe", "no position source": "--no-ope --no-cpe --no-lwt",
    # the block-pattern grid's (experiments.grids.BLOCK_PATTERNS)
    **{f"block_pattern={p}": f"--block-pattern {p}" for p in ("swin", "twins", "msa")},
}
# sections whose rows join the switch table on the default benchmark, beside the one-off grid's
DEFAULT_TASK_SECTIONS = ["Every block pattern against SepViT's block on the default benchmark"]
# the headline at a longer budget (its section's title, its epochs): its row joins the table, its figures the headline
LONGER_HEADLINE = "The headline at a longer budget: SepViT without GSA against the reference, 15 epochs"
LONGER_EPOCHS = 15


class ResultsFormatError(ValueError):
    """docs/results.md does not hold what the README block needs (a section or a table is missing)."""


def sections(text: str) -> dict[str, str]:
    """title -> body of each "## " section."""
    out, title = {}, None
    for line in text.splitlines():
        if line.startswith("## "):
            title = line[3:].strip()
            out[title] = []
        elif title is not None:
            out[title].append(line)
    return {title: "\n".join(lines) for title, lines in out.items()}


def _section(doc: dict[str, str], title: str) -> str:
    if title not in doc:
        raise ResultsFormatError(f"docs/results.md has no section {title!r}: run python experiments/results_doc.py")
    return doc[title]


def provenance(body: str) -> str:
    """'commit abc123def456, 2026-12-06 19:40 UTC' from a section's first line, with its CPU model when it names one."""
    found = re.search(r"commit `([0-9a-f]{7,40}|unknown)`( \(with uncommitted changes\))?, ([0-9-]+ [0-9:]+ UTC)",
                      body)
    if not found:
        raise ResultsFormatError("a section of docs/results.md does not state its commit and date")
    machine = re.search(r"Machine: ([^,]+)", body)  # the CPU model: the numbers are this machine's
    return (f"commit {found.group(1)[:12]}{found.group(2) or ''}, {found.group(3)}"
            + (f", {machine.group(1).strip()}" if machine else ""))


def comparison_rows(body: str) -> list[dict[str, str]]:
    """The rows of the comparison table a call printed (configuration, Δ, paired CI, Welch CI, overlap, verdict)."""
    lines = body.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("configuration") and "Δ top-1" in line]
    if not starts:
        raise ResultsFormatError("a section of docs/results.md has no comparison table")
    header = re.split(r"\s{2,}", lines[starts[0]].strip())
    rows = []
    for line in lines[starts[0] + 2:]:
        if not line.strip():
            break
        cells = re.split(r"\s{2,}", line.strip())
        if len(cells) != len(header):
            raise ResultsFormatError(f"a comparison row of docs/results.md does not parse: {line.strip()!r}")
        rows.append(dict(zip(header, cells)))
    return rows


def calibration_facts(body: str) -> dict[str, str]:
    sd = re.search(r"seed standard deviation ([0-9.]+) points \(target ≤ 2: (met|NOT met)\)", body)
    resolves = re.search(r"resolves differences ≥ ([0-9.]+) points unpaired.*?≥ ([0-9.]+) points paired", body)
    null = re.search(r"Null change \((.+?)\): paired difference ([-+0-9.]+) (\[[-+0-9., ]+\]) \((.+?)\);", body)
    takeoff = re.search(r"^Take-off: (.+)$", body, re.MULTILINE)
    if not sd or not resolves or not null or not takeoff:
        raise ResultsFormatError("the calibration section of docs/results.md lacks its seed sd, resolution, null "
                                 "change or take-off line")
    return {"sd": sd.group(1), "target": sd.group(2), "unpaired": resolves.group(1), "paired": resolves.group(2),
            "null": null.group(1), "null_mean": null.group(2), "null_ci": null.group(3), "null_verdict": null.group(4),
            "takeoff": takeoff.group(1)}


def scored_images(body: str) -> int:
    """How many validation images a section's top-1 figures are on, from its summary's chance note ("1/10 on N
    images"): the final scoring's for calls made since it existed, else the per-epoch set's."""
    found = re.search(r"1/\d+ on (\d+) images", body)
    if not found:
        raise ResultsFormatError("a section of docs/results.md does not say how many validation images its top-1 is on")
    return int(found.group(1))


def minutes(body: str) -> str:
    found = re.search(r"exit code \d+, ([0-9.]+) minutes wall clock", body)
    if not found:
        raise ResultsFormatError("a section of docs/results.md does not state its wall clock")
    return found.group(1)


def block(results_text: str) -> str:
    """The README's measured block (markdown, between BEGIN and END) from the text of docs/results.md."""
    doc = sections(results_text)
    calibration, headline, table = (_section(doc, t) for t in (CALIBRATION, HEADLINE, SWITCH_TABLE))
    facts = calibration_facts(calibration)
    lines = [
        BEGIN,
        f"**The instrument** (`python experiments/ablate.py --calibrate --seeds 3`, {provenance(calibration)}): the "
        f"reference's seed standard deviation is {facts['sd']} points at the default budget (target ≤ 2: "
        f"{facts['target']}); with 3 seeds a call resolves differences ≥ {facts['unpaired']} points unpaired, "
        f"≥ {facts['paired']} points paired. Null change ({facts['null']}): paired difference "
        f"{facts['null_mean']} {facts['null_ci']} ({facts['null_verdict']}); a paired verdict on a difference no "
        f"larger than the null change's is not evidence of an effect. Take-off: {facts['takeoff']}",
        "",
        "**The headline** " + _no_gsa_call("python experiments/ablate.py --no-gsa --compare --seeds 3", headline)
        + (f" Given {LONGER_EPOCHS} epochs " + _no_gsa_call("python experiments/ablate.py --no-gsa --compare --seeds "
                                                            f"3 --epochs {LONGER_EPOCHS}", doc[LONGER_HEADLINE])
           if LONGER_HEADLINE in doc else ""),
        "",
        f"**Every switch × task** (the default benchmark: `python experiments/ablate.py --grid one-off --seeds 3`, "
        f"{provenance(table)}, each row the same runs as its own command; "
        + "".join(f"the block patterns: `python experiments/ablate.py --grid patterns --seeds 3`, "
                  f"{provenance(doc[title])}; " for title in DEFAULT_TASK_SECTIONS if title in doc)
        + (f"GSA at {LONGER_EPOCHS} epochs: the call above, {provenance(doc[LONGER_HEADLINE])}; "
           if LONGER_HEADLINE in doc else "")
        + "the probes: their own calls, "
        + ", ".join(f"{dataset} {provenance(doc[title])}" for title, dataset in PROBES.items() if title in doc)
        + "):",
        "",
        "| switch | task | command | validation images | Δ top-1 vs reference (points) | paired 95 % CI | "
        "Welch 95 % CI | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    tasks = [("synthetic (default)", "", table)]
    tasks += [("synthetic (default)", "", doc[title]) for title in DEFAULT_TASK_SECTIONS if title in doc]
    if LONGER_HEADLINE in doc:
        tasks.append((f"synthetic (default), {LONGER_EPOCHS} epochs", f" --epochs {LONGER_EPOCHS}",
                      doc[LONGER_HEADLINE]))
    tasks += [(f"{dataset} (probe)", f" --dataset {dataset}", doc[title]) for title, dataset in PROBES.items()
              if title in doc]
    for task, dataset_flag, body in tasks:
        images = scored_images(body)
        for row in comparison_rows(body):
            label = row["configuration"]
            flags = SWITCH_FLAGS.get(label)
            if flags is None:
                raise ResultsFormatError(f"no command known for the switch {label!r}: add it to SWITCH_FLAGS")
            lines.append(f"| {label} | {task} | `python experiments/ablate.py {flags} --compare --seeds 3"
                         f"{dataset_flag}` | {images} | {row['Δ top-1 vs reference']} | {row['paired 95% CI']} | "
                         f"{row['Welch 95% CI']} | {row['verdict']} |")
    rules = "; ".join(f"`{name}`: {rule}" for name, rule in VERDICT_RULES.items() if name != "undetermined")
    lines += ["", f"Verdicts, strictest first: {rules} (`(±X)`: the 90 % interval excludes any difference larger "
              "than X points; `~N seeds`: the seeds per arm that would resolve it at the noise measured; "
              "`ablate.py --resume CALL --seeds N` adds them to a call, keeping its runs: docs/ablations.md). "
              "Full outputs: [docs/results.md](docs/results.md).", END]
    return "\n".join(lines)


def _no_gsa_call(command: str, body: str) -> str:
    """'(`command`, provenance, N minutes on 2 cores, top-1 on M validation images): no-gsa <its comparison row>.'"""
    (gsa,) = [row for row in comparison_rows(body) if row["configuration"] == "no-gsa"]
    return (f"(`{command}`, {provenance(body)}, {minutes(body)} minutes on 2 cores, top-1 on {scored_images(body)} "
            f"validation images): no-gsa {gsa['Δ top-1 vs reference']} points, paired 95 % CI "
            f"{gsa['paired 95% CI']}, Welch {gsa['Welch 95% CI']}: {gsa['verdict']}.")


def write(readme: Path, results: Path) -> None:
    """Replace the README's measured block (between BEGIN and END) with one made from `results`."""
    text = readme.read_text()
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise ResultsFormatError(f"{readme} must hold the measured block's markers once each, in order")
    new = block(results.read_text())
    readme.write_text(text[:text.index(BEGIN)] + new + text[text.index(END) + len(END):])
