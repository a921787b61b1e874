"""The leaderboard: model cards ranked by robust mAP within each (dataset, bits, eps), under one protocol.

Like RobustBench's, one protocol is ranked per board: the card protocol's defaults (:class:`~robusthash.cards.
CardProtocol`), or, in a group with no such card, the protocol most of its cards share. A card measured under any
other protocol (other queries, seed, top-K or attacks) is shown apart, with what differs, and never ranked against
the others. A card whose checks for masked gradients fired keeps its place but says so: its robust mAP may be
inflated. Every robust mAP is an upper bound (the worst case the attacks found).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

from robusthash.app.report.tables import fmt, markdown_table
from robusthash.cards import CardProtocol
from robusthash.results import ModelCard


@dataclass
class Board:
    """The cards of one (dataset, bits, eps) under one protocol; ``ranked`` is False for a protocol that differs
    from the group's reference, whose differences ``differs`` names."""

    dataset: str
    bits: int | None
    eps_levels: int
    protocol: dict[str, Any]
    cards: list[ModelCard]
    ranked: bool = True
    differs: str = ""

    @property
    def title(self) -> str:
        head = f"{self.dataset}, {self.bits} bits, eps {self.eps_levels}/255"
        return head if self.ranked else f"{head}: other protocol ({self.differs}), not ranked"


def _differences(protocol: dict[str, Any], reference: dict[str, Any]) -> str:
    keys = sorted(set(protocol) | set(reference))
    return ", ".join(
        f"{k} {protocol.get(k)!r} instead of {reference.get(k)!r}"
        for k in keys
        if protocol.get(k) != reference.get(k)
    )


def boards(cards: list[ModelCard]) -> list[Board]:
    """The boards of ``cards``: per group the ranked board (best robust mAP first; ties by clean mAP, then name)
    and one unranked board per other protocol. A card that appears twice (same name and checkpoint) counts once."""
    unique: dict[tuple[str, str | None, str], ModelCard] = {}
    for card in cards:
        unique.setdefault((card.name, card.checkpoint_sha256, card.protocol_key), card)
    default = json.dumps(CardProtocol().record(), sort_keys=True)
    groups: dict[tuple, list[ModelCard]] = {}
    for card in unique.values():
        groups.setdefault(card.group, []).append(card)
    out = []
    for (dataset, bits, eps), members in sorted(
        groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0, kv[0][2])
    ):
        keys = Counter(c.protocol_key for c in members)
        reference = default if default in keys else max(keys, key=lambda k: (keys[k], k))
        by_key: dict[str, list[ModelCard]] = {}
        for c in members:
            by_key.setdefault(c.protocol_key, []).append(c)
        for key in [reference, *sorted(k for k in by_key if k != reference)]:
            chosen = sorted(by_key[key], key=lambda c: (-c.robust_map, -c.clean_map, c.name))
            protocol = json.loads(key)
            ranked = key == reference
            differs = "" if ranked else _differences(protocol, json.loads(reference))
            out.append(Board(dataset, bits, eps, protocol, chosen, ranked, differs))
    return out


HEADER = [
    "rank",
    "model",
    "defence",
    "loss / backbone",
    "clean mAP",
    "robust mAP (upper bound)",
    "drop",
    "flags",
]


def board_rows(board: Board) -> list[list[Any]]:
    """One row per card: rank (blank on an unranked board), name, defence, recipe, clean and robust mAP, the
    points lost, and the checks for masked gradients that fired."""
    rows = []
    for i, c in enumerate(board.cards):
        fired = [f.name for f in c.fired_flags]
        rows.append(
            [
                str(i + 1) if board.ranked else "",
                c.name,
                c.model_label,
                f"{c.record.loss.upper()} / {c.record.backbone}",
                c.clean_map,
                c.robust_map,
                fmt(100 * (c.clean_map - c.robust_map), ".1f"),
                ", ".join(fired) if fired else "none",
            ]
        )
    return rows


def protocol_line(protocol: dict[str, Any]) -> str:
    topk = protocol.get("topk")
    return (
        f"{protocol.get('name')}: {', '.join(protocol.get('attacks', []))} at L-inf eps "
        f"{round(float(protocol.get('eps', 0)) * 255)}/255, mAP@{topk or 'all'}, {protocol.get('queries')} queries "
        f"drawn with seed {protocol.get('seed')}"
    )


def leaderboard_markdown(cards: list[ModelCard]) -> str:
    """Every board as a Markdown table under its title, with the protocol it ranks."""
    if not cards:
        return "No model cards given.\n"
    parts = [
        "Robust mAP: per query the lowest AP any attack of the protocol reached, averaged (an upper bound on the "
        "true robust mAP). Cards measured under another protocol are listed apart, unranked.\n"
    ]
    for board in boards(cards):
        parts.append(f"### {board.title}\n")
        parts.append(f"Protocol {protocol_line(board.protocol)}.\n")
        parts.append(markdown_table(HEADER, board_rows(board)))
    return "\n".join(parts)


def card_markdown(card: ModelCard) -> str:
    """A short Markdown rendering of one card: the model, the numbers, the attacks, the checks, the cost."""
    record = card.record
    env = card.environment
    lines = [
        f"## {card.name}\n",
        f"{card.model_label} {record.loss.upper()} / {record.backbone} / {record.bits} bits on "
        f"{record.data_ref.name}. Recipe SHA-256 `{card.recipe_sha256[:16]}`"
        + (f", checkpoint SHA-256 `{card.checkpoint_sha256[:16]}`" if card.checkpoint_sha256 else "")
        + ".\n",
        f"- clean mAP@{card.protocol.get('topk')}: {card.clean_map:.4f}",
        f"- robust mAP (upper bound): {card.robust_map:.4f} under {protocol_line(card.protocol)}",
    ]
    fired = card.fired_flags
    lines.append(
        f"- checks for masked gradients: {len(fired)} of {len(card.flags)} fired"
        + (f" ({', '.join(f.name for f in fired)}: the robust mAP may be inflated)" if fired else "")
    )
    cost = f"- cost: {card.seconds:.0f} s to measure on {env.get('device_name', env.get('device', '?'))}"
    if card.training_seconds is not None:
        cost += f"; its last training stage took {card.training_seconds:.0f} s"
    lines.append(cost)
    lines.append(
        f"- versions: robusthash {env.get('robusthash', '?')}, torch {env.get('torch', '?')}; created {card.created}\n"
    )
    rows = [
        [a.display_name, a.threat_model, a.surrogate or "", a.map, fmt(a.seconds_per_image, ".3f")]
        for a in card.attacks
    ]
    lines.append(markdown_table(["attack", "threat model", "surrogate", "mAP", "s / image"], rows))
    transfer = [a for a in card.attacks if a.threat_model == "transfer"]
    if transfer:
        lines.append(
            "Transfer attacks are listed, not counted in the robust mAP (the surrogates differ between models)."
            + (
                " A transfer attack went below the robust mAP: the white-box attacks may be blocked."
                if min(a.map for a in transfer) < card.robust_map
                else ""
            )
            + "\n"
        )
    return "\n".join(lines)


__all__ = [
    "Board",
    "boards",
    "board_rows",
    "leaderboard_markdown",
    "card_markdown",
    "protocol_line",
    "HEADER",
]
