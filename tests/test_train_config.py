"""TrainConfig validation/round trip and checkpoint I/O."""
import pytest
import torch

from experiments.runner.checkpoint import CheckpointError, load_checkpoint, load_model, save_checkpoint
from experiments.train_config import TrainConfig
from runner_support import tiny_model_cfg


def test_round_trip_and_replace():
    cfg = TrainConfig(epochs=3, lr=2e-3, mixup=0.2)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.replace(seed=5).seed == 5 and cfg.uses_mixup


@pytest.mark.parametrize("changes, word", [({"batch_size": 0}, "batch_size"), ({"epochs": -2}, "epochs"),
                                           ({"lr": 0}, "lr"), ({"train_size": 0}, "train_size"),
                                           ({"clip_grad": -1.0}, "clip_grad"), ({"device": "tpu"}, "device"),
                                           ({"min_lr": -1e-5}, "min_lr"), ({"output": " "}, "output"),
                                           ({"mixup_prob": 1.5}, "mixup_prob"),
                                           ({"synthetic_cue": "halo"}, "unknown synthetic cue"),
                                           ({"synthetic_cue": "ring", "dataset": "digits"}, "synthetic dataset only")])
def test_validation_says_what_to_change(changes, word):
    with pytest.raises(ValueError, match=word):
        TrainConfig(**changes)


def test_a_config_saved_before_a_field_existed_reads_back_as_it_ran():
    """A call or checkpoint saved before `synthetic_cue` existed trained on the ring cue, whatever the default."""
    saved = TrainConfig(epochs=3).to_dict()
    del saved["synthetic_cue"]
    assert TrainConfig.before_logged() == {"synthetic_cue": "ring", "final_val_size": 0}
    assert TrainConfig.from_dict(saved).synthetic_cue == "ring"
    assert TrainConfig.from_dict({**saved, "synthetic_cue": "frame"}).synthetic_cue == "frame"
    digits = {k: v for k, v in TrainConfig(dataset="digits").to_dict().items() if k != "synthetic_cue"}
    assert TrainConfig.from_dict(digits).synthetic_cue == TrainConfig().synthetic_cue  # the cue never mattered
    # before final scoring existed a run's top-1 was its last epoch's: such a run reads back as not scored again
    assert TrainConfig.from_dict({k: v for k, v in saved.items() if k != "final_val_size"}).final_val_size == 0


def test_unknown_field_is_refused():
    with pytest.raises(ValueError, match="unknown TrainConfig field"):
        TrainConfig.from_dict({"epoch": 3})


def test_checkpoint_atomic_weights_only_and_load_model(tmp_path):
    cfg = tiny_model_cfg()
    model = cfg.build().eval()
    path = save_checkpoint({"model": model.state_dict(), "config": cfg.to_dict(), "epoch": 1}, tmp_path / "best.pth")
    assert [p.name for p in tmp_path.iterdir()] == ["best.pth"]  # no temporary file left behind
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(load_model(path)(x), model(x))
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pth")
