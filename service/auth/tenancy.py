"""Whose patient is this: the scope every cache, memo and de-duplication key holding patient data is keyed on.

A patient id means nothing without the EHR it belongs to, and a caller's word about a patient (its
prefetch) is trusted only for that caller. So a patient key names:

- the caller: the authenticated issuer and the token's `tenant` (`dev` in dev mode, where no issuers are
  configured and every caller is one trusted party on loopback);
- the FHIR server as validated for that caller (configured for the issuer, https), or, when the request's
  `fhirServer` was not validated (none given, refused), a separate "unverified" space of that caller.

Data of a request whose FHIR server was not validated is never cached for later requests (it is answered
from its own prefetch only), and nothing one caller sends is ever read for another: issuer A cannot plant
a snapshot or an order-select de-duplication record that issuer B's requests would read, whatever
`fhirServer` and patient id A names.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from urllib.parse import urlsplit

import structlog

from service.auth.jwt import Principal
from service.observability.logging import patient_hash

log = structlog.get_logger("pgx_cds.hooks")


@dataclass(frozen=True)
class PatientScope:
    patient: str  # salted hash of (FHIR server, patient id): the patient as logs and `pgx-cds cache clear` name it
    key: str  # `<patient>.<caller>`: the cache and de-duplication key (whose word about which patient)
    shareable: bool  # the FHIR server was validated for the caller: its snapshot may be cached for later requests


def caller_id(principal: Principal | None) -> str:
    """The authenticated party a request speaks for (`dev` when unauthenticated in dev mode)."""
    if principal is None:
        return "dev"
    tenant = principal.tenant if isinstance(principal.tenant, str) else repr(principal.tenant)
    return f"iss={principal.iss.rstrip('/')}\x00tenant={tenant}"


def card_owner(principal: Principal | None) -> str | None:
    """Who a card was shown to, as its card uuid -> rule record names it: None in dev mode (one trusted
    party), else a short hash of the caller (issuer and tenant). Feedback is attributed to a rule only
    through a record of the caller that sends it, so one tenant cannot attribute feedback to another
    tenant's card."""
    if principal is None:
        return None
    return hashlib.sha256(caller_id(principal).encode()).hexdigest()[:16]


def patient_scope(
    salt: str, principal: Principal | None, validated_server: str | None, sent_server: str | None, patient_id: str
) -> PatientScope:
    patient = patient_hash(salt, validated_server or sent_server, patient_id)
    trust = "validated" if validated_server is not None else "unverified"
    caller = hashlib.sha256(f"{salt}\x00{caller_id(principal)}\x00{trust}".encode()).hexdigest()[:16]
    return PatientScope(patient=patient, key=f"{patient}.{caller}", shareable=validated_server is not None)


def _host(url: str | None) -> str | None:
    try:
        return urlsplit(url).hostname if isinstance(url, str) else None
    except ValueError:
        return None


class RefusedServerLog:
    """Log noise control for a `fhirServer` we may not contact (e.g. every CDS Hooks sandbox call names a
    public FHIR server no issuer is configured for): logged once per caller and server at info (bounded
    memory); a warning only when data was actually needed from it (the request could not be answered)."""

    def __init__(self, size: int = 1024) -> None:
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self._size = size

    def refused(self, principal: Principal | None, server: str | None, reason: str) -> None:
        key = hashlib.sha1(f"{caller_id(principal)}\x00{server}".encode()).digest()
        if key in self._seen:
            self._seen.move_to_end(key)
            return
        self._seen[key] = None
        if len(self._seen) > self._size:
            self._seen.popitem(last=False)
        log.info("fhir_server_refused", reason=reason, fhir_host=_host(server),
                 iss=principal.iss if principal is not None else None)

    @staticmethod
    def needed(reason: str) -> None:
        log.warning("fhir_server_refused_data_needed", reason=reason)
