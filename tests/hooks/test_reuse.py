"""Issue 14: reuse of earlier work and phenotyping only the genes the ordered drugs read change no answer.

The same requests (distinct synthetic patients, each a CPIC drug among their orders, with active
medications that phenoconvert, unreadable and conflicting results; order-select then order-sign, as an
EHR sends them) are answered by three services: reuse on (the default), reuse off
(`PGX_CDS_REUSE__ENABLED=false`), and reuse off with every gene phenotyped. Every response is the same,
byte for byte.
"""

from __future__ import annotations

import copy
from pathlib import Path

import orjson

from bench.population import generate
from service.config import Settings
from service.evaluate import needed_genes
from service.hooks.discovery import SERVICES
from service.hooks.pipeline import Deps, run_hook
from service.hooks.schemas import HookRequest
from service.main import create_app
from service.pgx.knowledge import load_knowledge
from tests.hooks import requests as rq

K = load_knowledge(Path(__file__).resolve().parents[2] / "cards")
FHIR = "https://fhir.reuse.example/r4"


def _bodies() -> list[tuple[str, dict]]:
    out = generate(K, 120, block=40, fhir_server=FHIR, cpic_share=1.0, seed=7)
    # a perpetrator ordered beside a drug whose gene it converts, and alone (reverse direction)
    both = rq.order_sign(orders=[rq.med_request("d-par", "32937", "paroxetine", dose=20),
                                 rq.med_request("d-ami", "704", "amitriptyline", dose=25)])
    # bupropion (no guideline of its own) ordered for a CYP2D6 normal metabolizer taking amitriptyline: the
    # reverse card reads CYP2C19 as well, a gene bupropion converts nothing of
    taking = rq.order_select(orders=[rq.med_request("d-bup", "42347", "bupropion", dose=150)],
                             obs=[rq.genotype("o-2d6", "CYP2D6", "HGNC:2625", "*1/*1"),
                                  rq.genotype("o-2c19", "CYP2C19", "HGNC:2621", "*2/*2")])
    taking["prefetch"]["medications"] = rq.bundle({**rq.med_request("m-ami", "704", "amitriptyline", dose=25),
                                                  "status": "active"})
    out += [("order-sign", both), ("order-select", taking), ("patient-view", rq.patient_view()),
            ("patient-view", rq.patient_view())]
    return out


async def _answers(bodies: list[tuple[str, dict]], *, reuse: bool, all_genes: bool = False) -> list[bytes]:
    app = create_app(Settings(log_level="warning", reuse={"enabled": reuse}))
    deps: Deps = app.state.deps
    if all_genes:
        real = deps.reads
        deps.reads = lambda names: (real(names)[0], None)  # type: ignore[method-assign]
    out = []
    for hook, body in bodies:
        outcome = await run_hook(SERVICES["pgx-" + hook], HookRequest.model_validate(copy.deepcopy(body)), deps, None)
        out.append(outcome.body)
    await app.state.fhir.aclose()
    return out


async def test_reuse_on_off_and_all_genes_give_the_same_responses():
    bodies = _bodies()
    on = await _answers(bodies, reuse=True)
    off = await _answers(bodies, reuse=False)
    every_gene = await _answers(bodies, reuse=False, all_genes=True)
    assert on == off == every_gene
    with_cards = sum(1 for b in on if orjson.loads(b)["cards"])
    assert with_cards >= 20  # the set exercises cards, not only empty answers


async def test_reuse_off_keeps_nothing():
    app = create_app(Settings(log_level="warning", reuse={"enabled": False}))
    for hook, body in generate(K, 10, block=10, fhir_server=FHIR, cpic_share=1.0, seed=3):
        await run_hook(SERVICES["pgx-" + hook], HookRequest.model_validate(body), app.state.deps, None)
    assert len(app.state.deps.reuse) == 0
    await app.state.fhir.aclose()


async def test_order_sign_reuses_the_order_select_cards_for_the_same_patient_content(monkeypatch):
    """Keyed on content, not on the hook: order-sign evaluates nothing order-select evaluated."""
    import service.hooks.pipeline as pipeline

    calls = []
    real = pipeline.run_clinical

    def counting(*a, **kw):
        calls.append(1)
        return real(*a, **kw)

    monkeypatch.setattr(pipeline, "run_clinical", counting)
    app = create_app(Settings(log_level="warning", dedupe_order_sign=False))
    select = await run_hook(SERVICES["pgx-order-select"], HookRequest.model_validate(rq.order_select()),
                            app.state.deps, None)
    sign = await run_hook(SERVICES["pgx-order-sign"], HookRequest.model_validate(rq.order_sign()),
                          app.state.deps, None)
    assert len(calls) == 1
    assert [c.summary for c in select.response.cards] == [c.summary for c in sign.response.cards] != []
    await app.state.fhir.aclose()


def test_the_genes_phenotyped_for_an_order():
    assert needed_genes(K, ["clopidogrel"]) == {"CYP2C19"}
    assert {"CYP2D6", "CYP2C19"} <= needed_genes(K, ["amitriptyline"])
    # a perpetrator (reverse direction): the genes it converts and those read with them
    paroxetine = needed_genes(K, ["paroxetine"])
    assert "CYP2D6" in paroxetine and all(
        set(g.genes) <= paroxetine for g in K.by_gene["CYP2D6"])


async def test_an_unreadable_result_for_a_gene_the_drug_needs_still_gives_its_card():
    """Only CYP2C19 is phenotyped for clopidogrel; its unreadable result still gives the card, beside a
    readable result for a gene clopidogrel does not read."""
    unreadable = rq.genotype("obs-2c19-bad", "CYP2C19", "HGNC:2621", "see scanned report")
    readable = rq.genotype("obs-2d6", "CYP2D6", "HGNC:2625", "*1/*4")
    app = create_app(Settings(log_level="warning"))
    out = await run_hook(SERVICES["pgx-order-select"], HookRequest.model_validate(
        rq.order_select(obs=[unreadable, readable])), app.state.deps, None)
    cards = out.response.cards
    assert len(cards) == 1 and cards[0].extension["pgx-cds"]["unreadable"][0]["gene"] == "CYP2C19"
    await app.state.fhir.aclose()


async def test_a_repeated_order_select_records_its_cards_for_order_sign_once():
    """The de-duplication record of a card order-select showed is written once for the same content, not
    on every repeat (reuse off: every time); order-sign still drops the card."""
    for enabled, expected in ((True, 1), (False, 3)):
        app = create_app(Settings(log_level="warning", reuse={"enabled": enabled}))
        deps = app.state.deps
        written: list[str] = []
        real = deps.shown.add  # the queue of de-duplication writes (sent to the store in batches)

        def counting(key, value, real=real, written=written):
            written.append(key)
            return real(key, value)

        deps.shown.add = counting
        for _ in range(3):
            out = await run_hook(SERVICES["pgx-order-select"], HookRequest.model_validate(rq.order_select()), deps, None)
            assert len(out.response.cards) == 1
        assert len(written) == expected
        sign = await run_hook(SERVICES["pgx-order-sign"], HookRequest.model_validate(rq.order_sign()), deps, None)
        assert sign.response.cards == []
        await app.state.fhir.aclose()


async def test_a_reused_snapshot_holds_its_prefetch_as_flat_bytes_not_the_parsed_request():
    """The snapshot reuse compares the prefetch it was derived from; it keeps it as one bytes object (the
    parsed prefetch, ~1,500 objects per patient, kept the cyclic GC busy). A corrected result between
    order-select and order-sign is still a different content: evaluated afresh."""
    app = create_app(Settings(log_level="warning", dedupe_order_sign=False))
    deps = app.state.deps
    select = HookRequest.model_validate(rq.order_select())
    await run_hook(SERVICES["pgx-order-select"], select, deps, None)
    kept = [(key, content) for key, (content, _value) in deps.reuse._data.items() if key[0] == "snapshot"]
    assert len(kept) == 1 and type(kept[0][1]) is bytes
    assert orjson.loads(kept[0][1])[2] == select.prefetch
    corrected = HookRequest.model_validate(rq.order_sign(obs=[rq.CYP2C19_NM]))
    sign = await run_hook(SERVICES["pgx-order-sign"], corrected, deps, None)
    assert sign.response.cards == []  # the normal metabolizer result of the order-sign's prefetch was read
    await app.state.fhir.aclose()
