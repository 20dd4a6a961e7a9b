"""One error family for everything Loom reports to a user."""

from __future__ import annotations


class LoomError(Exception):
    """Base class: the message names what is wrong and, where it can, what to do."""


class TemplateError(LoomError):
    """One or more problems in template files, each ``file: field: problem``."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class RequestError(LoomError):
    """A bad request (trigger conf, CLI arguments): names the field and the fix."""


class LayoutError(LoomError):
    """No layout satisfies the template's constraints for this request."""


class ClusterError(LoomError):
    """A cluster cannot do what was asked in its current state."""


class ProviderError(LoomError):
    """A provider could not create, find or destroy a machine."""


class ActionError(LoomError):
    """A service action failed on a node."""
