"""``robusthash report``: results files -> a folder with ``index.html`` (self-contained: images embedded, no
network, no JavaScript), ``report.md`` and the tables as CSV.

The report only renders what runs stored: robustness runs (``robusthash attack``), experiments (``robusthash
run`` / ``demo``, which bring their robustness files) and benchmark rows. Every file is read into its typed
document (:mod:`robusthash.results`); nothing is trained, attacked or loaded from a dataset here. Robustness runs
of several models on the same data and suite make a defence table; their stored galleries make the retrieval
gallery.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robusthash.app.report.gallery import draw_gallery
from robusthash.app.report.glossary import used_terms
from robusthash.app.report.plots import (
    plot_budget_curve,
    plot_certified,
    plot_efficiency,
    plot_pr_and_pn,
    shows_cost,
)
from robusthash.app.report.tables import (
    attack_rows,
    budget_rows,
    certify_rows,
    flag_rows,
    fmt,
    markdown_table,
)
from robusthash.errors import UserError
from robusthash.results import (
    BenchmarkRows,
    CertifyRun,
    ExperimentRun,
    ModelCard,
    RobustnessRun,
    load_results,
    now,
)


@dataclass
class Table:
    """A table kept as data, rendered to Markdown, HTML and CSV alike."""

    name: str
    title: str
    header: list[str]
    rows: list[list[Any]]
    note: str = ""

    def cells(self) -> list[list[str]]:
        return [
            [fmt(v) if isinstance(v, float) else ("" if v is None else str(v)) for v in r] for r in self.rows
        ]

    def markdown(self) -> str:
        lines = ["| " + " | ".join(self.header) + " |", "|---" + "|---:" * (len(self.header) - 1) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in self.cells()]
        return f"### {self.title}\n\n" + "\n".join(lines) + ("\n\n" + self.note if self.note else "") + "\n"

    def html(self) -> str:
        note = f"<p class='note'>{html.escape(self.note)}</p>" if self.note else ""
        return f"<h3>{html.escape(self.title)}</h3>{table_html(self.header, self.cells())}{note}"

    def write_csv(self, folder: Path) -> Path:
        path = folder / f"{self.name}.csv"
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(self.header)
            writer.writerows(self.cells())
        return path


NUMBER = re.compile(r"-?[\d,]*\.?\d+(e-?\d+)?x?")


def table_html(header: list[str], rows: list[list[str]]) -> str:
    """An HTML table whose numeric columns are right-aligned and text columns left-aligned."""
    numeric = [
        any(r[i].strip() for r in rows) and all(NUMBER.fullmatch(r[i].strip()) for r in rows if r[i].strip())
        for i in range(len(header))
    ]

    def cell(tag: str, text: str, i: int) -> str:
        return f"<{tag} class='{'num' if numeric[i] else 'text'}'>{html.escape(text)}</{tag}>"

    head = "".join(cell("th", h, i) for i, h in enumerate(header))
    body = "".join(
        "<tr>" + "".join(cell("td", c, i) for i, c in enumerate(r[: len(header)])) + "</tr>" for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


@dataclass
class Figure:
    path: Path
    caption: str
    wide: bool = False


@dataclass
class Section:
    title: str
    intro: str = ""
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    markdown: str = ""  # pre-rendered Markdown (benchmark tables)
    glossary: list[tuple[str, str]] = field(default_factory=list)
    summary: bool = False  # the opening paragraph, set apart


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


@dataclass
class Inputs:
    """The report's typed inputs, by kind."""

    runs: list[tuple[Path, RobustnessRun]] = field(default_factory=list)
    benches: list[tuple[Path, BenchmarkRows]] = field(default_factory=list)
    certified: list[tuple[Path, CertifyRun]] = field(default_factory=list)
    cards: list[tuple[Path, ModelCard]] = field(default_factory=list)


def collect(paths: list[Path]) -> Inputs:
    """Typed robustness runs, certificates and benchmark rows of the inputs (an experiment brings its files)."""
    found = Inputs()
    runs, benches = found.runs, found.benches
    seen: set[Path] = set()
    queue = list(paths)
    while queue:
        path = Path(queue.pop(0)).resolve()
        if path in seen:
            continue
        seen.add(path)
        doc = load_results(path)
        if isinstance(doc, ExperimentRun):
            queue += (
                [path.parent / row.results for row in doc.rows]
                + [path.parent / c for c in doc.certified]
                + [path.parent / c for c in doc.cards]
            )
        elif isinstance(doc, RobustnessRun):
            runs.append((path, doc))
        elif isinstance(doc, BenchmarkRows):
            benches.append((path, doc))
        elif isinstance(doc, CertifyRun):
            found.certified.append((path, doc))
        elif isinstance(doc, ModelCard):
            from robusthash.cards import read_card

            found.cards.append((path, read_card(path)))  # validated against the card schema
        else:
            raise UserError(
                f"{path} holds a {doc.kind} run; the report renders attack results, certificates, model cards, "
                "experiments and benchmark rows"
            )
    return found


def attack_section(path: Path, run: RobustnessRun, figures: Path, index: int) -> Section:
    header, rows = attack_rows(run)
    label = run.model_label
    caption = f"{label} model: {run.describe()}"
    table = Table(
        f"attacks-{index}-{_slug(label)}",
        f"Attacks on the {label} model",
        header,
        rows,
        note=caption + f". Source: {path.name}.",
    )
    subject = f"{label} model"
    pr, pn = plot_pr_and_pn(run, subject, figures, stem=f"{index}-")
    tables = [table]
    budgets = budget_rows(run)
    if budgets:
        tables.append(
            Table(
                f"budgets-{index}-{_slug(label)}",
                f"Query attacks on the {label} model: mAP against query budget",
                *budgets,
                note="Attacks that see only the service's answers.",
            )
        )
    flags = flag_rows(run)
    if flags:
        tables.append(
            Table(
                f"flags-{index}-{_slug(label)}",
                f"Checks for masked gradients on the {label} model",
                *flags,
                note="A fired check means the robust mAP is an optimistic upper bound.",
            )
        )
    extra = []
    if shows_cost(run):  # under one step count for all (PGD-20), time differences are noise: no plot
        eff = plot_efficiency(run, subject, figures / f"{index}-efficiency.png")
        extra.append(
            Figure(eff, "mAP under attack against seconds per adversarial image (log scale). " + caption)
        )
    if budgets:
        curve = plot_budget_curve(run, subject, figures / f"{index}-budget.png")
        extra.append(
            Figure(
                curve,
                "mAP against queries sent, for the attacks that only see the service's answers. " + caption,
            )
        )
    return Section(
        f"{label[0].upper() + label[1:]} model",
        intro=caption,
        tables=tables,
        figures=[
            Figure(pr, "Precision-recall by Hamming radius, clean and attacked queries. " + caption),
            Figure(pn, "Precision@N, clean and attacked queries. " + caption),
            *extra,
        ],
    )


def _group_key(run: RobustnessRun) -> str:
    data = {**run.dataset.options(), "data_dir": None}
    return json.dumps([data, run.suite, run.record.bits], sort_keys=True)


def defense_table(runs: list[tuple[Path, RobustnessRun]]) -> Table | None:
    """CgAT's table (rows = models, columns = clean, attacks, robust) when several models share data and suite."""
    groups: dict[str, list[RobustnessRun]] = {}
    for _, run in runs:
        groups.setdefault(_group_key(run), []).append(run)
    group = max(groups.values(), key=len)
    if len(group) < 2:
        return None
    names = group[0].attack_names
    displays = [a.display_name for a in group[0].attacks]
    k = group[0].clean.topk or "all"
    rows = [
        [r.model_label, r.clean.map]
        + [r.attack(a).map if a in r.attack_names else None for a in names]
        + [r.robust_map]
        for r in group
    ]
    return Table(
        "defenses",
        f"Defences: mAP@{k} of each model, clean and under each attack",
        ["model", "Clean"] + displays + ["robust"],
        rows,
        note=group[0].describe().split(";", 1)[1].strip().capitalize() + ".",
    )


def certify_section(path: Path, run: CertifyRun, figures: Path, index: int) -> Section:
    """A certificate run: the table per radius and the band between certified and empirical mAP."""
    label = run.model_label
    caption = (
        f"Center smoothing of the {label} model's query codes, sigma {run.sigma:g}, {len(run.query_indices)} "
        f"queries, mAP over the whole database. Certified: a lower bound (probability 0.99 over the sampling); "
        f"empirical: the smoothed model under L2 {', '.join(run.empirical_ap) or 'no'} attacks, an upper bound."
    )
    table = Table(
        f"certify-{index}", f"Certified robustness of the {label} model", *certify_rows(run), note=caption
    )
    figure = plot_certified(run, f"{label} model", figures / f"{index}-certified.png")
    return Section(
        f"Certified: {label} model",
        intro=caption + f" Source: {path.name}.",
        tables=[table],
        figures=[Figure(figure, "Certified and empirical mAP against the L2 radius. " + caption)],
    )


def leaderboard_sections(cards: list[tuple[Path, ModelCard]]) -> list[Section]:
    """The leaderboard of the cards (one table per board, :mod:`robusthash.app.report.leaderboard`), then each card."""
    from robusthash.app.report.leaderboard import HEADER, board_rows, boards, card_markdown, protocol_line

    tables = [
        Table(
            f"leaderboard-{i}",
            board.title,
            HEADER,
            board_rows(board),
            note=f"Protocol {protocol_line(board.protocol)}.",
        )
        for i, board in enumerate(boards([c for _, c in cards]))
    ]
    intro = (
        "Model cards ranked by robust mAP within each dataset, code length and eps; robust mAP is an upper bound "
        "(per query the lowest AP the protocol's attacks reached). A card measured under another protocol is "
        "listed apart and not ranked; flags name the checks for masked gradients that fired."
    )
    return [
        Section("Leaderboard", intro=intro, tables=tables),
        Section("Model cards", markdown="\n".join(card_markdown(c) for _, c in cards)),
    ]


def gallery_section(runs: list[tuple[Path, RobustnessRun]], figures: Path) -> Section | None:
    """The stored galleries of the weakest and the most robust model."""
    usable = sorted((run for _, run in runs if run.gallery is not None), key=lambda r: r.robust_map)
    if not usable:
        return None
    chosen = [usable[0]] + ([usable[-1]] if len(usable) > 1 else [])
    galleries = {run.model_label: run.gallery for run in chosen if run.gallery is not None}
    attack = chosen[0].gallery.attack if chosen[0].gallery else "?"
    caption = f"{chosen[0].describe()}; gallery attack {attack}"
    path = draw_gallery(galleries, figures / "gallery.png")
    return Section(
        "Retrieval gallery",
        intro="What an attack does to retrieval: for a few queries, the top-10 "
        "database items before and after the attack, on the weakest and the most robust model.",
        figures=[Figure(path, caption, wide=True)],
    )


def benchmark_sections(benches: list[tuple[Path, BenchmarkRows]]) -> list[Section]:
    """A benchmark's stored Markdown (its own layout, rendered by its script), else its rows as a table."""
    sections = []
    for path, doc in benches:
        if doc.markdown:
            md = doc.markdown
        elif doc.rows:
            header = list(
                dict.fromkeys(k for row in doc.rows for k, v in row.items() if not isinstance(v, dict))
            )
            md = markdown_table(header, [[row.get(k) for k in header] for row in doc.rows])
        else:
            md = "```\n" + json.dumps(doc.summary, indent=2) + "\n```\n" if doc.summary else "(no rows)\n"
        sections.append(
            Section(f"Benchmark {doc.benchmark}: {path.name}", intro=f"Command: `{doc.command}`", markdown=md)
        )
    return sections


def summary(
    runs: list[RobustnessRun],
    benches: list[BenchmarkRows],
    certified: list[CertifyRun] = (),
    cards: list[ModelCard] = (),
) -> str:
    """What happened, in words and numbers: the first model's clean mAP, its strongest attack and robust mAP;
    the most robust model against it; any check for masked gradients that fired."""
    attacked = [r for r in runs if r.attacks]
    bounds = " ".join(_certified_sentence(c) for c in certified)
    if not attacked:
        if bounds:
            return bounds
        if cards:
            from robusthash.app.report.leaderboard import boards

            leaders = [
                f"{b.dataset} {b.bits} bits: {b.cards[0].name} ({fmt(b.cards[0].robust_map)} robust, "
                f"{fmt(b.cards[0].clean_map)} clean)"
                for b in boards(list(cards))
                if b.ranked
            ]
            return (
                f"{len(cards)} model card(s). First on each board: {'; '.join(leaders)}. A robust mAP is an upper "
                "bound: an attack not run may go lower."
            )
        names = ", ".join(b.benchmark for b in benches) or "no attack run"
        return f"Benchmark rows of {names}: each section shows the benchmark's own tables and figures."
    first = attacked[0]
    k = first.clean.topk or "all"
    strongest = min(first.attacks, key=lambda a: a.map)
    text = (
        f"Under attack ({first.describe().split(';', 1)[1].strip()}), the {first.model_label} model's "
        f"mAP@{k} falls from {fmt(first.clean.map)} clean to {fmt(strongest.map)} under its strongest attack, "
        f"{strongest.display_name}, and to a robust mAP of {fmt(first.robust_map)} (the worst case per query)."
    )
    best = max(attacked, key=lambda r: r.robust_map)
    if best is not first:
        others = [r for r in attacked if r not in (first, best)]
        text += (
            f" The most robust model is {best.model_label}: robust mAP {fmt(best.robust_map)} "
            f"({fmt(best.robust_map - first.robust_map, '+.4f')}) at a clean mAP of {fmt(best.clean.map)} "
            f"({fmt(best.clean.map - first.clean.map, '+.4f')})"
            + (
                "; then " + ", ".join(f"{r.model_label} {fmt(r.robust_map)}" for r in others[::-1]) + "."
                if others
                else "."
            )
        )
    fired = [(r.model_label, f.name) for r in runs for f in r.flags if f.fired]
    if fired:
        text += (
            " Checks for masked gradients fired ("
            + ", ".join(f"{name} on {label}" for label, name in fired)
            + "): those robust mAPs are optimistic."
        )
    elif any(r.flags for r in runs):
        text += " No check for masked gradients fired."
    text += " A robust mAP is an upper bound: an attack not run may go lower."
    return text + (" " + bounds if bounds else "")


def _certified_sentence(run: CertifyRun) -> str:
    """Where the certificate says the smoothed model's mAP lies, at its largest radius with a certified query."""
    reached = [k for k in range(len(run.radii)) if any(r is not None for r in run.hamming[k])]
    if not reached:
        return f"No query of the {run.model_label} model could be certified at sigma {run.sigma:g}."
    k = reached[-1]
    return (
        f"Certified ({run.model_label} model, center smoothing at sigma {run.sigma:g}): under any L2 "
        f"perturbation up to {run.radii[k]:g}, the smoothed model's mAP (whole database) is at least "
        f"{fmt(run.certified_map[k])}, and the attacks brought it to {fmt(run.empirical_map[k])}."
    )


def glossary_section(sections: list[Section]) -> Section:
    headers = [h for sec in sections for t in sec.tables for h in t.header]
    terms = used_terms(headers, figures=any(sec.figures for sec in sections))
    return Section("Glossary", glossary=terms)


def _environment_lines(docs: list[RobustnessRun | BenchmarkRows]) -> list[str]:
    seen = []
    for doc in docs:
        env = doc.environment or {}
        line = ", ".join(
            f"{k} {env[k]}"
            for k in ("robusthash", "torch", "torchvision", "numpy", "python", "device", "device_name")
            if k in env
        )
        if line and line not in seen:
            seen.append(line)
    return seen


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;color:#222;
  line-height:1.45;padding:0 1em}
h1{font-size:1.7em}
h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
th,td{border:1px solid #ccc;padding:.25em .6em}
.num{text-align:right}.text{text-align:left}
th{background:#f3f3f3;vertical-align:bottom}
.summary{font-size:1.08em;background:#f6f8fa;border-left:4px solid #4c72b0;padding:.6em 1em}
dt{font-weight:600;margin-top:.4em}dd{margin-left:1.5em}
tbody tr:nth-child(even){background:#fafafa}
figure{margin:.8em 1% .8em 0;display:inline-block;vertical-align:top;width:48.5%}
figure.wide{width:100%}
figure img{max-width:100%;border:1px solid #eee}
figcaption,.note,.meta{font-size:.9em;color:#444}
pre{background:#f6f6f6;padding:.6em;overflow:auto}
code{background:#f3f3f3;padding:0 .2em}
"""


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f"data:image/png;base64,{data}"


def _markdown_to_html(md: str, figures_dir: Path) -> str:
    """The small Markdown subset the benchmark views use: headings, tables, images, code blocks, paragraphs."""
    out, table, code = [], [], False
    for line in md.splitlines() + [""]:
        if line.startswith("```"):
            out.append("</pre>" if code else "<pre>")
            code = not code
            continue
        if code:
            out.append(html.escape(line))
            continue
        if line.startswith("|"):
            table.append([c.strip() for c in line.strip().strip("|").split("|")])
            continue
        if table:
            head, *body = [r for r in table if not set("".join(r)) <= set("-:")]
            out.append(table_html(head, [r + [""] * (len(head) - len(r)) for r in body]))
            table = []
        image = re.match(r"!\[(.*)\]\((.*)\)", line.strip())
        if image:
            path = figures_dir / Path(image.group(2)).name
            if path.is_file():
                out.append(
                    f"<figure class='wide'><img src='{_img(path)}' alt='{html.escape(image.group(1))}'>"
                    "</figure>"
                )
        elif line.startswith("#"):
            level = min(len(line) - len(line.lstrip("#")) + 2, 5)
            out.append(f"<h{level}>{html.escape(line.lstrip('#').strip())}</h{level}>")
        elif line.strip():
            text = html.escape(line)
            text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
            text = re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", text)
            out.append(f"<p>{text}</p>")
    return "\n".join(out)


def build_report(paths: list[str | Path], out: str | Path) -> Path:
    """Write ``index.html``, ``report.md``, CSV tables and PNG figures for ``paths`` into ``out``."""
    if not paths:
        raise UserError(
            "no results file given; pass attack results, an experiment's results.json or benchmark rows"
        )
    out = Path(out)
    inputs = collect([Path(p) for p in paths])
    runs, benches = inputs.runs, inputs.benches
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    runs.sort(key=lambda pr: (pr[1].model_label != "undefended", pr[1].robust_map))
    for _, doc in benches:
        for name, data in doc.figure_bytes().items():
            (figures / name).write_bytes(data)
    sections: list[Section] = [
        Section(
            "Summary",
            intro=summary(
                [r for _, r in runs],
                [b for _, b in benches],
                [c for _, c in inputs.certified],
                [c for _, c in inputs.cards],
            ),
            summary=True,
        )
    ]
    table = defense_table(runs) if runs else None
    if table:
        intro = "Clean and attacked mAP of each model; robust = mean over queries of the lowest AP any attack reached."
        sections.append(Section("Defences", intro=intro, tables=[table]))
    for i, (path, run) in enumerate(runs):
        sections.append(attack_section(path, run, figures, i))
    for i, (path, cert) in enumerate(inputs.certified):
        sections.append(certify_section(path, cert, figures, i))
    section = gallery_section(runs, figures) if runs else None
    if section:
        sections.append(section)
    if inputs.cards:
        sections += leaderboard_sections(inputs.cards)
    sections += benchmark_sections(benches)
    sections.append(glossary_section(sections))
    docs: list[Any] = [d for _, d in [*runs, *inputs.certified, *inputs.cards, *benches]]
    created = now()
    env = _environment_lines(docs)
    sources = [_shown(p) for p, _ in [*runs, *inputs.certified, *inputs.cards, *benches]]
    for section in sections:
        for t in section.tables:
            t.write_csv(out)
    (out / "report.md").write_text(_render_markdown(sections, created, env, sources), encoding="utf-8")
    (out / "index.html").write_text(_render_html(sections, created, env, sources, figures), encoding="utf-8")
    return out / "index.html"


def _shown(path: Path) -> str:
    """A source file as the reader named it: relative to the working folder (an absolute path only when it is
    on another drive)."""
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def _render_markdown(sections: list[Section], created: str, env: list[str], sources: list[str]) -> str:
    parts = [
        f"# robusthash robustness report\n\nCreated {created} from: " + ", ".join(f"`{s}`" for s in sources)
    ]
    for s in sections:
        parts.append(f"\n## {s.title}\n")
        if s.intro:
            parts.append(s.intro + "\n")
        parts += [t.markdown() for t in s.tables]
        parts += [f"- **{term}**: {text}" for term, text in s.glossary]
        parts += [f"![{f.caption}](figures/{f.path.name})\n\n*{f.caption}*\n" for f in s.figures]
        if s.markdown:
            parts.append(s.markdown)
    parts.append("\n## Environment\n\n" + "\n".join(f"- {e}" for e in env) + "\n")
    return "\n".join(parts)


def _render_html(
    sections: list[Section], created: str, env: list[str], sources: list[str], figures: Path
) -> str:
    body = [
        f"<h1>robusthash robustness report</h1><p class='meta'>Created {html.escape(created)} from "
        + ", ".join(f"<code>{html.escape(s)}</code>" for s in sources)
        + "</p>"
    ]
    for s in sections:
        body.append(f"<h2 id='{_slug(s.title)}'>{html.escape(s.title)}</h2>")
        if s.intro:
            intro = re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(s.intro))
            body.append(f"<p class='{'summary' if s.summary else 'intro'}'>{intro}</p>")
        if s.glossary:
            body.append(
                "<dl>"
                + "".join(f"<dt>{html.escape(t)}</dt><dd>{html.escape(d)}</dd>" for t, d in s.glossary)
                + "</dl>"
            )
        body += [t.html() for t in s.tables]
        body += [
            f"<figure class='{'wide' if f.wide else ''}'><img src='{_img(f.path)}' "
            f"alt='{html.escape(f.caption)}'><figcaption>{html.escape(f.caption)}</figcaption></figure>"
            for f in s.figures
        ]
        if s.markdown:
            body.append(_markdown_to_html(s.markdown, figures))
    body.append("<h2>Environment</h2><ul>" + "".join(f"<li>{html.escape(e)}</li>" for e in env) + "</ul>")
    return (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>robusthash report</title>"
        f"<style>{CSS}</style></head><body>" + "\n".join(body) + "</body></html>\n"
    )
