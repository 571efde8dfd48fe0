"""Teacher-training methods, one module each, all on the engine's contract.

A method is an ``nn.Module`` whose ``forward(x, y)`` returns ``{"loss": ..., "logits": ...,
<named terms>}`` (see :mod:`gtn_nas.engine`) and whose ``teacher`` attribute is the plain
teacher saved at the end (branches dropped).
"""
