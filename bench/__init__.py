"""Benchmarks (`make bench`, `pgx-cds bench` from a checkout): not part of the service package.

run.py       hot-path scenarios and the soak, ratios to a bare endpoint in the same run
mix.py       the headline: distinct-patient mix vs the bare endpoint (and a peer framework), 3 rounds
population.py  the synthetic patients the mix sends (from cards/genes)
baseline.py  the bare FastAPI endpoint; peer_healthchain.py the peer; cold.py the FHIR cold-path timings
"""
