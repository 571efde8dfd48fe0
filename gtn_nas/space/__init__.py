"""Stage 1, the search space: what a student can be.

Holds the NNI ``ModelSpace`` base and its units (``supernet``, ``units``, ``layers``,
``elastic``), the cost model (``costs``: params, fvcore FLOPs, per-layer tables), student files
(``students``), space plugins (``plugins``) and the ONNX export with its PyTorch parity check
(``export``: used by both ``hardware`` and ``distill``, so it sits below them).

May import: the common floor (``gtn_nas.config``, ``errors``, ``fileio``, ``registry``,
``engine``, ``data``, ``report``) and this package.
"""
