"""Prefetch templates we advertise in discovery, and helpers to run them ourselves.

Templates stay inside the CDS Hooks 2.0 query subset: only ``{{context.patientId}}`` tokens, token
parameters with ``system|code`` (comma-joined values are OR), ``_count``. The same templates drive the
fallback fetch when the EHR did not prefetch a key, so both paths see the same data.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, quote

LOINC = "http://loinc.org"
TBD_CODES = "http://hl7.org/fhir/uv/genomics-reporting/CodeSystem/tbd-codes-cs"

#: Observation codes of every genomic result form we read (Genomics Reporting IG STU1-STU4).
PGX_OBSERVATION_CODES: tuple[str, ...] = (
    f"{LOINC}|84413-4",  # Genotype
    f"{LOINC}|84414-2",  # Haplotype
    f"{LOINC}|69548-6",  # Variant
    f"{TBD_CODES}|therapeutic-implication",  # Therapeutic Implication (STU2+)
    f"{LOINC}|53040-2",  # STU1 medication metabolism
    f"{LOINC}|51961-1",  # STU1 medication efficacy
    f"{LOINC}|83009-1",  # STU1 high-risk allele
)

_PATIENT = "Patient/{{context.patientId}}"
_OBSERVATIONS = "Observation?patient={{context.patientId}}&code=" + ",".join(PGX_OBSERVATION_CODES) + "&_count=100"
_CONDITIONS = "Condition?patient={{context.patientId}}&clinical-status=active&_count=100"
_MEDICATIONS = "MedicationRequest?patient={{context.patientId}}&status=active&_count=100"
#: body weight and height, newest first: the warfarin dosing algorithm needs them (with age)
_VITALS = f"Observation?patient={{{{context.patientId}}}}&code={LOINC}|29463-7,{LOINC}|8302-2&_sort=-date&_count=10"

_ORDER_KEYS = {
    "patient": _PATIENT,
    "pgxObservations": _OBSERVATIONS,
    "conditions": _CONDITIONS,
    "medications": _MEDICATIONS,
    "vitals": _VITALS,
}

#: hook -> {prefetch key: template}
PREFETCH: dict[str, dict[str, str]] = {
    "order-select": dict(_ORDER_KEYS),
    "order-sign": dict(_ORDER_KEYS),
    # conditions choose guideline populations (clopidogrel after ACS vs. stroke), current medications
    # tell naive from long-term use: the summary needs them as much as an order does
    "patient-view": {"patient": _PATIENT, "pgxObservations": _OBSERVATIONS, "conditions": _CONDITIONS,
                     "medications": _MEDICATIONS},
}

#: Keys without which we cannot answer (-> 412 when neither prefetch nor the FHIR server gives them).
REQUIRED_KEYS: frozenset[str] = frozenset({"pgxObservations"})


def templates_for(hook: str) -> dict[str, str]:
    """Prefetch templates of a hook (unknown hooks get the patient-view set)."""
    return PREFETCH.get(hook, PREFETCH["patient-view"])


def render(template: str, patient_id: str) -> str:
    """Fill the ``{{context.patientId}}`` token (the id is percent-encoded)."""
    return template.replace("{{context.patientId}}", quote(patient_id, safe=""))


def as_request(template: str, patient_id: str) -> tuple[str, str, list[tuple[str, str]] | None]:
    """Turn a template into ``("read", "Patient/123", None)`` or ``("search", "Observation", params)``.

    ``params`` are decoded (name, value) pairs, ready for :meth:`FhirClient.search` to re-encode.
    """
    if "?" in template:
        rtype, query = template.split("?", 1)
        pairs = parse_qsl(query, keep_blank_values=True)
        params = [(k, v.replace("{{context.patientId}}", patient_id)) for k, v in pairs]
        return "search", rtype, params
    return "read", render(template, patient_id), None


#: FHIR resource types a patient's record is read from (others are ignored): population screening reads an
#: export's lines of these types and hands them to the patient-data stage as if prefetched
PATIENT_TYPES = frozenset({"Patient", "Observation", "DiagnosticReport", "MedicationRequest",
                           "MedicationStatement", "Condition"})
