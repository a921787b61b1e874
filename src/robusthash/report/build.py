"""``robusthash report``: results JSON files -> a folder with ``index.html`` (self-contained: images embedded,
no network, no JavaScript), ``report.md`` and the tables as CSV.

Inputs are the files ``robusthash attack`` and ``robusthash demo`` write (``attack_results.json``,
``attacks-*.json``, a demo's ``results.json``, which brings its sibling ``attacks-*.json``) and the benchmarks'
``benchmarks/results/*.json``. Attack results of several models on the same data and attack suite make a
defence table. When the checkpoints named in the results are still on disk, the report also draws the
retrieval gallery (query, top-10, adversarial query, perturbation, top-10).
"""

from __future__ import annotations

import base64
import csv
import datetime as _dt
import html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from robusthash.errors import UserError
from robusthash.report.plots import plot_efficiency, plot_pr_and_pn
from robusthash.report.tables import fmt

ROW_NAMES = {"none": "undefended", "atrdh": "ATRDH", "pga-at": "PgA-AT", "cgat": "CgAT"}
ATTACK_NAMES = {"p2p": "P2P", "dhta": "DHTA", "hag": "HAG", "sdha": "SDHA", "pga": "PgA", "pga-dagger": "PgA-dagger",
                "tha": "THA"}  # fmt: skip


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
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.header)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in self.cells()
        )
        note = f"<p class='note'>{html.escape(self.note)}</p>" if self.note else ""
        return (f"<h3>{html.escape(self.title)}</h3><table><thead><tr>{head}</tr></thead>"
                f"<tbody>{body}</tbody></table>{note}")  # fmt: skip

    def write_csv(self, folder: Path) -> Path:
        path = folder / f"{self.name}.csv"
        with path.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(self.header)
            writer.writerows(self.cells())
        return path


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


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _load(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise UserError(f"results file {path} not found")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise UserError(f"{path} is not a robusthash results file")
    return doc


def collect(paths: list[Path]) -> tuple[list[tuple[Path, dict]], list[tuple[Path, dict]]]:
    """Split the inputs into attack-results documents and benchmark documents (a demo brings its attacks)."""
    attacks: list[tuple[Path, dict]] = []
    benches: list[tuple[Path, dict]] = []
    seen: set[Path] = set()
    queue = list(paths)
    while queue:
        path = Path(queue.pop(0)).resolve()
        if path in seen:
            continue
        seen.add(path)
        doc = _load(path)
        if doc.get("command") == "demo":
            queue += sorted(path.parent.glob("attacks-*.json"))
        elif doc.get("command") == "attack" and "attacks" in doc.get("results", {}):
            attacks.append((path, doc))
        elif "rows" in doc or "timings" in doc:
            benches.append((path, doc))
        else:
            raise UserError(
                f"{path} is neither robusthash attack results, a demo's results nor benchmark rows"
            )
    return attacks, benches


def _dataset_options(doc: dict[str, Any]) -> dict[str, Any]:
    """The options that reload a results file's data: its own config, else what its checkpoint recorded."""
    stored = doc.get("config", {}).get("dataset") or (doc.get("model") or {}).get("dataset") or {}
    return {"name": stored.get("name", "fashion-mnist"), "data_dir": stored.get("data_dir"),
            "database": stored.get("database", 10_000), "split_seed": stored.get("split_seed", 0),
            "image_size": stored.get("image_size")}  # fmt: skip


def _model_name(doc: dict[str, Any]) -> str:
    model = doc.get("model") or {}
    defense = (model.get("defense") or {}).get("method")
    return ROW_NAMES.get(defense or "none", defense or "undefended")


def _setting(doc: dict[str, Any]) -> str:
    model = doc.get("model") or {}
    m, t = model.get("model") or {}, model.get("train") or {}
    suite = doc.get("config", {}).get("suite", {})
    data = (model.get("dataset") or {}).get("name") or doc.get("config", {}).get("dataset", {}).get(
        "name", "?"
    )
    return (f"{t.get('loss', '?')} / {m.get('backbone', '?')} / {m.get('bits', '?')} bits on {data}; "
            f"protocol {suite.get('protocol', '?')}, eps {suite.get('eps', 0) * 255:.0f}/255, "
            f"{doc['results']['queries']} queries, seed {doc.get('seed')}")  # fmt: skip


def attack_section(path: Path, doc: dict[str, Any], figures: Path, index: int) -> Section:
    results = doc["results"]
    topk = results["clean"]["topk"]
    rows: list[list[Any]] = [["clean", "", results["clean"]["map"], None, None, None, None, None]]
    for name, r in results["attacks"].items():
        rows.append([ATTACK_NAMES.get(name, name), r["settings"]["steps"], r["map"], r.get("tmap"),
                     f"{r['seconds_per_image']:.4f}", f"{r['bits_flipped']:.2f}", f"{r['linf'] * 255:.2f}",
                     f"{r['l2']:.3f}"])  # fmt: skip
    if "robust_map" in results:
        rows.append(
            ["robust (worst case per query)", "", results["robust_map"], None, None, None, None, None]
        )
    caption = f"{_model_name(doc)} model: {_setting(doc)}"
    table = Table(f"attacks-{index}-{_slug(_model_name(doc))}", f"Attacks on the {_model_name(doc)} model",
                  ["attack", "steps", f"mAP@{topk}", f"t-mAP@{topk}", "s / image", "bits flipped", "L-inf (x255)",
                   "L2"], rows, note=caption + f". Source: {path.name}.")  # fmt: skip
    pr, pn = plot_pr_and_pn(results, caption, figures, stem=f"{index}-")
    eff = plot_efficiency(results, caption, figures / f"{index}-efficiency.png")
    return Section(
        f"{_model_name(doc)} model",
        intro=caption,
        tables=[table],
        figures=[Figure(pr, "Precision-recall by Hamming radius, clean and attacked queries. " + caption),
                 Figure(pn, "Precision@N, clean and attacked queries. " + caption),
                 Figure(eff, "mAP under attack against seconds per adversarial image. " + caption)],
    )  # fmt: skip


def defense_table(attacks: list[tuple[Path, dict]]) -> Table | None:
    """CgAT's table (rows = models, columns = clean, attacks, robust) when several models share data and suite."""
    groups: dict[str, list[dict]] = {}
    for _, doc in attacks:
        key = json.dumps([_dataset_options(doc), doc["config"].get("suite"),
                          (doc.get("model") or {}).get("model", {}).get("bits")], sort_keys=True)  # fmt: skip
        groups.setdefault(key, []).append(doc)
    group = max(groups.values(), key=len)
    if len(group) < 2:
        return None
    order = list(ROW_NAMES.values())
    group.sort(key=lambda d: order.index(_model_name(d)) if _model_name(d) in order else len(order))
    names = list(group[0]["results"]["attacks"])
    topk = group[0]["results"]["clean"]["topk"]
    rows = [[_model_name(d), d["results"]["clean"]["map"]] + [d["results"]["attacks"].get(a, {}).get("map")
            for a in names] + [d["results"].get("robust_map")] for d in group]  # fmt: skip
    return Table("defenses", f"Defences: mAP@{topk} of each model, clean and under each attack",
                 ["model", "Clean"] + [ATTACK_NAMES.get(a, a) for a in names] + ["robust"], rows,
                 note=_setting(group[0]).split(";", 1)[1].strip().capitalize() + ".")  # fmt: skip


def gallery_section(attacks: list[tuple[Path, dict]], figures: Path, device: torch.device) -> Section | None:
    """Retrieval gallery of the undefended and the best-defended model, when their checkpoints exist."""
    from robusthash.checkpoint import read_checkpoint
    from robusthash.cli import load_data
    from robusthash.report.gallery import retrieval_gallery
    from robusthash.robustness import protocol_options

    usable = [(p, d) for p, d in attacks if Path(d["config"].get("model", "")).is_file()]
    if not usable:
        return None
    usable.sort(key=lambda pd: pd[1]["results"].get("robust_map", 0))
    chosen = [usable[0]] + ([usable[-1]] if len(usable) > 1 else [])
    doc = chosen[0][1]
    data = load_data(_dataset_options(doc))
    models = {_model_name(d): read_checkpoint(d["config"]["model"]).build_model(device) for _, d in chosen}
    suite = doc["config"].get("suite", {})
    attack = "pga" if "pga" in doc["results"]["attacks"] else next(iter(doc["results"]["attacks"]))
    options = protocol_options(attack, suite.get("protocol", "default"), suite.get("steps"))
    caption = (f"{_setting(doc)}; gallery attack {ATTACK_NAMES.get(attack, attack)} "
               f"({options.get('steps', 'default')} steps)")  # fmt: skip
    path = retrieval_gallery(models, data, figures / "gallery.png", attack=attack, seed=doc.get("seed") or 0,
                             caption=caption, device=device, attack_options=options)  # fmt: skip
    return Section("Retrieval gallery", intro="What an attack does to retrieval: for a few queries, the top-10 "
                   "database items before and after the attack, on the weakest and the most robust model.",
                   figures=[Figure(path, caption, wide=True)])  # fmt: skip


def benchmark_sections(benches: list[tuple[Path, dict]], figures: Path) -> list[Section]:
    from robusthash.report import benchmarks as views

    sections = []
    for path, doc in benches:
        rows = doc.get("rows", [])
        first = rows[0] if rows else {}
        if "method" in first:
            md = views.universality_markdown(rows)
        elif "defense" in first:
            md = views.defense_benchmark_markdown(rows, figures, link_prefix="figures/")
        elif "attack" in first:
            md = views.attack_benchmark_markdown(rows, figures, link_prefix="figures/")
        elif "loss" in first:
            md = views.training_markdown(rows)
        elif "summary" in doc:
            md = "```\n" + json.dumps(doc["summary"], indent=2) + "\n```\n"
        else:
            md = f"{len(rows)} rows (no view for this benchmark yet).\n"
        sections.append(Section(f"Benchmark: {path.name}", intro=f"Command: `{doc.get('command', '?')}`",
                                markdown=md))  # fmt: skip
    return sections


def _environment_lines(docs: list[dict[str, Any]]) -> list[str]:
    seen = []
    for doc in docs:
        env = doc.get("environment") or {}
        line = ", ".join(f"{k} {env[k]}" for k in ("robusthash", "torch", "torchvision", "numpy", "python",
                                                    "device", "device_name") if k in env)  # fmt: skip
        if line and line not in seen:
            seen.append(line)
    return seen


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;color:#222;
  line-height:1.45;padding:0 1em}
h1{font-size:1.7em}
h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.92em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}
tbody tr:nth-child(even){background:#fafafa}
figure{margin:.8em 1% .8em 0;display:inline-block;vertical-align:top;width:48.5%}
figure.wide{width:100%}
figure img{max-width:100%;border:1px solid #eee}
figcaption,.note,.meta{font-size:.82em;color:#555}
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
            out.append("<table><thead><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in head)
                       + "</tr></thead><tbody>" + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r)
                                                         + "</tr>" for r in body) + "</tbody></table>")  # fmt: skip
            table = []
        image = re.match(r"!\[(.*)\]\((.*)\)", line.strip())
        if image:
            path = figures_dir / Path(image.group(2)).name
            if path.is_file():
                out.append(f"<figure class='wide'><img src='{_img(path)}' alt='{html.escape(image.group(1))}'>"
                           "</figure>")  # fmt: skip
        elif line.startswith("#"):
            level = min(len(line) - len(line.lstrip("#")) + 2, 5)
            out.append(f"<h{level}>{html.escape(line.lstrip('#').strip())}</h{level}>")
        elif line.strip():
            text = html.escape(line)
            text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
            text = re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", text)
            out.append(f"<p>{text}</p>")
    return "\n".join(out)


def build_report(paths: list[str | Path], out: str | Path, gallery: bool = True,
                 device: torch.device | str = "cpu") -> Path:  # fmt: skip
    """Write ``index.html``, ``report.md``, CSV tables and PNG figures for ``paths`` into ``out``."""
    if not paths:
        raise UserError("no results file given; pass attack results, a demo's results.json or benchmark rows")
    out = Path(out)
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    attacks, benches = collect([Path(p) for p in paths])
    order = list(ROW_NAMES.values())
    attacks.sort(
        key=lambda pd: order.index(_model_name(pd[1])) if _model_name(pd[1]) in order else len(order)
    )
    sections: list[Section] = []
    table = defense_table(attacks) if attacks else None
    if table:
        intro = "Clean and attacked mAP of each model; robust = mean over queries of the lowest AP any attack reached."
        sections.append(Section("Defences", intro=intro, tables=[table]))
    for i, (path, doc) in enumerate(attacks):
        sections.append(attack_section(path, doc, figures, i))
    if gallery and attacks:
        section = gallery_section(attacks, figures, torch.device(device))
        if section:
            sections.append(section)
    sections += benchmark_sections(benches, figures)
    docs = [d for _, d in attacks + benches]
    created = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    env = _environment_lines(docs)
    sources = [str(p) for p, _ in attacks + benches]
    for section in sections:
        for t in section.tables:
            t.write_csv(out)
    (out / "report.md").write_text(_render_markdown(sections, created, env, sources), encoding="utf-8")
    (out / "index.html").write_text(_render_html(sections, created, env, sources, figures), encoding="utf-8")
    return out / "index.html"


def _render_markdown(sections: list[Section], created: str, env: list[str], sources: list[str]) -> str:
    parts = [
        f"# robusthash robustness report\n\nCreated {created} from: " + ", ".join(f"`{s}`" for s in sources)
    ]
    for s in sections:
        parts.append(f"\n## {s.title}\n")
        if s.intro:
            parts.append(s.intro + "\n")
        parts += [t.markdown() for t in s.tables]
        parts += [f"![{f.caption}](figures/{f.path.name})\n\n*{f.caption}*\n" for f in s.figures]
        if s.markdown:
            parts.append(s.markdown)
    parts.append("\n## Environment\n\n" + "\n".join(f"- {e}" for e in env) + "\n")
    return "\n".join(parts)


def _render_html(
    sections: list[Section], created: str, env: list[str], sources: list[str], figures: Path
) -> str:
    body = [f"<h1>robusthash robustness report</h1><p class='meta'>Created {html.escape(created)} from "
            + ", ".join(f"<code>{html.escape(s)}</code>" for s in sources) + "</p>"]  # fmt: skip
    for s in sections:
        body.append(f"<h2 id='{_slug(s.title)}'>{html.escape(s.title)}</h2>")
        if s.intro:
            intro = re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(s.intro))
            body.append(f"<p>{intro}</p>")
        body += [t.html() for t in s.tables]
        body += [f"<figure class='{'wide' if f.wide else ''}'><img src='{_img(f.path)}' "
                 f"alt='{html.escape(f.caption)}'><figcaption>{html.escape(f.caption)}</figcaption></figure>"
                 for f in s.figures]  # fmt: skip
        if s.markdown:
            body.append(_markdown_to_html(s.markdown, figures))
    body.append("<h2>Environment</h2><ul>" + "".join(f"<li>{html.escape(e)}</li>" for e in env) + "</ul>")
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>robusthash report</title>"
            f"<style>{CSS}</style></head><body>" + "\n".join(body) + "</body></html>\n")  # fmt: skip
