"""What each number of a report means, in a reader's words (the report shows the terms its tables use)."""

from __future__ import annotations

# a column header's start -> its definition (the full glossary, with the protocols, is docs/concepts.md)
GLOSSARY: dict[str, str] = {
    "mAP@": "mean over the queries of average precision over the top K database items ranked by Hamming "
    "distance; an item is relevant when it shares a class with the query. Lower under attack is a stronger "
    "attack.",
    "clean": "the model's mAP on the unperturbed queries.",
    "robust": "mean over the queries of the lowest AP any attack of the run reached on that query: the "
    "per-query worst case. An upper bound on the true robust mAP (an attack not run may go lower), not a "
    "certificate.",
    "threat model": "what the attacker sees: white-box (weights and gradients), transfer (surrogate models "
    "only) or query (only the service's answers, under a budget of images per query).",
    "steps": "iterations of the attack (for a query attack: the median number of images it sent).",
    "t-mAP@": "for a targeted attack, mAP with relevance to the query's target label instead of its own: "
    "higher is a more successful targeted attack.",
    "target success": "share of queries with more than 10 items of the target class within Hamming radius 5 "
    "of the adversarial code (NAG's protocol).",
    "s / image": "seconds of crafting per adversarial image (after a warm-up pass, so the first attack is not "
    "charged for it).",
    "s / image (with fit)": "the same with the attack's one-off training (THA's PrototypeNet, ProS-GAN's "
    "generator) spread over the queries.",
    "bits flipped": "code bits the adversarial query changed, averaged over the queries.",
    "L-inf (x255)": "largest pixel change, in levels of 255 (eps 8/255 allows 8).",
    "L2": "Euclidean size of the perturbation (images in [0, 1]).",
    "L2 radius": "the Euclidean size of the perturbations considered (images in [0, 1]; a 28 x 28 image changed "
    "by 8/255 everywhere has L2 norm 0.88).",
    "certified mAP (lower bound)": "mean over the queries of the certified lower bound on AP (whole database) of "
    "the smoothed model under any perturbation of that L2 radius, with probability 0.99 over the sampling; a "
    "query without a certificate counts 0.",
    "empirical mAP (upper bound)": "the smoothed model's mAP on the attacks' images (each query's lowest): what "
    "the attacks run achieved, so an upper bound on its robust mAP.",
    "median Hamming r": "the Hamming radius around the smoothed code within which the certificate keeps the "
    "perturbed query's smoothed code; the AP bound pushes relevant items r bits back and others r bits forward.",
    "Precision-recall": "precision and recall of the items within each Hamming radius of the query's code.",
    "Precision@N": "precision of the top N retrieved items.",
}


def _matches(term: str, header: str) -> bool:
    return header.startswith(term) if term.endswith("@") else header == term


def used_terms(headers: list[str], figures: bool) -> list[tuple[str, str]]:
    """(term, definition) for the table headers given (clean and robust always), and for the curves when
    there are figures."""
    always = {"clean", "robust"} | ({"Precision-recall", "Precision@N"} if figures else set())
    return [
        (term + "K" if term.endswith("@") else term, text)
        for term, text in GLOSSARY.items()
        if term in always or any(_matches(term, h) for h in headers)
    ]
