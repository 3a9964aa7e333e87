"""Backend quirks, one place, each with the reason (facts measured with the pinned versions).

The export forms (``athe.convert.export_form``) and the converters follow these; the tests
check the delegation counts they imply. Each quirk names where it is handled.

XNNPACK (executorch 1.5.1), handled by the rewrite forms (``LevelExport``, ``StageExport``):

* a graph whose CLS scores are sliced from the same softmax that feeds ``attn @ v`` is
  rejected ("Output node ... is already in the inputs"): the CLS row ``softmax(q_cls Kᵀ)`` is
  recomputed on its own;
* there is no layer_norm, and ``mean`` only reduces 4-D spatial dims, so ``mean(dim=-1)``
  stays on portable kernels and splits the graph (26 pieces for athe-mini): LayerNorm (and the
  exit head's token mean) is written with means as ``x @ full((D, 1), 1/D)``, delegated as a
  matmul (``MeanVarLayerNorm``);
* ``sum(dim)`` is not delegated either: fused-token weighted sums are ``bmm`` / ``linear``;
* ``x[:, 0]`` lowers to ``select_copy`` (portable); ``x[:, 0:1].reshape`` stays delegated;
* stock timm attention (4-D matmul, ``unbind``) falls out: 3-D ``bmm`` per head;
* the ops left outside the delegate are exactly ``ALLOWED_NON_DELEGATED`` (below; read by
  ``athe.convert.executorch.delegation_report``).

ExecuTorch runtime (executorch 1.5.1 wheel), handled in ``athe.runtime.backends``: a ``.pte``
with XNNPACK blocks around portable topk/gather segfaults in ``execute()`` when loaded from a
file path; loading from bytes works, so the backend reads ``.pte`` files into memory first.

litert-torch 0.10.0: ``topk`` + ``gather`` with a fixed k convert to TOPK_V2 + GATHER_ND
(parity with eager ~1e-5); k must be a Python int at export time (static shapes), which every
export form guarantees (k comes from the variant, never from a tensor).
"""

#: Ops allowed outside the XNNPACK delegate in an fp32 ``.pte``: token selection (top-k,
#: gather) and its index plumbing. Anything else on portable kernels makes latency figures
#: meaningless, so conversion records it and fails on it.
ALLOWED_NON_DELEGATED = frozenset({
    "aten.topk.default",
    "aten.gather.default",
    "aten.expand_copy.default",
    "aten.unsqueeze_copy.default",
    "aten.view_copy.default",
    "aten.slice_copy.Tensor",
    "aten.cat.default",
    "aten.squeeze_copy.dims",
    "dim_order_ops._to_dim_order_copy.default",
    "aten._to_copy.default",
})
