"""Medication orders out of a CDS Hooks ``draftOrders`` Bundle (tolerant of messy input)."""

from __future__ import annotations

from functools import cached_property
from typing import Any

from service.pgx.context import NO_DOSAGE, Dosage, DraftOrder, MedicationCode


class ParsedOrder(DraftOrder):
    """A draft order read from ``draftOrders``: its dosage is read from the resource when first asked for."""

    @cached_property
    def dosage(self) -> Dosage:  # type: ignore[override]
        return dosage(self.resource)


def extract_orders(draft_orders: dict | None, selections: list[str] | None) -> list[DraftOrder]:
    """MedicationRequests of ``draftOrders`` as :class:`DraftOrder` objects.

    Accepts a Bundle (any or no ``type``), a bare MedicationRequest or a list of resources/entries;
    ignores other resource types and malformed entries. When ``selections`` is a non-empty list
    (order-select), only the selected orders (``MedicationRequest/id``, or a matching ``fullUrl``) are kept.
    A ``medicationReference`` to a contained Medication (``#id``) is resolved here; other references are
    left to :func:`service.fhir.patient_data.resolve_medications`.
    """
    return select_orders(draft_orders, selections)[0]


def select_orders(draft_orders: dict | None, selections: list[str] | None) -> tuple[list[DraftOrder], list[DraftOrder]]:
    """(the orders :func:`extract_orders` gives, every draft order), from one parse: the other draft
    orders of an order-select are its co-orders (phenoconversion, co-medication safety)."""
    wanted = {s.strip() for s in selections if isinstance(s, str)} if selections else None
    orders = [(full_url, _order(res)) for full_url, res in _resources(draft_orders)
              if res.get("resourceType") == "MedicationRequest"]
    seen: dict[str, int] = {}
    for _, order in orders:
        if order.reference:
            seen[order.reference] = seen.get(order.reference, 0) + 1
    out: list[DraftOrder] = []
    every: list[DraftOrder] = []
    for full_url, order in orders:
        if order.reference and seen[order.reference] > 1:
            order.shared_id = True
        every.append(order)
        if wanted is None or _selected(order, full_url, wanted):
            out.append(order)
    return out, every


def _resources(container: Any) -> list[tuple[str | None, dict[str, Any]]]:
    if isinstance(container, dict):
        if container.get("resourceType") == "Bundle" or "entry" in container:
            items = container.get("entry")
        else:
            items = [container]
    elif isinstance(container, list):
        items = container
    else:
        return []
    out: list[tuple[str | None, dict[str, Any]]] = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict):
            continue
        res = item.get("resource") if "resource" in item else item
        if isinstance(res, dict) and isinstance(res.get("resourceType"), str):
            full = item.get("fullUrl") if isinstance(item.get("fullUrl"), str) else None
            out.append((full, res))
    return out


def _selected(order: DraftOrder, full_url: str | None, wanted: set[str]) -> bool:
    if order.reference and order.reference in wanted:
        return True
    if full_url and full_url in wanted:
        return True
    return bool(order.reference) and any(w.endswith("/" + order.reference) for w in wanted)


def _order(res: dict[str, Any]) -> DraftOrder:
    rid = res.get("id") if isinstance(res.get("id"), str) else None
    codes, text = medication_codes(res)
    dose, unit = _dose(res)
    # model_construct: every value below is already checked and typed by this module's readers
    return ParsedOrder.model_construct(
        resource_type="MedicationRequest",
        id=rid,
        reference=f"MedicationRequest/{rid}" if rid else None,
        status=res.get("status") if isinstance(res.get("status"), str) else None,
        codes=codes,
        text=text,
        encounter=_ref(res.get("encounter")),
        requester=_ref(res.get("requester")),
        reason_codes=[c for cc in _list(res.get("reasonCode")) for c in _codings(cc)],
        dose_quantity=dose,
        dose_unit=unit,
        resource=res,
    )


def medication_codes(res: dict[str, Any]) -> tuple[list[MedicationCode], str | None]:
    """Codes and a display text of a MedicationRequest's drug (codeable concept or contained reference)."""
    mcc = res.get("medicationCodeableConcept")
    if isinstance(mcc, dict):
        codes = _codings(mcc)
        return codes, _text(mcc, codes)
    ref = res.get("medicationReference")
    if isinstance(ref, dict):
        target = ref.get("reference")
        if isinstance(target, str) and target.startswith("#"):
            med = _contained(res, target[1:])
            if med is not None:
                codes, text = codes_of_medication(med)
                return codes, text or _str(ref.get("display"))
        return [], _str(ref.get("display"))
    return [], None


def codes_of_medication(med: dict[str, Any]) -> tuple[list[MedicationCode], str | None]:
    """Codes and text of a Medication resource: ``Medication.code`` (often a product-level code), then the
    codes of ``Medication.ingredient[].itemCodeableConcept`` (ingredient codes recognise the drug even when
    the product code is not one we know)."""
    code = med.get("code")
    codes = _codings(code) if isinstance(code, dict) else []
    text = _text(code, codes) if isinstance(code, dict) else None
    for ing in _list(med.get("ingredient")):
        if isinstance(ing, dict):
            codes += _codings(ing.get("itemCodeableConcept"))
    return codes, text


def _contained(res: dict[str, Any], cid: str) -> dict[str, Any] | None:
    for c in _list(res.get("contained")):
        if isinstance(c, dict) and c.get("id") == cid and c.get("resourceType") == "Medication":
            return c
    return None


def _codings(cc: Any) -> list[MedicationCode]:
    if not isinstance(cc, dict):
        return []
    out = []
    for c in _list(cc.get("coding")):
        if isinstance(c, dict) and (c.get("code") or c.get("display")):
            out.append(MedicationCode.model_construct(system=_str(c.get("system")), code=_str(c.get("code")),
                                                      display=_str(c.get("display"))))
    return out


def _text(cc: dict[str, Any], codes: list[MedicationCode]) -> str | None:
    text = _str(cc.get("text"))
    if text:
        return text
    return next((c.display for c in codes if c.display), None)


def _dose(res: dict[str, Any]) -> tuple[float | None, str | None]:
    try:
        dq = res["dosageInstruction"][0]["doseAndRate"][0]["doseQuantity"]
        value = dq.get("value")
        if isinstance(value, bool) or value is None:
            return None, None
        unit = _str(dq.get("unit")) or _str(dq.get("code"))
        return float(value), unit
    except (KeyError, IndexError, TypeError, ValueError, AttributeError):
        return None, None


_PERIOD_DAYS = {"s": 1 / 86400, "min": 1 / 1440, "h": 1 / 24, "d": 1.0, "wk": 7.0, "mo": 30.0}


def dosage(res: dict[str, Any]) -> Dosage:
    """What the dose checks read of ``dosageInstruction``: dosing phases, a single-dose count, the dosing
    texts (of the first instruction) and administrations per day."""
    dis = res.get("dosageInstruction") if isinstance(res, dict) else None
    if not isinstance(dis, list) or not dis:
        return NO_DOSAGE
    phases = len(dis) > 1 and len({(d.get("sequence") if isinstance(d, dict) else None) for d in dis}) > 1
    first = dis[0] if isinstance(dis[0], dict) else {}
    timing = first.get("timing") if isinstance(first.get("timing"), dict) else {}
    rep = timing.get("repeat") if isinstance(timing.get("repeat"), dict) else {}
    single = rep.get("count") == 1 and not isinstance(rep.get("count"), bool)
    texts: list[str] = []
    for key in ("text", "patientInstruction"):
        if isinstance(first.get(key), str):
            texts.append(first[key])
    for ai in _list(first.get("additionalInstruction")):
        if isinstance(ai, dict) and isinstance(ai.get("text"), str):
            texts.append(ai["text"])
    code = timing.get("code")
    if isinstance(code, dict):
        if isinstance(code.get("text"), str):
            texts.append(code["text"])
        for c in _list(code.get("coding")):
            if isinstance(c, dict):
                texts += [v for v in (c.get("code"), c.get("display")) if isinstance(v, str)]
    return Dosage(phases=phases, single=single, texts=tuple(texts), per_day=_per_day(rep) if isinstance(timing.get("repeat"), dict) else None)


def _per_day(rep: dict[str, Any]) -> float | None:
    """Administrations per day of a timing.repeat (None when it cannot be read)."""
    try:
        freq = rep.get("frequency", 1)
        period = rep.get("period", 1)
        unit = rep.get("periodUnit", "d")
        if isinstance(freq, bool) or isinstance(period, bool) or unit not in _PERIOD_DAYS or not period or not freq:
            return None
        return float(freq) / (float(period) * _PERIOD_DAYS[unit])
    except (TypeError, ValueError):
        return None


def _ref(value: Any) -> str | None:
    return _str(value.get("reference")) if isinstance(value, dict) else None


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
