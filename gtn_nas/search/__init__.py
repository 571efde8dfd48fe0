"""Stage 4, the search: picking the s/m/l students of each device.

Holds the NNI strategies and budgets (``strategy``), re-measuring the picks' latency
(``remeasure``), the search's report (``report``), the scores that rank students before
training (``scoring``: the GTN branch score and friends; ``proxies``: zero-cost proxies).

May import: ``gtn_nas.hardware``, ``gtn_nas.distill``, ``gtn_nas.teacher``,
``gtn_nas.space``, the common floor and this package.
"""
