"""Backend quirks, one place, each with the reason (facts measured with the pinned versions).

Export forms (``athe.training.export_form``) and the converters follow these; tests check
the delegation counts they imply.
"""

#: XNNPACK (executorch 1.5.1) rejects a graph whose CLS scores are sliced from the same
#: softmax that feeds attn@v ("Output node ... is already in the inputs"): the export form
#: recomputes the CLS row, softmax(q_cls K^T), separately.
RECOMPUTE_CLS_ROW = True

#: XNNPACK has no layer_norm, and its ``mean`` only reduces 4-D spatial dims, so
#: ``mean(dim=-1)`` stays on portable kernels and splits the graph (26 pieces for athe-mini):
#: LayerNorm means are written as ``x @ full((D, 1), 1/D)``, delegated as matmuls.
MEAN_AS_MATMUL = True

#: ``sum(dim)`` is not delegated either: fused-token weighted sums are ``bmm``s.
SUM_AS_BMM = True

#: ``x[:, 0]`` lowers to ``select_copy`` (portable); ``x[:, 0:1].reshape`` stays delegated.
SLICE_NOT_SELECT = True

#: Stock timm attention (4-D matmul, ``unbind``) falls out of XNNPACK: 3-D ``bmm`` per head.
BMM_PER_HEAD = True

#: Ops allowed outside the XNNPACK delegate in an fp32 ``.pte``: token selection (top-k,
#: gather) and its index plumbing. Anything else on portable kernels makes latency figures
#: meaningless, so conversion records it and the tests fail on it.
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

#: executorch 1.5.1's Python runtime segfaults in ``execute()`` when a ``.pte`` with XNNPACK
#: blocks around portable topk/gather is loaded from a file path; loading from bytes works.
#: ``athe.runtime.backends`` therefore reads ``.pte`` files into memory first.
PTE_LOAD_FROM_BYTES = True

#: litert-torch converts ``topk`` + ``gather`` with a fixed k to TOPK_V2 + GATHER_ND
#: (parity with eager ~1e-5); k must be a Python int at export time (static shapes).
STATIC_TOPK = True
