"""The one exception family of bundler; only cli.main turns it into a message and exit code.

Exit codes (documented in the README):
  1  the operation failed on its content: a registry refused or lacks an image, a digest
     did not match, a bundle did not verify
  2  usage or unreadable input: bad arguments, a malformed images.txt, registries.yaml or bundle
  3  the environment failed: a registry unreachable, a disk full, a permission denied
  130 interrupted (Ctrl-C)
  129, 143 ended by SIGHUP, SIGTERM (128+N), cleaned up as for 130
"""

from __future__ import annotations

import errno
import os

EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_ENVIRONMENT = 3
EXIT_INTERRUPTED = 130


class BundlerError(Exception):
    """Base of every error bundler reports; its str() is the one line the user sees."""

    exit_code = EXIT_FAILED


class InputError(BundlerError):
    """A file or argument the user gave is malformed; the message names it (file:line)."""

    exit_code = EXIT_USAGE


class RegistryError(BundlerError):
    """A registry answered, and the answer was no (404, 401, 403, an error code)."""

    def __init__(self, message: str, status: int | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code


class NetworkError(BundlerError):
    """A registry could not be reached or the connection broke."""

    exit_code = EXIT_ENVIRONMENT


class DigestMismatch(BundlerError):
    """Bytes did not hash to the digest that names them."""


class PlatformError(BundlerError):
    """The image has no manifest for the requested platform."""


class EnvironmentFailure(BundlerError):
    """The local machine failed us: disk full, permission denied, a helper missing."""

    exit_code = EXIT_ENVIRONMENT

    @classmethod
    def from_os_error(cls, e: OSError, where: str | None = None) -> EnvironmentFailure:
        """One line for a local I/O failure, naming the file or directory concerned."""
        where = e.filename or where
        reason = e.strerror or str(e)
        if e.errno == errno.ENOSPC:
            reason = "no space left on device"
        elif e.errno in (errno.EEXIST, errno.ENOTDIR) and e.filename:
            # mkdir over a file says "File exists", or "Not a directory" naming the child:
            # name the file that stands where a directory should be.
            blocker = non_directory(str(e.filename))
            if blocker:
                where, reason = blocker, "not a directory"
        return cls(f"{where}: {reason}" if where else reason)


def non_directory(path: str) -> str | None:
    """`path` or its nearest ancestor that exists and is not a directory."""
    while path and path != os.path.dirname(path):
        if os.path.lexists(path):
            return None if os.path.isdir(path) else path
        path = os.path.dirname(path)
    return None


class VerificationFailed(BundlerError):
    """A bundle did not verify; `report` holds every problem found."""

    def __init__(self, message: str, report: object | None = None):
        super().__init__(message)
        self.report = report
