"""GPD, the dynamic teacher (Gap Preserving Distillation; docs/methods.md section 6).

``method``: the distiller; ``layers``, ``cbr``, ``widen``: the widened, function-preserving
teacher layers it grows from the student.
"""
