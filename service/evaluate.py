"""The clinical stages, composed once: patient data -> genomic profile -> phenotypes -> recommendations.

:func:`run_clinical` is the one composition (as PharmCAT's ``Pipeline``): PatientData ->
GenomicProfile (service.fhir.genomics.build_profile) -> phenotypes (service.pgx.phenotype.annotate_profile,
only for the genes asked for) -> recommendations for draft orders (service.pgx.engine.evaluate_order) and/or
the patient-view summary (service.pgx.engine.summarize_profile). A caller holding a profile built earlier
from the same data (the hooks' cached snapshot) hands it in, and only what it lacks is done.

Its callers: the hook pipeline (service.hooks.pipeline, with its snapshot cache in front), the SMART app
(service.smart.data) and population screening (:func:`evaluate_patient` below, which feeds a patient's
resources through the hooks' own patient-data stage as a complete prefetch).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from service.config import Settings
from service.fhir.genomics import build_profile
from service.fhir.models import DraftOrder, PatientData
from service.fhir.orders import extract_orders
from service.fhir.patient_data import load_patient_data
from service.pgx.engine import evaluate_order, summarize_profile
from service.pgx.knowledge import Knowledge
from service.pgx.models import GenomicProfile, Recommendation
from service.pgx.phenotype import annotate_profile
from service.pgx.policy import EnginePolicy, as_policy

# ------------------------------------------------------------------------------------------ the stages


def needed_genes(knowledge: Knowledge, drug_names: Iterable[str]) -> frozenset[str]:
    """The genes whose phenotype an evaluation of orders for these drugs can read: every gene of every
    guideline of the drugs (forward phenoconversion converts only those), and for a drug that phenoconverts
    (reverse direction: cards about the drugs the patient already takes) the genes it converts and every
    gene of every guideline that reads one of them. Pre-test and unreadable-result rules read only whether
    a gene has a result (every result stays in the profile, phenotyped or not)."""
    genes: set[str] = set()
    pk = getattr(knowledge, "phenoconversion", None)
    for name in drug_names:
        for g in knowledge.guidelines_for_drug(name):
            genes.update(g.genes)
        perp = pk.perpetrators.get(name) if pk is not None else None
        if perp is not None:
            for effect in perp.effects:
                genes.add(effect.gene)
                for g in knowledge.by_gene.get(effect.gene, ()):
                    genes.update(g.genes)
    return frozenset(genes)


#: the phenotype stage's signature (service.pgx.phenotype.annotate_profile): gene tables, profile, sex
Annotate = Callable[..., GenomicProfile]


def phenotype(knowledge: Knowledge, profile: GenomicProfile, sex: str | None,
              genes: Collection[str] | None = None, annotate: Annotate = annotate_profile) -> GenomicProfile:
    """The profile with a phenotype call for each result of ``genes`` (None: all) that has none yet.
    Calls already made are kept (a call is a function of the result, the sex and the knowledge only);
    the profile is returned unchanged when nothing was missing."""
    todo = {key: r for key, r in profile.genes.items()
            if r.call is None and (genes is None or key in genes or r.gene in genes)}
    if not todo:
        return profile
    done = annotate(knowledge.genes, profile.model_copy(update={"genes": todo}), sex).genes
    return profile.model_copy(update={"genes": {key: done.get(key, r) for key, r in profile.genes.items()}})


@dataclass
class Clinical:
    """What the clinical stages gave for one patient."""

    profile: GenomicProfile  # phenotyped for the genes asked for
    orders: list[tuple[DraftOrder, list[Recommendation]]] = field(default_factory=list)
    summary: list[Recommendation] = field(default_factory=list)  # the patient-view recommendations


def run_clinical(
    knowledge: Knowledge,
    settings: Settings | EnginePolicy,
    data: PatientData,
    *,
    profile: GenomicProfile | None = None,
    genes: Collection[str] | None = None,
    orders: Sequence[DraftOrder] = (),
    co_orders: Sequence[DraftOrder] = (),
    summary: bool = False,
    today: date | None = None,
    annotate: Annotate = annotate_profile,
) -> Clinical:
    """patient data -> genomic profile -> phenotypes -> recommendations.

    ``profile``: one built earlier from ``data`` (a cached snapshot): not built again, only phenotyped
    where it lacks calls. ``genes``: read and phenotype only these genes' results (None: all;
    :func:`needed_genes` gives what orders read; the summary reads every gene). ``orders``: recommendations
    for each, as if ordered with ``co_orders`` (every draft order of the request). ``summary``: the
    patient-view recommendations. ``annotate``: the phenotype stage (population screening passes a
    per-worker memo of it, service/screen/memo.py)."""
    if summary:
        genes = None  # the summary reads every gene
    if profile is None:
        profile = build_profile(data, genes)
    profile = phenotype(knowledge, profile, data.sex, genes, annotate)
    out = Clinical(profile=profile)
    # the engine reads the few site settings it needs, not the whole Settings (callers that evaluate many
    # times hand in the EnginePolicy made once: as_policy returns it as is)
    policy = as_policy(settings) if orders or summary else None
    for order in orders:
        out.orders.append((order, evaluate_order(knowledge, profile, order, data, policy=policy, today=today,
                                                 co_orders=co_orders)))
    if summary:
        out.summary = summarize_profile(knowledge, profile, data, policy=policy, today=today)
    return out


#: prefetch template set whose keys the records are handed over as (the order hooks' full set)
_HOOK = "order-sign"


@dataclass
class ActiveMedication:
    reference: str  # "MedicationRequest/ID" or "MedicationStatement/ID"
    order: DraftOrder
    recommendations: list[Recommendation]


@dataclass
class PatientEvaluation:
    patient_id: str
    data: PatientData
    profile: GenomicProfile
    medications: list[ActiveMedication] = field(default_factory=list)
    summary: list[Recommendation] = field(default_factory=list)  # the patient-view recommendations


def as_medication_request(ms: dict[str, Any]) -> dict[str, Any]:
    """A MedicationStatement as the MedicationRequest fields the engine reads (drug, status, start, reason).

    Only the form changes: the drug codes, status and reason are copied; the start of use
    (effective[x] / dateAsserted) stands where a request has authoredOn."""
    eff = ms.get("effectivePeriod")
    start = (eff.get("start") if isinstance(eff, dict) else None) or ms.get("effectiveDateTime") or ms.get("dateAsserted")
    out: dict[str, Any] = {"resourceType": "MedicationRequest", "status": ms.get("status"), "intent": "order"}
    for key in ("id", "medicationCodeableConcept", "medicationReference", "subject", "reasonCode", "contained"):
        if key in ms:
            out[key] = ms[key]
    if isinstance(start, str):
        out["authoredOn"] = start
    return out


def is_active(res: dict[str, Any]) -> bool:
    """A current medication: MedicationRequest or MedicationStatement with status active (what the hooks'
    `medications` prefetch, `status=active`, holds)."""
    return res.get("status") == "active"


def patient_data(patient_id: str, resources: Iterable[dict[str, Any]]) -> PatientData:
    """The patient's resources through the hooks' patient-data stage, as if prefetched (no I/O)."""
    return _patient_data(patient_id, resources)[0]


def _patient_data(patient_id: str, resources: Iterable[dict[str, Any]]) -> tuple[PatientData, dict[int, str]]:
    """PatientData and, for each current medication dict in it, the reference of the resource it came from."""
    patient = None
    refs: dict[int, str] = {}
    observations: list[dict[str, Any]] = []
    conditions: list[dict[str, Any]] = []
    meds: list[dict[str, Any]] = []
    for res in resources:
        rtype = res.get("resourceType")
        if rtype == "Observation" or rtype == "DiagnosticReport":
            observations.append(res)
        elif rtype == "MedicationRequest":
            if is_active(res):
                meds.append(res)
                refs[id(res)] = f"MedicationRequest/{res.get('id')}"
        elif rtype == "MedicationStatement":
            if is_active(res):
                meds.append(as_medication_request(res))
                refs[id(meds[-1])] = f"MedicationStatement/{res.get('id')}"
        elif rtype == "Condition":
            conditions.append(res)
        elif rtype == "Patient" and res.get("id") == patient_id:
            patient = res
    prefetch = {
        "patient": patient,
        "pgxObservations": _bundle(observations),
        "conditions": _bundle(conditions),
        "medications": _bundle(meds),
        "vitals": None,  # body weight and height are read from the Observations above
    }
    coro = load_patient_data(hook=_HOOK, patient_id=patient_id, fhir_server=None, access_token=None,
                             prefetch=prefetch, client=None, settings=_NO_FHIR)  # type: ignore[arg-type]
    return _run_without_io(coro), refs


def evaluate_patient(
    knowledge: Knowledge,
    settings: Settings | EnginePolicy,
    patient_id: str,
    resources: Iterable[dict[str, Any]],
    *,
    today: date | None = None,
    annotate: Annotate = annotate_profile,
) -> PatientEvaluation:
    """Everything the hooks would say about this patient: each active medication as if re-ordered today
    (order-sign), and the patient-view summary of actionable results.

    ``annotate``: the phenotype stage (annotate_profile's signature); population screening passes a memoised
    one (service/screen/memo.py)."""
    data, refs = _patient_data(patient_id, resources)
    renewals = [(refs.get(id(med)) or f"MedicationRequest/{med.get('id')}", med) for med in data.medications]
    clinical = run_clinical(knowledge, settings, data, orders=[renewal_order(med, ref) for ref, med in renewals],
                            summary=True, today=today, annotate=annotate)
    ev = PatientEvaluation(patient_id=patient_id, data=data, profile=clinical.profile, summary=clinical.summary)
    for (ref, _med), (order, recs) in zip(renewals, clinical.orders):
        ev.medications.append(ActiveMedication(ref, order, recs))
    return ev


def renewal_order(med: dict[str, Any], reference: str) -> DraftOrder:
    """The draft order for re-ordering a current medication: its drug, dose and reason, no id of its own
    (so the current medication itself still counts as in use, e.g. for long-term-use populations)."""
    draft = {k: v for k, v in med.items() if k != "id"}
    draft["status"] = "draft"
    orders = extract_orders({"resourceType": "Bundle", "entry": [{"resource": draft}]}, None)
    return orders[0].model_copy(update={"reference": reference})


def _bundle(resources: list[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in resources]}


class _NoFhir:
    """Settings stand-in for load_patient_data: every key is prefetched, so nothing is ever fetched."""

    class fhir:  # noqa: N801 - mirrors Settings.fhir
        timeout_s = 1.0
        max_pages = 1


_NO_FHIR = _NoFhir()


def _run_without_io(coro: Any) -> Any:
    """Drive a coroutine that performs no I/O (every prefetch key present) to completion synchronously."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise RuntimeError("patient data would have needed a FHIR request")
