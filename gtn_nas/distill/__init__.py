"""Stage 5, distillation: training the chosen students from the teacher.

Holds the distillers (``distillers``: KD, DKD, FitNets, AT, label smoothing, none, GPD), their
losses (``losses``), GPD's dynamic teacher (``gpd``), the distill jobs and their stage
(``jobs``; ``specs``: which students; ``summary``: the tables), training with few labels
(``partial_labels``) and what to deploy (``deploy``: the teacher guard and the per-tier
choice).

May import: ``gtn_nas.teacher``, ``gtn_nas.space``, the common floor and this package; never
``gtn_nas.hardware`` (a stage of the same level).
"""
