"""resolve_all: a source's images resolved `jobs` at a time, every failing one named in one
error (Source.images of the registry and Docker sources)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from bundler.cache import CacheUnusable
from bundler.errors import BundlerError, by_cause
from bundler.image import Image
from bundler.reference import Reference
from bundler.registry.endpoint import DEFAULT_JOBS


class ImagesFailed(BundlerError):
    """Several images failed; the one line names each with its own reason. The exit code is
    the worst of theirs (3, the environment, over 1, the content): a build that could not
    reach one registry needs fixing before it can tell what else is wrong."""

    def __init__(self, failures: list[tuple[Reference, BundlerError]]):
        super().__init__(by_cause([(str(ref), _named(str(e), ref), e.cause)
                                   for ref, e in failures]))
        self.failures = failures
        self.exit_code = max(e.exit_code for _, e in failures)
        self.cause = failures[0][1].cause if len({e.cause for _, e in failures}) == 1 else None


def resolve_all(resolve: Callable[[Reference], Image], refs: Sequence[Reference],
                jobs: int = DEFAULT_JOBS) -> list[Image]:
    """[resolve(ref) for ref in refs], up to `jobs` at a time, in the order of `refs`.

    Every reference is tried even when one fails, so one run names every failing image: one
    failure is raised as it is, several as one ImagesFailed. A cache that cannot be used is
    no image's fault and is raised alone. Threads are daemons, as in stage.Fetcher: Ctrl-C
    ends the run without waiting for a stalled request.
    """
    results: list[Image | None] = [None] * len(refs)
    errors: list[BaseException | None] = [None] * len(refs)
    todo = iter(range(len(refs)))
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                i = next(todo, None)
            if i is None:
                return
            try:
                results[i] = resolve(refs[i])
            except BaseException as e:  # noqa: BLE001 - raised in the caller's thread below
                errors[i] = e

    workers = min(max(1, jobs), len(refs))
    if workers <= 1:
        work()  # nothing to overlap: no thread
    else:
        threads = [threading.Thread(target=work, daemon=True, name=f"resolve-{n}")
                   for n in range(workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    failed = [(refs[i], e) for i, e in enumerate(errors) if e is not None]
    for _, e in failed:
        if not isinstance(e, BundlerError) or isinstance(e, CacheUnusable):
            raise e
    if len(failed) == 1:
        raise failed[0][1]
    if failed:
        raise ImagesFailed(failed)  # type: ignore[arg-type]
    return results  # type: ignore[return-value]


def _named(message: str, ref: Reference) -> str:
    # Sources start their messages with the reference (the daemon's with its image name);
    # say which image a message is about when it does not.
    return message if message.startswith((str(ref), ref.image_name)) else f"{ref}: {message}"
