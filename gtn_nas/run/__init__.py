"""Stage 6, the whole job: ``gtn-nas run`` (teacher -> search -> distill -> deploy -> report).

Holds the run's configuration (``config``), its stages and resumable state (``pipeline``) and
the report a person reads (``report``).

May import: every stage below it and the common floor.
"""
