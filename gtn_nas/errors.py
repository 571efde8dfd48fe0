"""User-facing error kinds.

Library code raises these; only :mod:`gtn_nas.cli` turns them into one printed line and an exit
code: 2 for bad input or an infeasible request, 75 (``EX_TEMPFAIL``) for a
:class:`ResourceError`, where the request was right and the machine's state stopped it (a full
disk, a folder another process is writing): the same command succeeds later. Each message
names what was wrong, where, and what is allowed, so that it reads well on its own.

Example:
    >>> raise SampleError("layer3/op: 'conv' is not allowed (allowed: zero, identity, resblock)")
    Traceback (most recent call last):
    ...
    gtn_nas.errors.SampleError: layer3/op: 'conv' is not allowed (allowed: zero, identity, resblock)
"""

from __future__ import annotations


class GtnNasError(Exception):
    """Base class of every error caused by user input or an infeasible request."""


class ConfigError(GtnNasError):
    """A configuration file, option or name is malformed or unknown."""


class SampleError(GtnNasError):
    """A sample (architecture choice) does not belong to its search space."""


class PluginError(GtnNasError):
    """A search-space plugin failed to import or did not produce a search space."""


class DataError(GtnNasError):
    """A dataset is missing, unreadable or incompatible with the request."""


class InfeasibleBudgetError(GtnNasError):
    """No student of the space can satisfy the requested budget."""


class ResourceError(GtnNasError):
    """The request was right; the machine's state stopped it (a full disk, a folder another
    process writes). Nothing was lost: run the same command again once it has changed."""


EXIT_BAD_INPUT = 2
EXIT_TRY_AGAIN = 75
"""``EX_TEMPFAIL`` of sysexits.h: a temporary failure, the same command will work later."""


def exit_code(exc: GtnNasError) -> int:
    """The command's exit code for ``exc``.

    Example:
        >>> exit_code(ConfigError("x")), exit_code(ResourceError("disk full"))
        (2, 75)
    """
    return EXIT_TRY_AGAIN if isinstance(exc, ResourceError) else EXIT_BAD_INPUT
