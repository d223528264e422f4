"""-c/--config FILE (workbench.cli.expand_config): a YAML of defaults for the runner, as timm's train.py -c."""
from __future__ import annotations

import pytest

from experiments import ablate
from workbench.cli import OneLineParser, UsageError, add_config_flag, expand_config, run_command


def parse(tmp_path, text: str, *argv: str):
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    parser = ablate.build_parser()
    return parser.parse_args(expand_config(parser, ["-c", str(path), *argv]))


def test_yaml_sets_training_fields_switches_and_model_fields_through_the_typed_parser(tmp_path):
    args = parse(tmp_path, "epochs: 5\nno_gsa: true\nopt-betas: [0.9, 0.99]\nclip_grad: null\n"
                           "model_ema: true\nmodel_kwargs: {ope: false, embed_dims: [16, 32, 64, 128]}\nseeds: 3\n")
    assert args.epochs == 5 and args.no_gsa and args.seeds == 3 and args.model_ema
    assert args.opt_betas == (0.9, 0.99) and args.clip_grad is None
    cfg = ablate.base_config(args)
    assert cfg.ope is False and cfg.embed_dims == (16, 32, 64, 128)
    train = ablate.train_config(args)
    assert train.epochs == 5 and train.opt_betas == (0.9, 0.99)


def test_the_command_line_wins_over_the_file(tmp_path):
    args = parse(tmp_path, "epochs: 5\nlr: 0.01\nmodel_ema: true\n", "--epochs", "2", "--no-model-ema")
    assert args.epochs == 2 and args.lr == 0.01 and not args.model_ema


@pytest.mark.parametrize("text, message", [
    ("epochz: 5\n", "'epochz' is not a flag"),
    ("no_gsa: 1\n", "must be true or false"),
    ("- epochs\n", "must hold a mapping"),
    ("epochs: [1\n", "not valid YAML"),
])
def test_bad_config_files_are_one_line_errors(tmp_path, capsys, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    assert ablate.main(["-c", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_a_wrongly_typed_value_is_refused_by_the_field_parser(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("epochs: many\n")
    with pytest.raises(SystemExit) as exit_info:
        ablate.main(["-c", str(path)])
    assert exit_info.value.code == 2 and "epochs" in capsys.readouterr().err


def test_missing_config_file(capsys):
    assert ablate.main(["-c", "/nonexistent/x.yaml"]) == 2
    assert "No such file" in capsys.readouterr().err


def test_the_search_reads_the_same_kind_of_file(tmp_path):
    from experiments import search

    path = tmp_path / "search.yaml"
    path.write_text("n_trials: 3\nepochs: 2\nobjectives: [top1, macs]\nmodel_kwargs: {ope: false}\n")
    parser = search.build_parser()
    args = parser.parse_args(expand_config(parser, ["-c", str(path), "--epochs", "4"]))
    assert args.n_trials == 3 and args.epochs == 4 and args.objectives == ["top1", "macs"]
    assert args.model_kwargs == ["ope=false"]


def test_the_search_refuses_an_unknown_key_in_one_line(tmp_path, capsys):
    from experiments import search

    path = tmp_path / "bad.yaml"
    path.write_text("trials: 3\n")
    assert search.main(["-c", str(path)]) == 2
    assert "'trials' is not a flag of search.py" in capsys.readouterr().err


def test_run_command_refuses_a_bad_request_in_one_line_and_runs_nothing(tmp_path, capsys):
    """The main every command shares: -c expanded, plan's one-line refusal (exit 2) before run, else run's code."""
    parser = OneLineParser(prog="tool")
    add_config_flag(parser)
    parser.add_argument("--n", type=int, default=1)
    ran = []

    def plan(args, argv):
        if args.n < 1:
            raise UsageError(f"--n must be >= 1, got {args.n}")
        return args.n

    assert run_command(parser, ["--n", "0"], plan, ran.append) == 2
    assert ran == [] and capsys.readouterr().err.strip() == "tool: error: --n must be >= 1, got 0"
    assert run_command(parser, ["-c", str(tmp_path / "none.yaml")], plan, ran.append) == 2
    assert ran == [] and "No such file" in capsys.readouterr().err
    (tmp_path / "n.yaml").write_text("n: 3\n")
    assert run_command(parser, ["-c", str(tmp_path / "n.yaml")], plan, lambda n: n * 10) == 30
