"""The knowledge base: gene files + guideline files + precomputed indexes, loaded once at start-up.

`load_knowledge(dir)` returns a :class:`Knowledge` or raises :class:`KnowledgeError` listing every
problem; `check_knowledge(dir)` returns the problems (for `pgx-cds knowledge check`), including
cross-file checks: genes exist, `when` values are producible by the gene file, every value the gene
can produce is covered by a rule for every drug and population, citations, summary length.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service.pgx import medications as _medications
from service.pgx import safety as _safety
from service.pgx.drugs import DrugIndex, build_index
from service.pgx.guidelines import (
    ANY,
    INDETERMINATE,
    NO_RESULT,
    SUMMARY_MAX,
    Guideline,
    GuidelineFileError,
    LoadedGuideline,
    Rule,
    ValueMatcher,
    compile_values,
    load_guideline,
)
from service.pgx.models import GeneEvidence
from service.pgx.populations import load_valuesets
from service.pgx.wording import result_label, results_label

KNOWLEDGE_RELEASE = "2026.11"


@dataclass(frozen=True)
class Problem:
    """One problem in the knowledge files. `severity` is "error" (load fails) or "warning"."""

    file: str
    line: int | None
    message: str
    severity: str = "error"

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.severity}: {self.message}"


class KnowledgeError(Exception):
    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("knowledge base has problems:\n" + "\n".join(str(p) for p in problems))


@dataclass(frozen=True)
class CompiledRule:
    """A rule ready for matching: per gene a ValueMatcher."""

    guideline_id: str
    rule: Rule
    full_id: str
    matchers: tuple[tuple[str, ValueMatcher], ...]

    def matches(self, key: dict[str, str]) -> bool:
        return all(m.matches(key.get(gene, NO_RESULT)) for gene, m in self.matchers)


@dataclass
class Knowledge:
    """Everything clinical the engine needs, with indexes built at load."""

    genes: dict[str, Any]
    guidelines: dict[str, Guideline]
    drug_index: DrugIndex
    version: str
    files: dict[str, Path] = field(default_factory=dict)  # guideline id -> file
    unreadable: Any = None  # service.pgx.unreadable.UnreadablePolicy (cards/unreadable.yaml)
    by_drug: dict[str, list[Guideline]] = field(default_factory=dict)  # drug name -> guidelines
    by_gene: dict[str, list[Guideline]] = field(default_factory=dict)  # gene -> guidelines
    rules: dict[tuple[str, str | None, str], list[CompiledRule]] = field(default_factory=dict)
    # (guideline id, population id or None, drug name) -> rules in file order
    safety: _safety.SafetyData = field(default_factory=_safety.SafetyData)  # cards/safety/*.yaml
    valuesets: dict[str, Any] = field(default_factory=dict)  # id -> populations.CompiledValueSet
    phenoconversion: Any = None  # service.pgx.phenoconversion.PhenoKnowledge (cards/phenoconversion.yaml), if present
    # which medication statuses count as current, per purpose (cards/medication_status.yaml)
    medication_status: _medications.MedicationStatuses = None  # type: ignore[assignment]  # set by the loader
    # the engine's memo of answers that depend on the fields above only (rule matches per lookup key, drug
    # references); filled as used, bounded by the engine, never part of the knowledge's identity
    engine_memo: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)

    def rules_for(self, guideline_id: str, population: str | None, drug: str) -> list[CompiledRule]:
        return self.rules.get((guideline_id, population, drug), [])

    def guidelines_for_drug(self, drug: str) -> list[Guideline]:
        return self.by_drug.get(drug, [])


# --------------------------------------------------------------------------------------------
# Gene files (helper module `service.pgx.genes`)


def _load_genes(genes_dir: Path) -> tuple[dict[str, Any], list[Problem]]:
    """Load the gene files through `service.pgx.genes`; problems if that fails."""
    if not genes_dir.is_dir():
        return {}, [Problem(str(genes_dir), None, "genes/ directory is missing")]
    try:
        from service.pgx import genes as genes_mod
    except ImportError:  # pragma: no cover - the module ships with the service
        return {}, [Problem(str(genes_dir), None, "service.pgx.genes is not available")]
    problems = [Problem(*_split_problem(p)) for p in genes_mod.check_genes(genes_dir)]
    if problems:
        return {}, problems
    try:
        return genes_mod.load_genes(genes_dir), []
    except Exception as exc:  # noqa: BLE001 - reported as a problem, never a crash
        return {}, [Problem(str(genes_dir), None, f"gene files could not be loaded: {exc}")]


def _split_problem(p: Any) -> tuple[str, int | None, str]:
    if isinstance(p, str):
        head, sep, msg = p.partition(": ")
        if sep and ":" in head:
            f, _, ln = head.rpartition(":")
            if ln.isdigit():
                return f, int(ln), msg
        return (head, None, msg) if sep else ("genes/", None, p)
    return (getattr(p, "file", "genes/"), getattr(p, "line", None), getattr(p, "message", str(p)))


def gene_value_space(gene_def: Any, method: str) -> set[str] | None:
    """Every lookup value a gene file can produce for `method` (always including Indeterminate).

    None when the gene definition does not say (then values are not checked).
    """
    fn = getattr(gene_def, "lookup_values", None)
    if callable(fn):
        vals = {INDETERMINATE if v == "n/a" else str(v) for v in fn(method)}
        return vals | {INDETERMINATE}
    if method == "phenotype":
        vals = _attr_values(gene_def, ("possible_phenotypes", "phenotypes"))
    elif method == "activity_score":
        vals = _attr_values(gene_def, ("possible_activity_scores", "activity_scores"))
    else:
        vals = _attr_values(gene_def, ("possible_allele_statuses", "allele_statuses"))
    if vals is None:
        return None
    return vals | {INDETERMINATE}


def _attr_values(obj: Any, names: tuple[str, ...]) -> set[str] | None:
    for n in names:
        v = getattr(obj, n, None)
        if callable(v):
            v = v()
        if v:
            return {str(x) for x in (v.keys() if isinstance(v, dict) else v)}
    return None


# --------------------------------------------------------------------------------------------
# Loading and checking


def _guideline_files(dir_: Path) -> list[Path]:
    gdir = dir_ / "guidelines"
    return sorted(gdir.glob("*.yaml")) if gdir.is_dir() else []


def _version(dir_: Path, files: list[Path]) -> str:
    h = hashlib.sha256()
    extra = [dir_ / name for name in ("phenoconversion.yaml", "unreadable.yaml", _medications.FILE_NAME)
             if (dir_ / name).is_file()]
    for p in sorted([*files, *sorted((dir_ / "genes").glob("*.yaml")), *_safety.safety_files(dir_),
                     *sorted((dir_ / "valuesets").glob("*.yaml")), *extra]):
        h.update(p.relative_to(dir_).as_posix().encode())
        h.update(b"\0")
        h.update(p.read_bytes())
    release = KNOWLEDGE_RELEASE
    vfile = dir_ / "VERSION"
    if vfile.is_file():
        release = vfile.read_text(encoding="utf-8").strip() or release
    return f"pgx-cds-knowledge {release} ({h.hexdigest()[:12]})"


def _build(dir_: Path) -> tuple[Knowledge | None, list[Problem]]:
    problems: list[Problem] = []
    genes, gp = _load_genes(dir_ / "genes")
    problems += gp
    files = _guideline_files(dir_)
    if not files:
        problems.append(Problem(str(dir_ / "guidelines"), None, "no guideline files found"))
    loaded: list[LoadedGuideline] = []
    for path in files:
        try:
            lg = load_guideline(path)
        except GuidelineFileError as exc:
            problems += [Problem(_rel(dir_, path), ln, msg) for ln, msg in exc.problems]
            continue
        if lg.guideline.id != path.stem:
            problems.append(Problem(_rel(dir_, path), lg.line("id"), f"id {lg.guideline.id!r} must equal the file name {path.stem!r}"))
        loaded.append(lg)
    # drugs may appear in several guidelines (e.g. sertraline) but must agree on the RxNorm code
    rx: dict[str, tuple[str, str]] = {}
    for lg in loaded:
        for i, d in enumerate(lg.guideline.drugs):
            prev = rx.setdefault(d.name, (d.rxnorm, lg.guideline.id))
            if prev[0] != d.rxnorm:
                problems.append(Problem(_rel(dir_, lg.path), lg.line("drugs", i, "rxnorm"),
                                        f"drug {d.name}: RxNorm {d.rxnorm} differs from {prev[0]} in {prev[1]}"))
    valuesets, vp = load_valuesets(dir_ / "valuesets")
    problems += [Problem(f"valuesets/{f}", None, msg) for f, msg in vp]
    for lg in loaded:
        problems += _cross_checks(dir_, lg, genes, bool(gp))
        problems += _population_checks(dir_, lg, valuesets)
    safety, sp = _safety.load_safety(dir_)
    problems += [Problem(_rel(dir_, path), ln, msg) for path, ln, msg in sp]
    problems += _safety_checks(dir_, loaded, safety)
    pheno, pp = _load_phenoconversion(dir_, genes, bool(gp))
    problems += pp
    # a tree without the file (a partial test tree) uses the lists of the checkout, when there is one
    status_file = dir_ / _medications.FILE_NAME
    if status_file.is_file() or not _medications.SHIPPED.is_file():
        statuses, msp = _medications.load(status_file)
    else:
        statuses, msp = _medications.shipped(), []
    problems += [Problem(_rel(dir_, status_file), None, m) for m in msp]
    from service.pgx.unreadable import check_policy, load_policy  # cards/unreadable.yaml

    policy, policy_problems = load_policy(dir_)
    policy_problems += check_policy(policy, {lg.guideline.id: lg.guideline for lg in loaded}, set(genes))
    problems += [Problem(_rel(dir_, dir_ / "unreadable.yaml"), None, m.partition(": ")[2]) for m in policy_problems]
    k = None
    if not any(p.severity == "error" for p in problems):
        k = _index(dir_, loaded, genes, files, safety)
        k.valuesets = valuesets
        k.phenoconversion = pheno
        k.unreadable = policy
        k.medication_status = statuses
    return k, problems


def _safety_checks(dir_: Path, loaded: list[LoadedGuideline], safety: _safety.SafetyData) -> list[Problem]:
    """One-click alternatives must be plain ingredients; product files must name a covered drug."""
    out: list[Problem] = []
    drugs = {d.name for lg in loaded for d in lg.guideline.drugs}
    for lg in loaded:
        for i, r in enumerate(lg.guideline.rules):
            for j, a in enumerate(r.alternatives):
                for msg in _safety.alternative_problems(a):
                    out.append(Problem(_rel(dir_, lg.path), lg.line("rules", i, "alternatives", j), f"rule {r.id}: {msg}"))
    named = {a.name.lower() for lg in loaded for r in lg.guideline.rules for a in r.alternatives}
    for name in safety.checks:
        if name not in named:
            out.append(Problem(f"cards/{_safety.SAFETY_DIR}/{_safety.CONTRAINDICATIONS_FILE}", None,
                               f"checks for {name}: no guideline rule names it as an alternative", "warning"))
    for code, p in safety.products.items():
        if not any(i in drugs for i in p.ingredients):
            out.append(Problem(f"cards/{_safety.SAFETY_DIR}/{_safety.PRODUCTS_FILE}", None,
                               f"product {code} ({p.name}) contains no drug a guideline covers", "warning"))
    return out


def _load_phenoconversion(dir_: Path, genes: dict[str, Any], genes_broken: bool) -> tuple[Any, list[Problem]]:
    """cards/phenoconversion.yaml (optional): loaded and cross-checked against the gene files."""
    from service.pgx import phenoconversion as pc

    path = dir_ / pc.FILE_NAME
    if not path.is_file():
        return None, []
    f = _rel(dir_, path)
    pk, problems = pc.load(path)
    out = [Problem(f, ln, msg) for ln, msg in problems]
    if pk is not None and not genes_broken:
        out += [Problem(f, None, msg, sev) for sev, msg in pc.check(pk, genes)]
    return pk, out


def _rel(dir_: Path, path: Path) -> str:
    try:
        return path.relative_to(dir_.parent).as_posix()
    except ValueError:
        return str(path)


def _cross_checks(dir_: Path, lg: LoadedGuideline, genes: dict[str, Any], genes_broken: bool) -> list[Problem]:
    g = lg.guideline
    f = _rel(dir_, lg.path)
    out: list[Problem] = []
    if "http" not in g.url or not g.publication.strip():
        out.append(Problem(f, lg.line("publication"), "citation needs url and publication"))
    spaces: dict[str, set[str] | None] = {}
    for gene in g.genes:
        if gene not in genes:
            if not genes_broken:
                out.append(Problem(f, lg.line("genes"), f"gene {gene} has no file in genes/"))
            spaces[gene] = None
        else:
            space = gene_value_space(genes[gene], g.lookup[gene])
            if space is not None and g.lookup[gene] == "allele_status":
                space = _relevant_statuses(g, gene, space)
            spaces[gene] = space
    for i, r in enumerate(g.rules):
        for gene, vals in r.when.items():
            space = spaces.get(gene)
            if space is None:
                continue
            for v in vals:
                if v in (ANY, NO_RESULT, INDETERMINATE, "n/a"):
                    continue
                if g.lookup[gene] == "activity_score" and not v.startswith("≥"):
                    continue  # numbers and ranges: checked through coverage
                if v not in space:
                    out.append(Problem(f, lg.line("rules", i, "when", gene),
                                       f"rule {r.id}: {gene} value {v!r} cannot be produced by genes/{gene}.yaml"))
    out += _coverage(f, lg, spaces)
    out += _summary_lengths(f, lg, spaces)
    return out


def _summary_lengths(f: str, lg: LoadedGuideline, spaces: dict[str, set[str] | None]) -> list[Problem]:
    """A summary with `{result}` grows with the result it names: warn when the longest result a rule can
    match would take it past the limit (the card would be cut)."""
    from service.pgx.engine import _AS_BY_PHENOTYPE as as_map  # CPIC activity score ranges (no import cycle at run time)

    g = lg.guideline
    out: list[Problem] = []
    for i, r in enumerate(g.rules):
        if "{result}" not in r.summary:
            continue
        for d in g.drugs:
            if r.drugs and d.name not in r.drugs:
                continue
            genes = g.drug_genes(d.name)
            labels = []
            for gene in genes:
                vals = [v for v in r.when.get(gene, [ANY]) if v not in (ANY, NO_RESULT)]
                if g.lookup[gene] == "activity_score" or ANY in r.when.get(gene, []) or not vals:
                    vals = sorted(spaces.get(gene) or {INDETERMINATE}) if g.lookup[gene] != "activity_score" else vals
                cands = []
                for v in vals or [INDETERMINATE]:
                    if g.lookup[gene] == "activity_score" and v != INDETERMINATE:
                        for score in [x for x in re.split(r"[-<>=≥]+", v) if x]:
                            pheno = next((p for p, scores in as_map.get(gene, {}).items() if score in scores),
                                         "Intermediate Metabolizer")
                            cands.append(GeneEvidence(gene=gene, phenotype=pheno, activityScore=score))
                    else:
                        cands.append(GeneEvidence(gene=gene, phenotype=v))
                labels.append(max(cands, key=lambda e: len(result_label(e, with_score=len(genes) == 1))))
            longest = results_label(labels)
            filled = r.summary.replace("{result}", longest).replace("{drug}", d.name)
            if len(filled) >= SUMMARY_MAX:
                out.append(Problem(f, lg.line("rules", i, "summary"),
                                   f"rule {r.id}: summary reaches {len(filled)} characters for {d.name} with "
                                   f"'{longest}' (must be < {SUMMARY_MAX})", "warning"))
                break
    return out


def _population_checks(dir_: Path, lg: LoadedGuideline, valuesets: dict[str, Any]) -> list[Problem]:
    """Value sets named by populations exist; situational populations refine a declared population."""
    g = lg.guideline
    f = _rel(dir_, lg.path)
    out: list[Problem] = []
    ids = {p.id for p in g.populations}
    for i, p in enumerate(g.populations):
        for vs in (p.match.value_sets if p.match else []):
            if vs not in valuesets:
                out.append(Problem(f, lg.line("populations", i), f"population {p.id}: value set {vs!r} has no file in valuesets/"))
        if p.situational and (p.refines not in ids or p.refines == p.id):
            out.append(Problem(f, lg.line("populations", i), f"population {p.id}: refines {p.refines!r}, which is not a population here"))
    return out


def _relevant_statuses(g: Guideline, gene: str, space: set[str]) -> set[str]:
    """Allele-status values for the alleles this guideline names (e.g. only *57:01 for abacavir)."""
    alleles = {v.rsplit(" ", 1)[0] for r in g.rules for v in r.when.get(gene, []) if v.endswith((" positive", " negative"))}
    return {v for v in space if v == INDETERMINATE or v.rsplit(" ", 1)[0] in alleles}


def _coverage(f: str, lg: LoadedGuideline, spaces: dict[str, set[str] | None]) -> list[Problem]:
    """Every producible key must be matched by exactly one rule per drug and population."""
    g = lg.guideline
    if g.algorithm and not g.rules:
        return []
    if any(spaces.get(gene) is None for gene in g.genes):
        return []
    out: list[Problem] = []
    compiled = [(i, r, [(gene, compile_values(r.when[gene], g.lookup[gene])) for gene in r.when]) for i, r in enumerate(g.rules)]
    # situational populations only refine another one: their rules cover the keys they change, not all
    pops: list[str | None] = [p.id for p in g.populations if not p.situational] or [None]
    for drug in g.drugs:
        dgenes = g.drug_genes(drug.name)
        multi = len(dgenes) > 1
        axes = [sorted(spaces[gene] or ()) + ([NO_RESULT] if multi else []) for gene in dgenes]
        for pop in pops:
            rules = [(i, r, ms) for i, r, ms in compiled if r.population == pop and (not r.drugs or drug.name in r.drugs)]
            missing: list[str] = []
            missing_nr: list[str] = []
            for combo in itertools.product(*axes):
                if multi and all(v == NO_RESULT for v in combo):
                    continue  # no result at all: the pre-test card
                key = dict(zip(dgenes, combo))
                hits = [(i, r) for i, r, ms in rules if all(m.matches(key.get(gene, NO_RESULT)) for gene, m in ms)]
                label = ", ".join(f"{gene}={v}" for gene, v in key.items())
                if not hits:
                    (missing_nr if NO_RESULT in combo else missing).append(label)
                elif len(hits) > 1 and len({r.id for _, r in hits}) > 1:
                    out.append(Problem(f, lg.line("rules", hits[1][0]),
                                       f"{drug.name}{_pop(pop)}: {label} is matched by rules {', '.join(r.id for _, r in hits)} (first wins)",
                                       "warning"))
            if missing:
                out.append(Problem(f, lg.line("rules"), f"{drug.name}{_pop(pop)}: no rule for {_short(missing)}"))
            if missing_nr:
                out.append(Problem(f, lg.line("rules"),
                                   f"{drug.name}{_pop(pop)}: no rule when a gene has no result: {_short(missing_nr)}", "warning"))
    return out


def _pop(pop: str | None) -> str:
    return f" [{pop}]" if pop else ""


def _short(items: list[str], n: int = 6) -> str:
    return "; ".join(items[:n]) + (f"; ... ({len(items)} in all)" if len(items) > n else "")


def _index(dir_: Path, loaded: list[LoadedGuideline], genes: dict[str, Any], files: list[Path],
           safety: _safety.SafetyData | None = None) -> Knowledge:
    guidelines = {lg.guideline.id: lg.guideline for lg in loaded}
    safety = safety or _safety.SafetyData()
    products = {code: p.ingredients for code, p in safety.products.items()}
    k = Knowledge(genes=genes, guidelines=guidelines, drug_index=build_index(guidelines.values(), products),
                  version=_version(dir_, files), files={lg.guideline.id: lg.path for lg in loaded}, safety=safety)
    for g in guidelines.values():
        for d in g.drugs:
            k.by_drug.setdefault(d.name, []).append(g)
        for gene in g.genes:
            k.by_gene.setdefault(gene, []).append(g)
        pops: list[str | None] = [p.id for p in g.populations] or [None]
        for r in g.rules:
            cr = CompiledRule(g.id, r, f"{g.id}/{r.id}",
                              tuple((gene, compile_values(r.when[gene], g.lookup[gene])) for gene in r.when))
            for pop in pops:
                if r.population is not None and r.population != pop:
                    continue
                for d in g.drugs:
                    if r.drugs and d.name not in r.drugs:
                        continue
                    k.rules.setdefault((g.id, pop, d.name), []).append(cr)
    return k


def load_knowledge(dir_: Path) -> Knowledge:
    """Load and index the knowledge base; raises KnowledgeError when any error-level problem exists."""
    k, problems = _build(Path(dir_))
    errors = [p for p in problems if p.severity == "error"]
    if errors or k is None:
        raise KnowledgeError(errors or problems)
    return k


def check_knowledge(dir_: Path) -> list[Problem]:
    """All problems (errors and warnings) in the knowledge files; empty when everything is fine."""
    return _build(Path(dir_))[1]


def list_knowledge(k: Knowledge) -> list[dict[str, Any]]:
    """One row per guideline-drug pair, for `pgx-cds knowledge list`."""
    rows = []
    for g in sorted(k.guidelines.values(), key=lambda x: x.id):
        for d in g.drugs:
            rows.append({
                "guideline": g.id,
                "drug": d.name,
                "rxnorm": d.rxnorm,
                "genes": g.drug_genes(d.name),
                "lookup": dict(g.lookup),
                "populations": [p.id for p in g.populations],
                "rules": sum(1 for r in g.rules if not r.drugs or d.name in r.drugs),
                "pretest": d.pretest,
                "source": g.source,
                "version": g.version,
                "url": g.url,
            })
    return rows
