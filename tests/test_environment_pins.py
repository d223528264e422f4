"""environment.yml installs the torch/torchvision pair the README's install commands pin, so conda and pip users
test against the same versions."""
from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PAIR = re.compile(r"\b(torch|torchvision)==([\w.+]+)")


def test_environment_yml_pins_the_readmes_torch_pair():
    readme = {tuple(pair) for pair in PAIR.findall((ROOT / "README.md").read_text())}
    assert {name for name, _ in readme} == {"torch", "torchvision"} and len(readme) == 2  # one pair, everywhere
    dependencies = yaml.safe_load((ROOT / "environment.yml").read_text())["dependencies"]
    (pip,) = [entry["pip"] for entry in dependencies if isinstance(entry, dict) and "pip" in entry]
    assert {tuple(PAIR.fullmatch(spec).groups()) for spec in pip if PAIR.fullmatch(spec)} == readme
