"""Windows cut at load time: shapes, labels, a resumable seeded order, full validation coverage."""

from __future__ import annotations

import numpy as np
import pytest

from src.data.windows import IGNORE_INDEX, TokenWindows, ValidationWindows, WindowSampler, epoch_window_starts

TOKENS = np.arange(10_000, dtype=np.uint16)


def test_train_windows_have_max_length_and_labels_equal_inputs() -> None:
    windows = TokenWindows(TOKENS, max_length=64)
    item = windows[100]
    assert item["input_ids"].shape == (64,) and item["labels"].shape == (64,)
    assert item["input_ids"].tolist() == list(range(100, 164))
    assert item["labels"].tolist() == item["input_ids"].tolist()  # the model shifts them


def test_order_is_a_pure_function_of_seed_and_epoch() -> None:
    a = epoch_window_starts(10_000, 64, seed=1, epoch=0)
    assert np.array_equal(a, epoch_window_starts(10_000, 64, seed=1, epoch=0))
    assert not np.array_equal(a, epoch_window_starts(10_000, 64, seed=1, epoch=1))
    assert not np.array_equal(a, epoch_window_starts(10_000, 64, seed=2, epoch=0))
    assert len(set(a.tolist())) == len(a) and all(0 <= s <= 10_000 - 64 for s in a)
    assert len({s % 64 for s in a}) == 1  # one grid per epoch: windows never overlap


def test_a_resumed_stream_continues_exactly_where_it_stopped() -> None:
    per_epoch = 10_000 // 64 - 1
    straight = list(WindowSampler(10_000, 64, seed=3, length=3 * per_epoch))
    resumed = WindowSampler(10_000, 64, seed=3, start=200, length=3 * per_epoch - 200)
    assert len(resumed) == len(straight) - 200
    assert list(resumed) == straight[200:]
    for epoch in range(3):  # the stream is epoch after epoch of the seeded order
        chunk = straight[epoch * per_epoch : (epoch + 1) * per_epoch]
        assert chunk == epoch_window_starts(10_000, 64, seed=3, epoch=epoch).tolist()


def test_ranks_read_distinct_windows_of_equal_count() -> None:
    parts = [list(WindowSampler(10_000, 64, seed=0, rank=r, world_size=3)) for r in range(3)]
    assert len({len(p) for p in parts}) == 1
    assert not set(parts[0]) & set(parts[1]) and not set(parts[1]) & set(parts[2])
    resumed = list(WindowSampler(10_000, 64, seed=0, rank=1, world_size=3, start=5, length=len(parts[1]) - 5))
    assert resumed == parts[1][5:]


@pytest.mark.parametrize("length", [64, 65, 100, 127, 9_999])
def test_validation_windows_predict_every_token_but_the_first_once(length: int) -> None:
    windows = ValidationWindows(TOKENS[:length] if length <= len(TOKENS) else TOKENS, max_length=64)
    predicted = np.zeros(length, dtype=int)
    for index in range(len(windows)):
        item = windows[index]
        start = int(item["input_ids"][0])
        assert item["input_ids"].shape == (64,)
        # The model predicts position p (p >= 1) from the ones before: label 0 never counts.
        targets = np.flatnonzero(item["labels"].numpy()[1:] != IGNORE_INDEX) + 1 + start
        predicted[targets] += 1
    assert predicted[0] == 0
    assert (predicted[1:] == 1).all()


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_validation_shards_are_even_and_cover_every_window_once(world_size: int) -> None:
    windows = ValidationWindows(np.arange(1000, dtype=np.uint16), 32)  # 33 windows
    shards = [list(windows.padded(rank, world_size)) for rank in range(world_size)]
    assert len({len(shard) for shard in shards}) == 1  # every rank runs as many forward passes
    real = sorted(i for shard in shards for i in shard if i < len(windows))
    assert real == list(range(len(windows)))
    for index in (i for shard in shards for i in shard if i >= len(windows)):
        assert (windows[index]["labels"] == IGNORE_INDEX).all()  # padding scores no token
