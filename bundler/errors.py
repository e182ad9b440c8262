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
    """Base of every error bundler reports; its str() is the one line the user sees.

    `cause`, when set, is the part of the message that does not depend on the image: a host
    that cannot be reached, a daemon that is not running. Every image it stops has the same
    one, and a run that failed for many images says it once (by_cause). `next_step`, set by
    the CLI, is what to do about it, printed as a note after the error line.
    """

    exit_code = EXIT_FAILED
    cause: str | None = None
    next_step: str | None = None


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

    def __init__(self, message: str, cause: str | None = None):
        super().__init__(message)
        self.cause = cause


# Images named in a group of failures that share a cause; the count says the rest.
_NAMED_PER_CAUSE = 3


def by_cause(failures: list[tuple[str, str, str | None]]) -> str:
    """One line for several failed images, each given as (image, message, cause).

    A cause shared by every image is said once, without repeating the images; one shared by
    some is said once with the first of them named; the others keep their own message.
    """
    groups: dict[str, list[str]] = {}
    for image, _, cause in failures:
        if cause is not None:
            groups.setdefault(cause, []).append(image)
    count = len(failures)
    if len(groups) == 1 and all(cause is not None for _, _, cause in failures):
        return f"{count} images failed, all for one reason: {next(iter(groups))}"
    parts, said = [], set()
    for _image, message, cause in failures:
        if cause is None or len(groups[cause]) == 1:
            parts.append(message)
        elif cause not in said:
            said.add(cause)
            images = groups[cause]
            named = ", ".join(images[:_NAMED_PER_CAUSE])
            more = len(images) - _NAMED_PER_CAUSE
            parts.append(f"{cause} ({len(images)} images: {named}"
                         + (f" and {more} more)" if more > 0 else ")"))
    return f"{count} images failed: " + "; ".join(parts)


def joined_cause(errors: list[BundlerError]) -> str | None:
    """The cause of one image's failure at several endpoints: theirs, in order, if each has
    one."""
    causes = [e.cause for e in errors]
    return "; ".join(causes) if all(causes) else None  # type: ignore[arg-type]


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
