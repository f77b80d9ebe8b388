"""The fake-driver fixture of the launch-path review tests."""

from .fake import rt  # noqa: F401 - the fixture
