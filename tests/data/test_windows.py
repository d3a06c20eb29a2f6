"""Windows cut at load time: shapes, labels, a resumable seeded order, full validation coverage."""

from __future__ import annotations

import numpy as np
import pytest

from src.data.windows import (
    IGNORE_INDEX,
    SourceValidation,
    TokenWindows,
    ValidationWindows,
    WindowSampler,
    epoch_window_starts,
    windows_per_epoch,
)

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
def test_validation_batches_are_even_per_rank_one_source_each_and_cover_every_window_once(
    world_size: int,
) -> None:
    sources = [np.arange(1000, dtype=np.uint16), np.arange(500, dtype=np.uint16)]  # 33 + 17 windows
    windows = SourceValidation(sources, 32)
    shards = [windows.batches(4, rank, world_size) for rank in range(world_size)]
    assert len({len(shard) for shard in shards}) == 1  # every rank runs as many forward passes
    real = sorted(i for shard in shards for batch in shard for i in batch if i != windows.PADDING)
    assert real == list(range(len(windows))) == list(range(33 + 17))
    for batch in (b for shard in shards for b in shard):
        items = [windows[i] for i in batch]
        assert len({int(item["source"]) for item in items}) == 1  # a batch holds one source
        if batch == [windows.PADDING]:
            assert (items[0]["labels"] == IGNORE_INDEX).all()  # padding scores no token


def test_mixed_windows_come_from_their_own_source() -> None:
    a, b = np.arange(1000, dtype=np.uint16), np.arange(5000, 5500, dtype=np.uint16)
    windows = TokenWindows([a, b], max_length=64)
    assert windows.offsets == [0, 1000]
    assert windows[10]["input_ids"].tolist() == list(range(10, 74))
    assert windows[1000 + 436]["input_ids"].tolist() == list(range(5436, 5500))  # the last of b
    sampler = WindowSampler([1000, 500], 64, seed=0, weights=[0.5, 0.5], names=["a", "b"], length=2000)
    for start in sampler:  # no window crosses from one source into the next
        source = 0 if start < 1000 else 1
        assert start + 64 <= windows.offsets[source] + len([a, b][source])


def test_one_source_keeps_the_single_stream_order() -> None:
    """A mixture of one source is the order a single stream had (the default run is unchanged)."""
    per_epoch = 10_000 // 64 - 1
    alone = list(WindowSampler([10_000], 64, seed=3, names=["kjv"], length=2 * per_epoch))
    assert alone == np.concatenate([epoch_window_starts(10_000, 64, 3, e) for e in (0, 1)]).tolist()


def test_mixture_shares_resume_ranks_and_wrap_around(caplog: pytest.LogCaptureFixture) -> None:
    sizes, weights = [20_000, 3_000], [0.7, 0.3]
    windows = [windows_per_epoch(n, 64) for n in sizes]  # 311 and 45 per epoch
    length = 5_000

    def stream(**kwargs: object) -> list[int]:
        return list(WindowSampler(sizes, 64, seed=5, weights=weights, names=["big", "small"], **kwargs))

    with caplog.at_level("INFO", logger="src.data.windows"):
        straight = stream(length=length)
    from_small = sum(start >= sizes[0] for start in straight)
    assert abs(from_small / length - 0.3) < 0.01  # realized share within 1% of the weight
    # the small source ran out many times: each wrap-around is logged
    assert "training data small: all 45 windows seen; epoch 2 of it begins" in caplog.text
    small = [start for start in straight if start >= sizes[0]]
    for epoch in range(3):  # each epoch of a source: every one of its windows once, on one shifted grid
        starts = small[epoch * windows[1] : (epoch + 1) * windows[1]]
        assert len(set(starts)) == windows[1] and len({start % 64 for start in starts}) == 1
    assert stream(start=1234, length=length - 1234) == straight[1234:]  # resumes exactly
    for world_size in (2, 4):  # the same global batch windows, whatever the number of ranks
        ranks = [
            stream(length=length // world_size, rank=r, world_size=world_size) for r in range(world_size)
        ]
        assert [start for step in zip(*ranks, strict=True) for start in step] == straight


def test_a_source_of_weight_zero_gives_no_training_window() -> None:
    """``train.mixture: {a: 0, b: 1}``: a is validated on, never trained on."""
    sampler = WindowSampler([5_000, 3_000], 64, seed=0, weights=[0.0, 1.0], names=["a", "b"], length=500)
    assert all(start >= 5_000 for start in sampler)


@pytest.mark.parametrize(("before", "after"), [((2, 2), (1, 4)), ((1, 4), (2, 2)), ((2, 2), (4, 1))])
def test_a_resume_on_another_number_of_ranks_continues_the_same_global_batches(
    before: tuple[int, int], after: tuple[int, int]
) -> None:
    """Elastic resume: 10 steps on ``ranks x per_rank`` windows, then the rest on another split of the
    same global batch (4): every step's global batch is the uninterrupted run's, so no window is read
    twice and none is skipped."""
    sizes, steps, switch = [6_000, 3_000], 30, 10

    def global_batches(ranks: int, per_rank: int, first: int, last: int) -> list[list[int]]:
        streams = [
            list(
                WindowSampler(
                    sizes,
                    64,
                    seed=1,
                    names=["a", "b"],
                    rank=r,
                    world_size=ranks,
                    start=first * per_rank,
                    length=(last - first) * per_rank,
                )
            )
            for r in range(ranks)
        ]
        return [
            sorted(w for stream in streams for w in stream[i * per_rank : (i + 1) * per_rank])
            for i in range(last - first)
        ]

    uninterrupted = global_batches(1, 4, 0, steps)
    assert global_batches(*before, 0, switch) + global_batches(*after, switch, steps) == uninterrupted
