"""The query threat model: the victim as a retrieval service shows it to an attacker.

A :class:`QueryOracle` answers images with what the service returns and counts every image sent, per query
being attacked (duplicates count; nothing is cached). It gives no gradients and no weights: its answers are
computed under ``torch.no_grad`` from detached inputs. Two access levels:

- ``code``: the query's K-bit code in {-1, +1} (``continuous=True``: the continuous code tanh(h) instead);
- ``rank``: the indices of the top-``topk`` database items under the Hamming ranking (ties by index), as a
  retrieval service returns its result list.

Each attacked query has a budget of images; a call that would pass it raises :class:`BudgetExceeded`, so an
attack cannot overspend silently.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from robusthash.codes import binarize
from robusthash.errors import UserError

ACCESS_LEVELS: tuple[str, ...] = ("code", "rank")


class BudgetExceeded(RuntimeError):
    """An attack sent more images for a query than its budget allows."""


def top_ranked(codes: Tensor, database: Tensor, k: int) -> Tensor:
    """Indices (N, k) of the ``k`` nearest database codes to each of ``codes`` in Hamming distance, ties broken by
    database index (the stable order every metric of robusthash uses)."""
    n = database.shape[0]
    distance = (codes.shape[1] - codes.float() @ database.float().T).round().long() // 2
    key = distance * n + torch.arange(n, device=codes.device)
    return torch.topk(key, min(k, n), dim=1, largest=False, sorted=True).indices


class QueryOracle:
    """``model`` behind a service interface for ``count`` attacked queries with ``budget`` images each.

    ``database`` holds the service's database codes (N, K) (needed for ``rank`` access). ``spent[i]`` is the
    number of images sent on behalf of query i so far.
    """

    def __init__(
        self,
        model: Any,
        count: int,
        budget: int,
        access: str = "code",
        database: Tensor | None = None,
        topk: int = 100,
        continuous: bool = False,
    ) -> None:
        if access not in ACCESS_LEVELS:
            raise UserError(f"unknown access level {access!r}; valid: {', '.join(ACCESS_LEVELS)}")
        if not isinstance(budget, int) or budget < 1:
            raise UserError(f"the query budget must be a positive integer, got {budget!r}")
        if access == "rank" and database is None:
            raise UserError("rank access needs the service's database codes")
        if not isinstance(topk, int) or topk < 1:
            raise UserError(f"topk must be a positive integer, got {topk!r}")
        self._model = model
        self._database = database
        self.access = access
        self.budget = budget
        self.topk = topk
        self.continuous = continuous
        self.spent = torch.zeros(count, dtype=torch.long)

    def remaining(self) -> Tensor:
        return self.budget - self.spent

    def _charge(self, owners: Tensor) -> None:
        owners = torch.as_tensor(owners, dtype=torch.long).cpu()
        spent = self.spent.clone().index_add_(0, owners, torch.ones_like(owners))
        if bool((spent > self.budget).any()):
            raise BudgetExceeded(f"query budget of {self.budget} images exceeded")
        self.spent = spent

    @torch.no_grad()
    def __call__(self, images: Tensor, owners: Tensor) -> Tensor:
        """The service's answers to ``images`` (M, C, H, W), sent on behalf of the queries ``owners`` (M,).

        ``code`` access: (M, K) codes (binary, or continuous); ``rank`` access: (M, topk) database indices.
        """
        if images.shape[0] != len(owners):
            raise ValueError(f"{images.shape[0]} images but {len(owners)} owners")
        self._charge(owners)
        h = self._model.preactivation(images.detach()).float()
        if self.access == "code":
            return torch.tanh(h) if self.continuous else binarize(h)
        assert self._database is not None
        return top_ranked(binarize(h), self._database.to(h.device), self.topk)
