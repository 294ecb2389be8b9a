"""Prefill/decode disaggregation: protocol models, deciders, and the prefill-then-decode orchestration.

Modules (imported directly; this package imports nothing so the scheduler can use the deciders without cycles)::

    protocol       PREFILL_REQUEST_PARAMS, REMOTE_PREFILL_KEYS, prefill_body(body), decode_body(body, params),
                   strip_client_params(body), parse_prefill_answer(raw, handle_required) -> PrefillAnswer,
                   PrefillAnswerError
    deciders       Decider Protocol (precheck / decide), PDVerdict, DECIDERS {always, never, uncached-tokens,
                   predicted-ttft}, build_decider(name, params, ctx), PrefillQueue
    orchestrator   PDOrchestrator(lean client, metrics, handoff="params"|"storage"): client_body(rid, body),
                   prefill_hop(...) -> PrefillAnswer | None
    metrics        DisaggMetrics.on(registry): llmd_router_pd_* series on the router's registry

The profile handler ``pd-profile-handler`` lives in ``llmd_kserve.scheduling.pd_handler``; the P/D flow in virtual
time is ``llmd_kserve.cluster_sim`` with engine roles (``ClusterSim(config, SimOptions(roles=pd_roles(2, 2)))``).
"""
