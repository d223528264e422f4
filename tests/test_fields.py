"""The one typed `field=value` path: coercion by the dataclass field's type, refusals, and each entry point."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from experiments.train_config import TrainConfig
from sepvit.config import SepViTConfig
from workbench.fields import FieldError, parse_assignments

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("text, expected", [
    ("gsa=false", {"gsa": False}), ("gsa=TRUE", {"gsa": True}), ("gsa=0", {"gsa": False}), ("cpe=1", {"cpe": True}),
    ("depths=1,2,2,1", {"depths": (1, 2, 2, 1)}), ("depths=(1, 2, 2, 1)", {"depths": (1, 2, 2, 1)}),
    ("depths=[1,2]", {"depths": (1, 2)}), ("group_size=3", {"group_size": 3}),
    ("group_size=1,2,3,1", {"group_size": (1, 2, 3, 1)}), ("window_token=zero", {"window_token": "zero"}),
    ("window_token='zero'", {"window_token": "zero"}), ("mlp_ratio=2", {"mlp_ratio": 2.0}),
    ("drop_path_rate=0.1", {"drop_path_rate": 0.1}),
])
def test_model_fields_are_coerced_by_their_type(text, expected):
    assert parse_assignments(SepViTConfig, [text]) == expected


@pytest.mark.parametrize("text, words", [
    ("gsa=maybe", ["gsa", "bool"]), ("depths=abc", ["depths", "tuple of ints"]), ("window_size=1.5", ["window_size", "int"]),
    ("colour=red", ["unknown", "colour"]), ("gsa", ["field=value"]), ("group_size=x", ["group_size", "int or tuple"]),
])
def test_bad_values_and_unknown_fields_are_refused_naming_field_and_type(text, words):
    with pytest.raises(FieldError) as info:
        parse_assignments(SepViTConfig, [text])
    message = str(info.value)
    assert len(message.splitlines()) == 1 and all(w in message for w in words), message


def test_train_fields_optional_values():
    assert parse_assignments(TrainConfig, ["clip_grad=none", "train_size=100", "data_dir=null"]) == {
        "clip_grad": None, "train_size": 100, "data_dir": None}
    assert parse_assignments(TrainConfig, ["clip_grad=2.5"]) == {"clip_grad": 2.5}


@pytest.mark.parametrize("changes", [dict(gsa="false"), dict(depths="1,2,2,1"), dict(window_size=4.0),
                                     dict(dssa=1), dict(embed_dims=(16, 32.0, 64, 128))])
def test_config_built_from_python_refuses_wrong_types(changes):
    with pytest.raises(ValueError, match="expects"):
        SepViTConfig(**changes)


def test_train_config_refuses_wrong_types():
    with pytest.raises(ValueError, match="model_ema"):
        TrainConfig(model_ema="false")


def _run(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_python_m_sepvit_gsa_false_has_no_grouped_block():
    grouped = _run("-m", "sepvit", "sepvit_nano_32")
    plain = _run("-m", "sepvit", "sepvit_nano_32", "gsa=false")
    assert grouped.returncode == plain.returncode == 0, plain.stderr
    stage2 = lambda out: next(line for line in out.splitlines() if line.startswith("2 "))  # noqa: E731
    assert "8->4" in stage2(grouped.stdout)  # 16x16 map, a grouped block of 8x8 windows: 4 groups
    assert "8->" not in stage2(plain.stdout) and plain.stdout.count("4->16") == 2


@pytest.mark.parametrize("entry", [
    ["-m", "sepvit", "sepvit_nano_32"],
    [str(ROOT / "experiments" / "ablate.py"), "--model-kwargs"],
    [str(ROOT / "analysis" / "complexity.py"), "--no-ptflops", "--models", "sepvit_nano_32", "--model-kwargs"],
], ids=["python -m sepvit", "ablate.py", "complexity.py"])
@pytest.mark.parametrize("bad", ["gsa=maybe", "depths=abc"])
def test_every_entry_point_refuses_a_badly_typed_override_in_one_line(entry, bad):
    done = _run(*entry, bad)
    err = done.stderr.strip()
    assert done.returncode == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert bad.split("=")[0] in err and "expects" in err
