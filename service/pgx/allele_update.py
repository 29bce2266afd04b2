"""Keep cards/genes current with CPIC: compare a gene file with a CPIC/PharmCAT allele table, print a
report a pharmacist can review, and (on request) write the update into the gene file.

``pgx-cds knowledge alleles SOURCE [--gene GENE] [--write] [--citation TEXT]`` (README "Clinical
knowledge", cards/README.md "Updating allele tables"). Sources read:

* PharmCAT phenotype files ``src/main/resources/org/pharmgkb/pharmcat/phenotype/<GENE>.json``
  (``gene``, ``version``, ``haplotypes`` allele -> function, ``activityValues`` allele -> value);
* files with ``<GENE>_allele_functions`` / ``<GENE>_activity_values`` objects (CPIC update extracts);
* CPIC allele functionality tables saved as CSV/TSV (columns ``Allele``, ``Allele Clinical Functional
  Status`` or ``Function``, optionally ``Activity Value``; the title rows above the header are skipped).

The update only touches allele lines and the version: new alleles are appended, changed functions and
activity values are rewritten in place, and alleles the source no longer lists are reported, never
deleted (shorthands such as G6PD ``A-`` are ours on purpose). Comments and rules are kept.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path

from service.pgx.genes import GeneDefinition, allele_key

__all__ = ["AlleleTable", "Change", "Report", "apply_update", "compare", "read_source", "render"]


@dataclass
class AlleleTable:
    """One gene's allele table as a source states it."""

    gene: str
    version: str | None
    functions: dict[str, str] = field(default_factory=dict)
    activity: dict[str, str] = field(default_factory=dict)
    source: str = ""


@dataclass
class Change:
    allele: str
    field: str  # "function" | "activity_value"
    old: str | None
    new: str


@dataclass
class Report:
    gene: str
    file_version: str
    source: AlleleTable
    added: list[tuple[str, str | None, str | None]] = field(default_factory=list)  # (allele, function, activity)
    changed: list[Change] = field(default_factory=list)
    not_in_source: list[str] = field(default_factory=list)
    unmapped_functions: list[str] = field(default_factory=list)  # functions the gene's rules cannot use

    @property
    def has_changes(self) -> bool:
        return bool(self.added or self.changed)

    @property
    def source_is_older(self) -> bool:
        """The source's data version is older than the gene file's (both dates): never write it over."""
        a, b = self.source.version or "", self.file_version
        return bool(re.fullmatch(r"\d{4}-\d{2}-\d{2}", a) and re.match(r"\d{4}-\d{2}-\d{2}", b)) and a < b[:10]


# ---------------------------------------------------------------------------------------------- reading


def read_source(path: Path, gene: str | None = None) -> list[AlleleTable]:
    """The allele tables in ``path`` (one per gene; ``gene`` selects one)."""
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".json":
        tables = _from_json(json.loads(text), path.name)
    else:
        tables = [_from_csv(text, gene, path)]
    if gene:
        tables = [t for t in tables if t.gene.upper().replace("_", "-") == gene.upper().replace("_", "-")]
    return tables


def _from_json(data: dict, name: str) -> list[AlleleTable]:
    if isinstance(data.get("haplotypes"), dict):  # PharmCAT phenotype file
        gene = str(data.get("gene") or Path(name).stem).replace("_", "-")
        act = {str(k): _value(v) for k, v in (data.get("activityValues") or {}).items()}
        funcs = {str(k): str(v) for k, v in data["haplotypes"].items() if str(k) not in act and not _is_number(v)}
        if not act and all(_is_number(v) for v in data["haplotypes"].values()):
            act = {str(k): _value(v) for k, v in data["haplotypes"].items()}
        return [AlleleTable(gene, _version(data.get("version")), funcs, act, f"{name} (PharmCAT phenotype file)")]
    out: dict[str, AlleleTable] = {}
    version = _version(data.get("version") or _date_in(str(data.get("about", ""))))
    for key, value in data.items():
        m = re.fullmatch(r"([A-Z0-9_-]+?)_(allele_functions|activity_values)", key)
        if not m or not isinstance(value, dict):
            continue
        gene = m.group(1).replace("_", "-")
        t = out.setdefault(gene, AlleleTable(gene, version, source=f"{name} ({key})"))
        target = t.functions if m.group(2) == "allele_functions" else t.activity
        target.update({str(k): (str(v) if m.group(2) == "allele_functions" else _value(v)) for k, v in value.items()})
    return list(out.values())


def _from_csv(text: str, gene: str | None, path: Path) -> AlleleTable:
    dialect = "excel-tab" if "\t" in text.splitlines()[0 if text else 0] or path.suffix.lower() == ".tsv" else "excel"
    rows = list(csv.reader(text.splitlines(), dialect=dialect))
    head_i = next((i for i, r in enumerate(rows) if any(c.strip().lower() == "allele" for c in r)), None)
    if head_i is None:
        raise ValueError(f"{path.name}: no header row with an 'Allele' column")
    head = [c.strip().lower() for c in rows[head_i]]
    a_col = head.index("allele")
    f_col = next((i for i, c in enumerate(head) if "clinical functional status" in c or c == "function"), None)
    v_col = next((i for i, c in enumerate(head) if c.startswith("activity value")), None)
    title = " ".join(" ".join(r) for r in rows[:head_i])
    g = gene or (re.search(r"\b([A-Z][A-Z0-9]+(?:-[A-Z0-9]+)?)\b", title) or re.search(r"^([A-Z0-9-]+)", path.stem))
    gene_name = g if isinstance(g, str) else (g.group(1) if g else path.stem)
    t = AlleleTable(gene_name, _version(_date_in(title)), source=f"{path.name} (CPIC allele functionality table)")
    for r in rows[head_i + 1:]:
        if len(r) <= a_col or not r[a_col].strip():
            continue
        allele = r[a_col].strip()
        if f_col is not None and len(r) > f_col and r[f_col].strip():
            t.functions[allele] = r[f_col].strip()
        if v_col is not None and len(r) > v_col and r[v_col].strip():
            t.activity[allele] = _value(r[v_col].strip())
    return t


def _is_number(v: object) -> bool:
    try:
        Decimal(str(v).replace("≥", ""))
        return True
    except InvalidOperation:
        return False


def _value(v: object) -> str:
    s = str(v).strip().replace(">=", "≥")
    if s.lower() in ("n/a", "na", ""):
        return "n/a"
    try:
        d = Decimal(s.removeprefix("≥"))
    except InvalidOperation:
        return s
    txt = f"{d:.2f}".rstrip("0")
    txt = txt + "0" if txt.endswith(".") else txt
    return ("≥" if s.startswith("≥") else "") + txt


def _version(v: object) -> str | None:
    if not v:
        return None
    m = re.match(r"(\d{4}-\d{2}-\d{2})", str(v))
    return m.group(1) if m else str(v)


def _date_in(text: str) -> str | None:
    m = re.search(r"\d{4}-\d{2}-\d{2}", text)
    return m.group(0) if m else None


# ---------------------------------------------------------------------------------------------- comparing


def compare(gd: GeneDefinition, src: AlleleTable) -> Report:
    rep = Report(gene=gd.gene, file_version=gd.version, source=src)
    ours = {allele_key(a.name): a for a in gd.alleles}
    aliases = {allele_key(x): a for a in gd.alleles for x in a.aliases}
    usable = {f for p in gd.function_pairs for f in p.functions} | {r.function for r in gd.single_allele_rules}
    for name in dict.fromkeys([*src.functions, *src.activity]):
        fn, av = src.functions.get(name), src.activity.get(name)
        a = ours.get(allele_key(name)) or aliases.get(allele_key(name))
        if a is None:
            rep.added.append((name, fn, av))
            continue
        if fn is not None and a.function is not None and fn != a.function and not _same_function(fn, a.function):
            rep.changed.append(Change(a.name, "function", a.function, fn))
        if av is not None and gd.method == "activity_score" and _value(a.activity_value or "") != av:
            rep.changed.append(Change(a.name, "activity_value", a.activity_value, av))
    src_keys = {allele_key(n) for n in [*src.functions, *src.activity]}
    rep.not_in_source = [a.name for a in gd.alleles if allele_key(a.name) not in src_keys
                         and not any(allele_key(x) in src_keys for x in a.aliases)]
    if gd.method not in ("activity_score", "allele_status"):
        new_fns = {fn for _, fn, _ in rep.added if fn} | {c.new for c in rep.changed if c.field == "function"}
        rep.unmapped_functions = sorted(f for f in new_fns if f not in usable)
    return rep


def _same_function(a: str, b: str) -> bool:
    """PharmCAT writes "Unknown function/Uncertain function" style pairs; compare case-insensitively."""
    return a.strip().lower() == b.strip().lower()


def render(rep: Report) -> str:
    s = rep.source
    lines = [f"{rep.gene}: cards/genes/{rep.gene}.yaml version {rep.file_version} vs {s.source}"
             f" version {s.version or 'not stated'}"]
    if rep.source_is_older:
        lines.append(f"  ! the source ({s.version}) is OLDER than the gene file ({rep.file_version}): the differences "
                     "below are probably later CPIC changes; --write refuses it unless --allow-older")
    if not rep.has_changes:
        lines.append("  no allele changes")
    for name, fn, av in rep.added:
        lines.append(f"  + {name}: " + ", ".join(x for x in (fn, f"activity {av}" if av else None) if x))
    for c in rep.changed:
        lines.append(f"  ~ {c.allele}: {c.field} {c.old or '—'} -> {c.new}")
    if rep.not_in_source:
        lines.append(f"  ? in our file but not in the source (kept; review): {', '.join(rep.not_in_source[:20])}"
                     + (f" and {len(rep.not_in_source) - 20} more" if len(rep.not_in_source) > 20 else ""))
    if rep.unmapped_functions:
        lines.append(f"  ! function value(s) the gene's phenotype rules do not cover (calls would be Indeterminate"
                     f" until a rule is added): {', '.join(rep.unmapped_functions)}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- writing


def apply_update(path: Path, rep: Report, citation: str | None = None) -> str:
    """The gene file's text with the report applied (allele lines and version only)."""
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    by_name: dict[str, int] = {}
    last_allele = None
    for i, line in enumerate(lines):
        m = re.match(r'^\s*-\s*\{name:\s*"((?:[^"\\]|\\.)*)"', line)
        if m:
            by_name[m.group(1)] = i
            last_allele = i
    for c in rep.changed:
        i = by_name.get(c.allele)
        if i is None:
            continue
        key = c.field
        if re.search(rf"\b{key}:\s*", lines[i]):
            lines[i] = re.sub(rf'({key}:\s*)(?:"[^"]*"|[^,}}]+)', lambda m: m.group(1) + _q(c.new), lines[i], count=1)
        else:
            lines[i] = lines[i].rstrip().rstrip("}") .rstrip() + f", {key}: {_q(c.new)}}}"
    if rep.added and last_allele is not None:
        indent = re.match(r"^(\s*)", lines[last_allele]).group(1)  # type: ignore[union-attr]
        new = []
        for name, fn, av in rep.added:
            parts = [f"name: {_q(name)}"]
            if fn:
                parts.append(f"function: {_q(fn)}")
            if av:
                parts.append(f"activity_value: {_q(av)}")
            note = f"added from {rep.source.source} {rep.source.version or ''}".strip()
            if citation:
                note += f"; {citation}"
            parts.append(f"note: {_q(note)}")
            new.append(f"{indent}- {{{', '.join(parts)}}}")
        lines[last_allele + 1:last_allele + 1] = new
    if rep.source.version and rep.has_changes:
        for i, line in enumerate(lines):
            if re.match(r'^version:\s*', line):
                lines[i] = f'version: "{rep.source.version}"'
            elif line.startswith("# Version:"):
                lines[i] = f"# Version: {rep.source.version} (allele table updated with `pgx-cds knowledge alleles`)"
    return "\n".join(lines) + ("\n" if text.endswith("\n") else "")


def _q(v: str) -> str:
    return json.dumps(v, ensure_ascii=False)
