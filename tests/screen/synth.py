"""Synthetic FHIR Bulk Data export for screening tests and the benchmark (all patients invented).

``python -m tests.screen.synth N DIR [--seed S] [--tested 0.3] [--gzip]`` writes N patients as NDJSON,
one or more files per resource type (Patient, Observation, DiagnosticReport, MedicationRequest,
MedicationStatement, Condition), like a FHIR Bulk Data export.

- Diplotypes are drawn allele by allele at approximate population allele frequencies (rounded, mostly
  European-ancestry figures from the published CPIC/PharmGKB frequency tables; test data, not clinical).
- Standard results come in three Genomics Reporting forms (PharmVar coding + HGNC gene, valueString with the
  gene as text, CodeableConcept text); a share of patients instead get a copy of one of the synthetic
  patients in ``fhir_profiles/bundles`` (every other form the reader supports: DiagnosticReport grouping,
  contained results, hasMember panels, STU1 codes, GL Strings, HLA presence, therapeutic implications,
  phenotype-only results, entered-in-error, preliminary and unreadable results, conflicting results).
- Amended results that conflict with an older final one, unreadable results, stopped and completed
  medications, MedicationStatements, conditions that select guideline populations, body weight and height.
- Deterministic for a seed; every ``meta.lastUpdated`` is set (for ``--since``).
"""

from __future__ import annotations

import argparse
import functools
import gzip
import json
import random
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Iterator

import orjson

ROOT = Path(__file__).resolve().parents[2]
BUNDLES = ROOT / "fhir_profiles" / "bundles"
LOINC = "http://loinc.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
SNOMED = "http://snomed.info/sct"

HGNC = {"CYP2C19": "HGNC:2621", "CYP2D6": "HGNC:2625", "CYP2C9": "HGNC:2623", "SLCO1B1": "HGNC:10959",
        "TPMT": "HGNC:12014", "NUDT15": "HGNC:23063", "DPYD": "HGNC:3012", "UGT1A1": "HGNC:12530",
        "CYP3A5": "HGNC:2638", "CYP2B6": "HGNC:2615", "CYP4F2": "HGNC:2645", "VKORC1": "HGNC:23663"}

#: allele -> approximate frequency (rounded; the remainder goes to the first, reference allele)
FREQ: dict[str, list[tuple[str, float]]] = {
    "CYP2C19": [("*1", 0.0), ("*2", 0.15), ("*3", 0.005), ("*17", 0.21)],
    "CYP2D6": [("*1", 0.0), ("*2", 0.27), ("*4", 0.18), ("*41", 0.09), ("*10", 0.03), ("*5", 0.03),
               ("*9", 0.02), ("*1x2", 0.01), ("*2x2", 0.01), ("*6", 0.01), ("*3", 0.01)],
    "CYP2C9": [("*1", 0.0), ("*2", 0.13), ("*3", 0.07)],
    "SLCO1B1": [("*1", 0.0), ("*5", 0.02), ("*15", 0.14), ("*37", 0.25)],
    "TPMT": [("*1", 0.0), ("*3A", 0.035), ("*3C", 0.005), ("*2", 0.002)],
    "NUDT15": [("*1", 0.0), ("*3", 0.01), ("*2", 0.003)],
    "DPYD": [("Reference", 0.0), ("c.1129-5923C>G", 0.02), ("c.2846A>T", 0.006), ("c.1905+1G>A (*2A)", 0.005)],
    "UGT1A1": [("*1", 0.0), ("*28", 0.32), ("*6", 0.01), ("*36", 0.01)],
    "CYP3A5": [("*3", 0.0), ("*1", 0.08), ("*6", 0.01)],
    "CYP2B6": [("*1", 0.0), ("*6", 0.25), ("*18", 0.01), ("*4", 0.04)],
    "CYP4F2": [("*1", 0.0), ("*3", 0.29)],
    "VKORC1": [("rs9923231 reference (C)", 0.0), ("rs9923231 variant (T)", 0.39)],
}
#: HLA alleles of interest and their carrier frequency (Present/Absent results)
HLA = [("HLA-B", "HLA-B*57:01", 0.06), ("HLA-B", "HLA-B*58:01", 0.02), ("HLA-B", "HLA-B*15:02", 0.01),
       ("HLA-A", "HLA-A*31:01", 0.03)]
PANEL = list(FREQ)
#: a drug whose guideline reads the gene (to put an unreadable result where it matters)
UNREADABLE_DRUG = {"CYP2C19": "clopidogrel", "CYP2D6": "codeine", "SLCO1B1": "simvastatin", "DPYD": "capecitabine",
                   "TPMT": "azathioprine"}

#: common CPIC drugs and their relative prescribing weights (the rest of the knowledge base: weight 1)
COMMON = {"simvastatin": 30, "atorvastatin": 40, "rosuvastatin": 20, "omeprazole": 40, "pantoprazole": 30,
          "sertraline": 20, "citalopram": 15, "escitalopram": 15, "clopidogrel": 20, "ondansetron": 15,
          "tramadol": 15, "codeine": 10, "warfarin": 10, "amitriptyline": 10, "ibuprofen": 20, "celecoxib": 8,
          "tacrolimus": 3, "capecitabine": 2, "fluorouracil": 2, "azathioprine": 3, "mercaptopurine": 2,
          "allopurinol": 10, "carbamazepine": 4, "phenytoin": 3, "abacavir": 2, "efavirenz": 2, "tamoxifen": 4,
          "voriconazole": 2, "atomoxetine": 2, "paroxetine": 8}
OTHER_DRUGS = [("29046", "lisinopril"), ("6809", "metformin"), ("17767", "amlodipine"), ("10582", "levothyroxine"),
               ("161", "acetaminophen"), ("1191", "aspirin")]
CONDITIONS = [("394659003", "Acute coronary syndrome"), ("38341003", "Hypertensive disorder"),
              ("44054006", "Diabetes mellitus type 2"), ("363406005", "Malignant neoplasm of colon"),
              ("84114007", "Heart failure"), ("195967001", "Asthma")]
_START = date(2019, 1, 1)


@functools.cache
def cpic_drugs() -> list[tuple[str, str]]:
    """(name, rxnorm) of every drug the knowledge base covers."""
    from service.pgx.knowledge import load_knowledge

    k = load_knowledge(ROOT / "cards")
    out: dict[str, str] = {}
    for gs in k.by_gene.values():
        for g in gs:
            for d in g.drugs:
                if d.rxnorm:
                    out.setdefault(d.name, d.rxnorm)
    return sorted(out.items())


def _templates() -> list[list[dict[str, Any]]]:
    """The non-Patient resources of each synthetic bundle, ids and references prefixed by its patient id."""
    out = []
    for f in sorted(BUNDLES.glob("*.json")):
        entries = [e["resource"] for e in json.loads(f.read_text())["entry"]]
        pid = next(r["id"] for r in entries if r["resourceType"] == "Patient")
        text = json.dumps([r for r in entries if r["resourceType"] != "Patient"])
        out.append((pid, text))
    return out  # type: ignore[return-value]


class Generator:
    def __init__(self, seed: int = 1, tested: float = 0.3, template_share: float = 0.04, prefix: str = "p") -> None:
        self.rng = random.Random(seed)
        self.tested = tested
        self.template_share = template_share
        self.prefix = prefix
        drugs = cpic_drugs()
        self.drugs = drugs
        self.drug_weights = [COMMON.get(name, 1) for name, _ in drugs]
        self.templates = _templates()

    # ------------------------------------------------------------------ helpers
    def _day(self, lo: date = _START, span: int = 2500) -> str:
        return (lo + timedelta(days=self.rng.randrange(span))).isoformat()

    def _allele(self, gene: str) -> str:
        table = FREQ[gene]
        x = self.rng.random()
        for allele, f in table[1:]:
            if x < f:
                return allele
            x -= f
        return table[0][0]

    def _meta(self) -> dict[str, Any]:
        return {"lastUpdated": self._day(date(2024, 1, 1), 1000) + "T08:00:00Z"}

    def _genotype(self, pid: str, oid: str, gene: str, dip: str, when: str, status: str = "final") -> dict[str, Any]:
        form = self.rng.randrange(3)
        obs: dict[str, Any] = {
            "resourceType": "Observation", "id": oid, "meta": self._meta(), "status": status,
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                      "code": "laboratory"}]}],
            "code": {"coding": [{"system": LOINC, "code": "84413-4", "display": "Genotype display name"}]},
            "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": when, "issued": when + "T12:00:00Z",
        }
        gene_comp = {"code": {"coding": [{"system": LOINC, "code": "48018-6", "display": "Gene studied [ID]"}]},
                     "valueCodeableConcept": {"coding": [{"system": "http://www.genenames.org/geneId",
                                                          "code": HGNC[gene], "display": gene}]}}
        if form == 0 and dip.startswith("*"):
            obs["valueCodeableConcept"] = {"coding": [{"system": "https://www.pharmvar.org", "code": f"{gene} {dip}",
                                                       "display": f"{gene} {dip}"}]}
            obs["component"] = [gene_comp]
        elif form == 1:
            obs["valueString"] = f"{gene} {dip}" if dip.startswith("*") else dip
            obs["component"] = [{"code": gene_comp["code"], "valueCodeableConcept": {"text": gene}}]
        else:
            obs["valueCodeableConcept"] = {"text": dip}
            obs["component"] = [gene_comp]
        return obs

    def _hla(self, pid: str, oid: str, gene: str, allele: str, present: bool, when: str) -> dict[str, Any]:
        return {
            "resourceType": "Observation", "id": oid, "meta": self._meta(), "status": "final",
            "code": {"coding": [{"system": LOINC, "code": "69548-6", "display": "Genetic variant assessment"}]},
            "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": when,
            "valueCodeableConcept": {"coding": [{"system": LOINC, "code": "LA9633-4" if present else "LA9634-2",
                                                 "display": "Present" if present else "Absent"}]},
            "component": [
                {"code": {"coding": [{"system": LOINC, "code": "48018-6", "display": "Gene studied [ID]"}]},
                 "valueCodeableConcept": {"coding": [{"system": "http://www.genenames.org/geneId",
                                                      "code": "HGNC:4932" if gene == "HLA-B" else "HGNC:4931",
                                                      "display": gene}]}},
                {"code": {"coding": [{"system": LOINC, "code": "84414-2", "display": "Haplotype name"}]},
                 "valueCodeableConcept": {"text": allele}}],
        }

    def _med(self, pid: str, mid: str, rx: str, name: str, kind: str, status: str) -> dict[str, Any]:
        cc = {"coding": [{"system": RXNORM, "code": rx, "display": name}], "text": name}
        if kind == "MedicationStatement":
            return {"resourceType": "MedicationStatement", "id": mid, "meta": self._meta(), "status": status,
                    "medicationCodeableConcept": cc, "subject": {"reference": f"Patient/{pid}"},
                    "effectivePeriod": {"start": self._day()}}
        return {"resourceType": "MedicationRequest", "id": mid, "meta": self._meta(), "status": status,
                "intent": "order", "medicationCodeableConcept": cc, "subject": {"reference": f"Patient/{pid}"},
                "authoredOn": self._day()}

    # ------------------------------------------------------------------ one patient
    def patient(self, i: int) -> list[dict[str, Any]]:
        rng = self.rng
        pid = f"{self.prefix}{i:07d}"
        birth = date(1935, 1, 1) + timedelta(days=rng.randrange(365 * 88))
        out: list[dict[str, Any]] = [{
            "resourceType": "Patient", "id": pid, "meta": self._meta(),
            "gender": rng.choice(("female", "male")), "birthDate": birth.isoformat(),
        }]
        n = 0

        def nid(tag: str) -> str:
            nonlocal n
            n += 1
            return f"{pid}-{tag}{n}"

        if rng.random() < self.tested:
            if rng.random() < self.template_share:
                tpid, text = self.templates[rng.randrange(len(self.templates))]
                out.extend(r for r in json.loads(text.replace(tpid, pid)))
            else:
                when = self._day(date(2020, 1, 1), 1800)
                genes = PANEL if rng.random() < 0.6 else rng.sample(PANEL, rng.randint(1, 3))
                for gene in genes:
                    a, b = self._allele(gene), self._allele(gene)
                    dip = f"{a}/{b}"
                    if rng.random() < 0.03:  # an older, different result, then the amended one
                        c = self._allele(gene)
                        out.append(self._genotype(pid, nid("old"), gene, f"{c}/{c}" if c != a else f"{a}/{a}",
                                                  self._day(date(2015, 1, 1), 1500)))
                        out.append(self._genotype(pid, nid("g"), gene, dip, when, status="amended"))
                    else:
                        out.append(self._genotype(pid, nid("g"), gene, dip, when))
                untested = [g for g in UNREADABLE_DRUG if g not in genes]
                if untested and rng.random() < 0.05:  # an unreadable result, often for a drug the patient takes
                    gene = rng.choice(untested)
                    bad = self._genotype(pid, nid("u"), gene, "see scanned report", when)
                    bad.pop("valueCodeableConcept", None)
                    bad["valueString"] = "see scanned report"
                    out.append(bad)
                    if rng.random() < 0.5:
                        name = UNREADABLE_DRUG[gene]
                        out.append(self._med(pid, nid("m"), dict(self.drugs)[name], name, "MedicationRequest", "active"))
                if rng.random() < 0.5:
                    for gene, allele, freq in HLA:
                        out.append(self._hla(pid, nid("h"), gene, allele, rng.random() < freq, when))
        # medications: most people take something; a share of them are CPIC drugs
        for _ in range(rng.choices((0, 1, 2, 3, 4), (30, 30, 20, 12, 8))[0]):
            if rng.random() < 0.55:
                name, rx = rng.choices(self.drugs, self.drug_weights)[0]
            else:
                rx, name = rng.choice(OTHER_DRUGS)
            kind = "MedicationStatement" if rng.random() < 0.15 else "MedicationRequest"
            status = rng.choices(("active", "stopped", "completed"), (75, 15, 10))[0]
            out.append(self._med(pid, nid("m"), rx, name, kind, status))
        for _ in range(rng.choices((0, 1, 2), (50, 35, 15))[0]):
            code, display = rng.choice(CONDITIONS)
            out.append({"resourceType": "Condition", "id": nid("c"), "meta": self._meta(),
                        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                                       "code": rng.choices(("active", "resolved"), (85, 15))[0]}]},
                        "code": {"coding": [{"system": SNOMED, "code": code, "display": display}], "text": display},
                        "subject": {"reference": f"Patient/{pid}"}, "recordedDate": self._day()})
        if rng.random() < 0.3:
            for code, value, unit in (("29463-7", round(rng.uniform(45, 120), 1), "kg"),
                                      ("8302-2", round(rng.uniform(150, 195)), "cm")):
                out.append({"resourceType": "Observation", "id": nid("v"), "meta": self._meta(), "status": "final",
                            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                                      "code": "vital-signs"}]}],
                            "code": {"coding": [{"system": LOINC, "code": code}]},
                            "subject": {"reference": f"Patient/{pid}"}, "effectiveDateTime": self._day(),
                            "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org",
                                              "code": unit}})
        return out

    def patients(self, n: int, start: int = 0) -> Iterator[list[dict[str, Any]]]:
        for i in range(start, start + n):
            yield self.patient(i)


def write_export(out: Path, n: int, *, seed: int = 1, tested: float = 0.3, shards: int = 1,
                 gzip_types: tuple[str, ...] = (), template_share: float = 0.04) -> dict[str, int]:
    """Write n patients as NDJSON (``<Type>.<shard>.ndjson[.gz]``), returns resources written per type."""
    out.mkdir(parents=True, exist_ok=True)
    gen = Generator(seed=seed, tested=tested, template_share=template_share)
    files: dict[tuple[str, int], Any] = {}
    counts: dict[str, int] = {}
    try:
        for i, resources in enumerate(gen.patients(n)):
            shard = i * shards // max(n, 1)
            for r in resources:
                t = r["resourceType"]
                f = files.get((t, shard))
                if f is None:
                    name = f"{t}.{shard:03d}.ndjson"
                    f = files[(t, shard)] = (gzip.open(out / (name + ".gz"), "wb", compresslevel=1)
                                             if t in gzip_types else open(out / name, "wb", buffering=1 << 20))
                f.write(orjson.dumps(r) + b"\n")
                counts[t] = counts.get(t, 0) + 1
    finally:
        for f in files.values():
            f.close()
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("n", type=int)
    ap.add_argument("dir", type=Path)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tested", type=float, default=0.3, help="share of patients with PGx results")
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--gzip", action="store_true", help="gzip every file")
    a = ap.parse_args()
    types = ("Patient", "Observation", "DiagnosticReport", "MedicationRequest", "MedicationStatement", "Condition")
    print(write_export(a.dir, a.n, seed=a.seed, tested=a.tested, shards=a.shards,
                       gzip_types=types if a.gzip else ()))


if __name__ == "__main__":
    main()
