"""Stage 2, the teacher: the zoo and how a teacher is trained.

Holds the teacher zoo (``net``: the 4-block contract; ``resnets``, ``efficientnet``: the
families; ``zoo``: build, save, load), the teacher-training run (``train``), the methods
(``methods``: standard, SFTN, GTN, their grafted branches and the GTN path sampler), their
losses (``losses``: SFTN's and GTN's, and the KL primitives everything shares) and per-path
BatchNorm recalibration (``recalibration``).

May import: ``gtn_nas.space``, the common floor and this package.
"""
