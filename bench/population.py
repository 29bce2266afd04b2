"""Distinct synthetic patients for the benchmark, generated from the gene tables (cards/genes).

Each patient gets genomic results drawn at approximate population allele frequencies, in the forms EHRs
and labs send (PharmVar coding, coded text, plain string, GL string for HLA; now and then an older
result that an amended one contradicts, one entered in error, one nobody can read), a few conditions,
active medications and vitals, and one or two draft medication orders: mostly drugs without a CPIC
guideline, ``cpic_share`` of patients a drug that has one (taken from the knowledge's own drug index).

The allele names come from the gene tables (an allele a table does not list is never generated: the
frequency table below is checked against them); the frequencies are rounded, European-ancestry-like
figures from the CPIC allele frequency tables, good enough for a realistic share of actionable
phenotypes, and not clinical data. A small remainder is spread over the table's other alleles (some of
uncertain function: Indeterminate results, as in real traffic).

Deterministic for a given seed. Bench only: not imported by the service.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
LOINC = "http://loinc.org"
PHARMVAR = "https://www.pharmvar.org"

# Approximate allele frequencies (rounded; the reference allele takes what is left).
FREQUENCIES: dict[str, dict[str, float]] = {
    "CYP2C19": {"*2": 0.15, "*3": 0.005, "*17": 0.21},
    "CYP2D6": {"*2": 0.15, "*4": 0.18, "*5": 0.03, "*10": 0.03, "*41": 0.09, "*9": 0.02, "*1x2": 0.01, "*3": 0.01, "*6": 0.01},
    "CYP2C9": {"*2": 0.12, "*3": 0.07},
    "CYP3A5": {"*3": 0.9, "*6": 0.005, "*7": 0.005},
    "SLCO1B1": {"*5": 0.02, "*15": 0.14, "*37": 0.2},
    "TPMT": {"*3A": 0.035, "*3C": 0.005, "*2": 0.002},
    "NUDT15": {"*3": 0.005},
    "UGT1A1": {"*28": 0.31, "*6": 0.002, "*37": 0.002},
    "CYP2B6": {"*6": 0.24, "*18": 0.005, "*4": 0.04},
    "DPYD": {"c.1905+1G>A (*2A)": 0.008, "c.2846A>T": 0.007, "c.1129-5923C>G, c.1236G>A (HapB3)": 0.02},
    "CYP4F2": {"*3": 0.3},
    "VKORC1": {"rs9923231 variant (T)": 0.39},
}
HLA = {  # allele -> carrier frequency (approximate); presence is what the guidelines read
    "HLA-B": {"HLA-B*57:01": 0.06, "HLA-B*58:01": 0.02, "HLA-B*15:02": 0.005},
    "HLA-A": {"HLA-A*31:01": 0.03},
}
HLA_OTHERS = {"HLA-B": ["HLA-B*07:02", "HLA-B*08:01", "HLA-B*44:02", "HLA-B*35:01", "HLA-B*40:01"],
              "HLA-A": ["HLA-A*02:01", "HLA-A*01:01", "HLA-A*03:01", "HLA-A*24:02"]}
HGNC = {"HLA-A": "HGNC:4931", "HLA-B": "HGNC:4932"}
RARE = 0.01  # spread over the gene table's other alleles

NON_CPIC = [  # common orders no CPIC guideline covers (checked against the knowledge at generation)
    ("29046", "lisinopril 10 MG Oral Tablet"), ("6809", "metformin 500 MG Oral Tablet"),
    ("17767", "amlodipine 5 MG Oral Tablet"), ("161", "acetaminophen 500 MG Oral Tablet"),
    ("723", "amoxicillin 500 MG Oral Capsule"), ("4603", "furosemide 40 MG Oral Tablet"),
    ("10582", "levothyroxine 50 MCG Oral Tablet"), ("5487", "hydrochlorothiazide 25 MG Oral Tablet"),
    ("8640", "prednisone 10 MG Oral Tablet"), ("52175", "losartan 50 MG Oral Tablet"),
    ("25480", "gabapentin 300 MG Oral Capsule"), ("2231", "cephalexin 500 MG Oral Capsule"),
    ("18631", "azithromycin 250 MG Oral Tablet"), ("88249", "montelukast 10 MG Oral Tablet"),
    ("67108", "enoxaparin 40 MG/0.4ML Injectable Solution"), ("1364430", "apixaban 5 MG Oral Tablet"),
    ("6918", "metoprolol 25 MG Oral Tablet"), ("4493", "fluoxetine 20 MG Oral Capsule"),
]
CONDITIONS = [
    ("38341003", "Hypertensive disorder"), ("44054006", "Type 2 diabetes mellitus"),
    ("394659003", "Acute coronary syndrome"), ("49436004", "Atrial fibrillation"),
    ("35489007", "Depressive disorder"), ("84757009", "Epilepsy"), ("195967001", "Asthma"),
    ("230690007", "Cerebrovascular accident"), ("86406008", "Human immunodeficiency virus infection"),
    ("13645005", "Chronic obstructive lung disease"), ("363346000", "Malignant neoplastic disease"),
]


@dataclass(frozen=True)
class Gene:
    name: str
    hgnc: str
    reference: str
    alleles: tuple[str, ...]
    weights: tuple[float, ...]


def load_genes(genes_dir: Path = ROOT / "cards" / "genes") -> dict[str, Gene]:
    """Allele draw tables for the star/variant genes with a frequency entry, from the gene files."""
    out: dict[str, Gene] = {}
    for path in sorted(genes_dir.glob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        name = data["gene"]
        if name not in FREQUENCIES:
            continue
        listed = [a["name"] for a in data.get("alleles", [])]
        freq = FREQUENCIES[name]
        unknown = [a for a in freq if a not in listed]
        if unknown:
            raise ValueError(f"{name}: {unknown} not in {path.name}")
        ref = data["reference_allele"]
        others = [a for a in listed if a != ref and a not in freq]
        weights = dict(freq)
        for a in others:
            weights[a] = RARE / max(len(others), 1)
        weights[ref] = max(1.0 - sum(weights.values()), 0.0)
        names = tuple(weights)
        out[name] = Gene(name, data["hgnc"], ref, names, tuple(weights[a] for a in names))
    return out


def _coding(system: str, code: str, display: str | None = None) -> dict:
    c = {"system": system, "code": code}
    if display:
        c["display"] = display
    return {"coding": [c]}


class Generator:
    def __init__(self, knowledge: Any, seed: int = 14, cpic_share: float = 0.2) -> None:
        from service.fhir.orders import extract_orders
        from service.pgx.drugs import recognise

        self.rng = random.Random(seed)
        self.genes = load_genes()
        self.cpic_share = cpic_share
        self.cpic_drugs = [(d.rxnorm, d.name) for d in knowledge.drug_index.drugs if d.rxnorm]
        self.non_cpic = []
        for code, name in NON_CPIC:  # never a drug the knowledge recognises
            order = extract_orders(self._med("x", code, name, "draft"), None)[0]
            if not recognise(knowledge, order):
                self.non_cpic.append((code, name))

    # ------------------------------------------------------------------ resources

    def _med(self, rid: str, code: str, name: str, status: str, pid: str = "p") -> dict:
        r = self.rng
        return {
            "resourceType": "MedicationRequest", "id": rid, "status": status,
            "intent": "order" if status == "draft" else "plan",
            "medicationCodeableConcept": {"coding": [{"system": RXNORM, "code": code, "display": name}], "text": name},
            "subject": {"reference": f"Patient/{pid}"},
            "encounter": {"reference": f"Encounter/enc-{pid}"},
            "requester": {"reference": f"Practitioner/prac-{r.randint(1, 400)}"},
            "authoredOn": "2026-11-30",
            "dosageInstruction": [{"text": "once daily", "timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}},
                                   "doseAndRate": [{"doseQuantity": {"value": r.choice([5, 10, 20, 25, 40, 50, 75, 100]),
                                                                     "unit": "mg"}}]}],
        }

    def _obs(self, pid: str, oid: str, gene: str, hgnc: str, value: dict, status: str = "final",
             date: str = "2024-03-01") -> dict:
        return {
            "resourceType": "Observation", "id": oid, "status": status,
            "meta": {"profile": ["http://hl7.org/fhir/uv/genomics-reporting/StructureDefinition/genotype"]},
            "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                      "code": "laboratory"}]}],
            "code": _coding(LOINC, "84413-4", "Genotype display name"),
            "subject": {"reference": f"Patient/{pid}"},
            "effectiveDateTime": date, "issued": date + "T12:00:00Z",
            **value,
            "component": [{"code": _coding(LOINC, "48018-6", "Gene studied [ID]"),
                           "valueCodeableConcept": _coding("http://www.genenames.org/geneId", hgnc, gene)}],
        }

    def _diplotype_value(self, gene: Gene, a: str, b: str) -> dict:
        text = f"{a}/{b}"
        form = self.rng.random()
        if form < 0.4:
            return {"valueCodeableConcept": _coding(PHARMVAR, f"{gene.name} {text}", f"{gene.name} {text}")}
        if form < 0.7:
            return {"valueCodeableConcept": {"text": f"{gene.name} {text}"}}
        return {"valueString": text if self.rng.random() < 0.5 else f"{gene.name} {text}"}

    def _genomics(self, pid: str) -> list[dict]:
        r = self.rng
        if r.random() < 0.08:
            return []  # never tested
        names = list(self.genes) + list(HLA)
        tested = names if r.random() < 0.6 else r.sample(names, r.randint(1, 4))
        out: list[dict] = []
        for i, name in enumerate(tested):
            oid = f"{pid}-g{i}"
            if name in HLA:
                carried = [a for a, f in HLA[name].items() if r.random() < f]
                alleles = (carried + r.sample(HLA_OTHERS[name], 2))[:2]
                gl = f"hla#3.{r.randint(30, 59)}.0#" + "+".join(alleles)
                out.append(self._obs(pid, oid, name, HGNC[name], {"valueCodeableConcept": _coding("http://glstring.org", gl)}))
                continue
            gene = self.genes[name]
            a, b = r.choices(gene.alleles, gene.weights, k=2)
            roll = r.random()
            if roll < 0.02:  # a result nobody can read: listed as unreadable, never Normal
                out.append(self._obs(pid, oid, name, gene.hgnc, {"valueString": "see scanned report"}))
            elif roll < 0.06:  # an older result that an amended one contradicts
                c, d = r.choices(gene.alleles, gene.weights, k=2)
                out.append(self._obs(pid, oid + "a", name, gene.hgnc, self._diplotype_value(gene, c, d), date="2019-05-02"))
                out.append(self._obs(pid, oid, name, gene.hgnc, self._diplotype_value(gene, a, b), status="amended",
                                     date="2023-08-11"))
            elif roll < 0.08:  # one entered in error beside the real one
                out.append(self._obs(pid, oid + "e", name, gene.hgnc, self._diplotype_value(gene, b, b),
                                     status="entered-in-error"))
                out.append(self._obs(pid, oid, name, gene.hgnc, self._diplotype_value(gene, a, b)))
            else:
                out.append(self._obs(pid, oid, name, gene.hgnc, self._diplotype_value(gene, a, b)))
        return out

    @staticmethod
    def _bundle(resources: list[dict]) -> dict:
        return {"resourceType": "Bundle", "type": "searchset", "total": len(resources),
                "entry": [{"fullUrl": f"{x['resourceType']}/{x['id']}", "resource": x} for x in resources]}

    # ------------------------------------------------------------------ requests

    def patient(self, n: int, fhir_server: str) -> tuple[dict, dict]:
        """(order-select body, order-sign body) for the n-th patient; each its own hookInstance."""
        r = self.rng
        pid = f"bench-{n}-{uuid.UUID(int=r.getrandbits(128)).hex[:8]}"
        patient = {"resourceType": "Patient", "id": pid, "gender": r.choice(["female", "male"]),
                   "birthDate": f"{r.randint(1935, 2008)}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}"}
        conditions = [{"resourceType": "Condition", "id": f"{pid}-c{i}", "subject": {"reference": f"Patient/{pid}"},
                       "clinicalStatus": _coding("http://terminology.hl7.org/CodeSystem/condition-clinical", "active"),
                       "code": {"coding": [{"system": "http://snomed.info/sct", "code": c, "display": d}], "text": d}}
                      for i, (c, d) in enumerate(r.sample(CONDITIONS, r.randint(0, 3)))]
        active = [self._med(f"{pid}-m{i}", c, d, "active", pid) for i, (c, d) in
                  enumerate(r.sample(self.non_cpic, r.randint(0, 4)))]
        vitals = [self._obs_vital(pid, "29463-7", "Body weight", r.randint(45, 120), "kg"),
                  self._obs_vital(pid, "8302-2", "Body height", r.randint(150, 195), "cm")] if r.random() < 0.7 else []
        drafts = [self._med(f"{pid}-d{i}", c, d, "draft", pid) for i, (c, d) in
                  enumerate(r.sample(self.non_cpic, r.randint(1, 2)))]
        if r.random() < self.cpic_share:
            code, name = r.choice(self.cpic_drugs)
            drafts[0] = self._med(f"{pid}-d0", code, name, "draft", pid)
        prefetch = {"patient": patient, "pgxObservations": self._bundle(self._genomics(pid)),
                    "conditions": self._bundle(conditions), "medications": self._bundle(active),
                    "vitals": self._bundle(vitals)}
        context = {"userId": drafts[0]["requester"]["reference"], "patientId": pid, "encounterId": f"enc-{pid}",
                   "draftOrders": {"resourceType": "Bundle", "entry": [{"resource": d} for d in drafts]}}
        select = {"hook": "order-select", "hookInstance": str(uuid.UUID(int=r.getrandbits(128))),
                  "fhirServer": fhir_server,
                  "context": {**context, "selections": [f"MedicationRequest/{drafts[0]['id']}"]}, "prefetch": prefetch}
        sign = {"hook": "order-sign", "hookInstance": str(uuid.UUID(int=r.getrandbits(128))),
                "fhirServer": fhir_server, "context": context, "prefetch": prefetch}
        return select, sign

    def _obs_vital(self, pid: str, code: str, display: str, value: float, unit: str) -> dict:
        return {"resourceType": "Observation", "id": f"{pid}-{code}", "status": "final",
                "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                          "code": "vital-signs"}]}],
                "code": _coding(LOINC, code, display), "subject": {"reference": f"Patient/{pid}"},
                "effectiveDateTime": "2026-10-01",
                "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}}


def generate(knowledge: Any, patients: int, *, block: int, fhir_server: str, seed: int = 14,
             cpic_share: float = 0.2, first: int = 0, gen: "Generator | None" = None) -> list[tuple[str, dict]]:
    """(hook, body) in send order: blocks of ``block`` patients' order-selects, then the same patients'
    order-signs (so each order-sign comes moments after its order-select has been answered, as in an EHR,
    not concurrently with it). Patients are numbered from ``first`` (their ids carry the number): a later
    call with ``first`` past the earlier ones (and the same ``gen``, or another seed) adds patients distinct
    from them."""
    gen = gen or Generator(knowledge, seed=seed if first == 0 else seed * 1_000_003 + first, cpic_share=cpic_share)
    out: list[tuple[str, dict]] = []
    end = first + patients
    for start in range(first, end, block):
        pairs = [gen.patient(n, fhir_server) for n in range(start, min(start + block, end))]
        out += [("order-select", s) for s, _ in pairs]
        out += [("order-sign", s) for _, s in pairs]
    return out
