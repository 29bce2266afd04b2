"""Patient data for one CDS request: prefetch first, the FHIR server only for what prefetch lacks.

Prefetch semantics (CDS Hooks 2.0 §prefetch):

* key absent                       -> fetch it ourselves;
* value ``null`` / empty Bundle     -> no data, do NOT refetch;
* value is an OperationOutcome     -> the EHR's fetch failed: refetch, never read it as clinical data;
* Bundle with a ``next`` link      -> follow it (same server, with the token) when we can;
* anything else unusable           -> refetch.

All missing keys are fetched in parallel under one :class:`Budget`. A required key (``REQUIRED_KEYS``)
that cannot be obtained sets ``observations_available=False``; the caller answers 412.
"""

from __future__ import annotations

import asyncio
from datetime import date, datetime, timezone
from typing import Any, Collection
from urllib.parse import quote

import structlog

from service.fhir.client import Budget, FhirClient, FhirError, _fhir_settings, _same_server
from service.fhir.models import DraftOrder, PatientData
from service.fhir.orders import codes_of_medication
from service.fhir.prefetch import REQUIRED_KEYS, as_request, templates_for

log = structlog.get_logger(__name__)

#: key set on an Observation dict copy when it has no server id of its own (contained, urn:uuid).
REF_KEY = "_pgxRef"

_WEIGHT_CODES = {"29463-7", "3141-9"}
_HEIGHT_CODES = {"8302-2", "8306-3", "3137-7"}
_MAX_MEMBER_DEPTH = 4


async def load_patient_data(
    *,
    hook: str,
    patient_id: str,
    fhir_server: str | None,
    access_token: str | None,
    prefetch: dict | None,
    client: FhirClient,
    settings: Any,
    budget: Budget | None = None,
    only: Collection[str] | None = None,
) -> PatientData:
    """Everything later stages need about the patient; never raises for FHIR/prefetch problems.

    ``only`` limits what is fetched to those prefetch keys (what the ordered drugs' guidelines need);
    prefetched keys are always used. ``obtained`` on the result names the keys whose data we have.

    ``settings`` is the service Settings (or FhirSettings). ``budget`` lets the caller share one deadline
    with :func:`resolve_medications`; by default one is created from ``settings.fhir.timeout_s``.
    ``fhir_calls`` counts the outbound requests this call made (retries and pages included).
    """
    fs = _fhir_settings(settings)
    budget = budget if budget is not None else Budget(fs.timeout_s)
    calls_before = budget.calls
    prefetch = prefetch if isinstance(prefetch, dict) else {}
    notes: list[str] = []
    values: dict[str, Any] = {}
    fetch: list[str] = []
    follow: dict[str, str] = {}

    wanted = (lambda k: True) if only is None else (lambda k: k in only)
    for key, template in templates_for(hook).items():
        if key not in prefetch:
            if wanted(key):
                fetch.append(key)
            continue
        value = prefetch[key]
        if value is None:
            values[key] = None
        elif isinstance(value, dict) and value.get("resourceType") == "OperationOutcome":
            if wanted(key):
                notes.append(f"prefetch '{key}' was an OperationOutcome (the EHR could not fetch it); refetched")
                fetch.append(key)
        elif isinstance(value, dict) and value.get("resourceType") == "Bundle":
            values[key] = value
            nxt = _next(value)
            if nxt:
                follow[key] = nxt
        elif isinstance(value, dict) and isinstance(value.get("resourceType"), str) and "?" not in template:
            values[key] = value
        else:
            if wanted(key):
                notes.append(f"prefetch '{key}' was not usable FHIR data; refetched")
                fetch.append(key)

    failed: dict[str, str] = {}
    if fetch or follow:
        if not fhir_server:
            for key in fetch:
                failed[key] = "no fhirServer to fetch from"
            for key in follow:
                notes.append(f"prefetch '{key}' has more pages but no fhirServer was given; first page used")
        else:
            jobs = [(k, _fetch_key(client, fhir_server, access_token, templates_for(hook)[k], patient_id, budget))
                    for k in fetch]
            jobs += [(k, _follow(client, fhir_server, access_token, url, budget, fs.max_pages - 1))
                     for k, url in follow.items()]
            results = await asyncio.gather(*(j for _, j in jobs), return_exceptions=True)
            for (key, _), res in zip(jobs, results):
                if key in follow and key not in fetch:
                    if isinstance(res, BaseException):
                        notes.append(f"prefetch '{key}' has more pages that could not be fetched ({_kind(res)}); "
                                     "first page used")
                    else:
                        values[key] = _merge(values[key], res)
                    continue
                if isinstance(res, FhirError) and res.kind == "not_found" and "?" not in templates_for(hook)[key]:
                    values[key] = None
                elif isinstance(res, BaseException):
                    failed[key] = _kind(res)
                    if not isinstance(res, FhirError):
                        log.error("fhir_fetch_bug", key=key, error=type(res).__name__)
                else:
                    values[key] = res

    for key, why in failed.items():
        notes.append(f"'{key}' could not be obtained ({why})")
    for key, value in values.items():
        if isinstance(value, dict) and value.get("resourceType") == "Bundle" and _next(value):
            notes.append(f"'{key}' has more results than were fetched (page limit); newest results may be missing")

    data = PatientData(patient_id=patient_id, fhir_server=fhir_server, notes=notes)
    data.observations_available = not any(k in failed for k in REQUIRED_KEYS)
    # keys we have data for, or tried and could not get (an optional key that failed is not retried on
    # every cached request; a failed required key makes the whole result unavailable instead)
    data.obtained = sorted(k for k in {*values, *failed} if not (k in failed and k in REQUIRED_KEYS))
    data.unavailable = sorted(failed)  # safety screening must not read "not obtained" as "none on record"
    _apply_patient(data, values.get("patient"))
    obs, foreign = _flatten(values.get("pgxObservations"), patient_id)
    if foreign:
        data.notes.append(f"{foreign} Observation(s) for another patient were ignored")
    vitals = _of_type(values.get("vitals"), "Observation", patient_id)
    data.observations = _take_vitals(data, obs + vitals)
    data.conditions = _of_type(values.get("conditions"), "Condition", patient_id)
    data.medications = _of_type(values.get("medications"), "MedicationRequest", patient_id)
    data.fhir_calls = budget.calls - calls_before
    return data


async def resolve_medications(
    orders: list[DraftOrder],
    prefetch: dict | None,
    client: FhirClient,
    *,
    fhir_server: str | None = None,
    access_token: str | None = None,
    draft_orders: dict | None = None,
    settings: Any = None,
    budget: Budget | None = None,
) -> list[DraftOrder]:
    """Fill drug codes of orders that use ``medicationReference`` to a non-contained Medication.

    Looks in the draftOrders Bundle and every prefetch value first; reads ``Medication/{id}`` from the
    FHIR server (all reads in parallel, under the budget) only for the rest. Orders that stay unresolved
    are returned unchanged (their ``text`` may still come from ``reference.display``).
    """
    budget = budget if budget is not None else Budget(_fhir_settings(settings).timeout_s)
    pending: dict[int, str] = {}
    for i, order in enumerate(orders):
        ref = (order.resource.get("medicationReference") or {}) if isinstance(order.resource, dict) else {}
        target = ref.get("reference") if isinstance(ref, dict) else None
        if order.codes or not isinstance(target, str) or target.startswith("#"):
            continue
        key = _type_id(target)
        if key and key.startswith("Medication/"):
            pending[i] = key
    if not pending:
        return list(orders)

    known: dict[str, dict[str, Any]] = {}
    for source in [draft_orders, *(prefetch or {}).values()]:
        for full, res in _entries(source):
            if res.get("resourceType") == "Medication":
                for k in _keys(full, res):
                    known[k] = res

    missing = sorted({k for k in pending.values() if k not in known})
    if missing and fhir_server and not budget.expired:
        reads = [client.read(fhir_server, "Medication/" + quote(k.split("/", 1)[1], safe=""), access_token,
                             budget=budget) for k in missing]
        for key, res in zip(missing, await asyncio.gather(*reads, return_exceptions=True)):
            if isinstance(res, dict):
                known[key] = res
            else:
                log.info("medication_unresolved", kind=_kind(res))

    out = list(orders)
    for i, key in pending.items():
        med = known.get(key)
        if med is None:
            continue
        codes, text = codes_of_medication(med)
        out[i] = orders[i].model_copy(update={"codes": codes, "text": orders[i].text or text})
    return out


# --------------------------------------------------------------------------------------------- fetching


async def _fetch_key(client: FhirClient, base: str, token: str | None, template: str, patient_id: str,
                     budget: Budget) -> dict[str, Any]:
    kind, target, params = as_request(template, patient_id)
    if kind == "read":
        return await client.read(base, target, token, budget=budget)
    # our own page size (settings.fhir.page_size) replaces the template's _count
    params = [(k, v) for k, v in params or [] if k != "_count"]
    return await client.search(base, target, params, token, budget=budget)


async def _follow(client: FhirClient, base: str, token: str | None, url: str, budget: Budget,
                  max_pages: int) -> dict[str, Any]:
    if max_pages < 1:
        return {"resourceType": "Bundle", "entry": [], "link": [{"relation": "next", "url": url}]}
    if not _same_server(url, base.rstrip("/")):
        raise FhirError("invalid_request", None, "next link is not on fhirServer")
    return await client.pages(base, url, token, budget=budget, max_pages=max_pages)


def _merge(first: dict[str, Any], rest: dict[str, Any]) -> dict[str, Any]:
    merged = {"resourceType": "Bundle", "type": first.get("type", "searchset"),
              "entry": list(_list(first.get("entry"))) + list(_list(rest.get("entry")))}
    if rest.get("link"):
        merged["link"] = rest["link"]
    return merged


def _next(bundle: dict[str, Any]) -> str | None:
    for link in _list(bundle.get("link")):
        if isinstance(link, dict) and link.get("relation") == "next" and isinstance(link.get("url"), str):
            return link["url"]
    return None


def _kind(err: BaseException) -> str:
    if isinstance(err, FhirError):
        return err.kind + (f" {err.status}" if err.status is not None else "")
    return "internal error"


# ------------------------------------------------------------------------------------------ extraction


def _apply_patient(data: PatientData, patient: Any) -> None:
    if not isinstance(patient, dict) or patient.get("resourceType") != "Patient":
        return
    pid = patient.get("id")
    if isinstance(pid, str) and pid != data.patient_id:
        data.notes.append("Patient resource id does not match the context patient; demographics ignored")
        return
    data.birth_date = _date(patient.get("birthDate"))
    gender = patient.get("gender")
    data.sex = gender if isinstance(gender, str) else None


def _date(value: Any) -> date | None:
    if not isinstance(value, str):
        return None
    try:
        parts = [int(p) for p in value[:10].split("-")]
        return date(parts[0], parts[1] if len(parts) > 1 else 1, parts[2] if len(parts) > 2 else 1)
    except (ValueError, IndexError):
        return None


def _entries(source: Any) -> list[tuple[str | None, dict[str, Any]]]:
    """(fullUrl, resource) pairs of a Bundle, or of a single resource."""
    if not isinstance(source, dict):
        return []
    if source.get("resourceType") != "Bundle":
        return [(None, source)] if isinstance(source.get("resourceType"), str) else []
    out = []
    for e in _list(source.get("entry")):
        if isinstance(e, dict) and isinstance(e.get("resource"), dict):
            full = e.get("fullUrl") if isinstance(e.get("fullUrl"), str) else None
            out.append((full, e["resource"]))
    return out


def _type_id(ref: str) -> str | None:
    """``Type/id`` of a relative or absolute literal reference (history suffix dropped)."""
    if not isinstance(ref, str) or not ref or ref.startswith("#") or ref.startswith("urn:"):
        return None
    segs = ref.split("?", 1)[0].rstrip("/").split("/")
    if "_history" in segs:
        segs = segs[: segs.index("_history")]
    if len(segs) >= 2 and segs[-2][:1].isupper():
        return f"{segs[-2]}/{segs[-1]}"
    return None


def _keys(full: str | None, res: dict[str, Any]) -> list[str]:
    keys = []
    rid = res.get("id")
    if isinstance(rid, str) and isinstance(res.get("resourceType"), str):
        keys.append(f"{res['resourceType']}/{rid}")
    if full:
        keys.append(full)
        tid = _type_id(full)
        if tid:
            keys.append(tid)
    return keys


def _other_patient(res: dict[str, Any], patient_id: str) -> bool:
    subj = res.get("subject") or res.get("patient")
    ref = subj.get("reference") if isinstance(subj, dict) else None
    tid = _type_id(ref) if isinstance(ref, str) else None
    return bool(tid and tid.startswith("Patient/") and tid != f"Patient/{patient_id}")


def _flatten(bundle: Any, patient_id: str) -> tuple[list[dict[str, Any]], int]:
    """Observations of a Bundle, with DiagnosticReport results and hasMember members pulled out.

    Returns (observations, number ignored because they belong to another patient). Observations without
    a server id get a copy with ``_pgxRef`` (``DiagnosticReport/x#c1`` or the ``urn:uuid`` fullUrl).
    """
    entries = _entries(bundle)
    index: dict[str, tuple[dict[str, Any], str | None]] = {}
    for full, res in entries:
        for k in _keys(full, res):
            index.setdefault(k, (res, full))
    out: list[dict[str, Any]] = []
    seen: set[int] = set()
    foreign = 0
    for full, res in entries:
        rtype = res.get("resourceType")
        if rtype == "Observation":
            foreign += _add(res, full if not isinstance(res.get("id"), str) else None, None, index, patient_id, seen, out)
        elif rtype == "DiagnosticReport":
            if _other_patient(res, patient_id):
                foreign += 1
                continue
            dr_ref = _keys(full, res)[0] if _keys(full, res) else None
            done: set[int] = set()
            for r in _list(res.get("result")):
                target = r.get("reference") if isinstance(r, dict) else None
                found = _resolve(target, res, index, dr_ref)
                if found is not None:
                    done.add(id(found[0]))
                    foreign += _add(found[0], found[1], found[2], index, patient_id, seen, out)
            for c in _list(res.get("contained")):  # tolerate contained results not listed in `result`
                if isinstance(c, dict) and c.get("resourceType") == "Observation" and id(c) not in done:
                    foreign += _add(c, f"{dr_ref}#{c.get('id')}" if dr_ref else None, res, index, patient_id, seen, out)
    return out, foreign


def _add(obs: dict[str, Any], ref: str | None, container: dict[str, Any] | None,
         index: dict[str, tuple[dict[str, Any], str | None]], patient_id: str, seen: set[int],
         out: list[dict[str, Any]]) -> int:
    """Append an Observation and, depth first, the hasMember members it reaches (each once, at most
    `_MAX_MEMBER_DEPTH` deep) to `out`; returns how many belonged to another patient. An explicit stack,
    not a recursive closure: the closure referenced itself, so every request left its parsed bundle to
    the cycle collector (long gen-0 pauses under load)."""
    foreign = 0
    stack = [(obs, ref, container, 0)]
    while stack:
        obs, ref, container, depth = stack.pop()
        if id(obs) in seen or depth > _MAX_MEMBER_DEPTH:
            continue
        seen.add(id(obs))
        if _other_patient(obs, patient_id):
            foreign += 1
            continue
        if ref and not isinstance(obs.get("id"), str) or (container is not None and ref):
            obs = {**obs, REF_KEY: ref}
        out.append(obs)
        scope = container or obs
        scope_ref = ref.split("#", 1)[0] if container is not None and ref else ref
        members = []
        for m in _list(obs.get("hasMember")):
            target = m.get("reference") if isinstance(m, dict) else None
            found = _resolve(target, scope, index, scope_ref)
            if found is not None:
                members.append((found[0], found[1], found[2], depth + 1))
        stack.extend(reversed(members))  # members in their listed order
    return foreign


def _resolve(target: Any, scope: dict[str, Any], index: dict[str, tuple[dict[str, Any], str | None]],
             scope_ref: str | None) -> tuple[dict[str, Any], str | None, dict[str, Any] | None] | None:
    """(resource, reference-if-no-id, container) for a reference, or None."""
    if not isinstance(target, str):
        return None
    if target.startswith("#"):
        cid = target[1:]
        for c in _list(scope.get("contained")):
            if isinstance(c, dict) and c.get("id") == cid and c.get("resourceType") == "Observation":
                return c, (f"{scope_ref}#{cid}" if scope_ref else None), scope
        return None
    hit = index.get(target) or index.get(_type_id(target) or "")
    if hit is None or hit[0].get("resourceType") != "Observation":
        return None
    res, full = hit
    return res, (None if isinstance(res.get("id"), str) else full or target), None


def _of_type(bundle: Any, rtype: str, patient_id: str) -> list[dict[str, Any]]:
    return [r for _, r in _entries(bundle) if r.get("resourceType") == rtype and not _other_patient(r, patient_id)]


def _take_vitals(data: PatientData, observations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Set weight/height from vital-sign Observations (newest wins) and return the other Observations."""
    rest: list[dict[str, Any]] = []
    best: dict[str, tuple[datetime, float]] = {}
    for obs in observations:
        code = obs.get("code")
        codes = {c.get("code") for c in _list(code.get("coding") if isinstance(code, dict) else None)
                 if isinstance(c, dict) and isinstance(c.get("code"), str)}  # untrusted: any JSON type
        kind = "w" if codes & _WEIGHT_CODES else "h" if codes & _HEIGHT_CODES else None
        if kind is None:
            rest.append(obs)
            continue
        if obs.get("status") in ("entered-in-error", "cancelled"):
            continue
        value = _quantity(obs.get("valueQuantity"), kind)
        if value is None:
            continue
        when = _when(obs)
        if kind not in best or when > best[kind][0]:
            best[kind] = (when, value)
    if "w" in best:
        data.weight_kg = round(best["w"][1], 2)
    if "h" in best:
        data.height_cm = round(best["h"][1], 1)
    return rest


_UNITS = {
    "w": {"kg": 1.0, "g": 0.001, "[lb_av]": 0.45359237, "lb": 0.45359237, "lbs": 0.45359237},
    "h": {"cm": 1.0, "m": 100.0, "mm": 0.1, "[in_i]": 2.54, "in": 2.54},
}


def _quantity(q: Any, kind: str) -> float | None:
    if not isinstance(q, dict) or isinstance(q.get("value"), bool) or not isinstance(q.get("value"), (int, float)):
        return None
    unit = q.get("code") or q.get("unit")
    factor = _UNITS[kind].get(unit if isinstance(unit, str) else "")
    return float(q["value"]) * factor if factor else None


_EPOCH = datetime(1, 1, 1, tzinfo=timezone.utc)


def observation_time(obs: dict[str, Any]) -> datetime | None:
    """When a result applies: effective[x] (dateTime, instant, period start), else when it was issued."""
    for key in ("effectiveDateTime", "effectiveInstant"):
        v = obs.get(key)
        if isinstance(v, str) and (d := parse_fhir_datetime(v)):
            return d
    period = obs.get("effectivePeriod")
    if isinstance(period, dict) and isinstance(period.get("start"), str) and (d := parse_fhir_datetime(period["start"])):
        return d
    v = obs.get("issued")
    return parse_fhir_datetime(v) if isinstance(v, str) else None


def _when(obs: dict[str, Any]) -> datetime:
    return observation_time(obs) or _EPOCH


def parse_fhir_datetime(value: str) -> datetime | None:
    """FHIR date/dateTime/instant (partial dates allowed) as an aware datetime (UTC when no offset)."""
    try:
        if len(value) == 4:
            return datetime(int(value), 1, 1, tzinfo=timezone.utc)
        if len(value) == 7:
            return datetime(int(value[:4]), int(value[5:7]), 1, tzinfo=timezone.utc)
        d = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return d if d.tzinfo else d.replace(tzinfo=timezone.utc)
    except (ValueError, TypeError):
        return None


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []
