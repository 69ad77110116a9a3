from cybulde.tracking.lightning import in_training_metric


def test_in_training_values_are_marked_and_epochs_are_one_based() -> None:
    assert in_training_metric("val/macro_f1", 0.75) == ("train/val_macro_f1", 0.75)
    assert in_training_metric("val/loss", 0.5) == ("train/val_loss", 0.5)
    assert in_training_metric("epoch", 0.0) == ("train/epoch", 1.0)  # like metrics/train.json's best_epoch
    assert in_training_metric("train/loss", 0.25) == ("train/loss", 0.25)
