"""The run's record: what checkpoints carry and what a new MLflow run is filled with."""

from __future__ import annotations

from src.train.history import History, tracked_train_metrics


def recorded() -> History:
    history = History()
    for step in (1, 2):
        history.train.append(
            {"step": step, "train_loss": 5.0 - step, "lr": 0.01 * step, "tokens_per_s": 100.0}
        )
    history.val[2] = {"val_loss": 4.5, "val_perplexity": 90.0}
    history.tokens_seen, history.train_seconds = 256, 2.5
    return history


def test_state_round_trip_gives_an_independent_equal_history() -> None:
    history = recorded()
    state = history.state()
    assert state["seconds"] == 2.5 and state["tokens_seen"] == 256
    again = History.from_state(state)
    assert again == history
    again.train.append({"step": 3, "train_loss": 1.0, "lr": 0.0, "tokens_per_s": 1.0})
    again.val[3] = {"val_loss": 1.0, "val_perplexity": 2.7}
    assert len(history.train) == 2 and list(history.val) == [2]  # the copy does not share its lists


def test_tracked_lists_every_step_as_mlflow_metrics() -> None:
    assert recorded().tracked() == [
        ({"train_loss": 4.0, "lr": 0.01, "step_tokens_per_s": 100.0}, 1),
        ({"train_loss": 3.0, "lr": 0.02, "step_tokens_per_s": 100.0}, 2),
        ({"val_loss": 4.5, "val_perplexity": 90.0}, 2),
    ]
    row = {"step": 7, "train_loss": 1.5, "lr": 0.1, "tokens_per_s": 50.0}
    assert tracked_train_metrics(row) == {"train_loss": 1.5, "lr": 0.1, "step_tokens_per_s": 50.0}
