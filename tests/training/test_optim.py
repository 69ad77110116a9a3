"""Lazy AdamW for the token-embedding table, checked against torch's own AdamW and SparseAdam."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from cybulde.training.optim import LazyEmbeddingAdamW, clip_grad_norm

VOCAB, WIDTH = 12, 4


class TinyModel(nn.Module):
    def __init__(self, sparse: bool) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embedding = nn.Embedding(VOCAB, WIDTH, sparse=sparse)
        self.output = nn.Linear(WIDTH, 2)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.output(self.embedding(ids).mean(dim=1))


def batches(rows: list[int], steps: int = 5) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    picks = torch.tensor(rows)
    return [(picks[torch.randint(len(rows), (6, 5), generator=generator)], torch.randint(2, (6,), generator=generator))
            for _ in range(steps)]


def train(model: nn.Module, optimizer: torch.optim.Optimizer, data, max_norm: float = 0.0) -> None:
    for ids, labels in data:
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(ids), labels).backward()
        if max_norm:
            clip_grad_norm(model.parameters(), max_norm)
        optimizer.step()


def every_row_in_every_batch(steps: int = 5) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(2)
    return [(torch.stack([torch.randperm(VOCAB, generator=generator) for _ in range(6)]),
             torch.randint(2, (6,), generator=generator)) for _ in range(steps)]


@pytest.mark.parametrize("fused", [False, True], ids=["foreach", "fused"])
def test_rows_that_every_batch_uses_are_updated_exactly_as_adamw_would(fused):
    dense, lazy = TinyModel(sparse=False), TinyModel(sparse=True)
    data = every_row_in_every_batch()
    train(dense, torch.optim.AdamW(dense.parameters(), lr=0.05, weight_decay=0.1, fused=fused), data, max_norm=0.5)
    train(lazy, LazyEmbeddingAdamW(lazy.parameters(), lr=0.05, weight_decay=0.1, fused=fused), data, max_norm=0.5)
    assert not torch.equal(dense.embedding.weight, TinyModel(sparse=False).embedding.weight)  # it trained
    torch.testing.assert_close(lazy.embedding.weight, dense.embedding.weight, rtol=0, atol=1e-6)
    torch.testing.assert_close(lazy.output.weight, dense.output.weight, rtol=0, atol=1e-6)


def test_rows_no_batch_uses_stay_as_they_were_where_adamw_moves_them():
    dense, lazy = TinyModel(sparse=False), TinyModel(sparse=True)
    start = lazy.embedding.weight.detach().clone()
    unused = [9, 10, 11]
    data = batches(rows=[0, 1, 2, 3, 4, 5, 6, 7, 8])
    train(dense, torch.optim.AdamW(dense.parameters(), lr=0.05, weight_decay=0.1), data)
    optimizer = LazyEmbeddingAdamW(lazy.parameters(), lr=0.05, weight_decay=0.1)
    train(lazy, optimizer, data)
    assert torch.equal(lazy.embedding.weight[unused], start[unused])
    assert not torch.equal(dense.embedding.weight[unused], start[unused])  # weight decay moved them there
    state = optimizer.state[lazy.embedding.weight]
    assert not state["exp_avg"][unused].any() and not state["exp_avg_sq"][unused].any()
    assert state["exp_avg"][:9].abs().sum(dim=1).gt(0).all()


def test_without_weight_decay_the_table_follows_torchs_sparse_adam():
    # SparseAdam adds eps before the bias correction, AdamW after it: a tiny eps hides the difference.
    lazy, reference = TinyModel(sparse=True), TinyModel(sparse=True)
    data = batches(rows=[0, 2, 4, 6, 8, 10])
    optimizer = LazyEmbeddingAdamW(lazy.parameters(), lr=0.05, weight_decay=0.0, eps=1e-12)
    train(lazy, optimizer, data)
    sparse_adam = torch.optim.SparseAdam([reference.embedding.weight], lr=0.05, eps=1e-12)
    dense_adam = torch.optim.AdamW([*reference.output.parameters()], lr=0.05, weight_decay=0.0, eps=1e-12)
    for ids, labels in data:
        sparse_adam.zero_grad()
        dense_adam.zero_grad()
        nn.functional.cross_entropy(reference(ids), labels).backward()
        sparse_adam.step()
        dense_adam.step()
    torch.testing.assert_close(lazy.embedding.weight, reference.embedding.weight, rtol=0, atol=1e-6)


def test_sparse_gradients_are_clipped_by_the_norm_of_all_gradients():
    sparse, dense = TinyModel(sparse=True), TinyModel(sparse=False)
    ids, labels = batches(rows=list(range(VOCAB)), steps=1)[0]
    for model in (sparse, dense):
        nn.functional.cross_entropy(model(ids), labels).mul(50).backward()
    total = clip_grad_norm(sparse.parameters(), 0.5)
    expected = nn.utils.clip_grad_norm_(dense.parameters(), 0.5)
    torch.testing.assert_close(total, expected)
    assert float(total) > 0.5  # the clip did something
    torch.testing.assert_close(sparse.embedding.weight.grad.to_dense(), dense.embedding.weight.grad)
    torch.testing.assert_close(sparse.output.weight.grad, dense.output.weight.grad)


def test_the_optimizer_state_resumes_to_the_same_weights():
    data = batches(rows=[1, 3, 5, 7], steps=6)
    straight = TinyModel(sparse=True)
    train(straight, LazyEmbeddingAdamW(straight.parameters(), lr=0.05, weight_decay=0.1), data)

    first = TinyModel(sparse=True)
    optimizer = LazyEmbeddingAdamW(first.parameters(), lr=0.05, weight_decay=0.1)
    train(first, optimizer, data[:3])
    saved_model, saved_state = copy.deepcopy(first.state_dict()), copy.deepcopy(optimizer.state_dict())
    resumed = TinyModel(sparse=True)
    resumed.load_state_dict(saved_model)
    optimizer = LazyEmbeddingAdamW(resumed.parameters(), lr=0.05, weight_decay=0.1)
    optimizer.load_state_dict(saved_state)
    train(resumed, optimizer, data[3:])
    assert torch.equal(resumed.embedding.weight, straight.embedding.weight)
    assert torch.equal(resumed.output.weight, straight.output.weight)
