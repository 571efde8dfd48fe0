"""GPD, the dynamic teacher (Guided Distillation with Dynamic teacher, METHODS.md section 6).

``method``: the distiller; ``layers``, ``cbr``, ``widen``: the widened, function-preserving
teacher layers it grows from the student.
"""
